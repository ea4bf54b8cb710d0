"""Loading foreign checkpoints: CLIPSeg (Hugging Face), OpenAI CLIP RN50, the CRIS checkpoint.

Plain state dicts load with ``torch.load(weights_only=True)``; OpenAI's ``RN50.pt`` is a
TorchScript archive, whose loading runs code from the file, so it needs ``trust=True``.
Where each file goes: ``docs/weights.md``.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

WEIGHTS_DOC = "docs/weights.md"
CLIPSEG_HUB_ID = "CIDAS/clipseg-rd64-refined"
ENV_CLIPSEG = "ECHO_VLSM_CLIPSEG_WEIGHTS"
ENV_CRIS = "ECHO_VLSM_CRIS_WEIGHTS"
ENV_CLIP_RN50 = "ECHO_VLSM_CLIP_RN50"
DEFAULT_CRIS = "weights/cris/cris_best.pth"
DEFAULT_CLIP_RN50 = "weights/clip/RN50.pt"


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not where they were looked for."""


class UntrustedCheckpointError(ValueError):
    """A checkpoint format that runs code when loaded was given without ``trust=True``."""


def _where(section: str) -> str:
    return f"see {WEIGHTS_DOC}, section '{section}'"


# -- CLIPSeg --------------------------------------------------------------------------------
def load_clipseg_pretrained(pretrained) -> torch.nn.Module:
    """``CLIPSegForImageSegmentation`` from a local directory or a hub id.

    ``True`` means ``$ECHO_VLSM_CLIPSEG_WEIGHTS`` if set, else "CIDAS/clipseg-rd64-refined"
    (found in the Hugging Face cache, or downloaded when online).
    """
    from transformers import CLIPSegForImageSegmentation

    source = os.environ.get(ENV_CLIPSEG, CLIPSEG_HUB_ID) if pretrained is True else pretrained
    source = str(source)
    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        raise WeightsNotFoundError(
            f"CLIPSeg weights: {path} is not a directory saved with save_pretrained "
            f"(config.json and model.safetensors expected); {_where('CLIPSeg')}")
    try:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        return CLIPSegForImageSegmentation.from_pretrained(
            str(path) if looks_local else source, local_files_only=offline)
    except (OSError, ValueError) as err:
        raise WeightsNotFoundError(
            f"CLIPSeg weights {source!r} could not be loaded ({type(err).__name__}: {err}). "
            f"Without internet, download '{CLIPSEG_HUB_ID}' elsewhere and pass its folder or set "
            f"${ENV_CLIPSEG}; {_where('CLIPSeg')}") from err


