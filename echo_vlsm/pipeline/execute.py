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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from echo_vlsm.grid import pretrain_source, run_complete
from echo_vlsm.io import write_json_atomic
from echo_vlsm.paths import project_root, resolve
from echo_vlsm.pipeline.errors import PipelineError
from echo_vlsm.pipeline.graph import Job, build_graph, job_state, set_fast_dev_run
from echo_vlsm.pipeline.locks import lock_holder
from echo_vlsm.pipeline.parameters import check_job_parameters, notebook_parameters
from echo_vlsm.pipeline.profiles import (
    ANALYSIS_STEPS,
    STAGES,
    Profile,
    fast_dev_profile,
    load_profile,
)
from echo_vlsm.pipeline.selection import filter_runs, shard_runs, sort_key
from echo_vlsm.pipeline.state import run_dir

TIMINGS_FILE = "reproduce_timings.jsonl"
STALE_FILE = "stale_runs.json"
LAUNCHERS = ("local", "slurm")


@dataclass
class Outcome:
    """What one call of ``reproduce`` did."""

    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    stale_kept: list[str] = field(default_factory=list)
    submitted: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def _log(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Plan:
    """One call of ``reproduce``: its jobs, which of them it runs, and where things are."""

    prof: Profile
    root: Path
    nb_dir: Path
    graph: list[Job]
    in_call: list[str]          # the jobs this call may run, in graph order
    shard: tuple[int, int] | None
    keep_going: bool
    log: Callable[[str], None]
    out: Outcome = field(default_factory=Outcome)
    by_name: dict[str, Job] = field(init=False)

    def __post_init__(self):
        self.by_name = {j.name: j for j in self.graph}

    def notebook(self, stem: str) -> Path:
        path = self.nb_dir / f"{stem}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: notebook missing (profile {self.prof.path} needs it)")
        return path

    def spec(self, job: Job, env: dict | None = None) -> dict:
        """What a worker needs to run ``job``."""
        by_name = self.by_name
        return {"job": job.to_dict(),
                "upstream": [by_name[n].to_dict() for n in job.needs if n in by_name],
                "notebook": str(self.notebook(job.notebook)), "root": str(self.root),
                "kernel": self.prof.kernel, "timeout": self.prof.execution_timeout,
                "env": {**(env or {}), **self.prof.env}}


def plan(profile: str | os.PathLike | Profile = "demo", *, root=None, notebooks_dir=None,
         shard=None, only=None, stages: Iterable[str] = STAGES, fast_dev_run: int | None = None,
         log=_log) -> Plan:
    """The jobs of a call: the profile's graph and the part of it this call runs (stages,
    shard, ``only``), its parameters checked against the notebooks; with ``fast_dev_run``,
    the rehearsal of the profile (``fast_dev_profile``)."""
    root = Path(root) if root is not None else project_root()
    prof = profile if isinstance(profile, Profile) else load_profile(profile, root)
    if fast_dev_run is not None:
        prof = fast_dev_profile(prof, fast_dev_run)
    stages = tuple(stages)
    bad = set(stages) - set(STAGES)
    if bad:
        raise ValueError(f"stages {sorted(bad)} unknown; accepted: {list(STAGES)}")
    graph = build_graph(prof, root)
    runs = prof.runs if shard is None else shard_runs(prof.runs, shard)
    selected = filter_runs(runs, only)
    if only:  # bring along the synthetic runs they start from, unless already complete
        needed = {d for d in map(pretrain_source, selected) if d is not None}
        needed = {d for d in needed - set(selected)
                  if not run_complete(run_dir(prof.runs_root, d, root))}
        selected = sorted(set(selected) | needed, key=sort_key)
    chosen = {r.id for r in selected}
    in_call = [j.name for j in graph if j.stage in stages
               and (j.kind == "step" or j.name in chosen)]
    p = Plan(prof, root, resolve(notebooks_dir or "notebooks", root), graph, in_call, shard,
             False, log)
    jobs = [p.by_name[n] for n in in_call]
    for job in jobs:  # fail early, before hours of work, if a notebook is missing
        p.notebook(job.notebook)
    if prof.fast_dev_run is not None:  # the notebooks that can cap their work are told to
        set_fast_dev_run(graph, lambda stem: "fast_dev_run" in notebook_parameters(
            p.notebook(stem)), prof.fast_dev_run)
    check_job_parameters(jobs, p.notebook, prof.path)
    return p


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
    log=_log,
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
    else:
        Pool(p, todo, *_slots(jobs, gpus)).run()
    return _finish(p, t_start, raise_on_fail=not keep_going)


