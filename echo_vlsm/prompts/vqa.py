"""Shape words from a visual-question-answering model, as in the study (Synthetic Boost, Sec. 2.2).

The study drew the structure's bounding box in green on the echo image and asked a VQA
model "What is the shape of the <structure> enclosed in the green box?"; the answer went
into prompt P7. Here any transformers model of the visual-question-answering family works,
from the hub (an id) or a local folder: answer classifiers such as ViLT
(``dandelin/vilt-b32-finetuned-vqa``: the label of the highest logit) and generators such as
BLIP (``Salesforce/blip-vqa-base``: the generated text).

The answer is mapped to one of ``SHAPES`` (``match_shape``: the first word of the answer
that names a shape or a synonym, e.g. "round" -> circle, "elliptical" -> oval). An answer
naming none is kept as it is by default (lower-cased), as the study kept whatever its model
said (an empty answer falls back to geometry); ``unmatched="geometry"`` replaces it by the
geometric shape, ``"error"`` raises.

Answers are cached on disk, one small JSON file per (model, question, image, mask), keyed
by a SHA-256 of the model's identity (hub id, or a local folder's config and weight files),
the question and the pixels, so a rerun asks nothing again. A local folder's fingerprint is
computed once per process and folder state (``functools.lru_cache`` keyed by the folder's
path and the modification times of the folder and its ``config.json``): saving a model
again (``save_pretrained`` rewrites ``config.json``), adding or removing files change it;
a weight file alone edited in place is noticed in the next process.

Examples::

    shape = shape_of(mask, backend="vqa", model="dandelin/vilt-b32-finetuned-vqa",
                     structure="lv", image=image, cache_dir="data/camus/.cache/vqa")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from echo_vlsm.io import write_json_atomic
from echo_vlsm.prompts.shape import SHAPES, as_binary, geometric_shape
from echo_vlsm.structures import STRUCTURE_NAMES, check_structure

QUESTION = "What is the shape of the {structure} enclosed in the green box?"
GREEN = (0, 255, 0)
UNMATCHED = ("keep", "geometry", "error")
# Words a VQA model may answer with, per shape word.
SYNONYMS: dict[str, str] = {
    **{s: s for s in SHAPES},
    "circles": "circle", "circular": "circle", "round": "circle", "disk": "circle",
    "disc": "circle", "sphere": "circle", "spherical": "circle", "ring": "circle",
    "ovals": "oval", "ovoid": "oval", "ellipse": "oval", "elliptical": "oval",
    "ellipsoid": "oval", "ellipsoidal": "oval", "egg": "oval",
    "triangles": "triangle", "triangular": "triangle", "cone": "triangle",
    "squares": "square", "cube": "square",
    "rectangles": "rectangle", "rectangular": "rectangle", "oblong": "rectangle",
}


def question_for(structure: str) -> str:
    """The study's question for a structure, e.g. "What is the shape of the left ventricular
    cavity enclosed in the green box?"."""
    return QUESTION.format(structure=STRUCTURE_NAMES[check_structure(structure)].lower())


def match_shape(answer: str) -> str | None:
    """The shape word an answer names (first matching word), or None."""
    for word in re.findall(r"[a-z]+", str(answer).lower()):
        if word in SYNONYMS:
            return SYNONYMS[word]
    return None


