"""A frozen-encoder epoch with the frozen cache against without it, both models, in one run.

For each model and size: the run is prepared as ``fit`` prepares it (``fitting.prepare``:
the model, the decoded splits, and with the cache the frozen encoders' outputs of both
splits, computed and written to a fresh cache folder), then one epoch is timed
(``Engine.train_epoch``: the training steps and the validation pass) with and without the
cache, alternately, the fastest of ``--repeat`` kept. The cache's one-off build is reported
beside (how many uncached epochs it costs).

* paper size: the study's architectures (random weights: the cost does not depend on them),
  a fast-dev-run epoch (``--paper-batches`` training and validation batches of
  ``--paper-batch`` triplets) on a 5-patient phantom (16 training images, 4 validation);
* demo size: the demo's tiny models, batch 16 and learning rates, full epochs on a phantom
  with the demo's 14 training and 4 validation patients.

    nice -n 10 python benchmarks/frozen_cache.py              # both sizes, both models
    python benchmarks/frozen_cache.py --sizes tiny --repeat 3

Target (issue 20): >= 3x for CLIPSeg at paper size.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from echo_vlsm.train import TrainConfig  # noqa: E402
from echo_vlsm.train import distributed as D  # noqa: E402
from echo_vlsm.train.engine import Engine  # noqa: E402
from echo_vlsm.train.fitting import prepare  # noqa: E402

TITLE = "## Frozen encoders computed once (`benchmarks/frozen_cache.py`)"
#: The demo's batch sizes and learning rates (notebooks/params/demo.yaml).
DEMO = {"clipseg": {"batch_size": 16, "lr": 5e-4}, "cris": {"batch_size": 16, "lr": 1e-4}}


def make_dataset(root: Path, train: int, val: int) -> Path:
    """A phantom of ``train`` + ``val`` (+ 1 test) patients exported at 128 px, with tasks."""
    from echo_vlsm.data.camus import read_camus
    from echo_vlsm.data.export import export_dataset
    from echo_vlsm.data.phantom import write_phantom
    from echo_vlsm.prompts import write_tasks

    camus = write_phantom(root / "camus", n_patients=train + val + 1, seed=0, workers=0,
                          splits={"train": train, "val": val, "test": 1})
    out = export_dataset(read_camus(camus), root / "phantom", size=128, workers=0)
    write_tasks(out)
    return out


def on_demo_data(name: str, models: list[str], measure) -> tuple[list[dict], float]:
    """``measure(model, data, work)`` for each of ``models``, one thread, on a demo-sized
    phantom (14 + 4 patients, ``make_dataset``) in a temporary folder removed afterwards;
    returns the rows and the seconds it all took."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"echo_vlsm_{name}_"))
    try:
        data = make_dataset(work / "data", 14, 4)
        rows = [measure(m, data, work / m) for m in models]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, time.perf_counter() - t0


def demo_real_run(model: str, data: Path, work: Path, prompt: str = "p1") -> TrainConfig:
    """The demo's real run of ``model`` on ``data`` (tiny, trained encoders, its batch and
    learning rate, fp32 on the CPU, seed 0), its runs and cache under ``work``."""
    return TrainConfig(model=model, size="tiny", encoders="trained", prompt=prompt,
                       strategy="real", device="cpu", real_dir=str(data),
                       synthetic_dir=str(data), runs_root=str(work / "runs"),
                       precision="fp32", seed=0, cache_dir=str(work / "cache"), **DEMO[model])


def epoch_seconds(cfg: TrainConfig, device: torch.device) -> dict:
    """Prepare the run (timing the cache's build) and time one epoch."""
    dist = D.Dist(0, 1, 0, device)
    t0 = time.perf_counter()
    setup = prepare(cfg, dist, progress=False)
    prepared = time.perf_counter() - t0
    engine = Engine(setup)
    row = engine.train_epoch(1, hide=True)
    cache = setup.cache
    assert (cache is not None) == cfg.frozen_cache
    return {"seconds": row["seconds"], "prepare": prepared, "val_dice": row["val_dice"],
            "build": cache.seconds if cache is not None else 0.0,
            "bytes": (cache.train.image.nbytes + cache.train.text.nbytes
                      + cache.val.image.nbytes + cache.val.text.nbytes) if cache else 0,
            "triplets": len(setup.data.train) if setup.data.train is not None else 0}


