"""How many training steps the demo's SDM needs (issue #20, sec. 4): the tiny SDM trained on the
demo's phantom for each number of steps, then one synthetic image per real label map (train
and val, DPM-Solver++ 20 steps, the demo's settings), with the time of each part and the
fidelity check notebook 02 prints (`echo_vlsm.sdm.fidelity`: the share of images whose LV
cavity is darker than their myocardium, target at least 90 %; images with a bright outside,
target none).

    python benchmarks/sdm_steps.py --real-dir data/phantom            # 300, 150, 100 steps
    python benchmarks/sdm_steps.py --real-dir DIR --steps 300 150      # chosen counts
    python benchmarks/sdm_steps.py --real-dir DIR --compare /tmp/demo300 /tmp/demo150

The real dataset is the demo's export (`make demo` writes data/phantom). One torch thread, as
the demo's jobs. Whether the synthetic runs keep their test dice is a question for whole runs:
`--compare A B` adds, from two finished demo folders (e.g. two `benchmarks/demo_memory.py
--keep` copies, the second's demo.yaml with other `train_steps`), every run's test dice in each
and the difference, with each folder's SDM steps. Writes the `sdm_steps` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one(real: Path, steps: int, work: Path) -> dict:
    from echo_vlsm.sdm import SDMConfig, fidelity, load_sdm, synthesize, train_sdm

    out = work / f"steps{steps}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train_sdm(real, out / "sdm", SDMConfig(size="tiny", train_steps=steps, seed=0, device="cpu"))
    t1 = time.perf_counter()
    sdm = load_sdm(out / "sdm", device="cpu")
    synthesize(sdm, real, out / "synthetic", n_per_map=1, sampler="dpm++", steps=20, seed=0)
    t2 = time.perf_counter()
    return {"steps": steps, "train_s": t1 - t0, "synth_s": t2 - t1,
            **fidelity(out / "synthetic")}


def compare(a: Path, b: Path) -> str:
    """Every run's test dice in two finished demo folders, side by side, and B minus A."""
    import json

    from _results import paired_demo_runs

    steps = [json.loads((d / "runs/demo/sdm/config.json").read_text())["train_steps"]
             for d in (a, b)]
    lines = [f"| run | dice, SDM {steps[0]} steps | dice, SDM {steps[1]} steps | difference |",
             "|---|---|---|---|"]
    for run, _, da, db in paired_demo_runs(a, b):
        lines.append(f"| {run.name} | {da:.2f} | {db:.2f} | {db - da:+.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-dir", type=Path, required=True, help="the demo's exported phantom")
    ap.add_argument("--steps", type=int, nargs="+", default=[300, 150, 100])
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"),
                    help="two finished demo folders whose SDMs trained for other steps")
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    ap.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sdm-steps-") as tmp:
        for steps in args.steps:
            r = one(args.real_dir, steps, Path(tmp))
            rows.append(r)
            print(f"{steps} steps: train {r['train_s']:.1f} s, synthesis {r['synth_s']:.1f} s, "
                  f"{r['n_images']:.0f} images, LV darker than myo {r['lv_darker_than_myo']:.0%}, "
                  f"bright outside {r['outside_bright_images']:.0%}", flush=True)
    if args.no_results:
        return 0
    from _results import machine, update_section

    head = ("| training steps | training s | synthesis s | images | LV darker than myo | "
            "bright outside | mean LV | mean myo | mean outside |\n" + "|---" * 9 + "|")
    note = f"; {args.note}" if args.note else ""
    table = "\n".join(
        f"| {r['steps']} | {r['train_s']:.0f} | {r['synth_s']:.0f} | {r['n_images']:.0f} | "
        f"{r['lv_darker_than_myo']:.0%} | {r['outside_bright_images']:.0%} | "
        f"{r['mean_lv']:.1f} | {r['mean_myo']:.1f} | {r['mean_outside']:.1f} |" for r in rows)
    update_section("sdm_steps", f"""## SDM steps for the demo (`benchmarks/sdm_steps.py`)

Machine: {machine()}; load average {load:.1f} before the first row{note}.
The tiny SDM trained on the demo's phantom ({args.real_dir.name}), one synthetic image per
train and val label map (DPM-Solver++, 20 steps). Targets: LV darker than the myocardium in at
least 90 % of the images, no image with a bright outside.

{head}
{table}
""" + (f"""
Whole demo runs (test dice, mean over the test split's samples) with the SDM of each folder,
everything else equal (`{args.compare[0]}` against `{args.compare[1]}`; one thread per job,
so the real runs, which never see the SDM, must agree to the last digit):

{compare(*args.compare)}
""" if args.compare else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