def draw_box(image, mask, color=GREEN, thickness: int | None = None) -> np.ndarray:
    """An RGB copy of ``image`` (gray (H, W) or RGB (H, W, 3), uint8) with the bounding box of
    ``mask > 0`` drawn around it in green (``thickness`` default: 1 px per 256 px of image)."""
    img = np.asarray(image)
    if img.ndim == 2:
        rgb = np.repeat(img[..., None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 3:
        rgb = img.copy()
    else:
        raise ValueError(f"image: expected (H, W) gray or (H, W, 3) RGB, got shape {img.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 pixels, got {rgb.dtype}")
    m = as_binary(mask)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"mask is {m.shape} but the image is {rgb.shape[:2]}; they must match")
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        raise ValueError("mask: empty (no pixel > 0); there is no structure to box")
    h, w = m.shape
    t = int(thickness) if thickness else max(1, round(max(h, w) / 256))
    gap = 1 + t // 2  # the box sits just outside the structure, not on its border
    x0, y0 = max(0, int(xs.min()) - gap), max(0, int(ys.min()) - gap)
    x1, y1 = min(w - 1, int(xs.max()) + gap), min(h - 1, int(ys.max()) + gap)
    rgb = np.ascontiguousarray(rgb)
    cv2.rectangle(rgb, (x0, y0), (x1, y1), tuple(int(c) for c in color), t)
    return rgb


# --------------------------------------------------------------------------- the model


def _looks_like_path(name: str) -> bool:
    return (
        os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name
        or name.count("/") > 1 or name.endswith("/")
    )


def resolve_model(model) -> tuple[str, str]:
    """``("local", folder)`` or ``("hub", id)``; clear errors for a missing or absent model."""
    if model is None or (isinstance(model, str) and not model.strip()):
        raise ValueError(
            "the VQA shape backend needs model=: a Hugging Face hub id of a "
            "visual-question-answering model (e.g. 'dandelin/vilt-b32-finetuned-vqa') or a "
            "local folder holding one (config.json, weights, processor files)"
        )
    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(
                f"VQA model {path}: expected a folder (config.json, "
                "weights, processor files), got a file"
            )
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"VQA model {path}: no config.json in the folder; save a "
                "model there with save_pretrained (model and processor)"
            )
        return "local", str(path.resolve())
    if isinstance(model, os.PathLike) or _looks_like_path(name):
        raise FileNotFoundError(
            f"VQA model folder {path} does not exist; give an existing folder (model and "
            "processor saved with save_pretrained) or a hub id such as "
            "'dandelin/vilt-b32-finetuned-vqa'"
        )
    return "hub", name


def model_fingerprint(model) -> str:
    """What identifies a model's answers: the hub id, or a local folder's path with its
    config and the names, sizes and modification times of its other files."""
    return _fingerprint(resolve_model(model))


def _fingerprint(resolved: tuple[str, str]) -> str:
    kind, source = resolved
    if kind == "hub":
        return f"hub:{source}"
    folder = Path(source)
    return _local_fingerprint(
        source, folder.stat().st_mtime_ns, (folder / "config.json").stat().st_mtime_ns
    )


@lru_cache(maxsize=16)
def _local_fingerprint(source: str, folder_mtime: int, config_mtime: int) -> str:
    """The fingerprint of a local model folder; the mtimes only key the cache."""
    folder = Path(source)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"local:{source}:{h.hexdigest()[:16]}"


