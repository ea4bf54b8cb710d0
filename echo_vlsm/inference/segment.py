"""Segment any echo image with a text prompt (a trained model of the study, used).

``segment(model, image, prompt)`` prepares the image exactly as training and ``evaluate``
did (gray, resized to the model's square input, normalised, the model's precision), runs the
model once for all prompts, resizes the logits bilinearly back to the image's own size and
thresholds them at the model's threshold. So a test image segmented here gets the very mask
that ``evaluate`` scored.

Examples::

    result = segment("runs/demo/clipseg_real_trained_p1", "echo.png",
                     "Left ventricular cavity of the heart.")
    result.mask.shape == result.probability.shape  # the image's own (H, W)
    p3 = segment(run, "echo.png", "p3", attributes={"structure": "lv", "view": "2CH",
                                                   "phase": "ED"})
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from echo_vlsm.device import autocast
from echo_vlsm.grid import PROMPT_KEYS, RANDOM_PROMPT
from echo_vlsm.inference.images import read_image, stem_of
from echo_vlsm.inference.loading import LoadedModel, load_model
from echo_vlsm.io import atomic_path, write_png
from echo_vlsm.prompts import Attributes, make_prompts, phrasings_of
from echo_vlsm.train.checkpoint import unwrap_segmentation
from echo_vlsm.train.decoding import resize as resize_as_in_training
from echo_vlsm.train.triplets import normalise


@dataclass
class Segmentation:
    """One prompt's result: ``probability`` float32 and ``mask`` bool, both (H, W) at the
    image's own size; ``prompt`` the text the model read; ``threshold`` the model's."""

    probability: np.ndarray
    mask: np.ndarray
    prompt: str
    threshold: float
    image: np.ndarray

    @property
    def area(self) -> float:
        """Fraction of the image inside the mask."""
        return float(self.mask.mean())


def prompt_text(prompt: str, attributes=None, phrasing: int = 0,
                trained_prompt: str | None = None) -> str:
    """The text a prompt gives: a free text as it is; a key ``p0``..``p7`` with
    ``attributes`` (an ``Attributes`` or a dict of its fields) as the study wrote it, phrasing
    ``phrasing`` (0: "... of the heart.", 1: "... in the cardiac ultrasound.").

    An empty or blank text is refused for a model trained with a prompt (``trained_prompt``
    other than ``p0``): it is almost always a mistake. The key ``p0`` asks for the study's
    empty prompt on purpose and is always accepted.

    Examples::

        >>> prompt_text("p1", {"structure": "lv", "view": "2CH", "phase": "ED"})
        'Left ventricular cavity of the heart.'
    """
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a str, got {type(prompt).__name__}: {prompt!r}")
    key = prompt.strip().lower()
    if key in PROMPT_KEYS:
        if key != "p0" and attributes is None:
            raise ValueError(f"prompt key {prompt!r} needs the image's attributes (at least "
                             "structure, view and phase; sex, age, quality, shape for P4-P7): "
                             "pass attributes=..., or give a free text")
        if key == "p0":
            text = ""
        else:
            attrs = attributes if isinstance(attributes, Attributes) else Attributes(
                **dict(attributes))
            options = phrasings_of(make_prompts(attrs, keys=[key])[key])
            text = options[min(int(phrasing), len(options) - 1)]
    elif key == RANDOM_PROMPT:
        raise ValueError("prompt 'random' is a training setting, not a prompt; give a key "
                         f"({', '.join(PROMPT_KEYS)}) or a free text")
    else:
        text = prompt.strip()
    if not text and key != "p0" and trained_prompt not in (None, "p0"):
        raise ValueError(f"empty prompt, but this model was trained with prompt "
                         f"{trained_prompt!r}: give a text (e.g. 'Left ventricular cavity of "
                         "the heart.') or a prompt key with attributes")
    return text


def _attributes_for(attributes, n: int) -> list:
    if attributes is None or isinstance(attributes, (Attributes, Mapping)):
        return [attributes] * n
    attributes = list(attributes)
    if len(attributes) != n:
        raise ValueError(f"{len(attributes)} attribute sets for {n} prompts")
    return attributes


def prepare(image: np.ndarray, loaded: LoadedModel) -> torch.Tensor:
    """(1, 3, S, S) normalised pixels of an (H, W) uint8 image, as training prepared them."""
    spec = loaded.spec
    small = resize_as_in_training(image, spec.image_size, mask=False)
    pixels = torch.from_numpy(np.ascontiguousarray(small))[None].to(loaded.device)
    return normalise(pixels, spec.mean, spec.std, channels_last=loaded.channels_last)


@torch.no_grad()
def segment(model, image, prompt: str | Sequence[str], *, attributes=None, phrasing: int = 0,
            device: str | torch.device | None = None):
    """Segment ``image`` with ``prompt``; several prompts run as one batch.

    Args:
        model: a run folder (``runs/<profile>/<run_id>``), an exported model folder
            (``echo-vlsm export-model``), a built model, or a :class:`LoadedModel`.
        image: a path (PNG/JPEG, CAMUS ``.mhd``/``.nii.gz``, a 2-D DICOM with pydicom) or an
            (H, W) / (H, W, 3) array.
        prompt: a free text, or a key ``p0``..``p7`` with ``attributes``; or a list of them.
        attributes: ``Attributes`` or a dict (structure, view, phase, sex, age, quality,
            shape) for prompt keys; one for all prompts or one per prompt.
        phrasing: which of a key's two phrasings (0 or 1).

    Returns:
        A :class:`Segmentation` (a list of them for a list of prompts).
    """
    loaded = load_model(model, device=device)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("no prompt given: expected a text or a non-empty list of texts")
    texts = [prompt_text(p, a, phrasing, loaded.prompt)
             for p, a in zip(prompts, _attributes_for(attributes, len(prompts)))]
    gray = read_image(image)
    x = prepare(gray, loaded)
    ids, attn = unwrap_segmentation(loaded.model).tokenize(texts)
    x = x.expand(len(texts), -1, -1, -1)
    ids, attn = ids.to(loaded.device), attn.to(loaded.device)
    with autocast(loaded.device, loaded.precision):
        logits = loaded.model(x, ids, attn)
    logits = logits.float()
    if tuple(logits.shape[-2:]) != gray.shape:
        logits = F.interpolate(logits, size=gray.shape, mode="bilinear", align_corners=False)
    logits = logits[:, 0].cpu()
    threshold = float(loaded.spec.threshold)
    cut = math.log(threshold / (1 - threshold))
    results = [Segmentation(torch.sigmoid(lg).numpy(), (lg > cut).numpy(), text, threshold, gray)
               for lg, text in zip(logits, texts)]
    return results[0] if isinstance(prompt, str) else results


# -- pictures -------------------------------------------------------------------------------
def overlay(image: np.ndarray, mask: np.ndarray, color=(255, 64, 64), alpha: float = 0.4):
    """RGB uint8 picture of a gray image with the mask tinted and outlined in ``color``."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    tint = np.array(color, np.float32)
    m = mask.astype(bool)
    rgb[m] = (1 - alpha) * rgb[m] + alpha * tint
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), 1)
    return out


def write_result(result: Segmentation, out_dir: str | os.PathLike, stem: str,
                 with_overlay: bool = False) -> list[Path]:
    """Write ``<stem>_mask.png`` (0/255) and, with ``with_overlay``, ``<stem>_overlay.png``."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{stem}_mask.png"]
    write_png(paths[0], result.mask.astype(np.uint8) * 255)
    if with_overlay:
        paths.append(out_dir / f"{stem}_overlay.png")
        with atomic_path(paths[1]) as tmp:
            Image.fromarray(overlay(result.image, result.mask), mode="RGB").save(tmp, "PNG")
    return paths


__all__ = ["Segmentation", "overlay", "prepare", "prompt_text", "segment", "stem_of",
           "write_result"]
