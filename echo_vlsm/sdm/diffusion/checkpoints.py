"""The files of an SDM run directory: writing them while training, reading them back.

A run directory holds::

    config.json          the SDMConfig (+ dataset and UNet spec)
    model.safetensors    ``model.<name>`` and ``ema.<name>`` weights; metadata: config, spec, step
    state.pt             everything to resume: weights, EMA, optimizer, step, random states,
                         history
    history.csv          step, loss, lr, seconds
    samples/step_<n>.png sample grids (label map, sample, real image)
    summary.json         steps, seconds, final loss, ``"done": true`` when training ended,
                         ``files``: size and SHA-256 of model.safetensors and history.csv

Each file is written atomically (a full disk: ``echo_vlsm.io.DiskFullError`` naming the file,
the previous file kept); ``load_sdm`` reads ``model.safetensors`` into an ``SDM``.
``weights_problem`` says whether ``model.safetensors`` is intact (its size fits its own
header and the summary's record); a damaged one is not a trained SDM. Every error about a
file of the run names it.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch

from echo_vlsm.device import autocast_dtype, resolve_device
from echo_vlsm.errors import PathError
from echo_vlsm.grid import (
    FILES_KEY,
    Problem,
    ProblemKind,
    file_records,
    files_problem,
    read_done_summary,
    read_summary,
    safetensors_problem,
)
from echo_vlsm.io import atomic_path, write_json_atomic, write_text_atomic
from echo_vlsm.sdm.diffusion.config import ARCH_FIELDS, SDMConfig, resolve_sdm_precision
from echo_vlsm.sdm.diffusion.ema import EMA
from echo_vlsm.sdm.diffusion.sampling import SDM
from echo_vlsm.sdm.diffusion.schedule import EpsilonModel
from echo_vlsm.sdm.unet import build_unet

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.json"
SAMPLES_DIR = "samples"
WEIGHTS = ("ema", "model")


def sample_grid_path(run_dir: Path, step: int) -> Path:
    return run_dir / SAMPLES_DIR / f"step_{step:06d}.png"


# --------------------------------------------------------------------------- writing


def write_config(run_dir: Path, config: SDMConfig, dataset_dir) -> None:
    write_json_atomic(run_dir / CONFIG_FILE, {**config.to_dict(), "dataset": str(dataset_dir),
                                              "spec": config.spec.to_dict()})


def save_weights(run_dir: Path, model: torch.nn.Module, ema: EMA, config: SDMConfig,
                 step: int) -> None:
    """``model.safetensors``: raw and EMA weights, the config and the step in its metadata."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.contiguous().cpu() for k, v in ema.state_dict().items()})
    meta = {"config": json.dumps(config.to_dict()), "spec": json.dumps(config.spec.to_dict()),
            "step": str(step)}
    with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        _sort_header(tmp)


def _sort_header(path: Path) -> None:
    """Rewrite a safetensors header with its keys sorted, in place and at the same length.

    ``safetensors`` writes the metadata in a hash map's order, which changes from process
    to process; sorted, the same weights give the same bytes (and SHA-256) whichever process
    wrote them (a resumed run, a rebuilt file). A header that would not fit stays as it is."""
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
        if len(text) <= n:
            f.seek(8)
            f.write(text + b" " * (n - len(text)))


def save_state(run_dir: Path, model: torch.nn.Module, ema: EMA, opt: torch.optim.Optimizer,
               step: int, gen: torch.Generator, history: list[dict]) -> None:
    """``state.pt``: what a resumed run needs to continue as if never stopped."""
    state = {
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": {k: v.cpu() for k, v in ema.state_dict().items()},
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
    }
    with atomic_path(run_dir / STATE_FILE) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # through a file object: the same state, the same bytes


def write_history(run_dir: Path, history: list[dict]) -> None:
    lines = ["step,loss,lr,seconds"]
    lines += [f"{h['step']},{h['loss']:.6f},{h['lr']:.3g},{h['seconds']:.2f}" for h in history]
    write_text_atomic(run_dir / HISTORY_FILE, "\n".join(lines) + "\n")


def write_summary(run_dir: Path, step: int, history: list[dict], done: bool) -> None:
    """``summary.json``; when ``done`` it records the size and SHA-256 of the weights and
    the history (``echo_vlsm.grid.file_records``)."""
    tail = [h["loss"] for h in history[-50:]]
    summary = {
        "steps": step,
        "seconds_total": round(history[-1]["seconds"], 2) if history else 0.0,
        "final_loss": float(np.mean(tail)) if tail else math.nan,
        "done": done,
    }
    if done:
        summary[FILES_KEY] = file_records(
            run_dir, [n for n in (WEIGHTS_FILE, HISTORY_FILE) if (run_dir / n).is_file()])
    write_json_atomic(run_dir / SUMMARY_FILE, summary)


def weights_problem(run_dir: str | os.PathLike, deep: bool = True) -> Problem | None:
    """Why ``<run_dir>/model.safetensors`` is not an intact trained SDM, or None: a
    ``Problem`` (``missing: model.safetensors`` or ``damaged: model.safetensors (...)``),
    from the file's own header (cut short) and, when the summary records it, its size and
    SHA-256."""
    run_dir = Path(run_dir)
    file = run_dir / WEIGHTS_FILE
    if not file.is_file():
        return Problem(ProblemKind.MISSING, WEIGHTS_FILE)
    problem = safetensors_problem(file)
    if problem is not None:
        return problem
    summary, _ = read_summary(run_dir)
    records = (summary or {}).get(FILES_KEY)
    if isinstance(records, dict) and isinstance(records.get(WEIGHTS_FILE), dict):
        return files_problem(run_dir, {WEIGHTS_FILE: records[WEIGHTS_FILE]}, deep=deep)
    return None


