"""What the runner keeps on disk: run folders, step markers, failure records.

A run is complete when its folder is (``echo_vlsm.grid.run_complete``); a step when its
marker ``<runs_root>/steps/<step>.done.json`` records the same parameters. A failure leaves
``failure.json`` in the run folder (``steps/<step>.failure.json`` for a step): the papermill
cell, the exception and its message.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback as tb
from pathlib import Path

from echo_vlsm.grid import SUMMARY_FILE, Run
from echo_vlsm.io import write_json_atomic
from echo_vlsm.paths import resolve

FAILURE_FILE = "failure.json"


def run_dir(runs_root: str | os.PathLike, run: Run, root=None) -> Path:
    """``<runs_root>/<run_id>``."""
    return resolve(runs_root, root) / run.id


def steps_dir(runs_root: str | os.PathLike, root=None) -> Path:
    """``<runs_root>/steps``: executed step notebooks, their markers and failure records."""
    return resolve(runs_root, root) / "steps"


def step_marker(sdir: Path, step: str) -> Path:
    return sdir / f"{step}.done.json"


def step_failure_name(step: str) -> str:
    return f"{step}.{FAILURE_FILE}"


def params_hash(params: dict) -> str:
    """A short hash of a parameter set (what a step marker records)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def runs_fingerprint(runs_root: str | os.PathLike, runs, root=None) -> str:
    """A hash of which runs have a summary and when it was written: the analysis steps are
    redone when it changes."""
    parts = []
    for run in runs:
        f = run_dir(runs_root, run, root) / SUMMARY_FILE
        if f.is_file():
            parts.append(f"{run.id}:{f.stat().st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def step_complete(marker: Path, expected_hash: str) -> bool:
    """The marker exists and records ``expected_hash``."""
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("params_hash") == expected_hash


def write_step_marker(marker: Path, expected_hash: str, seconds: float, params: dict) -> None:
    write_json_atomic(marker, {"params_hash": expected_hash, "seconds": round(seconds, 2),
                               "parameters": params, "time": _now()})


def read_failure(folder: str | os.PathLike, name: str = FAILURE_FILE) -> dict | None:
    """A failure record, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(folder) / name).read_text())
    except (OSError, ValueError):
        return None


def describe(exc: BaseException) -> dict:
    """What went wrong in a papermill execution: the failing cell and its exception."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return {"ename": exc.ename, "evalue": exc.evalue, "exec_count": exc.exec_count,
                "cell_index": exc.cell_index, "source": exc.source,
                "traceback": list(exc.traceback or [])[-6:]}
    return {"ename": type(exc).__name__, "evalue": str(exc), "exec_count": None,
            "cell_index": None, "source": None,
            "traceback": tb.format_exception(type(exc), exc, exc.__traceback__)[-3:]}


def write_failure(path: Path, exc: BaseException, notebook: Path, params: dict,
                  **extra) -> dict:
    """Write the failure record of a step or run to ``path`` and return it."""
    record = {**describe(exc), "notebook": str(notebook), **extra, "time": _now(),
              "parameters": params}
    write_json_atomic(path, record)
    return record


def failure_message(record: dict) -> str:
    """One line: exception, message, where it happened."""
    where = f"cell {record['exec_count']}" if record.get("exec_count") else "outside a cell"
    return f"{record.get('ename')}: {record.get('evalue')} ({where}; {record.get('notebook')})"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
