"""The package keeps one direction of dependence (tools/imports.py, docs/architecture.md):
floor 1 (grid, structures, io, ...) <- data, prompts, sdm, models <- train <- pipeline,
analysis <- cli; no loops between modules."""

import textwrap

from tools import imports as I


def test_no_import_breaks_the_layers():
    problems = I.violations(I.graph())
    assert not problems, "\n".join(problems)


def test_no_module_over_500_lines_and_no_function_over_80():
    problems = I.size_problems()
    assert not problems, "\n".join(problems)


def test_the_size_check_sees_a_long_function(tmp_path):
    pkg = tmp_path / "echo_vlsm"
    pkg.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(85))
    (pkg / "long.py").write_text(f"def f():\n{body}")
    assert I.size_problems(pkg) == ["echo_vlsm.long.f: 86 lines (a function: at most 80)"]


def test_every_part_of_the_package_is_on_a_floor():
    for module in I.graph():
        I.floor(I.top(module))  # raises KeyError naming the module's part


def test_the_checker_sees_what_it_must(tmp_path):
    """The rule fails on a sideways import between floor-2 packages, on an upward import
    from floor 1 (also inside a function), and on a loop."""
    pkg = tmp_path / "echo_vlsm"
    files = {
        "__init__.py": "",
        "grid.py": "def f():\n    from echo_vlsm.train import loop\n",
        "data/__init__.py": "",
        "data/export.py": "from echo_vlsm.prompts.tasks import x\n",
        "prompts/__init__.py": "",
        "prompts/tasks.py": "from echo_vlsm.prompts import shape\nx = 1\n",
        "prompts/shape.py": "from . import tasks\n",
        "train/__init__.py": "",
        "train/loop.py": "import echo_vlsm.grid\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(textwrap.dedent(text))
    I._MODULES.clear()
    problems = I.violations(I.graph(pkg), pkg)
    text = "\n".join(problems)
    assert "echo_vlsm.grid (line 2) imports echo_vlsm.train.loop" in text
    assert "echo_vlsm.data.export (line 1) imports echo_vlsm.prompts.tasks" in text
    assert "import loop: echo_vlsm.prompts.shape -> echo_vlsm.prompts.tasks" in text
    assert "import loop: echo_vlsm.grid -> echo_vlsm.train.loop" in text  # up, then back down
    assert not any(p.startswith("echo_vlsm.train.loop") for p in problems)  # downward is fine
    assert len(problems) == 4
