"""What `make demo-beyond` costs on this machine, per block of its grid (issue #15).

The beyond profile shares `runs/demo` with the demo: it reuses the demo's prepared data and
finished runs and adds its own 31 runs and notebook 08. This script runs it (after the demo
when the demo's runs are missing), or with ``--report-only`` reads the runner's last
demo-beyond entry of `runs/demo/reproduce_timings.jsonl`. It writes the wall time, and per
block the runs and the sum of their job seconds, into the `demo_beyond` section of
`benchmarks/RESULTS.md`.

    python benchmarks/demo_beyond.py                 # make demo (if needed), then demo-beyond
    python benchmarks/demo_beyond.py --fresh         # its own runs removed first
    python benchmarks/demo_beyond.py --report-only --note "load 4 (a benchmark beside it)"
    python benchmarks/demo_beyond.py --root DIR      # in a copy of the project (where
                                                     # benchmarks/demo_memory.py --keep ran)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import machine, update_section  # noqa: E402

from echo_vlsm.grid import parse_run_id  # noqa: E402
from echo_vlsm.pipeline import load_profile  # noqa: E402

#: The grid blocks of demo-beyond.yaml, told apart by what a run goes beyond the study with.
BLOCKS = {
    "1. seeds 1 and 2 of the three P1 strategies": lambda r: r.seed != 0,
    "2. mixed, with and without provenance": lambda r: r.strategy == "mixed"
    and r.real_fraction == 1.0,
    "3. real fractions 25 % and 50 %": lambda r: r.real_fraction != 1.0,
    "4. U-Net baseline": lambda r: r.model == "unet",
}


def block_of(run_id: str) -> str | None:
    try:
        run = parse_run_id(run_id)
    except ValueError:
        return None
    return next((name for name, test in BLOCKS.items() if test(run)), None)


def last_entry(timings: Path, profile: str) -> dict:
    entries = [json.loads(line) for line in timings.read_text().splitlines() if line.strip()]
    mine = [e for e in entries if e.get("profile") == profile]
    if not mine:
        raise SystemExit(f"{timings}: no entry of profile {profile!r}; run it first")
    return mine[-1]


def run(cmd: list[str], root: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=root, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report-only", action="store_true",
                    help="write the section from the last recorded demo-beyond call")
    ap.add_argument("--fresh", action="store_true",
                    help="remove demo-beyond's own runs (not the demo's) before running")
    ap.add_argument("--jobs", default="2")
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="the project folder to run in (default: this checkout)")
    args = ap.parse_args()
    root = args.root.resolve()
    beyond = load_profile("demo-beyond", root)
    demo = load_profile("demo", root)
    runs_root = root / beyond.runs_root
    cli = str(Path(sys.executable).with_name("echo-vlsm"))
    if not args.report_only:
        if args.fresh:
            for r in set(beyond.runs) - set(demo.runs):
                shutil.rmtree(runs_root / r.id, ignore_errors=True)
        if any(not (runs_root / r.id).is_dir() for r in demo.runs):
            run([cli, "reproduce", "--profile", "demo", "--jobs", args.jobs], root)
        load_before = os.getloadavg()[0]
        run([cli, "reproduce", "--profile", "demo-beyond", "--jobs", args.jobs], root)
        args.note = args.note or f"load average {load_before:.1f} before the call"
    entry = last_entry(runs_root / "reproduce_timings.jsonl", "demo-beyond")
    seconds = entry["seconds"]
    rows = []
    for name in BLOCKS:
        jobs = {k: v for k, v in seconds.items() if ":" not in k and block_of(k) == name}
        evals = {k: v for k, v in seconds.items() if ":eval-" in k
                 and block_of(k.split(":")[0]) == name}
        rows.append(f"| {name} | {len(jobs)} | {sum(jobs.values()):.0f} | "
                    f"{(sum(jobs.values()) / max(len(jobs), 1)):.0f} | {len(evals)} | "
                    f"{sum(evals.values()):.0f} |")
    shared = [k for k in seconds if k not in ("total",) and block_of(k.split(":")[0]) is None]
    new_runs = sum(1 for k in seconds if ":" not in k and block_of(k) is not None)
    text = f"""## `make demo-beyond` (`benchmarks/demo_beyond.py`)

Machine: {machine()}; {os.cpu_count()} cores; `--jobs {args.jobs}`. {args.note}.
One call of `echo-vlsm reproduce --profile demo-beyond` after `make demo`: {new_runs} new
runs and notebook 08 in **{entry['total_seconds']:.0f} s** wall (target: 20 minutes); the
demo's prepared data and finished runs were reused, not rerun (the jobs it executed besides
the blocks' runs and their evaluations on a second dataset: {', '.join(sorted(shared)) or
'none'}). Per block, the sum of its jobs' seconds (two run at once, so the wall time is about
half the sum):

| block | runs | job seconds | per run | evaluation jobs | their seconds |
|---|---|---|---|---|---|
""" + "\n".join(rows) + f"\n\nRecorded at {entry.get('time', '?')}.\n"
    update_section("demo_beyond", text)
    print(text)


if __name__ == "__main__":
    main()
