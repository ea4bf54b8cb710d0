"""The experiment grid, sharding, and the papermill runner on a micro profile whose
notebooks (written here, in tmp) stand in for steps 01, 04 and 06."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from echo_vlsm import pipeline as P
from echo_vlsm.cli import main

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the grid


def test_study_grid_matches_the_study_tables():
    grid = P.study_grid()
    # Tables 1+2: 2 models x (8 real + 7 synthetic + 8 synth-pt-real-ft) x 2 encoders, plus
    # zero-shot for 2 models x 8 prompts: the 108 cells of paper_results.csv
    assert len(grid) == 108 == len(set(grid))
    assert sum(r.strategy == "synthetic" and r.prompt == "p7" for r in grid) == 0
    pos = {r: i for i, r in enumerate(grid)}
    for r in grid:
        dep = P.pretrain_source(r)
        if dep is not None:
            assert pos[dep] < pos[r]  # dependency order
    assert P.pretrain_source(P.Run("cris", "synth-pt-real-ft", "frozen", "p7")) == \
        P.Run("cris", "synthetic", "frozen", "p6")
    assert P.Run("cris", "synth-pt-real-ft", "frozen", "p3").id == "cris_synth-pt-real-ft_frozen_p3"


def test_select_grid_adds_dependencies_and_checks_values(tmp_path):
    runs = P.select_grid([{"models": ["cris"], "strategies": ["synth-pt-real-ft"],
                           "prompts": ["p7"], "encoders": ["trained"]}])
    assert [r.id for r in runs] == ["cris_synthetic_trained_p6", "cris_synth-pt-real-ft_trained_p7"]
    both = P.select_grid([{"strategies": ["real"], "prompts": ["p1"]},
                          {"models": "cris", "strategies": ["zeroshot"], "prompts": ["p0"]}])
    assert [r.id for r in both] == ["cris_zeroshot_frozen_p0", "clipseg_real_trained_p1",
                                    "clipseg_real_frozen_p1", "cris_real_trained_p1",
                                    "cris_real_frozen_p1"]
    with pytest.raises(P.ProfileError, match=r"x\.yaml: grid prompts \['p8'\] unknown"):
        P.select_grid([{"prompts": ["p8"]}], tmp_path / "x.yaml")
    with pytest.raises(P.ProfileError, match="unknown keys \\['model'\\]"):
        P.select_grid([{"model": ["cris"]}])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_covering_deterministic_and_keep_dependencies(n):
    grid = P.study_grid()
    shards = [P.shard_runs(grid, (i, n)) for i in range(1, n + 1)]
    flat = [r for s in shards for r in s]
    assert sorted(flat) == sorted(grid) and len(flat) == len(set(flat))
    assert shards == [P.shard_runs(grid, (i, n)) for i in range(1, n + 1)]
    where = {r: i for i, s in enumerate(shards) for r in s}
    for r in grid:
        dep = P.pretrain_source(r)
        if dep is not None:
            assert where[dep] == where[r]
    largest_group = max(len(g) for g in P.components(grid))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= largest_group
    for s in shards:  # each shard keeps the dependency order of the run list
        assert s == [r for r in grid if r in set(s)]
    with pytest.raises(ValueError, match="1 <= i <= n"):
        P.shard_runs(grid, (0, 2))
    assert P.parse_shard("2/4") == (2, 4)
    with pytest.raises(ValueError, match="expected i/n"):
        P.parse_shard("2of4")


def test_filter_runs_by_glob():
    grid = P.study_grid()
    got = P.filter_runs(grid, ["cris_real_*_p1", "clipseg_zeroshot_*"])
    assert {r.id for r in got} == {"cris_real_trained_p1", "cris_real_frozen_p1"} | {
        f"clipseg_zeroshot_frozen_p{i}" for i in range(8)}


def test_shipped_profiles_load():
    demo = P.load_profile("demo", ROOT)
    paper = P.load_profile("paper", ROOT)
    assert demo.name == "demo" and paper.name == "paper"
    assert len(paper.runs) == 108 and paper.runs == P.study_grid()
    assert {r.model for r in demo.runs} == {"clipseg", "cris"}
    assert {"p0", "p1"} <= {r.prompt for r in demo.runs}
    assert {r.strategy for r in demo.runs} >= {"real", "synthetic", "synth-pt-real-ft"}
    assert {r.encoders for r in demo.runs} == {"trained", "frozen"}
    for prof in (demo, paper):
        assert set(prof.steps) == set(P.PREPARE_STEPS) | set(P.ANALYSIS_STEPS)
        params = prof.run_parameters(prof.runs[0])
        assert params["runs_root"] == prof.runs_root and params["model"] == prof.runs[0].model
        for step in P.ANALYSIS_STEPS:
            sp = prof.step_parameters(step)
            assert set(sp) == {"profile", "runs_root", "figures_dir", "tables_dir"}
    assert paper.run_parameters(P.Run("clipseg", "real", "trained", "p1"))["lr"] == 2e-3
    assert paper.run_parameters(P.Run("cris", "real", "trained", "p1"))["lr"] == 2e-5


def test_load_profile_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: x\ngrids: []\n")
    with pytest.raises(P.ProfileError, match=r"bad\.yaml: unknown keys \['grids'\]"):
        P.load_profile(bad)
    bad.write_text("steps:\n  04_train_vlsm: {}\n")
    with pytest.raises(P.ProfileError, match="takes its parameters from 'train'"):
        P.load_profile(bad)
    with pytest.raises(P.ProfileError, match="no such profile; available"):
        P.load_profile("nonexistent", ROOT)


# ------------------------------------------------------------------ the runner

TRAIN_SRC = '''
import json, pathlib
root = pathlib.Path(runs_root)
run = f"{model}_{strategy}_{encoders}_{prompt}"
with open(root.parent / "executions.log", "a") as f:
    f.write(run + "\\n")
if strategy == "synth-pt-real-ft":
    src = "p6" if prompt == "p7" else prompt
    assert (root / f"{model}_synthetic_{encoders}_{src}" / "summary.json").is_file()
'''
TRAIN_FAIL = '''
if strategy == fail_strategy:
    raise ValueError(f"deliberate failure in {run}")
'''
TRAIN_WRITE = '''
d = root / run
d.mkdir(parents=True, exist_ok=True)
(d / "metrics.csv").write_text("model,strategy\\n" + f"{model},{strategy}\\n")
(d / "summary.json").write_text(json.dumps({"best_epoch": 1, "best_val_dice": 0.5,
    "seconds_to_best": 1.0, "epochs_run": 1, "seconds_total": 1.0, "done": True}))
'''


def _notebook(path, params, *cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


@pytest.fixture
def micro(tmp_path):
    """A folder of small notebooks and a profile factory (absolute paths in tmp)."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_data_preparation.ipynb", 'out_dir = "x"',
              'import pathlib\np = pathlib.Path(out_dir)\np.mkdir(parents=True, exist_ok=True)\n'
              'with open(p / "prepared.log", "a") as f:\n    f.write("prepared\\n")')
    _notebook(nbs / "04_train_vlsm.ipynb",
              'model = strategy = encoders = prompt = runs_root = fail_strategy = ""',
              TRAIN_SRC, TRAIN_FAIL, TRAIN_WRITE)
    _notebook(nbs / "06_dice_difference_plots.ipynb",
              'profile = ""\nruns_root = ""\nfigures_dir = ""\ntables_dir = ""',
              'import pathlib\nruns = sorted(p.parent.name for p in '
              'pathlib.Path(runs_root).glob("*/summary.json"))\n'
              't = pathlib.Path(tables_dir)\nt.mkdir(parents=True, exist_ok=True)\n'
              '(t / "report.md").write_text(profile + ": " + " ".join(runs))')

    def make(grid, train=None, analysis=True):
        prof = {
            "profile": "micro",
            "runs_root": str(tmp_path / "runs" / "micro"),
            "steps": {"01_data_preparation": {"out_dir": str(tmp_path / "data")}},
            "train": {"fail_strategy": None, **(train or {})},
            "grid": grid,
        }
        if analysis:
            prof["steps"]["06_dice_difference_plots"] = {
                "figures_dir": str(tmp_path / "figures"), "tables_dir": str(tmp_path / "paper")}
        path = tmp_path / "micro.yaml"
        path.write_text(yaml.safe_dump(prof))
        return path

    return tmp_path, nbs, make


