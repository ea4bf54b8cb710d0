"""Runs one job of the graph: lock, check, execute its notebook with papermill, record.

The same function runs a job for every launcher: in a subprocess of the local pool
(``python -m echo_vlsm.pipeline SPEC.json RESULT.json``) and inside a Slurm job (submitit calls
``run_job``), so the executed notebooks are the same in form wherever they ran.

A job whose lock another process holds is left to it (``busy``); one already done for its
inputs is ``skipped``; a run folder made for other inputs is cleared before the run starts
again (a partial run for the same inputs resumes). Started by the runner, the worker dies
with it, and takes every process below it (the notebook's kernel, its pools) along.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from echo_vlsm.grid import run_complete
from echo_vlsm.io import write_json_atomic
from echo_vlsm.pipeline.errors import PipelineError
from echo_vlsm.pipeline.graph import (
    Job,
    JobState,
    fingerprint,
    job_state,
    marker_record,
    read_marker,
)
from echo_vlsm.pipeline.locks import JobLock
from echo_vlsm.pipeline.state import failure_message, write_failure

BUSY = "busy"
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def execute_notebook(notebook: Path, output: Path, parameters: dict, cwd: Path,
                     kernel: str = "python3", timeout: int | None = None) -> None:
    """Run one notebook with papermill, keeping the executed copy at ``output``.

    The kernel's connection is encrypted (CurveZMQ) where jupyter_client and pyzmq support
    it; that also silences ipykernel's "Kernel is running over TCP without encryption"."""
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(cwd),
                        kernel_name=kernel, progress_bar=False, execution_timeout=timeout,
                        **_encryption())


def _encryption() -> dict:
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if "transport_encryption" in KernelManager.class_traits() and zmq.has("curve"):
        return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}
    return {}


def run_job(spec: dict) -> dict:
    """Run the job described by ``spec`` (``Job.to_dict`` of it and of the jobs it waits for,
    the notebook, the project root, kernel, timeout, env); return ``{"name", "status",
    "seconds", "message"}`` with status ``done``, ``skipped``, ``failed`` or ``busy``.

    The job's state is judged after the lock is taken, on the spec's jobs (the job and every
    job above it, ``Plan.spec``), as the runner judges it on its whole graph; ``message`` of a
    job that ran says the state it was found in unless that was ``pending``
    (``it was stale (inputs changed: ...)``)."""
    job = Job.from_dict(spec["job"])
    by_name = {d["name"]: Job.from_dict(d) for d in spec.get("upstream", [])}
    by_name[job.name] = job
    os.environ.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
    lock = JobLock(job.lock_path)
    if not lock.acquire():
        return {"name": job.name, "status": BUSY, "seconds": 0.0,
                "message": f"held by {lock.holder()}"}
    try:
        state = job_state(job, by_name)
        if state.state == "done":
            return {"name": job.name, "status": "skipped", "seconds": 0.0, "message": ""}
        _prepare_folder(job, by_name)
        write_json_atomic(job.marker, marker_record(job, by_name, "started", **_where()))
        t0 = time.perf_counter()
        try:
            execute_notebook(Path(spec["notebook"]), job.output, job.params,
                             Path(spec["root"]), spec.get("kernel", "python3"),
                             spec.get("timeout"))
            if job.kind == "run" and not run_complete(job.folder):
                raise PipelineError(
                    f"{job.notebook} finished but {job.folder} is not complete "
                    "(summary.json with done: true and metrics.csv expected)")
        except Exception as exc:
            record = write_failure(job.failure_path, _explain(exc), job.output, job.params,
                                   **({"run": job.name} if job.kind == "run" else {}))
            return {"name": job.name, "status": "failed",
                    "seconds": time.perf_counter() - t0, "message": failure_message(record)}
        seconds = time.perf_counter() - t0
        write_json_atomic(job.marker, marker_record(job, by_name, "done",
                                                    seconds=round(seconds, 2), **_where()))
        job.failure_path.unlink(missing_ok=True)
        return {"name": job.name, "status": "done", "seconds": seconds,
                "message": "" if state.state == "pending" else _was(state)}
    finally:
        lock.release()


