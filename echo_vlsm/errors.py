"""The one shape of the project's bad-input errors: ``"<path>: <problem>"``.

Every error about a file (a CAMUS file, a task file, a profile, a metrics table, a released
synthetic set, ...) subclasses ``PathError``, so a caller can catch them all, read the file
from ``.path`` and the problem from ``.problem``, and the message always starts with the file.

Examples::

    >>> err = PathError("data/camus/patient0001/Info_2CH.cfg", "no 'ED' key")
    >>> str(err)
    "data/camus/patient0001/Info_2CH.cfg: no 'ED' key"
    >>> err.path.name
    'Info_2CH.cfg'
"""

from __future__ import annotations

import os
from pathlib import Path


class PathError(ValueError):
    """A file (or folder) that cannot be used; the message names it and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # survives pickling across a process pool
        return (type(self), (str(self.path), self.problem))
