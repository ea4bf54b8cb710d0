"""Does the training engine still compute what it did? Small fixed-seed runs, compared with a
saved reference.

    python tools/engine_parity.py --save  /tmp/parity-ref    # before a change
    python tools/engine_parity.py --check /tmp/parity-ref    # after it: exit 1 on a difference

The runs (tiny models, CPU, one torch thread, on a 6-patient phantom exported at 128 px with
its task files): CLIPSeg real P1 (2 epochs), CRIS real P1 (3 epochs), CLIPSeg real P1 stopped
early (patience 1, min_delta 1000), a fast-dev-run, a zero-shot CLIPSeg, and the ``as-run``
pair synthetic P1 -> synth-pt-real-ft P1 (which continues the synthetic run's best-epoch
state). Each run's ``metrics.csv`` must be equal byte for byte; ``history.csv`` equal but for
its timing columns (``seconds``, ``images_per_s``); ``summary.json`` equal but for timings,
the file records (which include the history's timings) and keys the reference lacks
(reported, e.g. ``stopped_by``). Paths inside the scratch folder are compared as
``<work>/...``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: run name -> TrainConfig fields beyond the common ones
RUNS: dict[str, dict] = {
    "clipseg-real": dict(model="clipseg", strategy="real", epochs=2),
    "cris-real": dict(model="cris", strategy="real", epochs=3, encoders="trained"),
    "clipseg-patience": dict(model="clipseg", strategy="real", epochs=6, patience=1,
                             min_delta=1000.0),
    "clipseg-fdr": dict(model="clipseg", strategy="real", epochs=50, fast_dev_run=2),
    "clipseg-zeroshot": dict(model="clipseg", strategy="zeroshot", epochs=0, prompt="p0"),
    "clipseg-asrun-syn": dict(model="clipseg", strategy="synthetic", recipe="as-run", epochs=2,
                              patience=5),
    "clipseg-asrun-ft": dict(model="clipseg", strategy="synth-pt-real-ft", recipe="as-run",
                             epochs=3, patience=5),
}
TIMING_COLUMNS = ("seconds", "images_per_s")
TIMING_KEYS = ("seconds_total", "seconds_train", "seconds_eval", "seconds_to_best",
               "wall_seconds_this_call", "files")


def make_dataset(root: Path) -> Path:
    """The phantom of the tests: 6 patients, seed 0, exported at 128 px, with task files."""
    from echo_vlsm.data.camus import read_camus
    from echo_vlsm.data.export import export_dataset
    from echo_vlsm.data.phantom import write_phantom
    from echo_vlsm.prompts import write_tasks

    camus = write_phantom(root / "camus", n_patients=6, seed=0, workers=0)
    out = export_dataset(read_camus(camus), root / "phantom", size=128, workers=0)
    write_tasks(out)
    return out


def train_all(dataset: Path, runs_root: Path) -> dict[str, Path]:
    """Every run of ``RUNS`` under ``runs_root/<name>/`` (the as-run pair share one root)."""
    import torch

    from echo_vlsm.train import TrainConfig, fit

    torch.set_num_threads(1)
    folders = {}
    for name, fields in RUNS.items():
        root = runs_root / ("asrun" if name.startswith("clipseg-asrun") else name)
        values = dict(size="tiny", prompt="p1", encoders="frozen", batch_size=8, lr=1e-3,
                      seed=0, device="cpu", real_dir=str(dataset), synthetic_dir=str(dataset),
                      runs_root=str(root))
        values.update(fields)
        result = fit(TrainConfig(**values), progress=False)
        folders[name] = result.run_dir
        print(f"{name}: {result.run_dir.name}, test dice {result.summary['test_dice']:.4f}",
              flush=True)
    return folders


def _history(path: Path) -> str:
    import pandas as pd

    return pd.read_csv(path).drop(columns=list(TIMING_COLUMNS)).to_csv(index=False)


def _summary(path: Path, work: Path | None) -> dict:
    """A summary with the scratch folder's path written ``<work>`` (it differs per call)."""
    text = path.read_text()
    return json.loads(text if work is None else text.replace(str(work), "<work>"))


def compare(ref: Path, new: Path, work: Path) -> list[str]:
    """The differences between a reference run folder and a new one (empty: the same)."""
    problems = []
    if (ref / "metrics.csv").read_bytes() != (new / "metrics.csv").read_bytes():
        problems.append("metrics.csv differs")
    if _history(ref / "history.csv") != _history(new / "history.csv"):
        problems.append("history.csv differs (timing columns aside)")
    a = _summary(ref / "summary.json", None)
    b = _summary(new / "summary.json", work)
    for key in sorted(set(a) | set(b)):
        if key in TIMING_KEYS:
            continue
        if key not in b:
            problems.append(f"summary.json: {key} missing")
        elif key not in a:
            print(f"  {new.name}: summary.json gains {key} = {b[key]!r}")
        elif a[key] != b[key]:
            problems.append(f"summary.json: {key}: {a[key]!r} -> {b[key]!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="write the reference runs here")
    group.add_argument("--check", type=Path, help="compare with the reference runs here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="engine-parity-"))
    try:
        dataset = make_dataset(work / "data")
        folders = train_all(dataset, work / "runs")
        if args.save is not None:
            for name, folder in folders.items():
                dest = args.save / name
                dest.mkdir(parents=True, exist_ok=True)
                for file in ("metrics.csv", "history.csv"):
                    shutil.copy2(folder / file, dest / file)
                summary = _summary(folder / "summary.json", work)
                (dest / "summary.json").write_text(json.dumps(summary, indent=1))
            print(f"reference saved to {args.save}")
            return 0
        failed = 0
        for name, folder in folders.items():
            problems = compare(args.check / name, folder, work)
            print(f"{name}: {'same' if not problems else '; '.join(problems)}")
            failed += bool(problems)
        print("parity: OK" if not failed else f"parity: {failed} run(s) differ")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
