"""Committed notebooks carry no outputs, give every cell an id, have a `parameters` cell, a
Colab badge and install cell."""

import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def hygiene_problems(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            problems.append(f"cell {i} carries outputs")
    # nbformat 4.5 requires ids (tools/notebook.py writes them); nbformat.read adds missing
    # ones silently, so the file itself is read
    for i, cell in enumerate(json.loads(Path(path).read_text())["cells"]):
        if not cell.get("id"):
            problems.append(f"cell {i} has no id")
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        problems.append("no cell tagged 'parameters'")
    first_md = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first_md is None or "colab.research.google.com" not in first_md.source:
        problems.append("first markdown cell lacks the Open in Colab badge")
    if not any(c.cell_type == "code" and "google.colab" in c.source for c in nb.cells):
        problems.append("no guarded install cell for Colab")
    problems += parameter_lines_papermill_cannot_read(nb)
    return problems


def parameter_lines_papermill_cannot_read(nb) -> list[str]:
    """Lines of the parameters cell that papermill's parameter inspection cannot parse (it
    prints "Unable to parse line ..." into every run's log, and `papermill --help-notebook`
    leaves them out)."""
    from papermill.translators import PythonTranslator

    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        return []
    names = {p.name for p in PythonTranslator.inspect(cells[0])}
    out = []
    for line in cells[0].source.splitlines():
        target = line.split("=", 1)[0].strip()
        if "=" in line and target.isidentifier() and target not in names:
            out.append(f"papermill cannot read the parameter line {line.strip()!r}")
    return out


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    assert hygiene_problems(path) == []


def test_hygiene_check_catches_a_parameter_line_papermill_cannot_read():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("a = 1  # fine\nb = 0.5  # a share (0 < b <= 1)\n")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    assert parameter_lines_papermill_cannot_read(nb) == [
        "papermill cannot read the parameter line 'b = 0.5  # a share (0 < b <= 1)'"]


def test_hygiene_check_catches_a_cell_without_an_id(tmp_path):
    from tools.notebook import write_notebook

    path = write_notebook(tmp_path / "99_x.ipynb", [("md", "# x"), ("params", "a = 1")])
    raw = json.loads(path.read_text())
    del raw["cells"][2]["id"]
    path.write_text(json.dumps(raw))
    assert hygiene_problems(path) == ["cell 2 has no id"]


def test_hygiene_check_catches_outputs_and_missing_parameters(tmp_path):
    from tools.notebook import write_notebook

    good = write_notebook(tmp_path / "99_x.ipynb",
                          [("md", "# x"), ("params", "a = 1"), ("code", "a")])
    assert hygiene_problems(good) == []
    nb = nbformat.read(good, as_version=4)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="1")]
    for c in nb.cells:
        c.metadata.pop("tags", None)
    nbformat.write(nb, good)
    assert hygiene_problems(good) == ["cell 3 carries outputs", "no cell tagged 'parameters'"]
