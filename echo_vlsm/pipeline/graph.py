"""A profile as a graph of jobs: each notebook execution with its inputs and outputs.

Jobs and what each waits for (a step the profile does not have is left out, and its
dependents wait for the nearest step above it):

- ``01_data_preparation``: nothing;
- ``02_sdm_synthesis``: 01;
- ``03_prompt_generation:real`` (task files of the real set): 01;
- ``03_prompt_generation:synthetic`` (task files of the synthetic set): 02;
- a zero-shot or real run: the real task files; a synthetic run: both task files (it is
  scored on the real test split); a synth-pt-real-ft run: the synthetic run it starts from
  and the real task files. So real runs need not wait for the SDM;
- ``05_freeze_ablation``: every run; ``06_dice_difference_plots``: every run and 05;
  ``07_explore``: every run, 05 and 06;
- with ``evaluate_on`` (``10_cross_dataset``): ``10_cross_dataset:<dataset>`` exports a
  dataset that needs it (EchoNet: nothing before it); an evaluation ``<run_id>:eval-<dataset>``
  (kind ``eval``, one per run whose prompt the dataset can make) waits for its run and that
  export (a CAMUS-format target: for the real task files); ``09_clinical`` also waits for
  every evaluation, whose files its tables read.

A job is complete only for the inputs it was made from, as make or Snakemake would decide:
its marker records a *fingerprint*, the hash of its own parameters (without those that
change only where or how fast it runs) and of its inputs' identities (their markers'
fingerprints, and for a run the hash of its ``metrics.csv``). An upstream change makes every
job below it stale.

Examples::

    prof = load_profile("demo")
    jobs = build_graph(prof, root)
    [(j.name, j.needs) for j in jobs]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echo_vlsm.grid import (
    METRICS_FILE,
    STATE_FILE,
    SUMMARY_FILE,
    Run,
    parse_run_id,
    pretrain_source,
    run_complete,
    run_problem,
    sha256_file,
)
from echo_vlsm.pipeline.profiles import (
    ANALYSIS_STEPS,
    BEYOND_STEPS,
    CLINICAL_STEPS,
    CROSS_NOTEBOOK,
    EVAL_PROMPTS,
    PREPARED_DATASETS,
    TRAIN_NOTEBOOK,
    Profile,
)
from echo_vlsm.pipeline.state import (
    FAILURE_FILE,
    failure_message,
    read_failure,
    run_dir,
    steps_dir,
)

PROMPTS_STEP = "03_prompt_generation"
#: Parameters that change where or how fast a job runs, not what it computes.
RUNTIME_KEYS = frozenset({"device", "compile", "cache_dir", "save_predictions", "runs_root",
                          "workers", "channels_last", "frozen_cache"})
JOB_FILE = "job.json"  # a run folder's record of the job that made (or is making) it

#: ``03_prompt_generation`` runs once per dataset, so the real runs need not wait for the SDM.
PROMPT_PARTS = ("real", "synthetic")


@dataclass
class Job:
    """One notebook execution of a profile."""

    name: str                     # "01_data_preparation", "03_prompt_generation:real", run id
    kind: str                     # "step" | "run" | "eval" (a run scored on another dataset)
    notebook: str                 # notebook stem under notebooks/
    params: dict[str, Any]
    needs: tuple[str, ...]
    folder: Path                  # where its marker, lock and failure record live
    stage: str                    # prepare | runs | analysis
    run: Run | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def file_stem(self) -> str:
        return self.name.replace(":", "-")

    def _own(self, run_name: str, step_suffix: str, hidden: bool = False,
             eval_suffix: str | None = None) -> Path:
        """A file of this job: ``run_name`` in a run's folder; for an evaluation, in its
        run's folder, ``eval-<dataset><eval_suffix>`` (dot-prefixed when ``hidden``), never
        a file of the run's own job; else ``<stem><step_suffix>`` in the steps folder,
        which all steps share."""
        dot = "." if hidden else ""
        if self.kind == "run":
            return self.folder / run_name
        if self.kind == "eval":
            return self.folder / f"{dot}eval-{self.extra['dataset']}{eval_suffix or step_suffix}"
        return self.folder / f"{dot}{self.file_stem}{step_suffix}"

    @property
    def output(self) -> Path:
        """The executed notebook (an evaluation's: ``10_cross_dataset-<dataset>.ipynb``)."""
        if self.kind == "eval":
            return self.folder / f"{self.notebook}-{self.extra['dataset']}.ipynb"
        return self._own(f"{self.notebook}.ipynb", ".ipynb")

    @property
    def marker(self) -> Path:
        return self._own(JOB_FILE, ".done.json", eval_suffix=f".{JOB_FILE}")

    @property
    def lock_path(self) -> Path:
        return self._own(".job.lock", ".lock", hidden=True)

    @property
    def failure_path(self) -> Path:
        return self._own(FAILURE_FILE, f".{FAILURE_FILE}")

    @property
    def slurm_record(self) -> Path:
        return self._own(".slurm.json", ".slurm.json", hidden=True)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "notebook": self.notebook,
                "params": self.params, "needs": list(self.needs), "folder": str(self.folder),
                "stage": self.stage, "run": self.run.id if self.run else None,
                "extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        return cls(d["name"], d["kind"], d["notebook"], d["params"], tuple(d["needs"]),
                   Path(d["folder"]), d["stage"], parse_run_id(d["run"]) if d["run"] else None,
                   d.get("extra") or {})


