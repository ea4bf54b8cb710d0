"""Author a notebook in the project's shape: Colab badge, guarded install cell, parameters cell.

Used by developers when writing or reshaping a notebook (not by the package):

    from tools.notebook import write_notebook
    write_notebook("notebooks/01_data_preparation.ipynb", [
        ("md", "# 01 Data preparation\\nWhat and why ..."),
        ("params", 'source = "phantom"\\nn_patients = 20'),
        ("md", "## Export"),
        ("code", "records = read_camus(root)"),
    ])

The first markdown cell gets the "Open in Colab" badge; a guarded install cell (runs only on
Colab) follows it; the ("params", ...) cell is tagged ``parameters`` for papermill. Outputs are
never stored.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

REPO = "echo-vlsm/echo-vlsm"
BRANCH = "main"

INSTALL_CELL = f"""\
# On Colab, fetch and install the project first; elsewhere this cell does nothing.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run("git clone -q https://github.com/{REPO} && pip install -q -e echo-vlsm",
                   shell=True, check=True)
    sys.path.insert(0, "echo-vlsm")"""


def badge(path: str | Path) -> str:
    url = f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{Path(path).name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def write_notebook(path: str | Path, cells: list[tuple[str, str]]) -> Path:
    path = Path(path)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    first_md = True
    for kind, source in cells:
        source = source.strip("\n")
        if kind == "md":
            if first_md:
                source = f"{source}\n\n{badge(path)}"
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
            if first_md:
                nb.cells.append(nbformat.v4.new_code_cell(INSTALL_CELL))
                first_md = False
        elif kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(source))
        elif kind == "params":
            cell = nbformat.v4.new_code_cell(source)
            cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
        else:
            raise ValueError(f"unknown cell kind {kind!r}; use 'md', 'code' or 'params'")
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
        cell["id"] = f"{path.stem[:2]}-{i:02d}"
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def strip_outputs(path: str | Path) -> None:
    """Remove outputs and execution counts from a notebook in place."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, path)


if __name__ == "__main__":  # python tools/notebook.py strip notebooks/*.ipynb
    if len(sys.argv) >= 3 and sys.argv[1] == "strip":
        for p in sys.argv[2:]:
            strip_outputs(p)
    else:
        sys.exit("usage: python tools/notebook.py strip NOTEBOOK...")
