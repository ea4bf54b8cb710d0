"""Loading foreign checkpoints: CLIPSeg (Hugging Face), OpenAI CLIP RN50, the CRIS checkpoint.

Plain state dicts load with ``torch.load(weights_only=True)``; OpenAI's ``RN50.pt`` is a
TorchScript archive, and a checkpoint that pickles other objects (e.g. an
``argparse.Namespace`` next to the weights) needs full unpickling: both run code from the
file when loaded, so they need ``trust=True``. Relative paths are taken from the project root
(``echo_vlsm.paths.resolve``). Where each file goes: ``docs/weights.md``.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from echo_vlsm.grid import sha256_file
from echo_vlsm.paths import resolve

if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation

WEIGHTS_DOC = "docs/weights.md"
CLIPSEG_HUB_ID = "CIDAS/clipseg-rd64-refined"
ENV_CLIPSEG = "ECHO_VLSM_CLIPSEG_WEIGHTS"
ENV_CRIS = "ECHO_VLSM_CRIS_WEIGHTS"
ENV_CLIP_RN50 = "ECHO_VLSM_CLIP_RN50"
DEFAULT_CRIS = "weights/cris/cris_best.pth"
DEFAULT_CLIP_RN50 = "weights/clip/RN50.pt"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_LOCAL_PREFIXES = ("./", "../", ".\\", "..\\", "/", "\\", "~", "weights/", "weights\\")


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not where they were looked for."""


class UntrustedCheckpointError(ValueError):
    """A checkpoint format that runs code when loaded was given without ``trust=True``."""


class StateDictMismatchError(ValueError):
    """A state dict whose keys or shapes do not match the model it is loaded into."""


def _where(section: str) -> str:
    return f"see {WEIGHTS_DOC}, section '{section}'"


def clean_message(err: BaseException | str, limit: int = 600) -> str:
    """An error message without terminal colour codes, on one line, at most ``limit`` chars."""
    text = _ANSI.sub("", str(err))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- where a `pretrained` value points --------------------------------------------------------
def local_path(source, root: str | os.PathLike | None = None) -> Path | None:
    """The local file or folder a ``pretrained`` value names, resolved against ``root`` (the
    project root by default), or ``None`` when it is a Hugging Face hub id ("owner/name").

    Local: a ``Path``; a string that starts with ``./``, ``../``, ``/``, ``~`` or ``weights/``,
    is absolute, has more than one ``/`` or a backslash, or names an existing path (relative
    to the root).
    """
    if isinstance(source, os.PathLike):
        return resolve(source, root)
    text = str(source)
    path = resolve(text, root)
    if (path.exists() or text in (".", "..") or text.startswith(_LOCAL_PREFIXES)
            or Path(text).is_absolute() or "\\" in text or text.count("/") > 1):
        return path
    return None


# -- CLIPSeg --------------------------------------------------------------------------------
def clipseg_source(pretrained, env: Mapping[str, str] | None = None) -> tuple[object, str]:
    """What a CLIPSeg ``pretrained`` value names, and how: ``True`` means
    ``$ECHO_VLSM_CLIPSEG_WEIGHTS`` in ``env`` (default ``os.environ``) if set, else the hub id
    "CIDAS/clipseg-rd64-refined"; ``via`` is `` (from $ECHO_VLSM_CLIPSEG_WEIGHTS)`` or ``""``."""
    env = os.environ if env is None else env
    if pretrained is not True:
        return pretrained, ""
    if env.get(ENV_CLIPSEG):
        return env[ENV_CLIPSEG], f" (from ${ENV_CLIPSEG})"
    return CLIPSEG_HUB_ID, ""


def hub_cached(hub_id: str, weight_files: tuple[str, ...] = ("model.safetensors",
                                                               "pytorch_model.bin")) -> bool:
    """True when the Hugging Face cache holds ``hub_id``'s ``config.json`` and one of its
    ``weight_files`` (what ``from_pretrained`` needs offline); nothing is downloaded."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(hub_id, filename), str)
        except ValueError:  # not a valid repository id
            return False

    return cached("config.json") and any(cached(f) for f in weight_files)


def load_clipseg_pretrained(pretrained) -> CLIPSegForImageSegmentation:
    """``CLIPSegForImageSegmentation`` from a local directory or a hub id.

    ``True`` means ``$ECHO_VLSM_CLIPSEG_WEIGHTS`` if set, else "CIDAS/clipseg-rd64-refined"
    (found in the Hugging Face cache, or downloaded when online). Local directories (relative
    ones from the project root) are never sent to the hub.
    """
    from transformers import CLIPSegForImageSegmentation

    source, via = clipseg_source(pretrained)
    path = local_path(source)
    if path is not None and not (path / "config.json").is_file():
        what = ("does not exist" if not path.exists() else
                "is not a directory saved with save_pretrained (config.json and "
                "model.safetensors expected)")
        raise WeightsNotFoundError(
            f"CLIPSeg weights: {path}{via} {what}; relative paths are taken from the project "
            f"root; {_where('CLIPSeg')}")
    try:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        return CLIPSegForImageSegmentation.from_pretrained(
            str(path) if path is not None else str(source), local_files_only=offline)
    except (OSError, ValueError) as err:
        raise WeightsNotFoundError(
            f"CLIPSeg weights {str(path or source)!r}{via} could not be loaded "
            f"({type(err).__name__}: {clean_message(err)}). Without internet, download "
            f"'{CLIPSEG_HUB_ID}' elsewhere and pass its folder or set ${ENV_CLIPSEG}; "
            f"{_where('CLIPSeg')}") from err


# -- reading checkpoint files ---------------------------------------------------------------
def is_torchscript(path: str | os.PathLike) -> bool:
    """True when the file is a TorchScript archive (a zip with a ``constants.pkl`` / code)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