# ----------------------------------------------------------------------------- the graph


def build_graph(prof: Profile, root: str | os.PathLike, runs: Sequence[Run] | None = None
                ) -> list[Job]:
    """Every job of ``prof`` (or only these ``runs``, with all the steps), in an order in
    which each job comes after what it waits for."""
    root = Path(root)
    sdir = steps_dir(prof.runs_root, root)
    runs = list(prof.runs if runs is None else runs)
    has = set(prof.steps)
    jobs: list[Job] = []

    def step(name: str, needs: Iterable[str], stage: str, params: dict, notebook=None):
        jobs.append(Job(name, "step", notebook or name, params, tuple(needs), sdir, stage))

    def first(*options: tuple[str, ...]) -> tuple[str, ...]:
        """The first option whose jobs all exist (a missing step defers to the one above)."""
        names = {j.name for j in jobs}
        for option in options:
            if all(n in names for n in option):
                return option
        return ()

    if "01_data_preparation" in has:
        step("01_data_preparation", (), "prepare", prof.step_parameters("01_data_preparation"))
    if "02_sdm_synthesis" in has:
        step("02_sdm_synthesis", first(("01_data_preparation",)), "prepare",
             prof.step_parameters("02_sdm_synthesis"))
    if PROMPTS_STEP in has:
        base = prof.step_parameters(PROMPTS_STEP)
        step(f"{PROMPTS_STEP}:real", first(("01_data_preparation",)), "prepare",
             {**base, "datasets": "real"}, PROMPTS_STEP)
        step(f"{PROMPTS_STEP}:synthetic",
             first(("02_sdm_synthesis",), ("01_data_preparation",)), "prepare",
             {**base, "datasets": "synthetic"}, PROMPTS_STEP)
    for dataset in prof.evaluate_on:  # a second dataset's export: no input of the study's
        if dataset in PREPARED_DATASETS:
            step(f"{CROSS_NOTEBOOK}:{dataset}", (), "prepare", prof.prepare_parameters(dataset),
                 CROSS_NOTEBOOK)
    real_data = first((f"{PROMPTS_STEP}:real",), ("01_data_preparation",))
    synthetic_data = first((f"{PROMPTS_STEP}:synthetic", f"{PROMPTS_STEP}:real"),
                           ("02_sdm_synthesis",), ("01_data_preparation",))
    in_call = set(runs)
    for run in runs:
        needs = {"synthetic": synthetic_data,  # mixed trains on both sets
                 "mixed": tuple(dict.fromkeys(real_data + synthetic_data))}.get(run.strategy,
                                                                                real_data)
        source = pretrain_source(run)
        if source is not None and source in in_call:
            needs = (source.id, *needs)
        jobs.append(Job(run.id, "run", TRAIN_NOTEBOOK, prof.run_parameters(run), needs,
                        run_dir(prof.runs_root, run, root), "runs", run))
    evaluations = _evaluations(prof, runs, root, real_data)
    jobs.extend(evaluations)
    run_ids = tuple(r.id for r in runs)
    if "05_freeze_ablation" in has:
        step("05_freeze_ablation", run_ids, "analysis",
             prof.step_parameters("05_freeze_ablation"))
    if "06_dice_difference_plots" in has:
        step("06_dice_difference_plots",
             run_ids + (("05_freeze_ablation",) if "05_freeze_ablation" in has else ()),
             "analysis", prof.step_parameters("06_dice_difference_plots"))
    if "07_explore" in has:
        step("07_explore", run_ids + tuple(n for n in ANALYSIS_STEPS if n in has), "analysis",
             prof.step_parameters("07_explore"))
    for name in (*BEYOND_STEPS, *CLINICAL_STEPS):  # after 06, whose report they add to
        if name in has:
            evals = tuple(j.name for j in evaluations) if name in CLINICAL_STEPS else ()
            step(name, run_ids + evals + tuple(n for n in ANALYSIS_STEPS if n in has),
                 "analysis", prof.step_parameters(name))
    return jobs