# ----------------------------------------------------------------------------- what to do


def _todo(p: Plan, keep_stale: bool) -> list[str]:
    """The jobs of the call that are not done for their inputs, logging the rest."""
    by_name, todo, memo = p.by_name, [], {}
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
            if state.state in ("stale", "damaged"):
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


def _slots(jobs: int | str, gpus: Sequence[str] | None) -> tuple[int, list[dict]]:
    """How many jobs at once, and the environment of each slot (GPU pinning or threads)."""
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
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return jobs, [dict(env) for _ in range(jobs)]


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


# ----------------------------------------------------------------------------- the local pool


@dataclass
class _Running:
    proc: subprocess.Popen
    result: Path
    slot: int
    t0: float


class Pool:
    """Runs the jobs of a plan on this machine, up to ``n`` at once, in graph order."""

    def __init__(self, p: Plan, todo: list[str], n: int, slot_env: list[dict]):
        self.p, self.todo, self.n, self.slot_env = p, list(todo), n, slot_env
        self.by_name = p.by_name
        self.in_call = set(p.in_call)
        self.running: dict[str, _Running] = {}
        self.elsewhere: set[str] = set()     # locked by another process
        self.finished: set[str] = set(p.in_call) - set(todo)
        self.bad: set[str] = set()           # failed or blocked
        self.stop = False
        self.tmp = Path(tempfile.mkdtemp(prefix="echo-vlsm-jobs-"))
        self.bar = tqdm(total=len(todo), desc="jobs", unit="job", disable=None)

    def run(self) -> None:
        try:
            while (self.todo and not self.stop) or self.running or self.elsewhere:
                started = self._start_ready()
                ended = self._collect()
                ended = self._check_elsewhere() or ended
                if not started and not ended:
                    if not self.running and not self.elsewhere and self.todo:
                        self._give_up_on_waiting()
                        if not self.running:
                            break
                    time.sleep(0.2)
        finally:
            for r in self.running.values():  # an interrupt: stop the workers and their kernels
                r.proc.terminate()
            self.bar.close()

    # -- readiness
    def _need_state(self, job: Job, need: str) -> str:
        """``ok``, ``wait`` or why the job cannot run."""
        if need in self.bad:
            return f"needs {need}, which failed" if need in self.p.out.failed else \
                f"needs {need}, which is blocked"
        if need in self.finished:
            return "ok"
        if need in self.running or need in self.todo or need in self.elsewhere:
            return "wait"
        other = self.by_name.get(need)
        if other is None:
            return "ok"
        if other.kind == "run":  # a run outside this call must be complete
            return "ok" if run_complete(other.folder) else f"needs {need}, which is not complete"
        return "ok"  # a step outside the call's stages is assumed done

    def _analysis_ready(self, job: Job) -> str:
        """The analysis waits for the runs of the call, then needs complete runs."""
        for need in job.needs:
            other = self.by_name[need]
            if other.kind == "step":
                state = self._need_state(job, need)
                if state != "ok":
                    return state
            elif need in self.running or need in self.todo or need in self.elsewhere:
                return "wait"
        runs = [j for j in self.p.graph if j.kind == "run"]
        pending = [r for r in runs if not run_complete(r.folder)]
        if self.p.shard is not None and pending:
            return "waiting: other shards"
        if len(pending) == len(runs):
            return "waiting: no run is complete"
        return "ok"

    def _ready(self, job: Job) -> str:
        if job.stage == "analysis":
            return self._analysis_ready(job)
        for need in job.needs:
            state = self._need_state(job, need)
            if state != "ok":
                return state
        return "ok"

    def _start_ready(self) -> bool:
        started = False
        for name in list(self.todo):
            if self.stop or len(self.running) >= self.n:
                break
            job = self.by_name[name]
            ready = self._ready(job)
            if ready == "wait":
                continue
            if ready.startswith("waiting"):
                self.todo.remove(name)
                self._wait_note(ready)
                continue
            if ready != "ok":
                self.todo.remove(name)
                self.bad.add(name)
                self.p.out.blocked[name] = ready
                self.p.log(f"  {name}: skipped, {ready}")
                self.bar.update()
                continue
            if lock_holder(job.lock_path) is not None:
                self.todo.remove(name)
                self.elsewhere.add(name)
                self.p.log(f"  {name}: running in another process, waiting for it")
                continue
            self._launch(job)
            self.todo.remove(name)
            started = True
        return started

    def _wait_note(self, why: str) -> None:
        if not self.p.out.waiting:
            self.p.out.waiting = list(ANALYSIS_STEPS)
            if "other shards" in why:
                self.p.log("  analysis waits: runs of the profile are not complete yet "
                           "(other shards); the last shard to finish runs it")
            else:
                self.p.log("  analysis skipped: no run is complete")

    def _launch(self, job: Job) -> None:
        slot = next(i for i in range(self.n) if i not in {r.slot for r in self.running.values()})
        spec_path = self.tmp / f"{job.file_stem}.spec.json"
        result = self.tmp / f"{job.file_stem}.result.json"
        result.unlink(missing_ok=True)
        spec_path.write_text(json.dumps(self.p.spec(job, self.slot_env[slot])))
        # the profile's env wins: a profile that fixes the threads per job (the demo) gives the
        # same numbers whatever --jobs is
        env = {**os.environ, **self.slot_env[slot], **self.p.prof.env}
        proc = subprocess.Popen([sys.executable, "-m", "echo_vlsm.pipeline",
                                 str(spec_path), str(result)], cwd=self.p.root, env=env)
        self.running[job.name] = _Running(proc, result, slot, time.perf_counter())
        self.p.log(f"  {job.name}: running ..." + (f" (slot {slot + 1}/{self.n})"
                                                   if self.n > 1 else ""))

    # -- results
    def _collect(self) -> bool:
        ended = False
        for name, r in list(self.running.items()):
            if r.proc.poll() is None:
                continue
            ended = True
            del self.running[name]
            try:
                result = json.loads(r.result.read_text())
            except (OSError, ValueError):
                result = {"status": "failed", "seconds": time.perf_counter() - r.t0,
                          "message": f"the worker exited with code {r.proc.returncode} "
                                     "without a result"}
            self._record(name, result)
        return ended

    def _record(self, name: str, result: dict) -> None:
        out, status = self.p.out, result["status"]
        if status == "busy":
            self.elsewhere.add(name)
            self.p.log(f"  {name}: running in another process, waiting for it")
            return
        self.bar.update()
        if status == "skipped":
            out.skipped.append(name)
            self.finished.add(name)
            self.p.log(f"  {name}: done by another process, skipped")
        elif status == "done":
            out.executed.append(name)
            out.seconds[name] = result["seconds"]
            self.finished.add(name)
            self.p.log(f"  {name}: done in {result['seconds']:.1f} s "
                       f"({len(self.finished)}/{len(self.in_call)})")
        else:
            out.failed[name] = result["message"]
            self.bad.add(name)
            self.p.log(f"  {name}: FAILED {result['message']}")
            if not self.p.keep_going:
                self.stop = True

    def _check_elsewhere(self) -> bool:
        """A job another process held: done there, failed there, or ours to run now."""
        changed = False
        for name in list(self.elsewhere):
            job = self.by_name[name]
            if lock_holder(job.lock_path) is not None:
                continue
            self.elsewhere.discard(name)
            changed = True
            state = job_state(job, self.by_name)
            if state.state == "done":
                self._record(name, {"status": "skipped"})
            elif state.state == "failed":
                self._record(name, {"status": "failed", "message": state.detail})
            else:
                self.todo.insert(0, name)
        return changed

    def _give_up_on_waiting(self) -> None:
        """Nothing runs and nothing can start: what is left waits for what never comes."""
        for name in list(self.todo):
            self.todo.remove(name)
            self.bad.add(name)
            self.p.out.blocked[name] = "its inputs are not complete"
            self.p.log(f"  {name}: skipped, its inputs are not complete")


# ----------------------------------------------------------------------------- the end


def _finish(p: Plan, t_start: float, raise_on_fail: bool) -> Outcome:
    """Log the totals, keep this call's timings, raise the first failure if asked."""
    out, log = p.out, p.log
    total = time.perf_counter() - t_start
    out.seconds["total"] = total
    log(f"echo-vlsm reproduce: {len(out.executed)} executed, {len(out.skipped)} skipped, "
        f"{len(out.failed)} failed, {len(out.blocked)} blocked, in {total:.1f} s")
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
