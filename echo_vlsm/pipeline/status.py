"""``echo-vlsm status``: what of a profile is done, pending, started or failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from echo_vlsm.grid import STATE_FILE, SUMMARY_FILE, run_complete
from echo_vlsm.paths import project_root
from echo_vlsm.pipeline.profiles import (
    ANALYSIS_STEPS,
    PREPARE_STEPS,
    TRAIN_NOTEBOOK,
    Profile,
    load_profile,
)
from echo_vlsm.pipeline.state import (
    failure_message,
    read_failure,
    run_dir,
    step_failure_name,
    step_marker,
    steps_dir,
)

COLUMNS = ["name", "kind", "state", "seconds", "detail"]


def status(profile: str | os.PathLike | Profile = "demo",
           root: str | os.PathLike | None = None):
    """A table of the profile's steps and runs: ``name, kind, state, seconds, detail`` with
    state ``done``, ``pending``, ``started`` (has a checkpoint or executed notebook, not
    complete) or ``failed`` (its failure record says why)."""
    import pandas as pd

    root = Path(root) if root is not None else project_root()
    prof = profile if isinstance(profile, Profile) else load_profile(profile, root)
    sdir = steps_dir(prof.runs_root, root)
    rows = [_step_row(sdir, step) for step in (*PREPARE_STEPS, *ANALYSIS_STEPS)
            if step in prof.steps]
    rows += [_run_row(run_dir(prof.runs_root, run, root), run.id) for run in prof.runs]
    return pd.DataFrame(rows, columns=COLUMNS)


def _step_row(sdir: Path, step: str) -> dict:
    marker = step_marker(sdir, step)
    failure = read_failure(sdir, step_failure_name(step))
    done = marker.is_file()
    state = "done" if done else "failed" if failure else "pending"
    seconds = json.loads(marker.read_text()).get("seconds") if done else None
    detail = failure_message(failure) if failure and not done else ""
    return {"name": step, "kind": "step", "state": state, "seconds": seconds, "detail": detail}


def _run_row(folder: Path, name: str) -> dict:
    failure = read_failure(folder)
    seconds, detail = None, ""
    if run_complete(folder):
        state = "done"
        seconds, detail = _summary_facts(folder)
    elif failure:
        state, detail = "failed", failure_message(failure)
    elif any((folder / f).exists() for f in (STATE_FILE, f"{TRAIN_NOTEBOOK}.ipynb")):
        state = "started"
    else:
        state = "pending"
    return {"name": name, "kind": "run", "state": state, "seconds": seconds, "detail": detail}


def _summary_facts(folder: Path) -> tuple[float | None, str]:
    """Seconds and best validation dice of a complete run, as far as its summary says."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        seconds = summary.get("seconds_total")
        seconds = round(float(seconds), 1) if seconds is not None else None
        dice = summary.get("best_val_dice")
        return seconds, f"best val dice {float(dice):.3g}" if dice is not None else ""
    except (ValueError, TypeError):
        return None, ""