def sdm_problem(run_dir: str | os.PathLike) -> Problem | None:
    """Why ``run_dir`` is not a finished, intact SDM run (``summary.json`` done, the files it
    records as recorded), or None."""
    summary, problem = read_done_summary(run_dir)
    if problem is not None:
        return problem
    assert summary is not None  # read_done_summary gives a summary or a problem
    records = summary.get(FILES_KEY)
    if isinstance(records, dict) and records:
        problem = files_problem(run_dir, records)
    return problem or weights_problem(run_dir, deep=False)


def checkpoint(run_dir: Path, model, ema: EMA, opt, config: SDMConfig, step: int,
               gen: torch.Generator, history: list[dict]) -> None:
    """Weights, resume state and history of ``step``."""
    save_weights(run_dir, model, ema, config, step)
    save_state(run_dir, model, ema, opt, step, gen, history)
    write_history(run_dir, history)


# --------------------------------------------------------------------------- reading


def read_resume_state(run_dir: Path, config: SDMConfig) -> dict | None:
    """The ``state.pt`` of an earlier run in ``run_dir`` (None when there is none).

    Raises:
        PathError: the earlier run's ``config.json`` differs in a field that changes the
            network or its data (``ARCH_FIELDS``).
    """
    state_file = run_dir / STATE_FILE
    if not state_file.is_file():
        return None
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise PathError(state_file, f"cannot read the SDM's resume state ({_short(exc)}); "
                        "delete it to train the SDM from the start") from exc
    if not isinstance(state, dict) or not {"step", "model", "ema"} <= set(state):
        raise PathError(state_file, "not an SDM resume state (no step, model and ema); delete "
                        "it to train the SDM from the start")
    config_file = run_dir / CONFIG_FILE
    try:
        old = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError(f"a JSON {type(old).__name__}, not an object")
    except (OSError, ValueError) as exc:
        raise PathError(config_file, f"cannot read the SDM run's config ({_short(exc)}), "
                        f"needed to resume from {STATE_FILE}; delete {STATE_FILE} to train "
                        "the SDM from the start") from exc
    for key in ARCH_FIELDS:
        new_v = json.loads(json.dumps(config.to_dict()[key]))
        if old.get(key) != new_v:
            raise PathError(run_dir / CONFIG_FILE,
                            f"{key}={old.get(key)!r} differs from the requested {new_v!r}; "
                            f"resume with the same {key} or choose a new run directory")
    return state


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``history.csv`` (step, loss, lr, seconds)."""
    import pandas as pd

    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training history; train the SDM first")
    try:
        return pd.read_csv(path).to_dict("records")
    except (ValueError, pd.errors.ParserError) as exc:
        raise PathError(path, f"not a readable history ({_short(exc)})") from exc


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith("Weights only load failed"):  # torch's long advice, of no use here
        text = f"damaged, or not a state this project writes: {type(exc).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def epsilon_model(config: SDMConfig, state: dict[str, torch.Tensor], device: torch.device,
                  channels_last: bool, source: str | os.PathLike) -> EpsilonModel:
    """The network of ``config`` with the weights ``state``, on ``device``, in eval mode.

    Raises:
        PathError: the weights (from ``source``) do not fit the network.
    """
    net = build_unet(config.spec)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PathError(source, f"weights do not fit the {config.size} SDM "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    net = net.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return EpsilonModel(net, config.parameterization).to(device).eval()


def load_sdm(path: str | os.PathLike, device: str = "auto", weights: str = "ema",
             precision: str = "auto") -> SDM:
    """Load a trained SDM from a run directory or its ``model.safetensors``.

    Args:
        weights: ``ema`` (default, what sampling should use) or ``model`` (the raw weights).
        precision: ``auto`` (bf16 on a GPU that supports it, else fp32), ``bf16`` or ``fp32``.

    Raises:
        FileNotFoundError: no checkpoint there.
        PathError: a file that is not an SDM checkpoint, or weights that do not fit.
    """
    from safetensors import safe_open

    path = Path(path)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no SDM checkpoint; train one (train_sdm, notebook 02) "
                                "or pass a run directory holding model.safetensors")
    if weights not in WEIGHTS:
        raise ValueError(f"weights {weights!r}: expected 'ema' or 'model'")
    problem = weights_problem(file.parent, deep=False) if file.name == WEIGHTS_FILE \
        else safetensors_problem(file)
    if problem is not None:  # the file is there: damaged, its reason in the detail
        raise PathError(file, f"damaged SDM checkpoint ({problem.detail or problem}); train "
                        f"the SDM again (train_sdm rebuilds it from {STATE_FILE} when that "
                        "is there)")
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            if "config" not in meta:
                raise PathError(file, "lacks the SDM config in its metadata; not an SDM "
                                "checkpoint")
            config = SDMConfig.from_dict(json.loads(meta["config"]))
            prefix = f"{weights}."
            state = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except PathError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors/json/config errors name no file
        raise PathError(file, f"not a readable SDM checkpoint ({_short(exc)})") from exc
    if not state:
        raise PathError(file, f"holds no {weights!r} weights (keys '{weights}.*')")
    dev = resolve_device(device)
    model = epsilon_model(config, state, dev, config.uses_channels_last, file)
    dtype = autocast_dtype(resolve_sdm_precision(precision, dev))
    return SDM(model, config, dev, dtype, config.uses_channels_last, int(meta.get("step", 0)))