def measure(model: str, size: str, data: Path, work: Path, repeat: int, batch: int,
            batches: int | None, device: torch.device) -> dict:
    """The fastest epoch with and without the cache (alternating), and the cache's build."""
    fields = dict(model=model, size=size, encoders="frozen", prompt="p1", strategy="real",
                  device=str(device), real_dir=str(data), synthetic_dir=str(data),
                  runs_root=str(work / "runs"), precision="auto", fast_dev_run=batches,
                  seed=0)
    fields.update(DEMO[model] if size == "tiny" else {"batch_size": batch})
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for r in range(repeat):
        for key, on in (("with", True), ("without", False)):
            cfg = TrainConfig(**fields, frozen_cache=on, cache_dir=str(work / f"cache{r}"))
            runs[key].append(epoch_seconds(cfg, device))
            print(f"{model} {size} {key:7s} {runs[key][-1]}", flush=True)
    best = {k: min(v, key=lambda x: x["seconds"]) for k, v in runs.items()}
    return {"model": model, "size": size, "batch": fields["batch_size"], "batches": batches,
            **{f"{k}_s": v["seconds"] for k, v in best.items()},
            "build_s": runs["with"][0]["build"], "bytes": runs["with"][0]["bytes"],
            "triplets": runs["with"][0]["triplets"],
            "val_dice": (best["with"]["val_dice"], best["without"]["val_dice"])}


def report(rows: list[dict], device: torch.device, wall: float) -> str:
    lines = [TITLE, "",
             "One epoch of a frozen-encoder run (training steps and the validation pass, "
             "`Engine.train_epoch`) with the frozen encoders' outputs computed once "
             "(`echo_vlsm.train.frozen_cache`) against running them at every step; same model, "
             "seed and data, measured in one run, alternating, the fastest kept. The build "
             "(both splits, computed and written once per model, split and prompt) is "
             "separate: `build / saved` is how many epochs it takes to pay for itself. "
             "Paper size: random weights, a fast-dev-run epoch on a 16-image phantom; demo "
             "size: full epochs with the demo's batch 16 on its 14 training patients.",
             "", f"Machine: {machine()}; {wall:.0f} s in all.", "",
             "| model | size | epoch | without cache s | with cache s | speed-up | build s | "
             "build / saved | cache MiB | val dice with / without |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        epoch = (f"{r['batches']} x {r['batch']} triplets + val" if r["batches"]
                 else f"{r['triplets']} triplets, batch {r['batch']} + val")
        saved = r["without_s"] - r["with_s"]
        pays = f"{r['build_s'] / saved:.2f}" if saved > 0 else "-"
        lines.append(f"| {r['model']} | {r['size']} | {epoch} | {r['without_s']:.2f} | "
                     f"{r['with_s']:.2f} | {r['without_s'] / r['with_s']:.1f}x | "
                     f"{r['build_s']:.2f} | {pays} | {r['bytes'] / 2**20:.1f} | "
                     f"{r['val_dice'][0]:.2f} / {r['val_dice'][1]:.2f} |")
    if device.type == "cpu":
        lines += ["", "On a CPU; `benchmarks/gpu_check.sh` is where the GPU figures come from."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["clipseg", "cris"])
    ap.add_argument("--sizes", nargs="+", default=["paper", "tiny"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--paper-batch", type=int, default=8)
    ap.add_argument("--paper-batches", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="echo_vlsm_frozen_cache_"))
    rows = []
    try:
        for size in args.sizes:
            train, val = (4, 1) if size == "paper" else (14, 4)
            data = make_dataset(work / f"data-{size}", train, val)
            for model in args.models:
                paper = size == "paper"
                rows.append(measure(model, size, data, work / f"{model}-{size}", args.repeat,
                                    args.paper_batch, args.paper_batches if paper else None,
                                    device))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(rows, device, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        update_section("frozen_cache", text)


if __name__ == "__main__":
    main()
