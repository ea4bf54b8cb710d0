"""Where a call's wall time went: its jobs' busy seconds against the longest chain of jobs that
wait for one another.

With ``n`` workers a call of the pool cannot finish sooner than the larger of two floors: its
jobs' seconds summed and shared out evenly (``busy / n``, every worker busy all the time) and
its critical path (the chain of jobs, each needing the one before, whose seconds add up to the
most: no number of workers shortens it). ``reproduce`` logs both at its end and keeps them in
``reproduce_timings.jsonl``; a wall time far above both says the pool waited (locks held
elsewhere, the memory limit), one at the chain says only shorter jobs on it would help.

Examples::

    >>> from pathlib import Path
    >>> def job(name, *needs):
    ...     return Job(name, "step", name, {}, needs, Path("."), "prepare")
    >>> graph = [job("data"), job("sdm", "data"), job("real", "data"), job("synthetic", "sdm")]
    >>> t = timeline(graph, {"data": 20, "sdm": 150, "real": 100, "synthetic": 140}, 2)
    >>> t.chain, t.chain_seconds, t.busy, t.floor
    (('data', 'sdm', 'synthetic'), 310.0, 410.0, 310.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from echo_vlsm.pipeline.graph import Job

__all__ = ["Timeline", "timeline"]


@dataclass(frozen=True)
class Timeline:
    """The two floors of a call's wall time (seconds)."""

    busy: float                 # the call's job seconds, summed
    workers: int                # jobs at once
    chain: tuple[str, ...]      # the critical path, first job first
    chain_seconds: float

    @property
    def floor(self) -> float:
        """The shortest wall time these jobs allow on ``workers`` workers."""
        return max(self.chain_seconds, self.busy / self.workers)

    def record(self) -> dict:
        """The JSON form kept in ``reproduce_timings.jsonl``."""
        return {"busy_seconds": round(self.busy, 1), "workers": self.workers,
                "critical_path": list(self.chain),
                "critical_path_seconds": round(self.chain_seconds, 1),
                "floor_seconds": round(self.floor, 1)}

    def describe(self, seconds: Mapping[str, float]) -> str:
        """Two lines for the runner's log."""
        chain = " -> ".join(f"{name} {seconds.get(name, 0.0):.0f} s" for name in self.chain)
        return (f"  where the time went: {self.busy:.0f} job-seconds on {self.workers} "
                f"worker(s) ({self.busy / self.workers:.0f} s if every worker were always busy);"
                f"\n  the longest chain of jobs waiting for one another, {self.chain_seconds:.0f}"
                f" s: {chain}")


def timeline(jobs: Sequence[Job], seconds: Mapping[str, float], workers: int) -> Timeline:
    """The busy seconds and critical path of the jobs in ``seconds`` (name -> seconds; other
    jobs of ``jobs`` count as 0 s, so a job done by an earlier call adds nothing), on
    ``workers`` workers. ``jobs`` in graph order (each after what it needs, as
    ``graph.build_graph`` gives them); needs outside ``jobs`` are ignored; ``total`` is not
    a job."""
    if workers < 1:
        raise ValueError(f"workers={workers}; expected at least 1")
    known = {job.name for job in jobs}
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for job in jobs:
        needs = [n for n in job.needs if n in finish]
        if len(needs) < len([n for n in job.needs if n in known]):
            raise ValueError(f"{job.name} comes before a job it needs: jobs must be in "
                             "graph order")
        last = max(needs, key=finish.__getitem__, default=None)
        finish[job.name] = (finish[last] if last else 0.0) + float(seconds.get(job.name, 0.0))
        before[job.name] = last
    busy = sum(float(seconds.get(name, 0.0)) for name in known)
    if not finish:
        return Timeline(busy, workers, (), 0.0)
    final = max(finish, key=finish.__getitem__)
    name: str | None = final
    chain = []
    while name is not None:
        if seconds.get(name, 0.0) > 0:
            chain.append(name)
        name = before[name]
    return Timeline(busy, workers, tuple(reversed(chain)), finish[final])
