"""The jobs of one call of ``reproduce``: the profile's graph, which of its jobs this call runs
(stages, shard, ``only``), where the notebooks are, and what the call did (``Outcome``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from echo_vlsm.grid import pretrain_source, run_complete
from echo_vlsm.paths import project_root, resolve
from echo_vlsm.pipeline.graph import Job, build_graph, set_fast_dev_run
from echo_vlsm.pipeline.parameters import check_job_parameters, notebook_parameters
from echo_vlsm.pipeline.profiles import STAGES, Profile, fast_dev_profile, load_profile
from echo_vlsm.pipeline.selection import filter_runs, shard_runs, sort_key
from echo_vlsm.pipeline.state import run_dir

__all__ = ["Outcome", "Plan", "plan", "print_line"]


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


def print_line(msg: str) -> None:
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

    def above(self, job: Job) -> list[str]:
        """Every job of the graph that ``job`` waits for, directly or through others."""
        seen: dict[str, None] = {}
        todo = list(job.needs)
        while todo:
            name = todo.pop()
            if name in seen or name not in self.by_name:
                continue
            seen[name] = None
            todo.extend(self.by_name[name].needs)
        return list(seen)

    def notebook(self, stem: str) -> Path:
        path = self.nb_dir / f"{stem}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: notebook missing (profile {self.prof.path} needs it)")
        return path

    def spec(self, job: Job, env: dict | None = None) -> dict:
        """What a worker needs to run ``job``; ``upstream`` holds every job above it, not only
        those it waits for directly, so that the worker judges the job's state
        (``graph.job_state``, which follows the inputs up the graph) as this runner does."""
        return {"job": job.to_dict(),
                "upstream": [self.by_name[n].to_dict() for n in self.above(job)],
                "notebook": str(self.notebook(job.notebook)), "root": str(self.root),
                "kernel": self.prof.kernel, "timeout": self.prof.execution_timeout,
                "env": {**(env or {}), **self.prof.env}}


def plan(profile: str | os.PathLike | Profile = "demo", *, root=None, notebooks_dir=None,
         shard=None, only=None, stages: Iterable[str] = STAGES, fast_dev_run: int | None = None,
         log=print_line) -> Plan:
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
    in_call = [j.name for j in graph if j.stage in stages  # a run's evaluations go with it
               and (j.kind == "step" or (j.run.id if j.kind == "eval" and j.run else j.name)
                    in chosen)]
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
