"""Training images per second with one image pass for its structures (``image_batching``)
against the study's sample order, both models, trained encoders, in one run.

For each model and size the run is prepared as ``fit`` prepares it (``fitting.prepare``) and
trained by the engine (``Engine.train_epoch``) with and without ``image_batching``, alternately;
every optimisation step is timed (a ``step`` wrapper) and the first step of each run (warm-up)
is left out: images/s = triplets of the timed steps / their seconds.

* paper size: the study's architectures (random weights: the cost does not depend on them),
  ``--paper-steps`` steps of ``--paper-batch`` triplets (a fast-dev-run epoch) on a
  5-patient phantom (16 training images, 48 triplets);
* demo size: the demo's tiny models, batch 16 and learning rates, ``--demo-epochs`` full epochs
  on a phantom with the demo's 14 training and 4 validation patients (168 triplets); the best
  validation dice of the two orders is reported beside (their effect on results over those
  epochs, not the demo's converged runs).

    nice -n 10 python benchmarks/image_batching.py            # both sizes, both models
    python benchmarks/image_batching.py --sizes tiny --demo-epochs 2 --no-write
    python benchmarks/image_batching.py --compare-demo A B   # two finished demo folders

``--compare-demo A B`` reads two finished demo folders, B's demo.yaml with
``image_batching: true`` under ``train:`` (its runs redone, data and SDM reused): every run's
test dice, epochs and job seconds (the runners' logs, ``demo_memory.log`` or
``reproduce.log``) side by side, converged as the demo trains them. Writes the
``image_batching_demo`` section.

The paper-size ratio on the CPU stands in for the GPU ratio in ``echo-vlsm plan``
(``pipeline.cost.IMAGE_BATCHING_SPEEDUP``) until ``benchmarks/gpu_check.sh`` measures it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, paired_demo_runs, update_section  # noqa: E402
from benchmarks.frozen_cache import DEMO, make_dataset  # noqa: E402
from echo_vlsm.train import TrainConfig, train_step  # noqa: E402
from echo_vlsm.train import distributed as D  # noqa: E402
from echo_vlsm.train.engine import Engine  # noqa: E402
from echo_vlsm.train.fitting import prepare  # noqa: E402

TITLE = "## One image pass for its structures (`benchmarks/image_batching.py`)"


def train(cfg: TrainConfig, device: torch.device, epochs: int) -> dict:
    """Prepare the run and train ``epochs`` epochs, timing every step."""
    steps: list[tuple[float, int]] = []

    def timed(net, x, *args, **kwargs):
        t0 = time.perf_counter()
        loss = train_step(net, x, *args, **kwargs)
        float(loss.detach())  # wait for the step (a GPU runs ahead)
        steps.append((time.perf_counter() - t0, int(args[0].shape[0])))
        return loss

    setup = prepare(cfg, D.Dist(0, 1, 0, device), progress=False)
    engine = Engine(setup, step=timed)
    rows = [engine.train_epoch(e, hide=True) for e in range(1, epochs + 1)]
    timed_steps = steps[1:]
    return {"img_s": sum(n for _, n in timed_steps) / sum(s for s, _ in timed_steps),
            "step_s": statistics.median(s for s, _ in timed_steps),
            "steps": len(steps),
            "best_val_dice": max(r["val_dice"] for r in rows),
            "val_dice": [round(r["val_dice"], 1) for r in rows]}


def measure(model: str, size: str, data: Path, work: Path, batch: int, steps: int | None,
            epochs: int, device: torch.device) -> dict:
    """Both orders, alternating (``repeat`` = 1: one run each)."""
    fields = dict(model=model, size=size, encoders="trained", prompt="p1", strategy="real",
                  device=str(device), real_dir=str(data), synthetic_dir=str(data),
                  precision="auto", fast_dev_run=steps, seed=0, epochs=max(epochs, 1),
                  cache_dir=str(work / "cache"))
    fields.update(DEMO[model] if size == "tiny" else {"batch_size": batch})
    out: dict = {"model": model, "size": size, "batch": fields["batch_size"], "steps": steps}
    for key, on in (("plain", False), ("batched", True)):
        cfg = TrainConfig(**fields, image_batching=on, runs_root=str(work / key))
        out[key] = train(cfg, device, epochs)
        print(f"{model} {size} {key:7s} {out[key]}", flush=True)
    return out


def report(rows: list[dict], device: torch.device, wall: float, epochs: int) -> str:
    lines = [TITLE, "",
             "Training images (triplets) per second, trained encoders, with an image's "
             "triplets in one batch and its image encoder run once for them "
             "(`TrainConfig.image_batching`, `echo_vlsm.train.image_batching`) against the "
             "study's order (every triplet through the image encoder); same model, seed and "
             "data, one run each, the first step of each left out. Paper size: random "
             "weights, a fast-dev-run epoch on a 16-image phantom; demo size: the demo's "
             f"batch 16 and learning rates, {epochs} full epochs on its 14 training patients "
             "(best validation dice of those epochs, not converged runs). With image "
             "batching a batch holds whole images (batch 16: 5 images, 15 triplets).",
             "", f"Machine: {machine()}; {wall:.0f} s in all.", "",
             "| model | size | batch | timed steps | plain img/s | batched img/s | speed-up | "
             "step s plain / batched | best val dice plain / batched |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, b = r["plain"], r["batched"]
        lines.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | {p['steps'] - 1} / "
            f"{b['steps'] - 1} | {p['img_s']:.2f} | {b['img_s']:.2f} | "
            f"{b['img_s'] / p['img_s']:.2f}x | {p['step_s']:.2f} / {b['step_s']:.2f} | "
            f"{p['best_val_dice']:.1f} / {b['best_val_dice']:.1f} |")
    if device.type == "cpu":
        lines += ["", "On a CPU: the paper-size ratios stand in for the GPU's in `echo-vlsm "
                  "plan` (`pipeline.cost.IMAGE_BATCHING_SPEEDUP`) until "
                  "`benchmarks/gpu_check.sh` measures them on a GPU."]
    return "\n".join(lines)


def _job_seconds(folder: Path) -> dict[str, float]:
    """A runner's "NAME: done in S s" lines, from the log kept in the demo folder."""
    import re

    for name in ("demo_memory.log", "reproduce.log"):
        if (folder / name).exists():
            text = (folder / name).read_text()
            return {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\S+): done in ([\d.]+) s",
                                                          text, re.M)}
    return {}


