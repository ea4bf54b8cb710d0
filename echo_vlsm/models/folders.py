"""Model folders from elsewhere (``segment``, ``build_model(pretrained=<exported folder>)``):
only safetensors, JSON and the tokenizer's vocabulary are read from them, and a folder holding a
format that runs code when loaded (pickle, ``torch.save``) is refused before anything is built.
The vocabulary's own check is ``tokenizer.check_vocabulary``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from echo_vlsm.errors import PathError
from echo_vlsm.models.weights import StateDictMismatchError, describe_mismatch

#: Suffixes of formats that run code when loaded (pickle, torch.save, Lightning checkpoints):
#: a model folder holding one is refused, even though nothing would read it.
CODE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".dill")
#: A safetensors header larger than this is refused before it is parsed.
MAX_HEADER_BYTES = 100 << 20
_MAX_FILES = 1000


class ModelFileError(PathError):
    """A file of a model folder that is refused: a format that runs code when loaded, a
    ``config.json`` naming an unknown model, weights that do not fit, a bad vocabulary."""


def _runs_code(path: Path) -> str | None:
    """Why ``path`` looks like a format that runs code when loaded, or None."""
    if path.suffix.lower() in CODE_SUFFIXES:
        return f"a {path.suffix} file"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a pickle (by its first bytes)"
    if head == b"PK\x03\x04":
        return "a zip archive (torch.save's format, by its first bytes)"
    return None


def _named_file(folder: Path, config: Mapping, key: str, default: str, suffix: str) -> Path:
    """The file ``config[key]`` names: a plain file name inside ``folder`` ending ``suffix``."""
    name = config.get(key, default) if key != "vocabulary" else \
        (config.get("tokenizer") or {}).get("vocabulary", default)
    if not isinstance(name, str) or not name.endswith(suffix) or Path(name).name != name \
            or name.startswith("."):
        raise ModelFileError(folder / "config.json", f"{key} {name!r}: expected a file name "
                             f"inside the folder ending in {suffix}")
    return folder / name


def check_model_folder(folder: str | os.PathLike, config: Mapping) -> tuple[Path, Path]:
    """Check an exported model folder (``config``: its ``config.json``) before anything is
    built or read from it: a known model, size and encoders; weights and vocabulary named as
    plain files inside it; no file in a format that runs code when loaded (``CODE_SUFFIXES``,
    or a pickle or zip by its first bytes), wherever it lies in the folder; the weights a
    safetensors file with a sound header. Returns ``(weights, vocabulary)``.

    Raises:
        ModelFileError: naming the file and the problem.
    """
    from echo_vlsm.grid import ENCODERS, MODELS, SIZES

    folder = Path(folder)
    cfg = folder / "config.json"
    for key, known in (("model", MODELS), ("size", SIZES), ("encoders", ENCODERS)):
        value = config.get(key, "trained" if key == "encoders" else None)
        if value not in known:
            raise ModelFileError(cfg, f"{key} {value!r} unknown; expected one of {list(known)}")
    weights = _named_file(folder, config, "weights", "model.safetensors", ".safetensors")
    vocab = _named_file(folder, config, "vocabulary", "bpe_simple_vocab_16e6.txt.gz", ".gz")
    files = [p for p in sorted(folder.rglob("*"))[:_MAX_FILES] if p.is_file()
             and ".git" not in p.relative_to(folder).parts]
    for path in files:
        why = _runs_code(path)
        if why is not None:
            raise ModelFileError(path, f"{why}: a model folder is read only from safetensors, "
                                       "JSON and the tokenizer's vocabulary, and a folder "
                                       "holding a format that runs code when loaded is refused;"
                                       " delete the file if you trust the rest")
    safetensors_shapes(weights)
    return weights, vocab


def safetensors_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from a safetensors file's header, read without its tensors.

    Raises:
        FileNotFoundError: no such file; ModelFileError: not a safetensors file (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the model folder is incomplete (write it "
                                "again with echo-vlsm export-model)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 1 or n > min(MAX_HEADER_BYTES, size - 8):
            raise ModelFileError(path, f"not a safetensors file (header length {n} for a file "
                                       f"of {size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()
                  if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ModelFileError(path, f"not a safetensors file (its header: {err})") from err
    return shapes


def check_safetensors_fits(path: str | os.PathLike, own: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`StateDictMismatchError` (naming ``path``) when the file's header has a
    key that ``own`` (a model's state dict) lacks, or a shape that differs; no tensor is read.
    Keys the file lacks are left to the load, which knows the tensors safetensors shares."""
    shapes = safetensors_shapes(path)
    unexpected = set(shapes) - set(own)
    if unexpected:
        raise StateDictMismatchError(describe_mismatch(set(), unexpected, path))
    wrong = [f"{k}: file {shapes[k]} vs model {tuple(own[k].shape)}" for k in sorted(shapes)
             if shapes[k] != tuple(own[k].shape)]
    if wrong:
        raise StateDictMismatchError(f"{path}: shapes differ (weights of another model or "
                                     "size?): " + "; ".join(wrong[:8]))