class VQAModel:
    """A loaded VQA model: ``answer(image_rgb, question) -> str``."""

    def __init__(self, model, device: str | None = None):
        import torch
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

        kind, source = resolve_model(model)
        self.source = source
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        try:
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=offline)
            self.model = AutoModelForVisualQuestionAnswering.from_pretrained(
                source, local_files_only=offline
            )
        except (OSError, ValueError) as exc:
            where = (
                f"folder {source}" if kind == "local"
                else f"hub id {source!r}{' (HF_HUB_OFFLINE is set)' if offline else ''}"
            )
            raise OSError(
                f"cannot load a visual-question-answering model from the {where}: {exc}. "
                "Give a local folder with the model and its processor (save_pretrained), or "
                "download the hub model first"
            ) from exc
        self.model.eval().to(self.device)
        self.generative = bool(self.model.can_generate())

    def answer(self, image_rgb: np.ndarray, question: str) -> str:
        import torch
        from PIL import Image

        inputs = self.processor(images=Image.fromarray(image_rgb), text=question,
                                return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            if self.generative:
                out = self.model.generate(**inputs, max_new_tokens=10)
                text = self.processor.batch_decode(out, skip_special_tokens=True)[0]
                if text.startswith(question):  # decoder-only models repeat the prompt
                    text = text[len(question) :]
            else:
                logits = self.model(**inputs).logits
                text = str(self.model.config.id2label[int(logits[0].argmax())])
        return " ".join(text.split()).lower()


@lru_cache(maxsize=2)
def load_vqa(model: str, device: str | None = None) -> VQAModel:
    """Load (once per process) a VQA model by hub id or local folder."""
    return VQAModel(model, device)


# --------------------------------------------------------------------------- cached answers


def default_cache_dir() -> Path:
    """``$ECHO_VLSM_CACHE/vqa``, else ``~/.cache/echo-vlsm/vqa``."""
    root = os.environ.get("ECHO_VLSM_CACHE") or Path.home() / ".cache" / "echo-vlsm"
    return Path(root) / "vqa"


def cache_key(fingerprint: str, question: str, image_rgb: np.ndarray, mask) -> str:
    m = np.ascontiguousarray(as_binary(mask), dtype=np.uint8)
    img = np.ascontiguousarray(image_rgb)
    h = hashlib.sha256()
    for part in (fingerprint, question, str(img.shape), str(img.dtype), str(m.shape)):
        h.update(part.encode() + b"\0")
    h.update(img.tobytes())
    h.update(np.packbits(m).tobytes())
    return h.hexdigest()


def vqa_answer(mask, image, structure: str, model, cache_dir=None, device=None) -> str:
    """The VQA model's raw answer (lower-case) for one structure's mask, from the cache when
    this (model, question, image, mask) was asked before."""
    return _vqa_answer(mask, image, structure, resolve_model(model), cache_dir, device)


def _vqa_answer(mask, image, structure, resolved: tuple[str, str], cache_dir, device) -> str:
    if image is None:
        raise ValueError(
            "the VQA shape backend needs image= (the echo image the mask belongs "
            "to); the green box is drawn on it"
        )
    if structure is None:
        raise ValueError(
            "the VQA shape backend needs structure= ('lv', 'myo' or 'la') for the question"
        )
    question = question_for(structure)
    boxed = draw_box(image, mask)
    fingerprint = _fingerprint(resolved)
    path = None
    if cache_dir is not False:
        folder = Path(cache_dir) if cache_dir not in (None, True) else default_cache_dir()
        key = cache_key(fingerprint, question, boxed, mask)
        path = folder / key[:2] / f"{key}.json"
        if path.is_file():
            try:
                cached = json.loads(path.read_text())
                if isinstance(cached.get("answer"), str):
                    return cached["answer"]
            except (OSError, ValueError):
                pass  # a damaged entry is asked again and overwritten
    answer = load_vqa(resolved[1], device).answer(boxed, question)
    if path is not None:
        write_json_atomic(path, {"answer": answer, "question": question, "model": fingerprint})
    return answer


def vqa_shape(mask, image=None, structure=None, model=None, cache_dir=None,
              unmatched: str = "keep", device=None) -> str:
    """The shape word from the VQA model's answer (see the module docstring)."""
    if unmatched not in UNMATCHED:
        raise ValueError(f"unmatched={unmatched!r}; expected one of {list(UNMATCHED)}")
    resolved = resolve_model(model)  # a missing model fails before any work; once per mask
    answer = _vqa_answer(mask, image, structure, resolved, cache_dir, device)
    shape = match_shape(answer)
    if shape is not None:
        return shape
    if unmatched == "geometry" or (unmatched == "keep" and not answer):
        return geometric_shape(mask, structure)
    if unmatched == "error":
        raise ValueError(
            f"the VQA model {model!s} answered {answer!r} to {question_for(structure)!r}, "
            f"which names none of {list(SHAPES)}; use unmatched='keep' or 'geometry'"
        )
    return answer
