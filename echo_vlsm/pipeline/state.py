"""What the runner keeps on disk besides its job records (``graph``): where run folders and
step notebooks live, and failure records. A failure leaves ``failure.json`` in the run folder
(``steps/<step>.failure.json`` for a step): the papermill cell, the exception and its message.
"""

from __future__ import annotations

import json
import os
import time
import traceback as tb
from pathlib import Path

from echo_vlsm.grid import Run
from echo_vlsm.io import write_json_atomic
from echo_vlsm.paths import resolve

FAILURE_FILE = "failure.json"


def run_dir(runs_root: str | os.PathLike, run: Run, root=None) -> Path:
    """``<runs_root>/<run_id>``."""
    return resolve(runs_root, root) / run.id


def steps_dir(runs_root: str | os.PathLike, root=None) -> Path:
    """``<runs_root>/steps``: executed step notebooks, their markers and failure records."""
    return resolve(runs_root, root) / "steps"


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
