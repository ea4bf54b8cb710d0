"""The vision-language segmentation models of the study, CLIPSeg and CRIS, and a text-free
U-Net baseline (beyond the study).

``build_model(name, size, pretrained, encoders)`` reaches all three; every model is called as
``model(pixel_values, input_ids, attention_mask) -> logits (B, 1, H, W)`` and carries a
``.spec`` (input size, normalisation, threshold) and ``.tokenize(texts)``: the contract of
:class:`~echo_vlsm.models.base.SegmentationModel`. Where pretrained weights go:
``docs/weights.md``.

Modules: ``base`` (``ModelSpec``, the shared contract), ``clipseg`` and ``cris`` (one model
each, whole), ``tokenizer`` (CLIP's BPE), ``weights`` (reading foreign checkpoints),
``checks`` (``encoder_gradient_check``, the study's CLIPSeg defect shown), ``unet`` (MONAI's
DynUNet predicting the three structures at once, read per structure by the same engine).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from echo_vlsm.grid import BASELINE_MODELS, ENCODERS, MODELS, SIZES
from echo_vlsm.models.base import UPSAMPLINGS, ModelSpec, SegmentationModel, check_model
from echo_vlsm.models.checks import encoder_gradient_check
from echo_vlsm.models.clipseg import build_clipseg, clipseg_spec
from echo_vlsm.models.cris import build_cris, cris_spec
from echo_vlsm.models.folders import check_model_folder, check_safetensors_fits
from echo_vlsm.models.tokenizer import ClipTokenizer
from echo_vlsm.models.unet import build_unet, unet_spec
from echo_vlsm.models.weights import StateDictMismatchError, local_path

_SPECS: dict[str, Callable[..., ModelSpec]] = {
    "clipseg": clipseg_spec, "cris": cris_spec, "unet": unet_spec}
_BUILDERS: dict[str, Callable[..., SegmentationModel]] = {
    "clipseg": build_clipseg, "cris": build_cris, "unet": build_unet}


def model_spec(name: str, size: str = "paper") -> ModelSpec:
    """The spec of a model without building it.

    Examples::

        >>> model_spec("cris", "tiny").image_size
        96
    """
    check_model(name, size, "trained")
    return _SPECS[name](size)


def build_model(name: str, size: str = "paper", pretrained=None, encoders: str = "trained",
                **kwargs) -> SegmentationModel:
    """Build ``clipseg`` or ``cris`` at ``size`` ``"paper"`` (the study's architecture) or
    ``"tiny"`` (the same architecture at small width, for CPU tests and the demo).

    ``pretrained``: ``None`` for random weights, ``True`` for the study's weights from their
    default place, a hub id / local path (see ``docs/weights.md``), or a folder written by
    ``echo-vlsm export-model`` (its ``config.json`` says ``"format": "echo-vlsm-model"``).
    ``encoders``:
    ``"trained"`` (gradients reach the CLIP image and text encoders) or ``"frozen"``.
    ``unet`` (``echo_vlsm.models.unet``) takes no pretrained weights and trained encoders only.
    CRIS also takes ``trust=True`` to read OpenAI's TorchScript ``RN50.pt``, ``dropout``
    (the decoder's) and ``upsample`` (``"bicubic-corners"``, the study's and the default, or
    ``"bilinear"``; see ``ModelSpec.upsample``).

    Examples::

        >>> import torch
        >>> model = build_model("clipseg", size="tiny")
        >>> ids, mask = model.tokenize(["Left ventricular cavity of the heart."])
        >>> s = model.spec.image_size
        >>> model(torch.zeros(1, 3, s, s), ids, mask).shape == (1, 1, s, s)
        True
    """
    check_model(name, size, encoders)
    exported = exported_config(pretrained)
    if exported is not None:
        return _load_exported(name, size, encoders, pretrained, exported, **kwargs)
    return _BUILDERS[name](size, pretrained=pretrained, encoders=encoders, **kwargs)


#: ``config.json["format"]`` of a folder written by ``echo_vlsm.inference.export_model``.
EXPORT_FORMAT = "echo-vlsm-model"


def exported_config(pretrained) -> dict | None:
    """``config.json`` of an exported model folder (``echo-vlsm export-model``), or ``None``
    when ``pretrained`` names something else."""
    if pretrained is None or isinstance(pretrained, bool):
        return None
    path = local_path(pretrained)
    config = path / "config.json" if path is not None else None
    if config is None or not config.is_file():
        return None
    try:
        values = json.loads(config.read_text())
    except (OSError, ValueError):
        return None  # not ours (e.g. a damaged Hugging Face folder): the builder reports it
    return values if isinstance(values, dict) and values.get("format") == EXPORT_FORMAT else None


def _load_exported(name, size, encoders, pretrained, config: dict,
                   **kwargs) -> SegmentationModel:
    """A model with the weights (and tokenizer vocabulary) of an exported folder."""
    from safetensors.torch import load_model

    folder = local_path(pretrained)
    assert folder is not None  # exported_config read config.json in this local folder
    if (config.get("model"), config.get("size")) != (name, size):
        raise ValueError(f"{folder / 'config.json'}: an exported {config.get('model')!r} of size "
                         f"{config.get('size')!r}, not {name!r} of size {size!r}; build it "
                         f"with build_model({config.get('model')!r}, "
                         f"size={config.get('size')!r}, pretrained=...)")
    weights, vocab = check_model_folder(folder, config)  # no code-running file, sound names
    upsample = (config.get("spec") or {}).get("upsample")
    if upsample is not None and "upsample" not in kwargs:  # as it was trained
        kwargs["upsample"] = upsample
    model = _BUILDERS[name](size, pretrained=None, encoders=encoders, **kwargs)
    check_safetensors_fits(weights, model.state_dict())  # keys and shapes, from the header
    missing, unexpected = load_model(model, str(weights), strict=False)
    if missing or unexpected:
        raise StateDictMismatchError(f"{weights}: weights do not fit {name} {size}: missing "
                                     f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    if vocab.is_file() and name not in BASELINE_MODELS:  # a text-free model reads no text
        model._tokenizer = ClipTokenizer(model.spec.context_length, bpe_path=vocab)
    return model


__all__ = ["ENCODERS", "EXPORT_FORMAT", "MODELS", "SIZES", "ModelSpec", "SegmentationModel",
           "UPSAMPLINGS", "build_model", "encoder_gradient_check", "exported_config",
           "model_spec"]
