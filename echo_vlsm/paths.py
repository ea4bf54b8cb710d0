"""Where things live: the project root and the default folders under it.

Notebooks run from ``notebooks/`` (JupyterLab) or from the root (papermill, ``make demo``);
relative paths in parameters are resolved against the project root so both work.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``pyproject.toml``
    with this project's name; falls back to the folder above the package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and 'name = "echo-vlsm"' in candidate.read_text(errors="ignore"):
            return folder
    return Path(__file__).resolve().parent.parent


def resolve(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Absolute paths pass through; relative ones are taken from the project root."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (Path(root) if root is not None else project_root()) / p
