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

The notebooks' parameters are documented in one place, their ``parameters`` cells: the tables
in ``CONTRIBUTING.md`` (between the ``param-tables`` markers) are generated from them with
``python tools/notebook.py param-tables --write``; ``--check`` (and ``tests/test_docs.py``)
fails when the two differ.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from dataclasses import dataclass
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
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
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


# ------------------------------------------------------------------ parameter tables

NOTEBOOKS = ROOT / "notebooks"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
BEGIN = ("<!-- param-tables: generated from the notebooks' parameters cells by "
         "`python tools/notebook.py param-tables --write`; do not edit -->")
END = "<!-- /param-tables -->"


@dataclass(frozen=True)
class Parameter:
    """One assignment of a notebook's ``parameters`` cell."""

    name: str
    default: str  # the source text of the value
    meaning: str  # its comments, joined


def parameters_source(path: str | Path) -> str:
    """The source of the notebook's cell tagged ``parameters``; ValueError naming the file."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            return str(cell.source)
    raise ValueError(f"{path}: no cell tagged 'parameters'")


def parse_parameters(source: str, where: str = "<parameters cell>") -> list[Parameter]:
    """The top-level assignments of a parameters cell, with their comments: a comment on a
    statement's line belongs to it, an indented comment line continues the statement above,
    a comment line at column 0 opens the next statement's meaning."""
    try:
        body = ast.parse(source).body
    except SyntaxError as exc:
        raise ValueError(f"{where}: the parameters cell is not valid Python ({exc})") from exc
    statements = [node for node in body if isinstance(node, ast.Assign)]
    notes: list[list[str]] = [[] for _ in statements]
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT or not statements:
            continue
        row, col = tok.start
        ends = [n.end_lineno or n.lineno for n in statements]
        inside = [i for i, n in enumerate(statements) if n.lineno <= row <= ends[i]]
        above = [i for i in range(len(statements)) if ends[i] < row]
        below = [i for i, n in enumerate(statements) if n.lineno > row]
        continues = col > 0 and not lines[row - 1][:col].strip() and above
        owner = (inside[0] if inside else above[-1] if continues or not below else below[0])
        notes[owner].append(tok.string.lstrip("#").strip())
    out = []
    for node, note in zip(statements, notes, strict=True):
        default = ast.get_source_segment(source, node.value) or ast.unparse(node.value)
        for target in node.targets:
            if not isinstance(target, ast.Name):
                raise ValueError(f"{where}: line {node.lineno}: assign to a plain name "
                                 f"(papermill sets parameters by name), not {ast.unparse(target)}")
            out.append(Parameter(target.id, " ".join(default.split()), " ".join(note)))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def param_table(path: str | Path) -> str:
    """The markdown table of one notebook's parameters, under a heading naming it."""
    path = Path(path)
    rows = [f"### `{path.stem}`", "", "| Parameter | Default | Meaning |", "| --- | --- | --- |"]
    for p in parse_parameters(parameters_source(path), str(path)):
        rows.append(f"| `{p.name}` | `{_cell(p.default)}` | {_cell(p.meaning)} |")
    return "\n".join(rows)


def param_tables(notebooks: list[Path] | None = None) -> str:
    """The generated block: every numbered notebook's table, in order, between the markers."""
    notebooks = sorted(notebooks or NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ValueError(f"{NOTEBOOKS}: no numbered notebook (NN_name.ipynb)")
    return "\n\n".join([BEGIN, *(param_table(p) for p in notebooks), END])


def with_param_tables(doc: str | Path, block: str) -> str:
    """``doc``'s text with the block between its markers replaced by ``block``."""
    text = Path(doc).read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{doc}: expected the generated parameter tables between one "
                         f"line {BEGIN!r} and, below it, one line {END!r}")
    return text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]


def param_tables_problem(doc: str | Path = CONTRIBUTING,
                         notebooks: list[Path] | None = None) -> str | None:
    """Why ``doc``'s parameter tables differ from the notebooks (``None`` when they match)."""
    block = param_tables(notebooks)
    text = Path(doc).read_text()
    if with_param_tables(doc, block) == text:
        return None
    import difflib

    current = text[text.index(BEGIN):text.index(END) + len(END)]
    diff = difflib.unified_diff(current.splitlines(), block.splitlines(), f"{doc} (now)",
                                "the notebooks' parameters cells", lineterm="", n=0)
    return (f"{doc}: the parameter tables differ from the notebooks; run "
            "`python tools/notebook.py param-tables --write`\n" + "\n".join(diff))


def write_param_tables(doc: str | Path = CONTRIBUTING,
                       notebooks: list[Path] | None = None) -> bool:
    """Rewrite ``doc``'s parameter tables from the notebooks; returns whether it changed."""
    after = with_param_tables(doc, param_tables(notebooks))
    if after == Path(doc).read_text():
        return False
    write_text_atomic(Path(doc), after)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/notebook.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    strip = sub.add_parser("strip", help="remove outputs and execution counts")
    strip.add_argument("notebooks", nargs="+", type=Path)
    cells = sub.add_parser("project-cells", help="rewrite the Colab badge and install cell")
    cells.add_argument("notebooks", nargs="+", type=Path)
    tables = sub.add_parser("param-tables", help="the docs' notebook-parameter tables")
    mode = tables.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate them from the notebooks")
    mode.add_argument("--check", action="store_true", help="exit 1 when they differ")
    tables.add_argument("--doc", type=Path, default=CONTRIBUTING)
    tables.add_argument("notebooks", nargs="*", type=Path,
                        help="default: notebooks/NN_*.ipynb")
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except ValueError as exc:  # a notebook or doc that cannot be read as expected
        print(f"tools/notebook.py {args.command}: {exc}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace) -> int:
    if args.command == "strip":
        for p in args.notebooks:
            strip_outputs(p)
    elif args.command == "project-cells":
        for p in args.notebooks:
            print(p, "updated" if project_cells(p) else "unchanged")
    elif args.write:
        print(args.doc, "updated" if write_param_tables(args.doc, args.notebooks) else "unchanged")
    else:
        problem = param_tables_problem(args.doc, args.notebooks)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(args.doc, "matches the notebooks")
    return 0


if __name__ == "__main__":  # python tools/notebook.py strip|project-cells|param-tables ...
    sys.exit(main())