def _was(state: JobState) -> str:
    """Why a job with work or a record on disk ran: the state it was found in."""
    return f"it was {state.state}" + (f" ({state.detail})" if state.detail else "")


def _where() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _prepare_folder(job: Job, by_name: dict[str, Job]) -> None:
    """A run folder made for other inputs or settings is emptied (its results would mix with
    the new ones); a partial run for the same inputs is kept, to resume."""
    if job.kind != "run" or not job.folder.is_dir():
        return
    marker = read_marker(job)
    if marker is not None and marker.get("fingerprint") == fingerprint(job, by_name):
        return
    keep = {job.lock_path.name, job.slurm_record.name}  # the runner's own records
    if marker is None and not any(c.name not in keep for c in job.folder.iterdir()):
        return
    for child in job.folder.iterdir():
        if child.name in keep:
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _explain(exc: BaseException) -> BaseException:
    """A dead kernel says what probably killed it (the kernel's memory limit, if known)."""
    if type(exc).__name__ != "DeadKernelError":
        return exc
    limit = cgroup_memory_limit()
    where = f" (this job's memory limit: {limit / 2**30:.1f} GiB)" if limit else ""
    return RuntimeError(f"the notebook's kernel died: killed by the system, most likely out of "
                        f"memory{where}; see `dmesg` or the cluster's job log ({exc})")


# ----------------------------------------------------------------------------- memory limits

#: A cgroup limit at or above this is "no limit" (v1 writes 2**63 rounded down to a page).
_NO_LIMIT = 1 << 60


def own_memory_cgroups(proc_cgroup: Path = Path("/proc/self/cgroup"),
                       mount: Path = Path("/sys/fs/cgroup")) -> list[tuple[Path, Path, str]]:
    """This process's cgroups that may carry a memory limit, as ``/proc/self/cgroup`` names
    them: (the hierarchy's folder, the process's own folder in it, the limit's file: cgroup v2
    ``memory.max``, v1 the memory controller's ``memory.limit_in_bytes``)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, name = mount, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = mount / "memory", "memory.limit_in_bytes"
        else:
            continue
        found.append((base, base / path.lstrip("/"), name))
    return found


def cgroup_memory_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                        mount: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The smallest memory limit on the way from this process's cgroup up to the hierarchy's
    root (``own_memory_cgroups``), in bytes; None where there is none."""
    limits = []
    for base, own, name in own_memory_cgroups(proc_cgroup, mount):
        for d in (own, *own.parents):
            if not d.is_relative_to(base):
                break
            try:
                text = (d / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < _NO_LIMIT:
                limits.append(int(text))
    return min(limits, default=None)


def memory_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                 mount: Path = Path("/sys/fs/cgroup")) -> int:
    """The bytes this process may use: its cgroups' limit (``cgroup_memory_limit``), else
    the machine's RAM."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit(proc_cgroup, mount)
    return ram if limit is None else min(ram, limit)


# ----------------------------------------------------------------------------- process hygiene


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass


def die_with_parent() -> None:
    """In a worker the runner started: SIGTERM when the runner dies, and adopt every orphaned
    process below (so the kernel's pools can be found and stopped)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_descendants(*_args) -> None:
    """Stop every process below this one (SIGKILL), then exit."""
    for _ in range(3):  # pools may fork while we kill
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    os._exit(143)


def main(argv: list[str] | None = None) -> int:
    """``python -m echo_vlsm.pipeline SPEC.json RESULT.json`` (``__main__``)."""
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    signal.signal(signal.SIGTERM, kill_descendants)
    spec = json.loads(Path(argv[0]).read_text())
    result = run_job(spec)
    write_json_atomic(Path(argv[1]), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
