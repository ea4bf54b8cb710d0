"""Where a demo training job's time goes: its fixed cost against its training epochs.

    nice -n 10 python benchmarks/job_cost.py [--work DIR] [--model clipseg] [--epochs 3]

One demo job: the demo profile's parameters for ``<model>`` real P1 with trained encoders
(its learning rate, batch, schedule and stopping rule), one thread, on the demo's dataset
(``convergence.build_data``: notebooks 01 and 03 with the demo's values), its triplet cache
warm as it is for every demo job but the first. ``--epochs`` caps it (a converged demo job
runs 40-60 epochs; ``benchmarks/convergence.py``): the per-epoch costs scale to any length.
Measured twice, each in a fresh process:

1. ``fit`` in process with timers wrapped around the functions it calls (they read the clock
   and call through: the run's results are unchanged): the imports, building the model,
   loading the training and validation sets, the initial validation, each epoch's training
   steps, validation and saved state, the test pass at the stored 512 px (its test-split
   load, forward passes, metrics with HD95, clinical indices), the rest of ``fit``, then the
   two figures notebook 04 draws (``plot_history``, ``show_predictions``); and, apart, what
   the first demo job pays once to fill the triplet cache (the same loads, cold);
2. notebook 04 under papermill as the runner executes it (``pipeline.worker``), the duration
   of each cell from the executed notebook: the kernel's start is the wall time in no cell.

Writes the ``job_cost`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

# benchmarks/ on the path for _results and convergence, imported where used: the timed child
# process must start without torch
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}


def demo_parameters(model: str, epochs: int, data: Path, runs_root: Path) -> dict[str, Any]:
    """Notebook 04's parameters for the demo's ``model`` real P1 run (the runner's), with the
    epoch cap ``epochs`` and the benchmark's folders."""
    from echo_vlsm.grid import Run
    from echo_vlsm.pipeline.profiles import load_profile

    prof = load_profile("demo", ROOT)
    run = Run(model, "real", "trained", "p1")
    params = prof.run_parameters(run)
    params.update(epochs=epochs, real_dir=str(data), synthetic_dir=str(data),
                  runs_root=str(runs_root))
    return params


class Timers:
    """Seconds per label, one entry per call of each wrapped function."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = defaultdict(list)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        inner: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.calls[label].append(time.perf_counter() - t0)

        setattr(owner, name, timed)


def child(model: str, epochs: int, work: Path, converged_dir: str | None) -> dict[str, Any]:
    """Phase 1 (run in a fresh interpreter): one timed ``fit`` and notebook 04's figures."""
    t0 = time.perf_counter()
    import torch

    t_torch = time.perf_counter()
    torch.set_num_threads(1)
    from echo_vlsm.train import TrainConfig, engine, fit, fitting, scoring

    t_imports = time.perf_counter()
    params = demo_parameters(model, epochs, work / "data", work / "runs-fit")
    config = TrainConfig(**{k: v for k, v in params.items()
                            if k in TrainConfig.__dataclass_fields__})
    shutil.rmtree(config.run_dir, ignore_errors=True)
    from echo_vlsm.train.data import build

    t_first = time.perf_counter()
    build(config, torch.device("cpu"))  # as fit's first build: the model library's imports
    first_build = time.perf_counter() - t_first
    cold = cold_loads(config)
    timers = Timers()
    for owner, name, label in (
            (fitting, "build", "build model"),
            (fitting, "load_training_data", "load train + val sets"),
            (engine, "validate", "validation"),
            (engine.Engine, "train_epoch", "epoch"),
            (engine, "save_weights", "save best weights"),
            (engine, "_write_state", "write state.pt (background)"),
            (fitting, "evaluate", "test pass"),
            (scoring, "load_split", "test: load split (full masks)"),
            (scoring, "predict", "test: forward + resize to 512"),
            (scoring, "segmentation_metrics", "test: dice, IoU, HD95"),
            (scoring, "_clinical", "test: clinical indices")):
        timers.wrap(owner, name, label)
    t_fit = time.perf_counter()
    result = fit(config, progress=False)
    t_done = time.perf_counter()
    fit_calls = {k: list(v) for k, v in timers.calls.items()}  # before the figures' calls
    converged = converged_test(config, Path(converged_dir), timers) if converged_dir else None
    import matplotlib

    matplotlib.use("Agg")
    from echo_vlsm.train.plots import plot_history, show_predictions

    t_fig = time.perf_counter()
    plot_history(result.history, result.summary)
    t_hist = time.perf_counter()
    show_predictions(config, n=6)
    t_pred = time.perf_counter()
    return {"import torch": t_torch - t0, "import echo_vlsm.train": t_imports - t_torch,
            "first build": first_build, "fit": t_done - t_fit, "calls": fit_calls,
            "cold": cold, "converged": converged,
            "plot_history": t_hist - t_fig, "show_predictions": t_pred - t_hist,
            "epochs_run": int(result.summary["epochs_run"]),
            "test_dice": float(result.metrics["dice"].mean()),
            "history_seconds": [float(s) for s in result.history["seconds"]],
            "n_train": int(result.summary["n_train"]), "n_val": int(result.summary["n_val"]),
            "n_test": int(result.summary["n_test"])}


def converged_test(config: Any, run_dir: Path, timers: Timers) -> dict[str, Any]:
    """The test pass of a converged run's best weights (``run_dir``: a finished demo run of
    the same cell, e.g. ``benchmarks/convergence.py``'s), scored into a scratch folder: its
    cost depends on the predictions (HD95 on a noisy under-trained mask costs more)."""
    import dataclasses
    import json as _json

    from echo_vlsm.train import scoring

    weights = run_dir / "model.safetensors"
    summary = _json.loads((run_dir / "summary.json").read_text())
    before = {k: len(v) for k, v in timers.calls.items()}
    with tempfile.TemporaryDirectory() as scratch:
        cfg = dataclasses.replace(config, runs_root=scratch)
        cfg.run_dir.mkdir(parents=True)
        t0 = time.perf_counter()
        metrics = scoring.evaluate(cfg, weights=weights, write=True, progress=False)
        total = time.perf_counter() - t0
    parts = {k: sum(v[before.get(k, 0):]) for k, v in timers.calls.items()
             if len(v) > before.get(k, 0)}
    return {"run": str(run_dir), "epochs_run": summary.get("epochs_run"), "total": total,
            "parts": parts, "test_dice": float(metrics["dice"].mean())}


def cold_loads(config: Any) -> dict[str, float]:
    """What the first demo job pays once: the training, validation and test sets loaded into
    an empty triplet cache (decode, resize, tokenize, write), against the same loads warm."""
    import dataclasses

    import torch

    from echo_vlsm.train.data import build, load_split, load_training_data

    model = build(config, torch.device("cpu"))
    out = {}
    with tempfile.TemporaryDirectory() as empty:
        for label, cfg in (("cold", dataclasses.replace(config, cache_dir=empty)),
                           ("warm", config)):
            t0 = time.perf_counter()
            load_training_data(cfg, model, "cpu", progress=False)
            load_split(cfg, model, cfg.test_dir, "test", "cpu", full_masks=True,
                       progress=False)
            out[label] = time.perf_counter() - t0
    return out


def notebook(model: str, epochs: int, work: Path) -> dict[str, Any]:
    """Phase 2: notebook 04 under papermill as the runner runs it; each cell's seconds."""
    import nbformat

    from echo_vlsm.pipeline.worker import execute_notebook

    runs = work / "runs-notebook"
    shutil.rmtree(runs, ignore_errors=True)
    params = demo_parameters(model, epochs, work / "data", runs)
    out = work / "04_executed.ipynb"
    t0 = time.perf_counter()
    execute_notebook(ROOT / "notebooks" / "04_train_vlsm.ipynb", out, params, ROOT)
    wall = time.perf_counter() - t0
    nb = nbformat.read(out, as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        text = cell.source
        if "injected-parameters" in cell.metadata.get("tags", []):
            text = "injected"
        name = next((label for key, label in NOTEBOOK_CELLS if key in text), text[:30])
        cells.append((name, float(cell.metadata.get("papermill", {}).get("duration") or 0)))
    return {"wall": wall, "cells": cells}


#: Notebook 04's code cells, by a piece of their source.
NOTEBOOK_CELLS = (
    ("google.colab", "Colab install guard"), ("injected", "injected parameters"),
    ("model = ", "parameters"), ("print_environment", "imports + print_environment"),
    ("TrainConfig(", "import echo_vlsm.train + TrainConfig"), ("fit(config", "fit"),
    ("plot_history", "plot_history"), ("groupby(\"structure\")", "metrics table"),
    ("show_predictions", "show_predictions"), ("iterdir", "run folder listing"))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


TEST_PARTS = ("test: load split (full masks)", "test: forward + resize to 512",
              "test: dice, IoU, HD95", "test: clinical indices")


def _test_rows(parts: dict[str, float], total: float, prefix: str) -> list[tuple[str, float]]:
    rows = [(f"{prefix}: {p[6:]}", parts.get(p, 0.0)) for p in TEST_PARTS]
    return rows + [(f"{prefix}: the rest (rows, metrics.csv, clinical.csv)",
                    total - sum(v for _, v in rows))]


def fixed_costs(fit_: dict[str, Any]) -> list[tuple[str, float]]:
    """The once-per-job costs of the in-process run (the test pass: its own weights)."""
    calls = fit_["calls"]
    val = calls.get("validation", [])
    test = sum(calls.get("test pass", []))
    build, load = sum(calls.get("build model", [])), sum(calls.get("load train + val sets", []))
    rest = (fit_["fit"] - build - load - (val[0] if val else 0.0)
            - sum(calls.get("epoch", [])) - test)
    parts = {p: sum(calls.get(p, [])) for p in TEST_PARTS}
    return [("import torch", fit_["import torch"]),
            ("import echo_vlsm.train (and what it imports)", fit_["import echo_vlsm.train"]),
            ("first model build in the process (the model library's imports)",
             fit_["first build"]),
            ("build the model again (fit's own)", build),
            ("load the training and validation sets (warm cache)", load),
            ("initial validation (before epoch 1)", val[0] if val else 0.0),
            *_test_rows(parts, test, "test pass"),
            ("rest of fit (optimizer, best weights reloaded, summary, file hashes)", rest),
            ("notebook figure: plot_history", fit_["plot_history"]),
            ("notebook figure: show_predictions", fit_["show_predictions"])]


def per_epoch_costs(fit_: dict[str, Any]) -> list[tuple[str, float]]:
    calls = fit_["calls"]
    val = calls.get("validation", [])[1:]
    train_only = [e - v for e, v in zip(calls.get("epoch", []), val)]
    return [("training steps", _mean(train_only)), ("validation (48 triplets)", _mean(val)),
            ("state.pt + history.csv, background thread (overlaps the next epoch)",
             _mean(calls.get("write state.pt (background)", []))),
            ("best weights saved (on the epochs that improved)",
             _mean(calls.get("save best weights", [])))]


def report(fit_: dict[str, Any], nb: dict[str, Any], model: str, epochs: int,
           load: tuple[float, float]) -> str:
    """The RESULTS.md section: the in-process breakdown, then the notebook's cells."""
    from _results import machine

    fixed, per_epoch = fixed_costs(fit_), per_epoch_costs(fit_)
    fixed_total = sum(v for _, v in fixed)
    epoch_mean = _mean(fit_["calls"].get("epoch", []))
    table = ["| fixed cost, once per job | seconds |", "|---|---|",
             *[f"| {k} | {v:.2f} |" for k, v in fixed],
             f"| **fixed, total** | **{fixed_total:.1f}** |", "",
             f"| per epoch (mean of {fit_['epochs_run']}) | seconds |", "|---|---|",
             *[f"| {k} | {v:.2f} |" for k, v in per_epoch],
             f"| **epoch, total** | **{epoch_mean:.2f}** |"]
    lines = ["## Where a demo job's time goes (`benchmarks/job_cost.py`)", "",
             f"Machine: {machine()}; one thread per process; load average {load[0]:.1f} before "
             f"and {load[1]:.1f} after (a shared machine: other jobs' load is in every "
             f"number). The demo's {model} real P1 job (trained encoders, its profile's lr, "
             f"batch, schedule) capped at {epochs} epochs: {fit_['n_train']} training, "
             f"{fit_['n_val']} validation and {fit_['n_test']} test triplets.", "",
             "**In process**, `fit` with timers around the functions it calls:", "", *table,
             "", f"A cold triplet cache (the first demo job only) loads the three splits in "
             f"{fit_['cold']['cold']:.1f} s against {fit_['cold']['warm']:.1f} s warm."]
    conv = fit_.get("converged")
    test_converged = None
    if conv:
        test_converged = conv["total"]
        rows = _test_rows(conv["parts"], conv["total"], "test pass")
        lines += ["", f"The test pass of a converged run's weights ({conv['epochs_run']} "
                  f"epochs, test dice {conv['test_dice']:.1f}; the under-trained model's "
                  "noisy masks make HD95 dearer):", "", "| converged weights | seconds |",
                  "|---|---|", *[f"| {k} | {v:.2f} |" for k, v in rows],
                  f"| **test pass, total** | **{conv['total']:.1f}** |"]
    cells = nb["cells"]
    in_cells = sum(v for _, v in cells)
    lines += ["", "**Notebook 04 under papermill** (the runner's call, the same job; each "
              "cell's duration from the executed notebook):", "", "| cell | seconds |",
              "|---|---|", "| kernel start and papermill (wall time in no cell) | "
              f"{nb['wall'] - in_cells:.2f} |", *[f"| {k} | {v:.2f} |" for k, v in cells],
              f"| **job, wall** | **{nb['wall']:.1f}** |", ""]
    once = [(k, v) for k, v in fixed if not k.startswith("test pass")]
    once += _test_rows(conv["parts"], conv["total"], "test pass (converged)") if conv else [
        (k, v) for k, v in fixed if k.startswith("test pass")]
    top = sorted(once, key=lambda kv: -kv[1])[:4]
    lines.append("- The largest fixed costs of a converged job: "
                 + "; ".join(f"{k} {v:.1f} s" for k, v in top) + ".")
    if test_converged is not None:
        own = sum(fit_["calls"].get("test pass", []))
        fixed_total += test_converged - own
    val = per_epoch[1][1]
    for e in (46, 56):
        job = fixed_total + e * epoch_mean
        lines.append(f"- A converged job of {e} epochs (the demo's real P1 runs: CLIPSeg 46, "
                     f"CRIS 56): about {job:.0f} s in process, of which {fixed_total:.0f} s "
                     f"fixed ({100 * fixed_total / job:.0f} %, the converged test pass "
                     f"counted) and {e * val:.0f} s validation ({100 * e * val / job:.0f} %); "
                     f"the notebook adds the kernel's start.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-job-cost")
    ap.add_argument("--model", default="clipseg", choices=["clipseg", "cris"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--converged", type=Path, default=None,
                    help="a finished demo run of the same cell (default: benchmarks/"
                         "convergence.py's, under .cache/bench-convergence, if there)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md alone")
    args = ap.parse_args()
    os.environ.update(ENV)
    converged = args.converged or (ROOT / ".cache" / "bench-convergence" / "runs" / "demo"
                                   / f"{args.model}_real_trained_p1")
    converged_dir = str(converged) if (converged / "summary.json").is_file() else None
    if args.child:
        print(json.dumps(child(args.model, args.epochs, args.work, converged_dir)))
        return
    from convergence import build_data

    build_data(args.work)
    load_before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, "--child", "--work", str(args.work),
                           "--model", args.model, "--epochs", str(args.epochs),
                           *(["--converged", converged_dir] if converged_dir else [])],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"the timed fit failed:\n{proc.stderr[-4000:]}")
    fit_ = json.loads(proc.stdout.strip().splitlines()[-1])
    nb = notebook(args.model, args.epochs, args.work)
    text = report(fit_, nb, args.model, args.epochs, (load_before, os.getloadavg()[0]))
    print(text)
    (args.work / "job_cost.json").write_text(json.dumps({"fit": fit_, "notebook": nb},
                                                        indent=1))
    if not args.no_write:
        from _results import update_section

        update_section("job_cost", text)


if __name__ == "__main__":
    main()