_ACCEPTED = ("accepted: a torch.save'd dict of tensors (optionally under 'state_dict'), a "
             "safetensors file, or, with trust=True, a TorchScript archive or a checkpoint "
             "that needs full unpickling")


def _unpickling_reason(err: BaseException) -> str:
    """The part of torch's weights_only error that says what was refused."""
    text = clean_message(err, limit=10_000)
    found = re.search(r"WeightsUnpickler error:\s*(.*?)(?: Please use| Check the doc|$)", text) \
        or re.search(r"(Trying to load unsupported GLOBAL \S+ whose module \S+ is blocked)", text)
    return (found.group(1).strip() if found else text)[:300]


def read_state_dict(path: str | os.PathLike, *, trust: bool = False,
                    section: str = "CRIS") -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (relative paths from the project root).

    Safetensors and plain ``torch.save`` files load with ``weights_only=True``. A TorchScript
    archive (OpenAI's ``RN50.pt``) is loaded with ``torch.jit.load`` on the CPU, and a file
    that ``weights_only`` refuses (other pickled objects, e.g. an ``argparse.Namespace``) with
    ``torch.load(weights_only=False)``, only when ``trust=True``: both can run arbitrary code
    from the file. A dict with a ``state_dict`` (or ``model``) entry is unwrapped.
    """
    path = resolve(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint not found: {path} (relative paths are taken "
                                   f"from the project root); {_where(section)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - name the file whatever safetensors says
            raise ValueError(f"{path}: not a readable safetensors file "
                             f"({type(err).__name__}: {clean_message(err)}); {_ACCEPTED}; "
                             f"{_where(section)}") from err
    if is_torchscript(path):
        if not trust:
            raise UntrustedCheckpointError(
                f"{path} is a TorchScript archive (like OpenAI's RN50.pt): loading it runs code "
                "stored in the file, so it is only done with trust=True. Pass trust=True if the "
                f"file comes from a source you trust (e.g. OpenAI's CLIP release); "
                f"{_where(section)}")
        with warnings.catch_warnings():  # torch.jit is deprecated; OpenAI's file needs it
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
        if trust:
            obj = _load_unpickled(path, section)
        elif "global" in reason.lower() or "class" in reason.lower():
            raise UntrustedCheckpointError(
                f"{path} holds more than tensors ({reason}), so it cannot be read with "
                "torch.load(weights_only=True). Reading it needs full unpickling, which can run "
                "arbitrary code stored in the file: pass trust=True only if the file comes "
                f"from a source you trust; {_where(section)}") from err
        else:
            raise ValueError(f"{path}: not a readable checkpoint ({reason}); {_ACCEPTED}; "
                             f"{_where(section)}") from err
    except Exception as err:  # noqa: BLE001 - report any read failure with the file name
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                         f"{clean_message(err)}); {_ACCEPTED}; {_where(section)}") from err
    return unwrap_state_dict(obj, path)


def _load_unpickled(path: Path, section: str):
    """``torch.load(weights_only=False)`` of a trusted file, errors naming the file."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - report any unpickling failure with the file name
        raise ValueError(f"{path}: not a readable checkpoint, even with full unpickling "
                         f"({type(err).__name__}: {clean_message(err)}); {_ACCEPTED}; "
                         f"{_where(section)}") from err


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


def check_state_dict(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                     source, *, may_miss=frozenset(), what: str = "") -> None:
    """Raise :class:`StateDictMismatchError` unless ``state`` has exactly the keys of ``own``
    (keys in ``may_miss`` may be absent) with the same shapes; the message names the missing
    and unexpected keys, or the shapes that differ."""
    missing = set(own) - set(state) - set(may_miss)
    unexpected = set(state) - set(own)
    if missing or unexpected:
        raise StateDictMismatchError(describe_mismatch(missing, unexpected, f"{source}{what}"))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(state) if tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes:
        raise StateDictMismatchError(f"{source}{what}: shapes differ (weights of another model "
                                     "size?): " + "; ".join(shapes[:8]))


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source) -> None:
    """``load_state_dict(strict=True)`` with a message naming missing and unexpected keys
    (and shape mismatches): :class:`StateDictMismatchError`, a ``ValueError``."""
    check_state_dict(model.state_dict(), state, source)
    model.load_state_dict(dict(state), strict=True)


