"""``echo-vlsm status``: each job of a profile's graph and where it stands.

States: ``done``; ``stale`` (done, but for other parameters or inputs: ``reproduce`` redoes
it); ``damaged`` (its files do not match its record); ``running`` (a process holds its lock:
host and pid in the detail); ``queued`` (submitted to Slurm, with the job id); ``failed``
(its failure record says why); ``started`` (partial work on disk); ``pending``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from echo_vlsm.grid import SUMMARY_FILE
from echo_vlsm.paths import project_root, resolve
from echo_vlsm.pipeline.graph import build_graph, graph_states, read_marker, set_fast_dev_run
from echo_vlsm.pipeline.locks import lock_holder
from echo_vlsm.pipeline.parameters import notebook_parameters
from echo_vlsm.pipeline.profiles import Profile, fast_dev_profile, load_profile

COLUMNS = ["name", "kind", "state", "seconds", "detail"]
STATES = ("done", "started", "pending", "failed", "stale", "damaged", "running", "queued")


def status(profile: str | os.PathLike | Profile = "demo",
           root: str | os.PathLike | None = None, *, fast_dev_run: int | None = None,
           notebooks_dir: str | os.PathLike | None = None):
    """A table of the profile's jobs (steps and runs, in graph order): ``name, kind, state,
    seconds, detail`` (see the module doc for the states); with ``fast_dev_run``, of its
    rehearsal. ``reproduce`` decides with the same rule."""
    import pandas as pd

    from echo_vlsm.pipeline.slurm import slurm_state

    root = Path(root) if root is not None else project_root()
    prof = profile if isinstance(profile, Profile) else load_profile(profile, root)
    if fast_dev_run is not None:
        prof = fast_dev_profile(prof, fast_dev_run)
    graph = build_graph(prof, root)
    if fast_dev_run is not None:
        nb_dir = resolve(notebooks_dir or "notebooks", root)
        set_fast_dev_run(graph, lambda stem: "fast_dev_run" in notebook_parameters(
            nb_dir / f"{stem}.ipynb"), fast_dev_run)
    states = graph_states(graph)
    rows = []
    for job in graph:
        state = states[job.name]
        name, detail = state.state, state.detail
        holder = lock_holder(job.lock_path)
        if holder is not None:
            name, detail = "running", f"on {holder.get('host')} (pid {holder.get('pid')}) " \
                                      f"since {holder.get('since', '?')}"
        elif name != "done" and (queued := slurm_state(job)) is not None:
            name, detail = queued
        seconds = None
        if state.state in ("done", "stale"):
            seconds = (read_marker(job) or {}).get("seconds")
            if job.kind == "run":
                seconds = _run_seconds(job.folder, seconds)
        rows.append({"name": job.name, "kind": job.kind, "state": name,
                     "seconds": seconds, "detail": detail})
    return pd.DataFrame(rows, columns=COLUMNS)


def _run_seconds(folder: Path, default):
    try:
        seconds = json.loads((folder / SUMMARY_FILE).read_text()).get("seconds_total")
        return round(float(seconds), 1) if seconds is not None else default
    except (OSError, ValueError, TypeError):
        return default
