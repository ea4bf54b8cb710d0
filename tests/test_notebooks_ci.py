"""The nbval run of ``make test`` (``tests/notebooks_ci.py``): the scratch project it runs the
notebooks in, its CI parameters, and that a notebook whose defaults fail fails the suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from micro import write_notebook
from notebooks_ci import (
    CI_PARAMETERS,
    FRESH_FOLDERS,
    ROOT,
    read_ci_parameters,
    scratch_project,
)

TESTS = Path(__file__).resolve().parent


def test_scratch_project_holds_the_numbered_notebooks_and_fresh_folders(tmp_path):
    written = scratch_project(tmp_path / "p")
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p in written] == [p.name for p in sources] and len(written) >= 8
    pyproject = (tmp_path / "p" / "pyproject.toml").read_bytes()
    assert pyproject == (ROOT / "pyproject.toml").read_bytes()
    for name in FRESH_FOLDERS:
        assert list((tmp_path / "p" / name).iterdir()) == []
    assert (tmp_path / "p" / "notebooks" / "params" / "demo.yaml").is_file()


def test_ci_parameters_are_injected_after_the_parameters_cell_and_nothing_else_changes(tmp_path):
    written = {p.stem: p for p in scratch_project(tmp_path / "p")}
    source = nbformat.read(ROOT / "notebooks" / "01_data_preparation.ipynb", as_version=4)
    copy = nbformat.read(written["01_data_preparation"], as_version=4)
    i = next(k for k, c in enumerate(copy.cells) if "parameters" in c.metadata.get("tags", []))
    injected = copy.cells[i + 1]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert "n_patients = 3" in injected.source and "size = 64" in injected.source
    assert [c.source for c in copy.cells[:i + 1] + copy.cells[i + 2:]] == \
        [c.source for c in source.cells]
    # a notebook without CI parameters runs exactly as committed
    plain = nbformat.read(written["05_freeze_ablation"], as_version=4)
    original = nbformat.read(ROOT / "notebooks" / "05_freeze_ablation.ipynb", as_version=4)
    assert [c.source for c in plain.cells] == [c.source for c in original.cells]


def test_the_ci_parameters_name_parameters_the_notebooks_have():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    values = read_ci_parameters(CI_PARAMETERS, notebooks)
    assert values["01_data_preparation"]["n_patients"] == 3
    assert values["03_prompt_generation"] == {}  # defaults as committed


@pytest.mark.parametrize("text, message", [
    ("99_nothing: {a: 1}\n", "'99_nothing' is not a notebook"),
    ("01_a: {nope: 1}\n", "01_a: ['nope'] not assigned in the notebook's parameters cell"),
    ("01_a: [1, 2]\n", "01_a: expected a mapping parameter -> value"),
    ("01_a: {x: [1\n", "not valid YAML"),
])
def test_bad_ci_parameters_are_errors_naming_the_file(tmp_path, text, message):
    write_notebook(tmp_path / "01_a.ipynb", "x = 1\n")
    path = tmp_path / "ci_parameters.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{path}: .*") as err:
        read_ci_parameters(path, [tmp_path / "01_a.ipynb"])
    assert message in str(err.value)




@pytest.mark.notebook
@pytest.mark.slow
def test_notebooks_run_in_order_on_one_worker_and_a_failing_default_fails(tmp_path):
    """Three small notebooks under ``-n 2 --dist loadgroup``: 02 reads what 01 wrote in the
    scratch project (so they ran in order, in one place), 03's default fails the run; the
    project the notebooks came from stays untouched."""
    project = tmp_path / "project"
    nbs = project / "notebooks"
    write = ('from echo_vlsm.paths import resolve\n'
             'resolve("data/from_01.txt").write_text(str(n))')
    write_notebook(nbs / "01_a.ipynb", "n = 1000  # too big for CI", write)
    write_notebook(nbs / "02_b.ipynb", "", 'from echo_vlsm.paths import resolve\n'
              'assert resolve("data/from_01.txt").read_text() == "2"')
    write_notebook(nbs / "03_c.ipynb", "k = 0", "1 / k  # a default that no longer runs")
    (project / "ci_parameters.yaml").write_text("01_a: {n: 2}\n")
    (project / "data").mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    notebook\n    slow\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "notebooks_ci", "-p", "no:cacheprovider",
         "--nbval-lax", "-n", "2", "--dist", "loadgroup", "-c", str(tmp_path / "pytest.ini"),
         "--rootdir", str(tmp_path), "-v", str(project / "ci_parameters.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 6 passed" in out, out
    assert "FAILED project/ci_parameters.yaml::03_c.ipynb::Cell 1@notebooks" in out
    assert "ZeroDivisionError" in out
    workers = set(re.findall(r"\[(gw\d+)\] \[ *\d+%\] (?:PASSED|FAILED) project/", out))
    assert len(workers) == 1, out  # one worker ran them all, in order (02 read 01's file)
    assert list((project / "data").iterdir()) == []
