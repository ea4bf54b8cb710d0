"""Peak memory of the demo: the RSS of `echo-vlsm reproduce --profile demo` and every process it
starts (papermill kernels, workers) added up, sampled every 0.2 s.

Binder guarantees 2 GiB; this says whether the demo fits. The demo runs in a fresh copy of the
project's tracked files (so it never touches this checkout's data/, runs/, figures/), from an
empty state, with the installed echo_vlsm package:

    python benchmarks/demo_memory.py            # a temporary copy, removed afterwards
    python benchmarks/demo_memory.py --keep DIR # the copy in DIR, kept

The sum of RSS counts shared pages (the torch libraries each kernel maps) once per process, so
it overstates the true footprint a little: an upper bound, which is what a memory limit sees
closest to (cgroups count each page once; the bound is safe). USS (unique pages) is recorded
too. Writes the `demo_memory` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
GIB = 1024 ** 3


def copy_project(dest: Path) -> Path:
    """The project's tracked (and new, not ignored) files copied into ``dest``."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def sample(proc: psutil.Process, with_uss: bool) -> tuple[int, int, int, str]:
    """(sum of RSS, sum of USS or 0, number of processes, the largest process's command)."""
    rss = uss = 0
    largest, largest_rss = "", 0
    procs = _tree(proc)
    for p in procs:
        try:
            if with_uss:
                info = p.memory_full_info()
                uss += info.uss
            else:
                info = p.memory_info()
            rss += info.rss
            if info.rss > largest_rss:
                largest_rss = info.rss
                largest = " ".join(p.cmdline()[:4])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return rss, uss, len(procs), largest


def measure(workdir: Path, profile: str, interval: float) -> dict:
    cli = Path(sys.executable).with_name("echo-vlsm")
    cmd = [str(cli), "reproduce", "--profile", profile]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    log = open(workdir / "demo_memory.log", "w")  # noqa: SIM115 - closed below
    child = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc = psutil.Process(child.pid)
    peak = {"rss": 0, "uss": 0, "procs": 0, "largest": "", "at_s": 0.0}
    n = 0
    while child.poll() is None:
        rss, uss, count, largest = sample(proc, with_uss=n % 5 == 0)
        if rss > peak["rss"]:
            peak.update(rss=rss, procs=count, largest=largest, at_s=time.time() - t0)
        peak["uss"] = max(peak["uss"], uss)
        n += 1
        time.sleep(interval)
    log.close()
    return {**peak, "seconds": time.time() - t0, "returncode": child.returncode,
            "samples": n, "command": " ".join(cmd[1:])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="demo-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        copy_project(workdir)
        r = measure(workdir, args.profile, args.interval)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{r['command']}: exit {r['returncode']} after {r['seconds']:.0f} s; peak RSS of the "
          f"runner and its kernels {r['rss'] / GIB:.2f} GiB ({r['procs']} processes, at "
          f"{r['at_s']:.0f} s; largest: {r['largest']}); peak USS {r['uss'] / GIB:.2f} GiB")
    if r["returncode"] == 0 and not args.no_results:
        from _results import machine, update_section

        fits = "fits" if r["rss"] < 2 * GIB else "does NOT fit"
        update_section("demo_memory", f"""## Demo peak memory (`benchmarks/demo_memory.py`)

Machine: {machine()}. `echo-vlsm {r['command']}` from an empty state in a fresh copy of the
project, {r['seconds']:.0f} s. RSS summed over the runner and every process it started,
sampled every {args.interval} s ({r['samples']} samples; shared library pages counted once
per process, so an upper bound); USS (unique pages) sampled every fifth time.

| peak RSS, all processes | processes at the peak | peak USS | Binder's 2 GiB floor |
|---|---|---|---|
| {r['rss'] / GIB:.2f} GiB | {r['procs']} | {r['uss'] / GIB:.2f} GiB | {fits} |
""")
    return 0 if r["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