# -- CRIS -----------------------------------------------------------------------------------
CLIP_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _cris_source(pretrained, env: Mapping[str, str] | None = None,
                 root: str | os.PathLike | None = None) -> Path:
    """The file ``pretrained`` names. ``True``: ``$ECHO_VLSM_CRIS_WEIGHTS``, else
    ``weights/cris/cris_best.pth`` if it exists, else CLIP RN50 (``$ECHO_VLSM_CLIP_RN50``, else
    ``weights/clip/RN50.pt``), which loads the encoders only (with a warning). The variables
    are read from ``env`` (default ``os.environ``), relative paths taken from ``root`` (default
    the project root)."""
    if pretrained is not True:
        return resolve(pretrained, root)
    environ = os.environ if env is None else env
    cris_env = environ.get(ENV_CRIS)
    if cris_env:
        path = resolve(cris_env, root)
        if not path.is_file():
            raise WeightsNotFoundError(f"CRIS checkpoint not found at {path} (from ${ENV_CRIS});"
                                       f" {_where('CRIS')}")
        return path
    cris = resolve(DEFAULT_CRIS, root)
    if cris.is_file():
        return cris
    clip_env = environ.get(ENV_CLIP_RN50)
    clip = resolve(clip_env or DEFAULT_CLIP_RN50, root)
    if clip.is_file():
        warnings.warn(f"no CRIS checkpoint at {cris}: loading CLIP RN50 from {clip} into the "
                      "encoders only; the neck, decoder and projector start random "
                      f"({_where('CRIS')})", UserWarning, stacklevel=4)
        return clip
    if clip_env:
        raise WeightsNotFoundError(f"CLIP RN50 weights not found at {clip} (from "
                                   f"${ENV_CLIP_RN50}); {_where('CRIS')}")
    raise WeightsNotFoundError(
        f"CRIS checkpoint not found at {cris} (set ${ENV_CRIS} or put the file at "
        f"{DEFAULT_CRIS}), nor CLIP RN50 at {clip} (set ${ENV_CLIP_RN50} or put OpenAI's "
        f"RN50.pt at {DEFAULT_CLIP_RN50}); {_where('CRIS')}")


def cris_weights_file(pretrained, env: Mapping[str, str] | None = None,
                      root: str | os.PathLike | None = None) -> Path:
    """The file a CRIS ``pretrained`` value resolves to (as ``load_cris_pretrained`` resolves
    it, the variables read from ``env``), without reading it.

    Raises:
        WeightsNotFoundError: the variable's file or every default place is missing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CLIP-only fallback's warning: the load says it
        return _cris_source(pretrained, env, root)


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
        load_clip_into_backbone(model.get_submodule("backbone"), state, path)
        return "clip"
    raise StateDictMismatchError(
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
    check_state_dict(own, state, source, may_miss=connect, what=" (CLIP weights)")
    backbone.load_state_dict({**{k: own[k] for k in connect}, **state}, strict=True)


# -- provenance -----------------------------------------------------------------------------
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _hashed(paths) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in sorted(paths) if Path(p).is_file()}


def _local_record(record: dict, path: Path) -> dict:
    """The provenance of a local file, or of the weight files of a local folder."""
    files = [p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES] if path.is_dir() \
        else [path]
    return {**record, "kind": "local", "path": str(path), "revision": None,
            "files": _hashed(files)}


def weights_provenance(name: str, pretrained) -> dict | None:
    """What ``pretrained`` resolves to for model ``name`` (``clipseg`` or ``cris``), the way
    the loaders above resolve it (environment variables, default places, the hub cache),
    without loading anything: ``{"pretrained", "kind": "local" | "hub", "path" | "hub_id",
    "revision", "files": {path: sha256}}``; ``None`` for random weights. A hub id not in the
    local cache gets ``"files": {}`` and ``"revision": None``.

    Examples::

        >>> weights_provenance("cris", None) is None
        True
    """
    if pretrained is None or pretrained is False:
        return None
    record: dict = {"pretrained": pretrained if isinstance(pretrained, bool | str) else
                    str(pretrained)}
    path: Path | None
    if name == "cris":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the CLIP-only fallback's warning: the load says it
            path = _cris_source(pretrained)
        return _local_record(record, path)
    source = (os.environ.get(ENV_CLIPSEG) or CLIPSEG_HUB_ID) if pretrained is True else pretrained
    path = local_path(source)
    if path is not None:
        return _local_record(record, path)
    from huggingface_hub import try_to_load_from_cache

    found = []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(str(source), filename)
        if isinstance(cached, str):
            found.append(Path(cached))
            break
    revision = found[0].parent.name if found else None  # .../snapshots/<commit>/<file>
    return {**record, "kind": "hub", "hub_id": str(source), "revision": revision,
            "files": _hashed(found)}

