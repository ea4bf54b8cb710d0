"""Profile parameters checked against the notebooks before anything runs.

papermill pastes each parameter into the notebook as ``key = value``: an unknown key would be
ignored (the step runs with its default and is marked done), and a key that is not a Python
name would run as code. So every key must be a name that the notebook's ``parameters`` cell
assigns, and every value plain data (YAML scalars, lists and mappings of those).

Examples::

    >>> check_key("n_patients", {"n_patients", "seed"}, "demo.yaml", "01_data_preparation")
    >>> check_key("n_patient", {"n_patients", "seed"}, "demo.yaml",
    ...           "01_data_preparation")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    echo_vlsm.pipeline.errors.ProfileError: demo.yaml: 01_data_preparation: unknown parameter
    'n_patient'; did you mean 'n_patients'? (the notebook's parameters: n_patients, seed)
"""

from __future__ import annotations

import ast
import difflib
import keyword
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from echo_vlsm.pipeline.errors import ProfileError

_SCALARS = (str, int, float, bool, type(None))


@lru_cache(maxsize=64)
def _parameters_cached(path: str, mtime_ns: int) -> frozenset[str]:
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except ValueError as exc:  # nbformat's NotJSONError does not name the file
        raise ProfileError(path, f"not a readable notebook ({str(exc)[:120]})") from exc
    cells = [c for c in nb.cells if c.cell_type == "code"
             and "parameters" in (c.metadata.get("tags") or [])]
    if not cells:
        raise ProfileError(path, "has no cell tagged 'parameters' (papermill needs one)")
    names: set[str] = set()
    for cell in cells:
        try:
            tree = ast.parse(cell.source)
        except SyntaxError as exc:
            raise ProfileError(path, f"its parameters cell is not valid Python ({exc})") from exc
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names.add(name.id)
    return frozenset(names)


def notebook_parameters(path: str | os.PathLike) -> frozenset[str]:
    """The names the notebook's ``parameters`` cell assigns (read with ``ast``)."""
    path = Path(path)
    return _parameters_cached(str(path), path.stat().st_mtime_ns)


def check_key(key, known: Iterable[str], profile: str | os.PathLike, where: str) -> None:
    """Raise ProfileError unless ``key`` is a Python name among ``known``."""
    known = sorted(known)
    if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
        raise ProfileError(profile, f"{where}: parameter key {key!r} is not a Python name "
                                    "(papermill would paste it into the notebook as code)")
    if key not in known:
        near = difflib.get_close_matches(key, known, n=3)
        hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ";"
        raise ProfileError(profile, f"{where}: unknown parameter {key!r}{hint} (the notebook's "
                                    f"parameters: {', '.join(known)})")


def check_value(value, profile: str | os.PathLike, where: str, key: str) -> None:
    """Raise ProfileError unless ``value`` is YAML plain data (scalars, lists, mappings)."""
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, list | tuple):
        for v in value:
            check_value(v, profile, where, key)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, _SCALARS):
                raise ProfileError(profile, f"{where}: parameter {key!r} has a mapping key "
                                            f"{k!r} of type {type(k).__name__}")
            check_value(v, profile, where, key)
        return
    raise ProfileError(profile, f"{where}: parameter {key!r} holds a {type(value).__name__}; "
                                "expected numbers, strings, booleans, null, lists or mappings")


def check_job_parameters(jobs, notebook_of, profile: str | os.PathLike) -> None:
    """Check every job's parameters against its notebook (``notebook_of(stem) -> Path``)."""
    for job in jobs:
        known = notebook_parameters(notebook_of(job.notebook))
        where = job.name if job.kind == "step" else f"{job.name} (train: / models:)"
        for key, value in job.params.items():
            check_key(key, known, profile, where)
            check_value(value, profile, where, key)
