"""The local pool: runs the jobs of a plan on this machine, up to ``n`` at once, in graph
order, each in a worker process (``python -m echo_vlsm.pipeline``). A job is started when
its inputs are ready (``Readiness``); a job another process holds is waited for; a failure
blocks what depends on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from tqdm.auto import tqdm

from echo_vlsm.grid import run_complete
from echo_vlsm.pipeline.graph import Job, job_state, read_marker
from echo_vlsm.pipeline.locks import lock_holder
from echo_vlsm.pipeline.plan import Plan
from echo_vlsm.pipeline.profiles import ANALYSIS_STEPS

__all__ = ["Pool", "Readiness", "Ready"]


class Readiness(Enum):
    """Whether a job of the pool may start now."""

    #: Its inputs are done: start it.
    READY = "ready"
    #: An input is still to run or running (here or in another process): ask again later.
    WAIT = "wait"
    #: An input failed, is blocked, or is a run outside the call that is not complete.
    BLOCKED = "blocked"
    #: The analysis of a shard: runs of the profile are not complete yet (other shards).
    OTHER_SHARDS = "waiting: other shards"
    #: The analysis: no run of the profile is complete.
    NO_RUN_COMPLETE = "waiting: no run is complete"


@dataclass(frozen=True)
class Ready:
    """A job's ``Readiness`` and, when blocked, why (``needs <job>, which failed``)."""

    kind: Readiness
    why: str = ""


READY = Ready(Readiness.READY)
WAIT = Ready(Readiness.WAIT)


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
    def _need_state(self, job: Job, need: str) -> Ready:
        """Whether ``job`` may run as far as its input ``need`` goes."""
        if need in self.bad:
            return Ready(Readiness.BLOCKED, f"needs {need}, which failed"
                         if need in self.p.out.failed else f"needs {need}, which is blocked")
        if need in self.finished:
            return READY
        if need in self.running or need in self.todo or need in self.elsewhere:
            return WAIT
        other = self.by_name.get(need)
        if other is None:
            return READY
        if other.kind == "run" and not run_complete(other.folder):  # outside this call
            return Ready(Readiness.BLOCKED, f"needs {need}, which is not complete")
        return READY  # a complete run, or a step outside the call's stages: assumed done

    def _analysis_ready(self, job: Job) -> Ready:
        """The analysis waits for the runs of the call, then needs complete runs."""
        for need in job.needs:
            other = self.by_name[need]
            if other.kind == "step":
                state = self._need_state(job, need)
                if state.kind is not Readiness.READY:
                    return state
            elif need in self.running or need in self.todo or need in self.elsewhere:
                return WAIT
        runs = [j for j in self.p.graph if j.kind == "run"]
        pending = [r for r in runs if not run_complete(r.folder)]
        if self.p.shard is not None and pending:
            return Ready(Readiness.OTHER_SHARDS)
        if len(pending) == len(runs):
            return Ready(Readiness.NO_RUN_COMPLETE)
        return READY

    def _ready(self, job: Job) -> Ready:
        if job.stage == "analysis":
            return self._analysis_ready(job)
        for need in job.needs:
            state = self._need_state(job, need)
            if state.kind is not Readiness.READY:
                return state
        return READY

    def _start_ready(self) -> bool:
        started = False
        for name in list(self.todo):
            if self.stop or len(self.running) >= self.n:
                break
            job = self.by_name[name]
            ready = self._ready(job)
            if ready.kind is Readiness.WAIT:
                continue
            if ready.kind in (Readiness.OTHER_SHARDS, Readiness.NO_RUN_COMPLETE):
                self.todo.remove(name)
                self._wait_note(ready.kind)
                continue
            if ready.kind is Readiness.BLOCKED:
                self.todo.remove(name)
                self.bad.add(name)
                self.p.out.blocked[name] = ready.why
                self.p.log(f"  {name}: skipped, {ready.why}")
                self.bar.update()
                continue
            if lock_holder(job.lock_path) is not None:
                self.todo.remove(name)
                self.elsewhere.add(name)
                self.p.log(f"  {name}: running in another process, waiting for it")
                continue
            if self._done_meanwhile(job):
                self.todo.remove(name)
                self._record(name, {"status": "skipped"})
                continue
            self._launch(job)
            self.todo.remove(name)
            started = True
        return started

    def _done_meanwhile(self, job: Job) -> bool:
        """Whether another process has done ``job`` since the call was planned (its record
        says done, for today's inputs): no worker is started for it. The worker judges again
        under the lock; this only spares starting one."""
        marker = read_marker(job)
        return (marker is not None and marker.get("state") == "done"
                and job_state(job, self.by_name).state == "done")

    def _wait_note(self, why: Readiness) -> None:
        if not self.p.out.waiting:
            self.p.out.waiting = list(ANALYSIS_STEPS)
            if why is Readiness.OTHER_SHARDS:
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
                       f"({len(self.finished)}/{len(self.in_call)})"
                       + (f"; {result['message']}" if result.get("message") else ""))
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
