"""Running a profile: ``reproduce`` (``echo-vlsm reproduce``) executes its graph of jobs.

Every job (``graph``) runs its notebook with papermill in a worker process (``worker``) that
holds the job's lock (``locks``), so two runners started together, or shards on several
machines sharing the folder, never run a job twice or write its files at the same time: a
job locked by another process is waited for while other work goes on. ``jobs=N`` runs up to
N jobs at once in graph order (one per GPU, pinned with ``CUDA_VISIBLE_DEVICES``, or the CPU
cores split between them); ``launcher="slurm"`` submits the graph to Slurm instead
(``slurm``). A job is complete for the inputs it was made from: an upstream change makes the
jobs below it stale, and ``reproduce`` redoes those (``keep_stale`` keeps finished runs and
flags them in the report).

The analysis steps (05, 06) run once every run of the call has finished and at least one run
is complete; with ``shard`` they wait until every run of the profile is complete (the last
shard to finish does them). ``keep_going`` carries on past a failure with what does not
depend on it.

What a call runs is its ``Plan`` (``pipeline.plan``); the local launcher is the ``Pool``
(``pipeline.pool``), the Slurm one ``pipeline.slurm``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import Any

from echo_vlsm.io import write_json_atomic
from echo_vlsm.paths import resolve
from echo_vlsm.pipeline.errors import PipelineError
from echo_vlsm.pipeline.graph import job_state
from echo_vlsm.pipeline.locks import lock_holder
from echo_vlsm.pipeline.plan import Outcome, Plan, plan, print_line
from echo_vlsm.pipeline.pool import Pool
from echo_vlsm.pipeline.profiles import STAGES, Profile
from echo_vlsm.pipeline.timeline import timeline
from echo_vlsm.pipeline.worker import memory_limit

TIMINGS_FILE = "reproduce_timings.jsonl"
STALE_FILE = "stale_runs.json"
LAUNCHERS = ("local", "slurm")


def reproduce(
    profile: str | os.PathLike | Profile = "demo",
    *,
    notebooks_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
    only: Iterable[str] | None = None,
    keep_going: bool = False,
    stages: Iterable[str] = STAGES,
    dry_run: bool = False,
    jobs: int | str = 1,
    gpus: Sequence[str] | None = None,
    keep_stale: bool = False,
    launcher: str = "local",
    slurm: dict | None = None,
    wait: bool = False,
    fast_dev_run: int | None = None,
    log=print_line,
) -> Outcome:
    """Run a profile's graph of jobs (see the module doc).

    Args:
        profile: a profile name (``demo``), a YAML path, or a loaded ``Profile``.
        notebooks_dir: holds ``01_*.ipynb`` .. ``06_*.ipynb`` (default ``notebooks/``).
        shard: ``(i, n)``: only the i-th of n shares of the runs; the analysis then waits
            until every run of the profile is complete.
        only: keep runs whose id matches a glob (the synthetic runs they need come along
            when not yet complete).
        keep_going: record a failure and carry on with what does not depend on it.
        stages: among ``prepare``, ``runs`` and ``analysis``.
        dry_run: print the graph and what would run; run nothing.
        jobs: jobs at once (``"auto"``: one per visible GPU, else 1).
        gpus: the GPUs to pin jobs to (default: all visible ones).
        keep_stale: keep finished runs whose inputs changed (flagged in the report).
        launcher: ``local`` (this machine) or ``slurm`` (submit and return, or ``wait``).
        slurm: Slurm options (partition, gpus_per_job, cpus_per_job, mem, time, account,
            extra); the profile's ``slurm:`` mapping is the default.
        fast_dev_run: rehearse the profile: every job capped to N batches / steps / images,
            everything written to ``-fdr`` folders (``profiles.fast_dev_profile``).

    Returns:
        An ``Outcome``: executed, skipped, failed, blocked, waiting, stale_kept, seconds.

    Raises:
        PipelineError: a job failed (unless ``keep_going``).
        ProfileError: a parameter the notebook does not have, or one that is not plain data.
        FileNotFoundError: a notebook the profile needs is missing (before any work).
    """
    t_start = time.perf_counter()
    p = plan(profile, root=root, notebooks_dir=notebooks_dir, shard=shard, only=only,
             stages=stages, fast_dev_run=fast_dev_run, log=log)
    p.keep_going = keep_going
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher={launcher!r}; expected one of {LAUNCHERS}")
    for key, value in p.prof.env.items():
        os.environ.setdefault(key, value)
    log(f"echo-vlsm reproduce: profile {p.prof.name} ({p.prof.path}), runs in "
        f"{p.prof.runs_root}" + (f", shard {shard[0]}/{shard[1]}" if shard else ""))
    todo = _todo(p, keep_stale)
    if dry_run:
        _print_graph(p, todo)
        return p.out
    if launcher == "slurm":
        from echo_vlsm.pipeline.slurm import submit

        submit(p, todo, {**(p.prof.slurm or {}), **(slurm or {})}, wait=wait)
        workers = None  # Slurm's: not this process's to know
    else:
        workers, envs = _slots(jobs, gpus, log=log)
        Pool(p, todo, workers, envs).run()
    return _finish(p, t_start, raise_on_fail=not keep_going, workers=workers)


# ----------------------------------------------------------------------------- what to do


def _todo(p: Plan, keep_stale: bool) -> list[str]:
    """The jobs of the call that are not done for their inputs, logging the rest."""
    by_name, todo = p.by_name, []
    memo: dict[str, Any] = {}  # graph.job_state's: the states, and the identities under a key
    n_runs = sum(by_name[n].kind == "run" for n in p.in_call)
    n_done = 0
    for name in p.in_call:
        job = by_name[name]
        state = job_state(job, by_name, memo)
        if state.state == "done":
            p.out.skipped.append(name)
            n_done += job.kind == "run"
            if job.kind == "step":
                p.log(f"  {name}: done before, skipped")
        elif state.state == "stale" and keep_stale and job.kind == "run":
            p.out.stale_kept.append(name)
            p.out.skipped.append(name)
            n_done += 1
            p.log(f"  {name}: stale ({state.detail}), kept (--keep-stale)")
        else:
            # a job another process holds may be a finished one whose record is being
            # written: the pool waits for it and judges it again then
            if state.state in ("stale", "damaged") and lock_holder(job.lock_path) is None:
                p.log(f"  {name}: {state.state} ({state.detail}), redone")
            todo.append(name)
    if n_runs:
        p.log(f"  runs: {n_runs} selected, {n_done} complete, {n_runs - n_done} to run")
    _record_stale(p)
    return todo


def _record_stale(p: Plan) -> None:
    """``<runs_root>/stale_runs.json``: the finished runs kept although their inputs changed
    (``--keep-stale``), which the report flags; removed when there are none."""
    path = resolve(p.prof.runs_root, p.root) / STALE_FILE
    if p.out.stale_kept:
        write_json_atomic(path, {"runs": p.out.stale_kept,
                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    else:
        path.unlink(missing_ok=True)


def _print_graph(p: Plan, todo: list[str]) -> None:
    """The graph of the call: each job to run, and what it waits for."""
    by_name = p.by_name
    for k, name in enumerate(todo, 1):
        p.log(f"  [{k}/{len(todo)}] {name}: would run")
        needs = by_name[name].needs
        if needs:
            shown = ", ".join(needs[:6]) + (f", ... ({len(needs)} in all)" if len(needs) > 6
                                            else "")
            p.log(f"        after: {shown}")


#: What one CPU job holds at its peak, its notebook kernel and its pool worker together:
#: the demo's training kernels reach about 1.0-1.1 GiB (PSS, benchmarks/demo_memory.py).
CPU_JOB_BYTES = int(1.2 * 2**30)
#: The runner's own share (about 0.1 GiB in the demo), kept free beside the jobs.
RUNNER_BYTES = 2**28


def _slots(jobs: int | str, gpus: Sequence[str] | None,
           log=print_line) -> tuple[int, list[dict]]:
    """How many jobs at once, and the environment of each slot (GPU pinning or threads).
    On the CPU, never more jobs than the memory limit holds (``CPU_JOB_BYTES`` each): on
    Binder's 2 GiB, `make demo`'s two jobs run one at a time, and the log says why."""
    visible = list(gpus) if gpus else visible_gpus()
    if jobs == "auto":
        jobs = max(1, len(visible))
    jobs = int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs={jobs}; expected a whole number >= 1 or 'auto'")
    if visible:
        if jobs > len(visible):
            raise ValueError(f"jobs={jobs} but only {len(visible)} GPUs ({visible}): one job "
                             "per GPU")
        return jobs, [{"CUDA_VISIBLE_DEVICES": str(visible[i])} for i in range(jobs)]
    limit = memory_limit()
    fits = max(1, (limit - RUNNER_BYTES) // CPU_JOB_BYTES)
    if jobs > fits:
        log(f"  {jobs} jobs at once need about {jobs * CPU_JOB_BYTES / 2**30:.1f} GiB; the "
            f"memory limit here is {limit / 2**30:.1f} GiB: {fits} at a time")
        jobs = fits
    threads = str(cpu_threads(jobs))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return jobs, [dict(env) for _ in range(jobs)]


def cpu_threads(jobs: int) -> int:
    """Threads per job on the CPU: the cores this process may use split between ``jobs``,
    never more than an ``OMP_NUM_THREADS`` already set (a limit the user, a scheduler or the
    test suite chose). More threads than free cores make torch's threads wait on each other:
    the tiny SDM trained 6x slower with 2 threads than with 1 on a busy 2-core machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    threads = max(1, cores // jobs)
    limit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if limit.isdigit() and int(limit) >= 1:
        threads = min(threads, int(limit))
    return threads


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES``, else those ``nvidia-smi``
    lists; none without a GPU (no torch import)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


# ----------------------------------------------------------------------------- the end


def _finish(p: Plan, t_start: float, raise_on_fail: bool, workers: int | None) -> Outcome:
    """Log the totals and where the time went, keep this call's timings, raise the first
    failure if asked."""
    out, log = p.out, p.log
    total = time.perf_counter() - t_start
    spent = timeline(p.graph, out.seconds, workers) if workers and out.seconds else None
    out.seconds["total"] = total
    log(f"echo-vlsm reproduce: {len(out.executed)} executed, {len(out.skipped)} skipped, "
        f"{len(out.failed)} failed, {len(out.blocked)} blocked, in {total:.1f} s")
    if spent is not None and len(out.executed) > 1:
        log(spent.describe(out.seconds))
    for name, msg in out.failed.items():
        log(f"  FAILED {name}: {msg}")
    for name, msg in out.blocked.items():
        log(f"  BLOCKED {name}: {msg}")
    if out.executed:
        path = resolve(p.prof.runs_root, p.root) / TIMINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # one line per call: a partial rerun keeps the full run's
            f.write(json.dumps({"profile": p.prof.name, "total_seconds": round(total, 1),
                                "seconds": {k: round(v, 1) for k, v in out.seconds.items()},
                                **(spent.record() if spent is not None else {}),
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    tables = p.prof.steps.get("06_dice_difference_plots", {}).get("tables_dir")
    if tables:
        report = resolve(tables, p.root) / "report.md"
        out.report = report if report.is_file() else None
    if raise_on_fail and out.failed:
        name, msg = next(iter(out.failed.items()))
        raise PipelineError(f"{name} failed: {msg}")
    return out


__all__ = ["LAUNCHERS", "Outcome", "Plan", "Pool", "plan", "reproduce", "visible_gpus"]
