"""Converged means converged: the demo's real P1 runs against a reference run per model.

The reference trains the same run (the demo's data, sizes, learning rate, batch and plateau
schedule) with early stopping after 20 epochs without a better validation dice under a cap of
200 epochs; the demo's own settings (its profile's ``patience`` and ``epochs``) must land
within 3 test-dice points of it. All runs of one call share the machine (a pool of
``--jobs`` processes, one thread each), so their seconds compare.

    python benchmarks/convergence.py [--work DIR] [--jobs 2] [--models clipseg cris]

The demo's dataset is written into ``DIR/data`` by the same calls notebooks 01 and 03 make
with the demo profile's parameters (resumable). Writes the `convergence` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, update_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 3.0  # test dice points
REFERENCE = {"patience": 20, "epochs": 200}


def build_data(work: Path) -> Path:
    """The demo's real dataset and task files (notebooks 01 and 03 with the demo's values)."""
    from echo_vlsm.data import phantom
    from echo_vlsm.data.camus import read_camus
    from echo_vlsm.data.export import export_dataset
    from echo_vlsm.pipeline.profiles import load_profile
    from echo_vlsm.prompts import write_tasks

    step = load_profile("demo", ROOT).steps["01_data_preparation"]
    raw = phantom.write_phantom(work / "raw", step["n_patients"], step["seed"], step["layout"],
                                splits=step.get("splits"))
    out = work / "data"
    if not (out / "tasks").is_dir():
        export_dataset(read_camus(raw), out, size=step["size"])
        write_tasks(out, "camus", "geometry")
    return out


def train(args: tuple[str, str, dict, str]) -> dict:
    """One run in a fresh process with one thread; its test dice, epochs and seconds."""
    import torch

    torch.set_num_threads(1)
    from echo_vlsm.pipeline.profiles import load_profile
    from echo_vlsm.train import TrainConfig, fit

    model, label, override, work = args
    prof = load_profile("demo", ROOT)
    params = {**prof.train, **prof.models.get(model, {}), **override,
              "model": model, "prompt": "p1", "strategy": "real", "encoders": "trained",
              "real_dir": str(Path(work) / "data"), "runs_root": str(Path(work) / "runs" / label)}
    fields = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig(**{k: v for k, v in params.items() if k in fields})
    t0 = time.perf_counter()
    result = fit(config, progress=False)
    return {"model": model, "label": label, "patience": config.early_stopping,
            "cap": config.epochs, "epochs_run": int(result.summary["epochs_run"]),
            "best_epoch": int(result.summary["best_epoch"]),
            "stopped_by": result.summary.get("stopped_by", "?"),
            "test_dice": float(result.metrics["dice"].mean()),
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-convergence")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["clipseg", "cris"])
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    build_data(args.work)
    todo = [(m, label, override, str(args.work)) for m in args.models
            for label, override in (("reference", REFERENCE), ("demo", {}))]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(train, todo))
    lines = ["| model | run | patience | cap | epochs run | best epoch | stopped by | "
             "test dice | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for r in rows:
        lines.append(f"| {r['model']} | {r['label']} | {r['patience']} | {r['cap']} | "
                     f"{r['epochs_run']} | {r['best_epoch']} | {r['stopped_by']} | "
                     f"{r['test_dice']:.1f} | {r['seconds']:.0f} |")
    for m in args.models:
        ref, demo = (next(r for r in rows if r["model"] == m and r["label"] == k)
                     for k in ("reference", "demo"))
        gap = demo["test_dice"] - ref["test_dice"]
        ok = abs(gap) <= TOLERANCE
        verdicts.append(f"- {m}: demo minus reference {gap:+.1f} test dice points "
                        f"({'within' if ok else 'NOT within'} {TOLERANCE:.0f}); the demo's "
                        f"run took {demo['seconds'] / ref['seconds']:.2f}x the reference's time")
    text = "\n".join([
        "## Converged demo runs against a reference (real P1)", "",
        f"Machine: {machine()}; {args.jobs} runs at a time, one thread each.", "",
        *lines, "", *verdicts])
    print(text)
    update_section("convergence", text)


if __name__ == "__main__":
    main()
