"""The notebooks under nbval (``make test``: ``pytest --nbval-lax``), in a scratch project.

A reader who opens the notebooks on a fresh clone runs 01 to 08 top to bottom with their
defaults. The suite does the same, with two differences only:

- the notebooks run in a scratch copy of the project: ``pyproject.toml`` (so that
  ``echo_vlsm.paths.project_root`` finds it), ``notebooks/`` and fresh, empty ``data/`` and
  ``runs/`` folders, as on a fresh clone. The defaults' relative paths (``data/phantom``,
  ``runs/demo``, ...) resolve there, never in the reader's folders;
- the sizes in ``nbval_notebooks/ci_parameters.yaml`` (the one place of the CI parameters)
  replace the defaults of the same names, in a cell injected after each ``parameters`` cell
  (as papermill injects its parameters). Every other default runs as written.

Under ``--nbval`` or ``--nbval-lax``, :func:`pytest_collect_file` (the hook of
``nbval_notebooks/conftest.py``) collects a file named ``ci_parameters.yaml`` as one node
whose children are nbval's notebooks, in numbered order, marked ``notebook`` and ``slow``
(so ``make test-fast`` skips them) and grouped for ``--dist loadgroup`` (every cell's
name ends in ``@notebooks``), which keeps them on one worker, in order. The notebooks are
those of a ``notebooks/`` folder next to the YAML file if there is one (tests build such
small projects), else the project's. Without those options nothing is collected.
"""

from __future__ import annotations

import ast
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CI_PARAMETERS_NAME = "ci_parameters.yaml"
CI_PARAMETERS = Path(__file__).resolve().parent / "nbval_notebooks" / CI_PARAMETERS_NAME
#: The xdist group that keeps the notebooks on one worker, in order (``--dist loadgroup``).
GROUP = "notebooks"
#: The folders a fresh clone has empty (the reader's own stay untouched).
FRESH_FOLDERS = ("data", "runs")


def parameters_cell(nb: nbformat.NotebookNode, path: Path) -> int:
    """Index of the notebook's cell tagged ``parameters``; ValueError naming ``path``."""
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            return i
    raise ValueError(f"{path}: no cell tagged 'parameters'")


def assigned_names(source: str) -> list[str]:
    """The names a parameters cell assigns at top level, in order."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def read_ci_parameters(path: Path, notebooks: list[Path]) -> dict[str, dict]:
    """The CI parameters per notebook stem; ValueError naming ``path`` for a notebook that is
    not there or a parameter its ``parameters`` cell does not assign."""
    try:
        table = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a mapping notebook name -> {{parameter: value}}")
    by_stem = {p.stem: p for p in notebooks}
    for stem, values in table.items():
        if stem not in by_stem:
            raise ValueError(f"{path}: {stem!r} is not a notebook; expected one of "
                             f"{sorted(by_stem)}")
        if not isinstance(values, dict):
            raise ValueError(f"{path}: {stem}: expected a mapping parameter -> value")
        nb = nbformat.read(by_stem[stem], as_version=4)
        known = assigned_names(nb.cells[parameters_cell(nb, by_stem[stem])].source)
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{path}: {stem}: {unknown} not assigned in the notebook's "
                             f"parameters cell (it has {known})")
    return {stem: dict(table.get(stem) or {}) for stem in by_stem}


def scratch_project(scratch: Path, notebooks_dir: Path = NOTEBOOKS,
                    ci_parameters: Path = CI_PARAMETERS,
                    pyproject: Path = ROOT / "pyproject.toml") -> list[Path]:
    """Write the scratch project under ``scratch`` and return its notebooks, in numbered
    order, each with its CI parameters injected after its ``parameters`` cell."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    sources = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise ValueError(f"{notebooks_dir}: no numbered notebook (NN_name.ipynb)")
    values = read_ci_parameters(ci_parameters, sources)
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copy2(pyproject, scratch / "pyproject.toml")
    for name in FRESH_FOLDERS:
        (scratch / name).mkdir(exist_ok=True)
    out_dir = scratch / "notebooks"
    if (notebooks_dir / "params").is_dir():
        shutil.copytree(notebooks_dir / "params", out_dir / "params", dirs_exist_ok=True)
    out_dir.mkdir(exist_ok=True)
    written = []
    for source in sources:
        nb = load_notebook_node(str(source))  # papermill's reading: every cell has tags
        parameters_cell(nb, source)
        if values[source.stem]:
            nb = parameterize_notebook(nb, values[source.stem], comment="CI parameters "
                                       f"({ci_parameters.name})")
        nbformat.write(nb, out_dir / source.name)
        written.append(out_dir / source.name)
    return written


def grouped_notebook_class() -> type[pytest.File]:
    """nbval's notebook node whose cells' names end in ``@<GROUP>``: the nodeid suffix by
    which ``--dist loadgroup`` schedules a group on one worker, in order. xdist (3.8) means to
    add it for an ``xdist_group`` mark, but sets ``item._nodeid``, which pytest 9 no longer
    reads: without the suffix every cell is scheduled on its own, out of order, in other
    kernels (``tests/test_notebooks_ci.py`` runs such a case)."""
    from nbval.plugin import IPyNbCell, IPyNbFile

    class GroupedNotebook(IPyNbFile):
        def collect(self) -> Iterator[pytest.Item]:
            for cell in super().collect():
                suffix = "" if cell.name.endswith(f"@{GROUP}") else f"@{GROUP}"
                yield IPyNbCell.from_parent(self, name=cell.name + suffix,
                                            cell_num=cell.cell_num, cell=cell.cell,
                                            options=cell.options)

    return GroupedNotebook


class NotebookSequence(pytest.File):
    """The numbered notebooks of a scratch project, one nbval notebook node each, in order."""

    def collect(self) -> Iterator[pytest.Collector]:
        notebook = grouped_notebook_class()
        scratch = Path(tempfile.mkdtemp(prefix="echo-vlsm-nbval-"))
        self.config.add_cleanup(lambda: shutil.rmtree(scratch, ignore_errors=True))
        local = self.path.parent / "notebooks"
        notebooks_dir = local if local.is_dir() else NOTEBOOKS
        for path in scratch_project(scratch / "echo-vlsm", notebooks_dir, self.path):
            yield notebook.from_parent(self, path=path, name=path.name)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.File | None:
    """``ci_parameters.yaml`` as a :class:`NotebookSequence` under ``--nbval(-lax)``."""
    options = parent.config.option
    nbval_on = getattr(options, "nbval", False) or getattr(options, "nbval_lax", False)
    if not nbval_on or file_path.name != CI_PARAMETERS_NAME:
        return None
    node = NotebookSequence.from_parent(parent, path=file_path)
    for mark in (pytest.mark.notebook, pytest.mark.slow, pytest.mark.xdist_group(GROUP)):
        node.add_marker(mark)
    return node
