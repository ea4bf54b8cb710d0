"""Checkpoints of a run: the best weights as safetensors, and a resumable training state.

- ``model.safetensors``: the weights with the best validation Dice (the only file later steps
  read); loaded with ``load_weights``.
- ``state.pt``: everything needed to continue after an interruption (weights, optimizer,
  scheduler, gradient scaler, epoch, best score, random states of torch, numpy and Python,
  history). It holds only tensors and plain Python values, so it loads with
  ``torch.load(weights_only=True)``.

Both are written atomically (temporary file + rename): a run killed while writing keeps the
previous file, and a full disk raises ``echo_vlsm.io.DiskFullError`` naming the file and the
space free, the previous file kept. ``state.pt`` goes through a file object, so the same
state always gives the same bytes (written to a path, torch names the archive's records after
the random temporary name).
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from echo_vlsm.grid import STATE_FILE, WEIGHTS_FILE, safetensors_problem
from echo_vlsm.io import atomic_path

if TYPE_CHECKING:
    from echo_vlsm.models.base import SegmentationModel

__all__ = [
    "STATE_FILE", "WEIGHTS_FILE", "BackgroundWriter", "cpu_copy", "load_state", "load_weights",
    "rng_state", "save_state", "save_weights", "set_rng_state", "unwrap", "unwrap_segmentation",
]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(inner := model.module, nn.Module):
            model = inner
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = cast(nn.Module, model._orig_mod)
        else:
            return model


def unwrap_segmentation(model: nn.Module) -> SegmentationModel:
    """:func:`unwrap`, typed as the segmentation contract (``spec``, ``tokenize``) for the
    type checker; nothing is checked at run time."""
    return cast("SegmentationModel", unwrap(model))


def save_weights(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save a model's weights as safetensors, atomically (tensors shared between parameters
    are stored once, as ``safetensors.torch.save_model`` does)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_model(unwrap(model), str(tmp), metadata={"format": "pt"})
    return path


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load safetensors weights into ``model``; errors name the file and the mismatching keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    problem = safetensors_problem(path)
    if problem is not None:
        redo = (" (fit trains a run with damaged weights again)" if path.name == WEIGHTS_FILE
                else "")
        raise ValueError(f"{path}: damaged weights file ({problem.detail}); write it again or "
                         f"delete it{redo}")
    try:
        missing, unexpected = load_model(unwrap(model), str(path), strict=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load these weights into {type(unwrap(model)).__name__} "
                         f"({exc})") from exc
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: weights do not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]} (was it saved from another model, "
                         "size or architecture?)")
    return model


# -- random states --------------------------------------------------------------------------
def rng_state() -> dict:
    """Random states of torch (CPU and CUDA), numpy's global generator and Python's ``random``,
    as tensors and plain values (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # legacy=True (the default): MT19937's 5-tuple
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


# -- resumable state ------------------------------------------------------------------------
def save_state(path: str | os.PathLike, state: dict) -> Path:
    """Write the resumable training state atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # through a file object: the same state, the same bytes
    return path


def load_state(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a state written by :func:`save_state` (``weights_only=True``)."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        if not first or first.startswith("Weights only load failed"):  # torch's long advice
            first = f"damaged, or not a state this project writes: {type(exc).__name__}"
        raise ValueError(f"{path}: cannot read the training state ({first}); delete it to "
                         "start the run afresh") from exc


def cpu_copy(obj):
    """A copy of nested dicts/lists/tuples of tensors with every tensor on the CPU (a snapshot
    that later training steps do not change)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


class BackgroundWriter:
    """Runs one write job at a time in a thread, so that saving the resumable state (the
    optimizer's moments included: three times the trainable weights) overlaps the next epoch.
    ``submit`` waits for the previous job; ``wait`` re-raises a job's error."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, fn, *args) -> None:
        self.wait()

        def run():
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="echo-vlsm-state-writer")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