def _evaluations(prof: Profile, runs: Sequence[Run], root: Path,
                 real_data: tuple[str, ...]) -> list[Job]:
    """One ``eval`` job per run and dataset of ``evaluate_on`` whose prompt the dataset can
    make (``EVAL_PROMPTS``; the others are left out, and the analysis says why), after the
    run and the dataset's export (``10_cross_dataset:<dataset>``, or for a CAMUS-format
    target the real task files)."""
    out = []
    for dataset in prof.evaluate_on:
        data = ((f"{CROSS_NOTEBOOK}:{dataset}",) if dataset in PREPARED_DATASETS
                else real_data)
        makes = EVAL_PROMPTS.get(dataset)
        for run in runs:
            if makes is not None and run.prompt not in makes:
                continue
            out.append(Job(f"{run.id}:eval-{dataset}", "eval", CROSS_NOTEBOOK,
                           prof.eval_parameters(run, dataset), (run.id, *data),
                           run_dir(prof.runs_root, run, root), "runs", run,
                           {"dataset": dataset}))
    return out


def set_fast_dev_run(jobs: Sequence[Job], takes_it, n: int) -> None:
    """Tell every job whose notebook has a ``fast_dev_run`` parameter (``takes_it(stem)``)
    to cap its work at ``n`` (the rehearsal, ``profiles.fast_dev_profile``)."""
    for job in jobs:
        if takes_it(job.notebook):
            job.params["fast_dev_run"] = n


# ----------------------------------------------------------------------------- fingerprints


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def result_parameters(params: dict) -> dict:
    """The parameters that determine what a job computes."""
    return {k: v for k, v in params.items() if k not in RUNTIME_KEYS}