# -- reading checkpoint files ---------------------------------------------------------------
def is_torchscript(path: str | os.PathLike) -> bool:
    """True when the file is a TorchScript archive (a zip with a ``constants.pkl`` / code)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def read_state_dict(path: str | os.PathLike, *, trust: bool = False,
                    section: str = "CRIS") -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file.

    Safetensors and plain ``torch.save`` files load with ``weights_only=True``. A TorchScript
    archive (OpenAI's ``RN50.pt``) is loaded with ``torch.jit.load`` on the CPU only when
    ``trust=True``: TorchScript can run arbitrary code from the file. A dict with a
    ``state_dict`` (or ``model``) entry is unwrapped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint not found: {path}; {_where(section)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if is_torchscript(path):
        if not trust:
            raise UntrustedCheckpointError(
                f"{path} is a TorchScript archive (like OpenAI's RN50.pt): loading it runs code "
                "stored in the file, so it is only done with trust=True. Pass trust=True if the "
                f"file comes from a source you trust (e.g. OpenAI's CLIP release); {_where(section)}")
        with warnings.catch_warnings():  # torch.jit is deprecated; OpenAI's file needs it
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unpickling failure with the file name
        raise ValueError(
            f"{path} could not be read as a plain state dict with weights_only=True ({err}); "
            "accepted: a torch.save'd dict of tensors (optionally under 'state_dict'), a "
            f"safetensors file, or a TorchScript archive with trust=True; {_where(section)}") from err
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj, source: str | os.PathLike = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The tensor dict of a checkpoint object (``state_dict``/``model`` entries unwrapped)."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: expected a dict of tensors (or a dict with a 'state_dict' "
                         f"entry), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: entries that are not tensors: {bad[:5]}")
    return dict(obj)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict:
    """Keys without a DataParallel ``module.`` prefix (keys without it are kept as they are)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def describe_mismatch(missing, unexpected, source, limit: int = 12) -> str:
    """A message listing missing and unexpected keys."""
    def show(keys):
        keys = sorted(keys)
        more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more if keys else "none"

    return (f"{source}: state dict does not match the model. Missing keys ({len(missing)}): "
            f"{show(missing)}. Unexpected keys ({len(unexpected)}): {show(unexpected)}.")


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source) -> None:
    """``load_state_dict(strict=True)`` with a message naming missing and unexpected keys
    (and shape mismatches)."""
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    if missing or unexpected:
        raise KeyError(describe_mismatch(missing, unexpected, source))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes:
        raise ValueError(f"{source}: shapes differ (wrong size of the model?): "
                         + "; ".join(shapes[:8]))
    model.load_state_dict(dict(state), strict=True)


# -- CRIS -----------------------------------------------------------------------------------
CLIP_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _cris_source(pretrained) -> Path:
    from echo_vlsm.paths import resolve

    if pretrained is True:
        env = os.environ.get(ENV_CRIS)
        path = resolve(env) if env else resolve(DEFAULT_CRIS)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"CRIS checkpoint not found at {path} (set ${ENV_CRIS} or put the file at "
                f"{DEFAULT_CRIS}); {_where('CRIS')}")
        return path
    return Path(pretrained).expanduser()


def load_cris_pretrained(model: torch.nn.Module, pretrained, *, trust: bool = False) -> str:
    """Load a CRIS checkpoint (strict, ``module.`` prefixes removed) or CLIP RN50 weights
    (into ``model.backbone``; only the ``connect`` residual stays random) into ``model``.
    Returns ``"cris"`` or ``"clip"``, the kind of file loaded."""
    path = _cris_source(pretrained)
    state = strip_prefix(read_state_dict(path, trust=trust, section="CRIS"))
    if any(k.startswith("backbone.") for k in state):
        load_strict(model, state, path)
        return "cris"
    if "visual.attnpool.positional_embedding" in state or "visual.conv1.weight" in state:
        load_clip_into_backbone(model.backbone, state, path)
        return "clip"
    raise KeyError(
        f"{path}: neither a CRIS checkpoint (keys 'backbone.', 'neck.', 'decoder.', 'proj.', "
        f"optionally under 'module.') nor CLIP RN50 weights (keys 'visual.', 'transformer.'); "
        f"first keys: {sorted(state)[:5]}; {_where('CRIS')}")


def load_clip_into_backbone(backbone: torch.nn.Module, state: Mapping[str, torch.Tensor],
                            source) -> None:
    """CLIP weights (OpenAI's key names) into CRIS's backbone; strict except for the
    ``connect`` residual of the spatial pool, which CLIP does not have."""
    state = {k: v for k, v in state.items() if k not in CLIP_EXTRA_KEYS}
    own = backbone.state_dict()
    connect = {k for k in own if k.startswith("visual.attnpool.connect.")}
    missing = set(own) - set(state) - connect
    unexpected = set(state) - set(own)
    if missing or unexpected:
        raise KeyError(describe_mismatch(missing, unexpected, f"{source} (CLIP weights)"))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in state if tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes:
        raise ValueError(f"{source}: CLIP weights of another size: " + "; ".join(shapes[:8]))
    backbone.load_state_dict({**{k: own[k] for k in connect}, **state}, strict=True)