def _executions(tmp_path):
    log = tmp_path / "runs" / "executions.log"
    return log.read_text().split() if log.exists() else []


@pytest.mark.notebook
def test_reproduce_runs_in_order_keeps_notebooks_and_resumes(micro):
    tmp, nbs, make = micro
    prof = make([{"models": ["clipseg"], "strategies": ["real"], "prompts": ["p0", "p1"],
                  "encoders": ["trained"]}])
    quiet = lambda msg: None  # noqa: E731
    out = P.reproduce(prof, notebooks_dir=nbs, root=tmp, log=quiet)
    assert out.executed == ["01_data_preparation", "clipseg_real_trained_p0",
                            "clipseg_real_trained_p1", "06_dice_difference_plots"]
    assert out.ok and out.report == tmp / "paper" / "report.md"
    assert out.report.read_text() == "micro: clipseg_real_trained_p0 clipseg_real_trained_p1"
    runs = tmp / "runs" / "micro"
    for rid in ("clipseg_real_trained_p0", "clipseg_real_trained_p1"):
        executed = nbformat.read(runs / rid / "04_train_vlsm.ipynb", as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert f'prompt = "{rid[-2:]}"' in injected[0].source
    assert (runs / "steps" / "01_data_preparation.ipynb").is_file()
    assert (runs / "steps" / "06_dice_difference_plots.done.json").is_file()

    # resume: nothing to do, nothing executed
    again = P.reproduce(prof, notebooks_dir=nbs, root=tmp, log=quiet)
    assert again.executed == [] and len(again.skipped) == 4
    assert (tmp / "data" / "prepared.log").read_text() == "prepared\n"
    assert _executions(tmp) == ["clipseg_real_trained_p0", "clipseg_real_trained_p1"]

    # an incomplete run is redone, and the analysis follows the new results
    (runs / "clipseg_real_trained_p1" / "summary.json").unlink()
    third = P.reproduce(prof, notebooks_dir=nbs, root=tmp, log=quiet)
    assert third.executed == ["clipseg_real_trained_p1", "06_dice_difference_plots"]

    table = P.status(prof, root=tmp)
    assert table.set_index("name")["state"].to_dict() == {
        "01_data_preparation": "done", "06_dice_difference_plots": "done",
        "clipseg_real_trained_p0": "done", "clipseg_real_trained_p1": "done"}


@pytest.mark.notebook
def test_keep_going_records_the_failure_and_skips_dependants(micro, capsys):
    tmp, nbs, make = micro
    prof = make([{"models": ["cris"], "strategies": ["synth-pt-real-ft", "real"],
                  "prompts": ["p2"], "encoders": ["frozen"]}],
                train={"fail_strategy": "synthetic"}, analysis=False)
    # without --keep-going the first failure stops everything
    with pytest.raises(P.PipelineError, match="cris_synthetic_frozen_p2 failed: ValueError"):
        P.reproduce(prof, notebooks_dir=nbs, root=tmp, log=lambda m: None)
    assert _executions(tmp) == ["cris_synthetic_frozen_p2"]

    rc = main(["reproduce", "--profile", str(prof), "--notebooks", str(nbs), "--keep-going"])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "FAILED cris_synthetic_frozen_p2: ValueError: deliberate failure" in printed
    assert "BLOCKED cris_synth-pt-real-ft_frozen_p2: needs cris_synthetic_frozen_p2" in printed
    assert _executions(tmp)[-1] == "cris_real_frozen_p2"  # the independent run went on

    runs = tmp / "runs" / "micro"
    record = json.loads((runs / "cris_synthetic_frozen_p2" / "failure.json").read_text())
    assert record["ename"] == "ValueError"
    assert record["evalue"] == "deliberate failure in cris_synthetic_frozen_p2"
    # cells: parameters, injected parameters, source, the failing one
    assert record["exec_count"] == 4 and "raise ValueError" in record["source"]
    assert record["parameters"]["fail_strategy"] == "synthetic"
    # the executed notebook, error included, is kept for inspection
    assert (runs / "cris_synthetic_frozen_p2" / "04_train_vlsm.ipynb").is_file()

    table = P.status(prof, root=tmp).set_index("name")
    assert table.loc["cris_synthetic_frozen_p2", "state"] == "failed"
    assert "deliberate failure" in table.loc["cris_synthetic_frozen_p2", "detail"]
    assert table.loc["cris_real_frozen_p2", "state"] == "done"
    assert table.loc["cris_synth-pt-real-ft_frozen_p2", "state"] == "pending"
    capsys.readouterr()
    assert main(["status", "--profile", str(prof), "--state", "failed"]) == 0
    shown = capsys.readouterr().out
    assert "cris_synthetic_frozen_p2" in shown and "cris_real_frozen_p2" not in shown
    assert "2 done, 0 started, 1 pending, 1 failed" in shown  # step 01 and the real run


@pytest.mark.notebook
def test_shards_split_the_runs_and_the_last_one_analyses(micro):
    tmp, nbs, make = micro
    prof = make([{"models": ["clipseg"], "strategies": ["real"], "prompts": ["p0", "p1"],
                  "encoders": ["trained"]}])
    first = P.reproduce(prof, notebooks_dir=nbs, root=tmp, shard=(1, 2), log=lambda m: None)
    runs_1 = [x for x in first.executed if x.startswith("clipseg")]
    assert len(runs_1) == 1 and first.waiting == ["05_freeze_ablation", "06_dice_difference_plots"]
    assert not (tmp / "paper" / "report.md").exists()
    second = P.reproduce(prof, notebooks_dir=nbs, root=tmp, shard=(2, 2), log=lambda m: None)
    runs_2 = [x for x in second.executed if x.startswith("clipseg")]
    assert len(runs_2) == 1 and set(runs_1 + runs_2) == {
        "clipseg_real_trained_p0", "clipseg_real_trained_p1"}
    assert "06_dice_difference_plots" in second.executed and second.report.is_file()
    assert sorted(_executions(tmp)) == sorted(runs_1 + runs_2)


def test_only_brings_incomplete_dependencies_along_in_a_dry_run(micro):
    tmp, nbs, make = micro
    prof = make([{"models": ["cris"], "strategies": "all", "prompts": ["p6", "p7"],
                  "encoders": ["trained"]}])
    lines = []
    out = P.reproduce(prof, notebooks_dir=nbs, root=tmp, only=["*synth-pt-real-ft*p7"],
                      stages=("runs",), dry_run=True, log=lines.append)
    would = [ln.split()[1].rstrip(":") for ln in lines if ln.endswith("would run")]
    assert would == ["cris_synthetic_trained_p6", "cris_synth-pt-real-ft_trained_p7"]
    assert out.executed == [] and _executions(tmp) == []
    # a profile step whose notebook is missing is reported before anything runs
    with05 = tmp / "with05.yaml"
    with05.write_text(yaml.safe_dump({"runs_root": str(tmp / "r"),
                                      "steps": {"05_freeze_ablation": {}}}))
    with pytest.raises(FileNotFoundError, match="05_freeze_ablation.ipynb: notebook missing"):
        P.reproduce(with05, notebooks_dir=nbs, root=tmp, log=lambda m: None)