def read_marker(job: Job) -> dict | None:
    try:
        data = json.loads(job.marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def file_digest(path: Path) -> str | None:
    """The short SHA-256 of a file (``grid.sha256_file``), or None when it cannot be read."""
    try:
        return sha256_file(path)[:16]
    except OSError:
        return None


def identity(job: Job) -> str | None:
    """What a finished job hands to the jobs below it: its fingerprint and, for a run, the
    hash of its metrics; None while it is not finished."""
    marker = read_marker(job)
    if not marker or marker.get("state") != "done" or "fingerprint" not in marker:
        return None
    if job.kind == "run":
        return _hash([marker["fingerprint"], file_digest(job.folder / METRICS_FILE)])
    return marker["fingerprint"]


def _inputs(job: Job, by_name: dict[str, Job], identities: dict | None = None) -> list:
    """``[[name, identity], ...]`` of the jobs ``job`` waits for (``"-"`` for one not in
    this graph); ``identities`` caches them for one pass over a graph (each run's metrics are
    hashed once, not once per analysis step)."""
    identities = {} if identities is None else identities
    out = []
    for n in job.needs:
        if n not in by_name:
            out.append([n, "-"])
            continue
        if n not in identities:
            identities[n] = identity(by_name[n])
        out.append([n, identities[n]])
    return out


def _fingerprint_of(job: Job, inputs: list) -> str:
    return _hash({"params": result_parameters(job.params), "inputs": inputs})


def fingerprint(job: Job, by_name: dict[str, Job], identities: dict | None = None) -> str:
    """The fingerprint ``job`` would have if it ran now: its result parameters and the
    identities of its inputs (``"-"`` for an input not finished, or not in this graph)."""
    return _fingerprint_of(job, _inputs(job, by_name, identities))


# ----------------------------------------------------------------------------- states


@dataclass(frozen=True)
class JobState:
    """Where a job stands: ``done``, ``stale`` (done for other inputs or parameters),
    ``damaged`` (its files do not match its record), ``failed``, ``started`` (partial work
    on disk), ``pending``; ``detail`` says more."""

    state: str
    detail: str = ""


#: The key of ``job_state``'s memo under which it caches the inputs' identities.
_IDENTITIES = ("identities",)


def job_state(job: Job, by_name: dict[str, Job], memo: dict | None = None) -> JobState:
    """The state of ``job`` (see ``JobState``). A done job is stale when an input it waits
    for is not done itself (it will be redone first), as make would decide. ``memo`` keeps
    the states (and the inputs' identities) for one pass over a graph."""
    memo = {} if memo is None else memo
    if job.name not in memo:
        memo[job.name] = _job_state(job, by_name, memo)
    return memo[job.name]


def graph_states(jobs: Sequence[Job]) -> dict[str, JobState]:
    """The state of every job of a graph (one pass, inputs first)."""
    by_name = {j.name: j for j in jobs}
    memo: dict[str, JobState] = {}
    return {j.name: job_state(j, by_name, memo) for j in jobs}


def _job_state(job: Job, by_name: dict[str, Job], memo: dict) -> JobState:
    marker = read_marker(job) or {}
    failure = read_failure(job.failure_path.parent, job.failure_path.name)
    done = bool(marker) and marker.get("state") == "done"
    if job.kind == "run":
        problem = run_problem(job.folder) if done else None
        if problem is not None:
            return JobState("damaged", str(problem))
        if not done and run_complete(job.folder) and not failure:
            return JobState("stale", "complete, but not made by this runner's record")
    if done:
        upstream = {n: job_state(by_name[n], by_name, memo).state for n in job.needs
                    if n in by_name}
        # an input to be redone makes this stale; the analysis scores the runs that were
        # complete, so a failed or pending run does not undo it
        redo = [n for n, st in upstream.items() if st != "done"
                and (job.stage != "analysis" or st in ("stale", "damaged"))]
        if redo:
            shown = ", ".join(redo[:3]) + (f" and {len(redo) - 3} more" if len(redo) > 3 else "")
            return JobState("stale", f"inputs changed: {shown} to be redone")
        identities = memo.setdefault(_IDENTITIES, {})
        if marker.get("fingerprint") != fingerprint(job, by_name, identities):
            return JobState("stale", _stale_detail(job, marker, by_name, identities))
        return JobState("done", _done_detail(job, marker))
    if failure:
        return JobState("failed", failure_message(failure))
    if marker and marker.get("state") == "started":
        return JobState("started", f"since {marker.get('time', '?')}")
    if job.kind == "run" and any((job.folder / f).exists()
                                 for f in (STATE_FILE, f"{TRAIN_NOTEBOOK}.ipynb")):
        return JobState("started")
    return JobState("pending")


def _stale_detail(job: Job, marker: dict, by_name: dict[str, Job], identities: dict) -> str:
    if marker.get("params") is not None and \
            result_parameters(marker["params"]) != result_parameters(job.params):
        changed = sorted(k for k in set(marker["params"]) | set(job.params)
                         if k not in RUNTIME_KEYS
                         and marker["params"].get(k) != job.params.get(k))
        return f"parameters changed: {', '.join(changed)}"
    now = dict(_inputs(job, by_name, identities))
    changed = [n for n, ident in (marker.get("inputs") or [])
               if n in by_name and (now[n] if n in now else identity(by_name[n])) != ident]
    return f"inputs changed: {', '.join(changed) or 'upstream'}"


def _done_detail(job: Job, marker: dict) -> str:
    if job.kind != "run":
        return ""
    try:
        summary = json.loads((job.folder / SUMMARY_FILE).read_text())
        dice = summary.get("best_val_dice")
        return f"best val dice {float(dice):.3g}" if dice is not None else ""
    except (OSError, ValueError, TypeError):
        return ""


def marker_record(job: Job, by_name: dict[str, Job], state: str, **extra) -> dict:
    """The record a job writes when it starts (``state="started"``) or ends (``"done"``)."""
    inputs = _inputs(job, by_name)
    return {"job": job.name, "state": state, "fingerprint": _fingerprint_of(job, inputs),
            "inputs": inputs, "params": job.params, **extra}
