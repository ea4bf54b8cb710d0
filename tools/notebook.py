"""Author a notebook in the project's shape: Colab badge, guarded install cell, parameters cell.

Used by developers when writing or reshaping a notebook (not by the package):

    from tools.notebook import write_notebook
    write_notebook("notebooks/01_data_preparation.ipynb", [
        ("md", "# 01 Data preparation\\nWhat and why ..."),
        ("params", 'source = "phantom"\\nn_patients = 20'),
        ("md", "## Export"),
        ("code", "records = read_camus(root)"),
    ], environment=True)

The first markdown cell gets the "Open in Colab" badge; a guarded install cell (runs only on
Colab) follows it; the ("params", ...) cell is tagged ``parameters`` for papermill and, with
``environment=True``, followed by a cell recording package versions, git commit and device
(``echo_vlsm.environment.print_environment``). Outputs are never stored.

The project's URL lives in one place, ``[project.urls] Repository`` of ``pyproject.toml``; the
badge and the install cell are made from it. After changing it (e.g. for a fork), rewrite them
in every notebook with ``python tools/notebook.py project-cells notebooks/*.ipynb``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

from echo_vlsm.io import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
BRANCH = "main"


def project_url(pyproject: str | Path | None = None) -> str:
    """``[project.urls] Repository`` of ``pyproject.toml`` (default: the project's), a GitHub
    URL, without a trailing slash or ``.git``."""
    pyproject = Path(pyproject or PYPROJECT)
    text = pyproject.read_text()
    try:
        import tomllib

        urls = tomllib.loads(text).get("project", {}).get("urls", {})
        url = urls.get("Repository") or urls.get("Homepage")
    except ImportError:  # Python 3.10: read the one line
        found = re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.M)
        url = found.group(1) if found else None
    if not url:
        raise ValueError(f"{pyproject}: no [project.urls] Repository (the project's GitHub URL)")
    return url.rstrip("/").removesuffix(".git").rstrip("/")


def github_repo(url: str | None = None) -> str:
    """``owner/name`` of the project's GitHub URL."""
    url = url or project_url()
    found = re.match(r"https://github\.com/([^/]+/[^/]+)$", url)
    if not found:
        raise ValueError(f"project URL {url!r} is not https://github.com/<owner>/<name>; the "
                         "Colab badge needs a GitHub repository")
    return found.group(1)


def install_cell(url: str | None = None) -> str:
    """The guarded install cell: on Colab it clones the project and installs it."""
    url = url or project_url()
    return f"""\
# On Colab, fetch and install the project first; elsewhere this cell does nothing.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run("git clone -q {url} echo-vlsm && pip install -q -e echo-vlsm",
                   shell=True, check=True)
    sys.path.insert(0, "echo-vlsm")"""


ENVIRONMENT_CELL = """\
from echo_vlsm.environment import print_environment

env = print_environment()  # package versions, git commit and device: what this run used"""

_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def badge(path: str | Path, url: str | None = None) -> str:
    repo = github_repo(url)
    link = f"https://colab.research.google.com/github/{repo}/blob/{BRANCH}/notebooks/{Path(path).name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def write_notebook(path: str | Path, cells: list[tuple[str, str]],
                   environment: bool = False) -> Path:
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
                nb.cells.append(nbformat.v4.new_code_cell(install_cell()))
                first_md = False
        elif kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(source))
        elif kind == "params":
            cell = nbformat.v4.new_code_cell(source)
            cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
            if environment:
                nb.cells.append(nbformat.v4.new_code_cell(ENVIRONMENT_CELL))
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


def project_cells(path: str | Path) -> bool:
    """Rewrite a notebook's Colab badge and install cell from the project URL, and add the
    environment cell after the parameters cell if it lacks one; touches nothing else.
    Returns whether the file changed."""
    path = Path(path)
    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    if _BADGE.search(first_md.source):
        first_md.source = _BADGE.sub(lambda _: badge(path), first_md.source)
    else:
        first_md.source = f"{first_md.source.rstrip()}\n\n{badge(path)}"
    install = next((c for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source),
                   None)
    if install is None:
        install = nbformat.v4.new_code_cell(install_cell())
        install["id"] = f"{path.stem[:2]}-install"
        nb.cells.insert(nb.cells.index(first_md) + 1, install)
    install.source = install_cell()
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    if not any("print_environment" in c.source for c in nb.cells if c.cell_type == "code"):
        cell = nbformat.v4.new_code_cell(ENVIRONMENT_CELL)
        cell["id"] = f"{path.stem[:2]}-env"
        nb.cells.insert(params + 1, cell)
    nbformat.validate(nb)
    after = nbformat.writes(nb) + "\n"
    if after != before:
        write_text_atomic(path, after)  # an interrupted rewrite leaves the notebook whole
    return after != before


if __name__ == "__main__":  # python tools/notebook.py strip|project-cells notebooks/*.ipynb
    if len(sys.argv) >= 3 and sys.argv[1] == "strip":
        for p in sys.argv[2:]:
            strip_outputs(p)
    elif len(sys.argv) >= 3 and sys.argv[1] == "project-cells":
        for p in sys.argv[2:]:
            print(p, "updated" if project_cells(p) else "unchanged")
    else:
        sys.exit("usage: python tools/notebook.py strip|project-cells NOTEBOOK...")
