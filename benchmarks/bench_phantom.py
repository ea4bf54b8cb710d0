"""Speed of the built-in echo phantom: ``write_phantom`` for ``--patients`` patients on one
core (simulation and file writing timed apart), 2023 layout.

    OMP_NUM_THREADS=1 python benchmarks/bench_phantom.py --patients 100
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from echo_vlsm.data import phantom  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = ap.parse_args()
    n = args.patients

    t0, c0 = time.perf_counter(), time.process_time()
    sims = [phantom.simulate_patient(args.seed, k) for k in range(1, min(n, 10) + 1)]
    t_sim10 = (time.perf_counter() - t0) / len(sims)
    c_sim10 = (time.process_time() - c0) / len(sims)
    pixels = sum(v.images[p].size for s in sims for v in s.views.values() for p in ("ED", "ES"))
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        phantom.write_phantom(Path(tmp) / "p", n_patients=n, seed=args.seed, workers=0)
        t_all = time.perf_counter() - t0
        c_all = time.process_time() - c0
        t0 = time.perf_counter()
        phantom.write_phantom(Path(tmp) / "p", n_patients=n, seed=args.seed, workers=0)
        t_again = time.perf_counter() - t0
        t0 = time.perf_counter()
        phantom.write_phantom(Path(tmp) / "q", n_patients=n, seed=args.seed, workers=2)
        t_pool = time.perf_counter() - t0
    images = 4 * n
    load = (f"Measured on a shared machine (load average {os.getloadavg()[0]:.1f} at the end on "
            f"{os.cpu_count()} cores); treat as rough.")
    n_sim = 4 * len(sims)
    rows = [
        [f"`simulate_patient` (first {len(sims)} patients)",
         f"{n_sim} images, mean {pixels / n_sim / 1e3:.0f} kpx",
         f"{t_sim10 * len(sims):.2f}", f"{c_sim10 * len(sims):.2f}",
         f"{t_sim10 / 4 * 1e3:.1f}", f"{c_sim10 / 4 * 1e3:.1f}"],
        ["`write_phantom` 2023 layout (simulate + .nii.gz), 1 process", f"{images} images",
         f"{t_all:.1f}", f"{c_all:.1f}",
         f"{t_all / images * 1e3:.1f}", f"{c_all / images * 1e3:.1f}"],
        ["same, 2 worker processes", f"{images} images", f"{t_pool:.1f}", "-",
         f"{t_pool / images * 1e3:.1f}", "-"],
        ["second call (all skipped)", f"{images} images", f"{t_again:.3f}", "-",
         f"{t_again / images * 1e3:.2f}", "-"],
    ]
    table = "\n".join("| " + " | ".join(cells) + " |" for cells in rows)
    md = f"""## Echo phantom (`benchmarks/bench_phantom.py`)

Machine: {machine()}; one thread per process (OMP_NUM_THREADS=1).
{load}
CPU seconds (this process) estimate the time on an idle core; wall seconds include waiting
for the other jobs on the machine.

| step | items | wall s | CPU s | per image, wall (ms) | per image, CPU (ms) |
|---|---|---|---|---|---|
{table}
"""
    print(md)
    if not args.no_write:
        update_section("phantom", md)


if __name__ == "__main__":
    main()
