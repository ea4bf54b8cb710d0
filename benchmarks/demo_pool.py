"""The demo's `reproduce` wall time, one job at a time against the pool, on the same machine.

Two fresh clones of the project (this checkout's committed tree) run
`echo-vlsm reproduce --profile demo` one right after the other: first with `--jobs 1`, then
with `--jobs N` (default 2, the cores of a laptop). Both start from a clean tree with a warm
venv. Then every `metrics.csv` of the two is compared byte for byte.

    python benchmarks/demo_pool.py [--jobs 2] [--keep]

Writes the `demo_pool` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, update_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(clone: Path, jobs: int) -> float:
    cmd = [str(ROOT / ".venv" / "bin" / "echo-vlsm"), "reproduce", "--profile", "demo",
           "--jobs", str(jobs)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=clone, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (clone / f"reproduce-jobs{jobs}.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"--jobs {jobs} failed ({out.returncode}); log: "
                         f"{clone / f'reproduce-jobs{jobs}.log'}")
    return seconds


def metrics(clone: Path) -> dict[str, str]:
    return {str(p.relative_to(clone)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((clone / "runs" / "demo").glob("*/metrics.csv"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the two clones")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="demo-pool-"))
    times, hashes = {}, {}
    for jobs in (1, args.jobs):
        clone = work / f"jobs{jobs}"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        print(f"--jobs {jobs} in {clone} ...", flush=True)
        times[jobs] = run(clone, jobs)
        hashes[jobs] = metrics(clone)
        print(f"  {times[jobs]:.0f} s, {len(hashes[jobs])} runs", flush=True)
    same = hashes[1] == hashes[args.jobs]
    differ = sorted(k for k in hashes[1] if hashes[1][k] != hashes[args.jobs].get(k))
    load = os.getloadavg()[0]
    text = f"""## Demo wall time, sequential against the pool (`benchmarks/demo_pool.py`)

Machine: {machine()}; {os.cpu_count()} cores; load average {load:.1f} at the end (other work
on the machine counts: compare the two rows, measured one right after the other).

| `echo-vlsm reproduce --profile demo` | seconds | minutes |
|---|---|---|
| `--jobs 1` | {times[1]:.0f} | {times[1] / 60:.1f} |
| `--jobs {args.jobs}` | {times[args.jobs]:.0f} | {times[args.jobs] / 60:.1f} |

Pool / sequential: **{times[args.jobs] / times[1]:.2f}** (target: pooled at most 6 minutes).
metrics.csv of the {len(hashes[1])} runs: {"identical, byte for byte" if same else
"differ in " + ", ".join(differ) + " (each job of the pool runs with cores / jobs threads, so "
"float reductions run in another order)"}.
"""
    update_section("demo_pool", text)
    print(text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
