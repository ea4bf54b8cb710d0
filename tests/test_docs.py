"""Documentation that cannot drift: the notebook-parameter tables in CONTRIBUTING.md are the
notebooks' ``parameters`` cells (``tools/notebook.py param-tables``), every markdown file the
code cites exists, and ``echo-vlsm --help`` names the notebooks there are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.notebook import (
    BEGIN,
    END,
    main,
    param_table,
    param_tables_problem,
    parse_parameters,
    write_notebook,
    write_param_tables,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_contributing_parameter_tables_match_the_notebooks():
    assert param_tables_problem(ROOT / "CONTRIBUTING.md") is None


def test_contributing_lists_every_parameter_of_notebook_04():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    table = text[text.index("### `04_train_vlsm`"):text.index("### `05_freeze_ablation`")]
    for name in ("real_fraction", "subset_seed", "provenance", "synthetic_ratio", "recipe",
                 "fast_dev_run"):
        assert f"| `{name}` |" in table, name
    assert '| `real_fraction` | `1.0` | train and validate on this share' in table


def test_comments_become_the_meaning_column():
    source = ('# a heading comment\n'
              'a = 1  # one\n'
              '       # and its continuation\n'
              'b = ["x",\n'
              '     "y"]  # real | synthetic\n'
              'c = None\n')
    params = parse_parameters(source)
    assert [(p.name, p.default, p.meaning) for p in params] == [
        ("a", "1", "a heading comment one and its continuation"),
        ("b", '["x", "y"]', "real | synthetic"),
        ("c", "None", ""),
    ]


def test_a_parameter_that_is_not_a_plain_name_is_refused():
    with pytest.raises(ValueError, match=r"nb\.ipynb: line 2: assign to a plain name"):
        parse_parameters("a = 1\nx.y = 2\n", "nb.ipynb")


def _project(tmp_path: Path) -> tuple[Path, list[Path]]:
    nbs = [write_notebook(tmp_path / "01_a.ipynb", [("md", "# a"), ("params", 'x = "a|b"  # x')]),
           write_notebook(tmp_path / "02_b.ipynb", [("md", "# b"), ("params", "n = 3  # count")])]
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Doc\n\nBefore.\n\n{BEGIN}\n{END}\n\nAfter.\n")
    return doc, nbs


def test_write_then_check_and_a_changed_default_fails_the_check(tmp_path, capsys):
    doc, nbs = _project(tmp_path)
    assert param_tables_problem(doc, nbs) is not None  # the empty block differs
    assert write_param_tables(doc, nbs) is True
    text = doc.read_text()
    assert text.startswith("# Doc\n\nBefore.\n\n") and text.endswith("\n\nAfter.\n")
    assert "| `x` | `\"a\\|b\"` | x |" in text and "| `n` | `3` | count |" in text
    assert text.index("### `01_a`") < text.index("### `02_b`")
    assert param_tables_problem(doc, nbs) is None
    assert write_param_tables(doc, nbs) is False

    write_notebook(nbs[1], [("md", "# b"), ("params", "n = 4  # count")])
    problem = param_tables_problem(doc, nbs)
    assert problem is not None and str(doc) in problem
    assert "-| `n` | `3` | count |" in problem and "+| `n` | `4` | count |" in problem
    argv = ["param-tables", "--check", "--doc", str(doc), *map(str, nbs)]
    assert main(argv) == 1
    assert "param-tables --write" in capsys.readouterr().err
    assert main(["param-tables", "--write", "--doc", str(doc), *map(str, nbs)]) == 0
    assert main(argv) == 0


def test_a_doc_without_the_markers_is_an_error_naming_it(tmp_path, capsys):
    doc, nbs = _project(tmp_path)
    doc.write_text("# Doc without markers\n")
    with pytest.raises(ValueError, match=re.escape(str(doc))):
        param_tables_problem(doc, nbs)
    assert main(["param-tables", "--check", "--doc", str(doc), *map(str, nbs)]) == 2
    assert str(doc) in capsys.readouterr().err


def test_a_notebook_without_a_parameters_cell_is_an_error_naming_it(tmp_path):
    path = write_notebook(tmp_path / "01_x.ipynb", [("md", "# x"), ("code", "x = 1")])
    with pytest.raises(ValueError, match=re.escape(f"{path}: no cell tagged 'parameters'")):
        param_table(path)


# Citations of markdown files in code, tools, tests and docs: a path ending in `.md` that lies
# under docs/ or whose name is upper case (README.md, benchmarks/RESULTS.md, ...); each must
# exist next to the citing file or under the project root.
MD_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


#: Citations that do not resolve by that rule, and why they stand.
NOT_FILES = {
    ("README.md", "RESULTS.md"): "its Layout block names it on the benchmarks/ line",
    ("benchmarks/train_step.py", "shared/reference/README.md"):
        "the development notes outside the repository (reported to the lead)",
}


def cited(text: str) -> set[str]:
    """The markdown files ``text`` cites (generated names such as ``report.md`` excluded)."""
    return {name for name in MD_PATH.findall(text)
            if name.startswith("docs/") or re.fullmatch(r"[A-Z][A-Z_-]*\.md", name.split("/")[-1])}


def _citing_files() -> list[Path]:
    files = [*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), ROOT / "Makefile"]
    for folder in ("echo_vlsm", "tools", "tests", "benchmarks"):
        files += (ROOT / folder).rglob("*.py")
    return sorted(f for f in files if f != Path(__file__).resolve())  # not its own examples


def test_citations_are_found_with_their_folder():
    text = "see docs/architecture.md, `benchmarks/RESULTS.md` and README.md; not report.md"
    assert cited(text) == {"docs/architecture.md", "benchmarks/RESULTS.md", "README.md"}


def test_every_cited_markdown_file_exists():
    missing = []
    for path in _citing_files():
        for name in cited(path.read_text(errors="ignore")):
            if (str(path.relative_to(ROOT)), name) in NOT_FILES:
                continue
            if not ((path.parent / name).is_file() or (ROOT / name).is_file()):
                missing.append(f"{path.relative_to(ROOT)} cites {name}")
    assert missing == []


def test_the_architecture_doc_is_cited_where_the_layering_is_enforced():
    assert (ROOT / "docs" / "architecture.md").is_file()
    for path in ("tools/imports.py", "tests/test_layering.py", "echo_vlsm/data/export.py"):
        assert "docs/architecture.md" in (ROOT / path).read_text(), path


def test_cli_help_names_the_notebooks_there_are(monkeypatch, capsys):
    from echo_vlsm.cli import main as cli

    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps at the terminal's width
    with pytest.raises(SystemExit):
        cli(["--help"])
    first, last = NOTEBOOKS[0].name[:2], NOTEBOOKS[-1].name[:2]
    assert f"run a profile's notebooks ({first}-{last}) with papermill" in capsys.readouterr().out


def test_contributing_names_every_field_of_model_spec():
    import dataclasses

    from echo_vlsm.models.base import ModelSpec

    text = " ".join((ROOT / "CONTRIBUTING.md").read_text().split())
    found = re.search(r"`ModelSpec\(([^)]*)\)`", text)
    assert found, "CONTRIBUTING.md: no `ModelSpec(...)` signature"
    named = [part.split("=")[0].strip() for part in found.group(1).split(",")]
    assert named == [f.name for f in dataclasses.fields(ModelSpec)]
