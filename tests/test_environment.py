"""The environment record of every notebook (``echo_vlsm.environment``) and the project-cells
tool that puts it, the Colab badge and the install cell into the notebooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

from echo_vlsm.environment import environment, format_environment, git_commit, package_version

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def test_environment_names_versions_commit_and_device():
    env = environment()
    assert env["packages"]["numpy"] == __import__("numpy").__version__
    assert env["packages"]["echo-vlsm"] == __import__("echo_vlsm").__version__
    assert package_version("no-such-distribution-xyz") == "not installed"
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    assert env["commit"].split("+")[0] == head if head else env["commit"] == "unknown"
    assert env["device"].startswith(("cpu", "cuda", "mps"))
    text = format_environment(env)
    assert text.splitlines()[0].startswith("python") and "numpy" in text


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_module_imports_no_torch():
    code = "import sys, echo_vlsm.environment; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_every_notebook_records_its_environment_after_the_parameters():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        following = nb.cells[i + 1]
        assert following.cell_type == "code" and "print_environment()" in following.source, path


def test_badge_and_install_cell_come_from_pyproject(tmp_path, monkeypatch):
    import tools.notebook as T

    url = T.project_url()
    repo = T.github_repo(url)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert T.badge(path) in nb.cells[0].source, path
        install = next(c for c in nb.cells if "google.colab" in c.source)
        assert install.source == T.install_cell(), path
        assert f"github/{repo}/blob/" in nb.cells[0].source
    # a fork changes the URL in pyproject only; project-cells rewrites every notebook
    fork = tmp_path / "pyproject.toml"
    fork.write_text('[project]\nname = "echo-vlsm"\n\n[project.urls]\n'
                    'Repository = "https://github.com/someone/echo-fork.git"\n')
    monkeypatch.setattr(T, "PYPROJECT", fork)
    copy = tmp_path / NOTEBOOKS[0].name
    copy.write_text(NOTEBOOKS[0].read_text())
    assert T.project_cells(copy) is True
    nb = nbformat.read(copy, as_version=4)
    assert "github/someone/echo-fork/blob/main/notebooks/" in nb.cells[0].source
    assert "git clone -q https://github.com/someone/echo-fork echo-vlsm" in nb.cells[1].source
    assert sum("print_environment" in c.source for c in nb.cells) == 1  # not added twice
    assert T.project_cells(copy) is False  # nothing left to change


def test_project_url_reads_pyproject(tmp_path):
    import tools.notebook as T

    fork = tmp_path / "pyproject.toml"
    fork.write_text('[project.urls]\nRepository = "https://github.com/someone/echo-fork.git/"\n')
    assert T.project_url(fork) == "https://github.com/someone/echo-fork"
    assert T.github_repo("https://github.com/a/b") == "a/b"