def compare_demo(a: Path, b: Path) -> str:
    """The converged demo's runs in the study's order (A) and with image batching (B)."""
    import json

    ta, tb = _job_seconds(a), _job_seconds(b)
    lines = ["| run | test dice, study's order | with image batching | difference | epochs "
             "(order / batching) | seconds (order / batching) | seconds per epoch, ratio |",
             "|---|---|---|---|---|---|---|"]
    for run, other, da, db in paired_demo_runs(a, b, ("*_trained_*", "*_frozen_*")):
        ea, eb = (json.loads((d / "summary.json").read_text())["epochs_run"] for d in (run, other))
        sa, sb = ta.get(run.name, float("nan")), tb.get(run.name, float("nan"))
        lines.append(f"| {run.name} | {da:.2f} | {db:.2f} | {db - da:+.2f} | {ea} / {eb} | "
                     f"{sa:.0f} / {sb:.0f} | {(sa / ea) / (sb / eb):.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["clipseg", "cris"])
    ap.add_argument("--sizes", nargs="+", default=["paper", "tiny"])
    ap.add_argument("--paper-batch", type=int, default=6)
    ap.add_argument("--paper-steps", type=int, default=3)
    ap.add_argument("--demo-epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    ap.add_argument("--compare-demo", type=Path, nargs=2, metavar=("A", "B"),
                    help="two finished demo folders, B's runs trained with image batching")
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    args = ap.parse_args(argv)
    if args.compare_demo:
        a, b = args.compare_demo
        text = f"""## Image batching on the converged demo (`image_batching.py --compare-demo`)

Machine: {machine()}; `--jobs 2`{'; ' + args.note if args.note else ''}. The demo of `{a}`
(the study's sample order) against `{b}` (the same data and SDM, `image_batching: true`, its
10 runs redone, two at a time): each run trained until early stopping, as the demo trains
it; test dice over the test split's samples; seconds are the runner's job times (the notebook,
the test pass and the clinical indices included), so the ratio per epoch understates the
training steps' own.

{compare_demo(a, b)}
"""
        print(text)
        if not args.no_write:
            update_section("image_batching_demo", text)
        return
    device = torch.device(args.device)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="echo_vlsm_image_batching_"))
    rows = []
    try:
        for size in args.sizes:
            paper = size == "paper"
            data = make_dataset(work / f"data-{size}", *((4, 1) if paper else (14, 4)))
            for model in args.models:
                rows.append(measure(model, size, data, work / f"{model}-{size}",
                                    args.paper_batch, args.paper_steps if paper else None,
                                    1 if paper else args.demo_epochs, device))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(rows, device, time.perf_counter() - t0, args.demo_epochs)
    print(text)
    if not args.no_write:
        update_section("image_batching", text)


if __name__ == "__main__":
    main()
