"""The vision-language segmentation models of the study: CLIPSeg and CRIS.

``build_model(name, size, pretrained, encoders)`` reaches both; every model is called as
``model(pixel_values, input_ids, attention_mask) -> logits (B, 1, H, W)`` and carries a
``.spec`` (input size, normalisation, threshold) and ``.tokenize(texts)``.
Where pretrained weights go: ``docs/weights.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from echo_vlsm.grid import ENCODERS, MODELS, SIZES


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects: square input side in pixels, per-channel normalisation of
    ``[0, 1]`` images, the threshold on ``sigmoid(logits)``, and the text context length."""

    name: str
    size: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float
    context_length: int = 77


def model_spec(name: str, size: str = "paper") -> ModelSpec:
    """The spec of a model without building it."""
    _check(name, size, "trained")
    if name == "clipseg":
        from echo_vlsm.models.clipseg import clipseg_spec

        return clipseg_spec(size)
    from echo_vlsm.models.cris import cris_spec

    return cris_spec(size)


def build_model(name: str, size: str = "paper", pretrained=None, encoders: str = "trained",
                **kwargs) -> torch.nn.Module:
    """Build ``clipseg`` or ``cris`` at ``size`` ``"paper"`` (the study's architecture) or
    ``"tiny"`` (the same architecture at small width, for CPU tests and the demo).

    ``pretrained``: ``None`` for random weights, ``True`` for the study's weights from their
    default place, or a hub id / local path (see ``docs/weights.md``). ``encoders``:
    ``"trained"`` (gradients reach the CLIP image and text encoders) or ``"frozen"``.
    CRIS also takes ``trust=True`` to read OpenAI's TorchScript ``RN50.pt``.

    Examples::

        >>> model = build_model("clipseg", size="tiny")
        >>> ids, mask = model.tokenize(["Left ventricular cavity of the heart."])
        >>> s = model.spec.image_size
        >>> model(torch.zeros(1, 3, s, s), ids, mask).shape == (1, 1, s, s)
        True
    """
    _check(name, size, encoders)
    if name == "clipseg":
        from echo_vlsm.models.clipseg import build_clipseg

        return build_clipseg(size, pretrained=pretrained, encoders=encoders, **kwargs)
    from echo_vlsm.models.cris import build_cris

    return build_cris(size, pretrained=pretrained, encoders=encoders, **kwargs)


def _check(name: str, size: str, encoders: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} for {name}; expected one of {SIZES}")
    if encoders not in ENCODERS:
        raise ValueError(f"encoders must be one of {ENCODERS}, got {encoders!r}")


__all__ = ["ENCODERS", "MODELS", "SIZES", "ModelSpec", "build_model", "model_spec"]
