"""The graph as Slurm jobs, through submitit (``echo-vlsm reproduce --launcher slurm``).

Each job of the graph becomes one Slurm job that runs the same worker as the local pool
(papermill inside the Slurm job, so the executed notebooks are the same in form), with
``afterok`` dependencies on the jobs it waits for (``afterany`` for the analysis on the runs:
it scores what finished, as the local runner does). A job that fails makes Slurm cancel what
depends on it (``--kill-on-invalid-dep=yes``). The Slurm job id is kept in the job's folder
(``.slurm.json`` in a run folder, ``steps/.<step>.slurm.json``); ``echo-vlsm status`` shows it
and Slurm's state, and a second ``reproduce --launcher slurm`` submits only what is neither
complete nor queued or running. Logs: ``<runs_root>/slurm/<job id>_0_log.out``/``.err``.

Options (``--partition`` ... on the command line, or the profile's ``slurm:`` mapping):
``partition, gpus_per_job, cpus_per_job, mem, time`` (minutes), ``account``, ``extra``
(``KEY: VALUE`` passed to sbatch as ``--KEY=VALUE``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

from echo_vlsm.io import write_json_atomic
from echo_vlsm.paths import resolve
from echo_vlsm.pipeline.errors import PipelineError
from echo_vlsm.pipeline.graph import Job, job_state
from echo_vlsm.pipeline.locks import lock_holder
from echo_vlsm.pipeline.worker import BUSY, run_job

OPTION_KEYS = ("partition", "gpus_per_job", "cpus_per_job", "mem", "time", "account", "extra")
ACTIVE = {"PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued",
          "RESIZING": "queued", "SUSPENDED": "queued", "RUNNING": "running",
          "COMPLETING": "running"}


def slurm_job(spec: dict) -> dict:
    """The body of one Slurm job: run the graph job, waiting while another process holds
    it; raise on failure so that Slurm marks the job failed and cancels its dependants."""
    while True:
        result = run_job(spec)
        if result["status"] != BUSY:
            break
        time.sleep(5)
    if result["status"] == "failed":
        raise PipelineError(f"{result['name']} failed: {result['message']}")
    return result


def slurm_state(job: Job) -> tuple[str, str] | None:
    """``("queued" | "running", detail)`` while the job's recorded Slurm job is in the queue;
    None otherwise (or without Slurm)."""
    try:
        record = json.loads(job.slurm_record.read_text())
    except (OSError, ValueError):
        return None
    if shutil.which("squeue") is None:
        return None
    job_id = str(record.get("job_id"))
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    state = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    if state in ACTIVE:
        return ACTIVE[state], f"slurm job {job_id}: {state}"
    return None


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(f"slurm options {unknown} unknown; accepted: {list(OPTION_KEYS)}")
    return {k: v for k, v in options.items() if v is not None}


def _executor(folder, options: dict, name: str, dependency: str | None):
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=0)
    params: dict = {"job_name": name, "nodes": 1, "ntasks_per_node": 1}
    if options.get("partition"):
        params["partition"] = options["partition"]
    if options.get("cpus_per_job"):
        params["cpus_per_task"] = int(options["cpus_per_job"])
    if options.get("gpus_per_job"):
        params["gpus_per_node"] = int(options["gpus_per_job"])
    if options.get("mem"):
        params["mem"] = str(options["mem"])
    if options.get("time"):
        params["time"] = int(options["time"])
    if options.get("account"):
        params["account"] = options["account"]
    extra = {str(k): str(v) for k, v in (options.get("extra") or {}).items()}
    if dependency:
        extra["dependency"] = dependency
        extra["kill-on-invalid-dep"] = "yes"
    if extra:
        params["additional_parameters"] = extra
    ex.update_parameters(**params)
    return ex


def submit(p, todo: list[str], options: dict, wait: bool = False) -> None:
    """Submit every job of ``todo`` that is not queued or running yet, with dependencies
    from the graph; with ``wait``, stay until they have all left the queue."""
    options = check_options(options)
    by_name = p.by_name
    logs = resolve(p.prof.runs_root, p.root) / "slurm"
    ids: dict[str, str] = {}
    for name in todo:
        job = by_name[name]
        active = slurm_state(job)
        if active is not None:
            ids[name] = json.loads(job.slurm_record.read_text())["job_id"]
            p.log(f"  {name}: already {active[0]} ({active[1]}), not submitted again")
            continue
        if lock_holder(job.lock_path) is not None:
            p.log(f"  {name}: running in another process; its dependants start after it")
        dependency = _dependency(job, ids, by_name)
        ex = _executor(logs, options, name, dependency)
        submitted = ex.submit(slurm_job, p.spec(job))
        ids[name] = str(submitted.job_id)
        write_json_atomic(job.slurm_record, {"job_id": ids[name], "dependency": dependency,
                                             "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        p.out.submitted[name] = ids[name]
        p.log(f"  {name}: submitted as slurm job {ids[name]}"
              + (f" ({dependency})" if dependency else ""))
    if wait and ids:
        _wait(p, ids)


def _dependency(job: Job, ids: dict[str, str], by_name: dict[str, Job]) -> str | None:
    ok = [ids[n] for n in job.needs if n in ids and not  # a failed run or evaluation
          (job.stage == "analysis" and by_name[n].kind != "step")]  # leaves the analysis
    anyway = [ids[n] for n in job.needs if n in ids and job.stage == "analysis"
              and by_name[n].kind != "step"]
    parts = []
    if ok:
        parts.append("afterok:" + ":".join(ok))
    if anyway:
        parts.append("afterany:" + ":".join(anyway))
    return ",".join(parts) or None


def _wait(p, ids: dict[str, str]) -> None:
    """Poll the queue until every submitted job has left it; then read the outcome of each
    from its marker and failure record."""
    p.log(f"  waiting for {len(ids)} slurm jobs ...")
    while True:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids.values()), "-o", "%i"],
                             capture_output=True, text=True, timeout=60)
        if not out.stdout.strip():
            break
        time.sleep(2)
    by_name = p.by_name
    for name in ids:
        state = job_state(by_name[name], by_name)
        if state.state == "done":
            p.out.executed.append(name)
        elif state.state == "failed":
            p.out.failed[name] = state.detail
        else:
            p.out.blocked[name] = f"did not run ({state.state}; see "
            p.out.blocked[name] += f"{resolve(p.prof.runs_root, p.root) / 'slurm'})"
