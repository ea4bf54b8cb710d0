"""The vision-language segmentation models of the study: CLIPSeg and CRIS.

``build_model(name, size, pretrained, encoders)`` reaches both; every model is called as
``model(pixel_values, input_ids, attention_mask) -> logits (B, 1, H, W)`` and carries a
``.spec`` (input size, normalisation, threshold) and ``.tokenize(texts)``: the contract of
:class:`~echo_vlsm.models.base.SegmentationModel`. Where pretrained weights go:
``docs/weights.md``.

Modules: ``base`` (``ModelSpec``, the shared contract), ``clipseg`` and ``cris`` (one model
each, whole), ``tokenizer`` (CLIP's BPE), ``weights`` (reading foreign checkpoints),
``checks`` (``encoder_gradient_check``, the study's CLIPSeg defect shown).
"""

from __future__ import annotations

import torch

from echo_vlsm.grid import ENCODERS, MODELS, SIZES
from echo_vlsm.models.base import ModelSpec, SegmentationModel, check_model
from echo_vlsm.models.checks import encoder_gradient_check
from echo_vlsm.models.clipseg import build_clipseg, clipseg_spec
from echo_vlsm.models.cris import build_cris, cris_spec

_SPECS = {"clipseg": clipseg_spec, "cris": cris_spec}
_BUILDERS = {"clipseg": build_clipseg, "cris": build_cris}


def model_spec(name: str, size: str = "paper") -> ModelSpec:
    """The spec of a model without building it.

    Examples::

        >>> model_spec("cris", "tiny").image_size
        96
    """
    check_model(name, size, "trained")
    return _SPECS[name](size)


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
    check_model(name, size, encoders)
    return _BUILDERS[name](size, pretrained=pretrained, encoders=encoders, **kwargs)


__all__ = ["ENCODERS", "MODELS", "SIZES", "ModelSpec", "SegmentationModel", "build_model",
           "encoder_gradient_check", "model_spec"]
