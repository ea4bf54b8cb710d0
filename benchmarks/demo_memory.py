"""Peak memory of the demo: the RSS of `echo-vlsm reproduce --profile demo` and every process it
starts (papermill kernels, workers) added up, sampled every 0.2 s.

Binder guarantees 2 GiB; this says whether the demo fits. The demo runs in a fresh copy of the
project's tracked files (so it never touches this checkout's data/, runs/, figures/), from an
empty state, with the installed echo_vlsm package:

    python benchmarks/demo_memory.py            # a temporary copy, removed afterwards
    python benchmarks/demo_memory.py --keep DIR # the copy in DIR, kept
    python benchmarks/demo_memory.py --memory-limit 2   # as on Binder: a real 2 GiB limit

`--memory-limit GIB` (root, Linux) runs the demo in a new cgroup below this process's own,
with that memory limit (v1 `memory.limit_in_bytes` or v2 `memory.max`): the kernel kills a
process that needs more (counted, `oom_kill`), and the runner reads the limit and runs as many
jobs at once as it holds (`pipeline.worker.memory_limit`).

The sum of RSS counts shared pages (the torch libraries each kernel maps) once per process, so
it overstates the true footprint: an upper bound. PSS splits each shared page among the
processes that map it, so its sum is the footprint a cgroup's limit meets (page cache aside):
the verdict reads it. USS (unique pages) is recorded too. Writes the `demo_memory` section of
benchmarks/RESULTS.md (`demo_memory_limit<GIB>` with `--memory-limit`).
"""

from __future__ import annotations

import argparse
import os
import re
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


def sample(proc: psutil.Process, full: bool) -> tuple[int, int, int, int, str]:
    """(sum of RSS, sum of USS, sum of PSS (both 0 unless ``full``), number of processes, the
    largest process's command). PSS splits each shared page among the processes mapping it,
    so its sum is the tree's real footprint (what a cgroup's limit meets, page cache aside)."""
    rss = uss = pss = 0
    largest, largest_rss = "", 0
    procs = _tree(proc)
    for p in procs:
        try:
            if full:
                info = p.memory_full_info()
                uss += info.uss
                pss += info.pss
            else:
                info = p.memory_info()
            rss += info.rss
            if info.rss > largest_rss:
                largest_rss = info.rss
                largest = " ".join(p.cmdline()[:4])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return rss, uss, pss, len(procs), largest


def limited_cgroup(limit: int) -> tuple[Path, str]:
    """A new memory cgroup below this process's own with ``limit`` bytes; (its folder, its
    version: "v1" or "v2")."""
    from echo_vlsm.pipeline.worker import own_memory_cgroups

    for base, own, name in own_memory_cgroups():
        version = "v2" if name == "memory.max" else "v1"
        if version == "v2" and not (base / "cgroup.controllers").exists():
            continue  # a hybrid host: the memory controller is v1's
        cgroup = own / f"demo-memory-{os.getpid()}"
        cgroup.mkdir()
        (cgroup / name).write_text(str(limit))
        return cgroup, version
    raise SystemExit("no memory cgroup to put the demo in (Linux, root)")


def oom_kills(cgroup: Path, version: str) -> int:
    name = "memory.oom_control" if version == "v1" else "memory.events"
    for line in (cgroup / name).read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def measure(workdir: Path, profile: str, interval: float, jobs: str,
            cgroup: Path | None = None) -> dict:
    cli = Path(sys.executable).with_name("echo-vlsm")
    cmd = [str(cli), "reproduce", "--profile", profile, "--jobs", jobs]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    log = open(workdir / "demo_memory.log", "w")  # noqa: SIM115 - closed below

    def enter() -> None:  # in the child, before exec: into the limited cgroup
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    child = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                             preexec_fn=enter)
    proc = psutil.Process(child.pid)
    peak = {"rss": 0, "uss": 0, "pss": 0, "procs": 0, "largest": "", "at_s": 0.0,
            "pss_at_s": 0.0}
    n = 0
    while child.poll() is None:
        rss, uss, pss, count, largest = sample(proc, full=n % 5 == 0)
        if rss > peak["rss"]:
            peak.update(rss=rss, procs=count, largest=largest, at_s=time.time() - t0)
        if pss > peak["pss"]:
            peak.update(pss=pss, pss_at_s=time.time() - t0)
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
    parser.add_argument("--jobs", default="2", help="jobs at once (default 2, as `make demo`)")
    parser.add_argument("--memory-limit", type=float, metavar="GIB",
                        help="run under a real memory limit of GIB (a new cgroup; root)")
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="demo-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cgroup, version = (limited_cgroup(int(args.memory_limit * GIB)) if args.memory_limit
                       else (None, ""))
    try:
        copy_project(workdir)
        r = measure(workdir, args.profile, args.interval, args.jobs, cgroup)
        r["oom_kills"] = oom_kills(cgroup, version) if cgroup else 0
        r["slots"] = _slots_used(workdir / "demo_memory.log")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        if cgroup is not None:
            cgroup.rmdir()
    print(f"{r['command']}: exit {r['returncode']} after {r['seconds']:.0f} s; peak RSS of the "
          f"runner and its kernels {r['rss'] / GIB:.2f} GiB ({r['procs']} processes, at "
          f"{r['at_s']:.0f} s; largest: {r['largest']}); peak USS {r['uss'] / GIB:.2f} GiB; "
          f"peak PSS {r['pss'] / GIB:.2f} GiB (at {r['pss_at_s']:.0f} s); jobs at once "
          f"{r['slots']}" + (f"; limit {args.memory_limit} GiB ({version} cgroup), "
                             f"{r['oom_kills']} OOM kills" if cgroup else ""))
    if (r["returncode"] == 0 or cgroup is not None) and not args.no_results:
        from _results import machine, update_section

        fits = "fits" if r["pss"] < 2 * GIB else "does NOT fit"
        limit = (f"under a real limit of {args.memory_limit:g} GiB (a {version} cgroup; "
                 f"OOM kills: {r['oom_kills']})" if cgroup else "with no memory limit")
        rss, uss, pss = (f"{r[k] / GIB:.2f} GiB" for k in ("rss", "uss", "pss"))
        section = "demo_memory" + (f"_limit{args.memory_limit:g}" if cgroup else "")
        title = f", limit {args.memory_limit:g} GiB" if cgroup else ""
        update_section(section, f"""## Demo peak memory{title} (`benchmarks/demo_memory.py`)

Machine: {machine()}. `echo-vlsm {r['command']}` from an empty state in a fresh copy of the
project, {limit}: exit {r['returncode']} after {r['seconds']:.0f} s, {r['slots']} job(s) at
once. Memory summed over the runner and every process it started:
RSS sampled every {args.interval} s ({r['samples']} samples; shared library pages counted
once per process, so an upper bound); USS (unique pages) and PSS (shared pages split among
the processes that map them: the tree's real footprint) every fifth sample. The verdict
reads PSS.

| peak RSS, all processes | processes at the peak | peak USS | peak PSS | Binder's 2 GiB |
|---|---|---|---|---|
| {rss} | {r['procs']} | {uss} | {pss} | {fits} |
""")
    return 0 if r["returncode"] == 0 else 1


def _slots_used(log: Path) -> int:
    """The most jobs the runner ran at once, from its "(slot i/n)" lines (one slot: none)."""
    text = log.read_text()
    found = re.findall(r"\(slot \d+/(\d+)\)", text)
    return max((int(n) for n in found), default=1 if ": running ..." in text else 0)


if __name__ == "__main__":
    sys.exit(main())
