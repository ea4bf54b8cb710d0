"""The experiment grid, sharding, and the papermill runner on a micro profile whose
notebooks (written here, in tmp) stand in for steps 01, 04 and 06."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml
from micro import TRAIN_SRC, TRAIN_WRITE, executions, make_micro, write_notebook

from echo_vlsm import pipeline as P
from echo_vlsm.cli import main
from echo_vlsm.grid import file_records

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


def test_grid_blocks_beyond_the_study(tmp_path):
    """seeds, real_fractions and provenance cross a block's cells; `all` stays the study's;
    mixed and the U-Net come only when named; dependencies keep their seed."""
    assert P.select_grid([{"models": "all", "strategies": "all", "prompts": "all",
                           "encoders": "all"}]) == P.study_grid()
    runs = P.select_grid([{"models": ["cris"], "strategies": ["real", "synth-pt-real-ft"],
                           "prompts": ["p1"], "encoders": ["trained"], "seeds": [0, 2],
                           "real_fractions": [0.5, 1.0]}])
    assert [r.id for r in runs] == [
        "cris_synthetic_trained_p1", "cris_synthetic_trained_p1_seed2",  # the sources
        "cris_real_trained_p1", "cris_real_trained_p1_real50",
        "cris_real_trained_p1_seed2", "cris_real_trained_p1_seed2_real50",
        "cris_synth-pt-real-ft_trained_p1", "cris_synth-pt-real-ft_trained_p1_real50",
        "cris_synth-pt-real-ft_trained_p1_seed2", "cris_synth-pt-real-ft_trained_p1_seed2_real50"]
    mixed = P.select_grid([{"models": ["clipseg", "unet"], "strategies": ["mixed", "synthetic"],
                            "prompts": ["p1"], "encoders": ["trained"],
                            "provenance": [False, True], "real_fractions": [0.25]}])
    assert [r.id for r in mixed] == [
        "clipseg_synthetic_trained_p1", "unet_synthetic_trained_none",
        "clipseg_mixed_trained_p1_real25", "clipseg_mixed_trained_p1_real25_prov",
        "unet_mixed_trained_none_real25"]
    # zero-shot has no replicates
    zs = P.select_grid([{"models": "cris", "strategies": "zeroshot", "prompts": "p0",
                         "seeds": [0, 1, 2]}])
    assert [r.id for r in zs] == ["cris_zeroshot_frozen_p0"]
    for block, why in [({"seeds": [-1]}, "seeds: -1"), ({"seeds": [1.5]}, "seeds: 1.5"),
                       ({"real_fractions": [0]}, "real_fractions: 0"),
                       ({"real_fractions": ["half"]}, "real_fractions: 'half'"),
                       ({"provenance": ["yes"]}, "provenance \\['yes'\\] unknown"),
                       ({"strategies": ["mixd"]}, "strategies \\['mixd'\\] unknown")]:
        with pytest.raises(P.ProfileError, match=why):
            P.select_grid([block], tmp_path / "x.yaml")


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
        assert set(prof.steps) == set(P.PREPARE_STEPS) | set(P.ANALYSIS_STEPS) | set(
            P.EXPLORE_STEPS) | set(P.CLINICAL_STEPS)
        params = prof.run_parameters(prof.runs[0])
        assert params["runs_root"] == prof.runs_root and params["model"] == prof.runs[0].model
        for step in (*P.ANALYSIS_STEPS, *P.CLINICAL_STEPS):
            sp = prof.step_parameters(step)
            assert set(sp) == {"profile", "runs_root", "figures_dir", "tables_dir"}
    # CLIPSeg's lr comes from the recipe (2e-3; as-run finetunes synth-pt-real-ft at 2e-4)
    assert "lr" not in paper.run_parameters(P.Run("clipseg", "real", "trained", "p1"))
    assert paper.run_parameters(P.Run("cris", "real", "trained", "p1"))["lr"] == 2e-5


def test_demo_beyond_shares_the_demo_runs_and_skips_its_analysis():
    """The beyond profile reuses the demo's prepared data and finished runs: the same step
    parameters and run parameters, so the same fingerprints and run folders."""
    demo = P.load_profile("demo", ROOT)
    beyond = P.load_profile("demo-beyond", ROOT)
    assert beyond.runs_root == demo.runs_root
    assert set(beyond.steps) == set(P.PREPARE_STEPS) | set(P.BEYOND_STEPS)  # null: not run
    for step in P.PREPARE_STEPS:
        assert beyond.step_parameters(step) == demo.step_parameters(step)
    shared = set(beyond.runs) & set(demo.runs)
    assert {r.id for r in shared} >= {"cris_real_trained_p1", "clipseg_synth-pt-real-ft_trained_p1"}
    for run in shared:
        assert beyond.run_parameters(run) == demo.run_parameters(run)
    ids = {r.id for r in beyond.runs}
    assert {"cris_real_trained_p1_seed2", "cris_synthetic_trained_p1_seed2",
            "clipseg_mixed_trained_p1_prov", "cris_mixed_trained_p1_real25",
            "unet_synth-pt-real-ft_trained_none"} <= ids
    params = beyond.run_parameters(P.Run("cris", "mixed", "trained", "p1", seed=1,
                                         real_fraction=0.5, provenance=True))
    assert (params["seed"], params["real_fraction"], params["provenance"]) == (1, 0.5, True)
    assert beyond.step_parameters("08_beyond")["runs_root"] == "runs/demo"


def test_the_beyond_graph_waits_for_what_each_run_reads():
    """A mixed run waits for both datasets' task files, a replicate's synth-pt-real-ft run
    for its own seed's synthetic run, and notebook 08 for every run."""
    prof = P.load_profile("demo-beyond", ROOT)
    jobs = P.build_graph(prof, ROOT)
    needs = {j.name: j.needs for j in jobs}
    assert needs["cris_mixed_trained_p1_prov"] == ("03_prompt_generation:real",
                                                   "03_prompt_generation:synthetic")
    assert needs["cris_real_trained_p1_real25"] == ("03_prompt_generation:real",)
    assert needs["clipseg_synth-pt-real-ft_trained_p1_seed2"][0] == \
        "clipseg_synthetic_trained_p1_seed2"
    assert needs["unet_synth-pt-real-ft_trained_none"][0] == "unet_synthetic_trained_none"
    assert set(needs["08_beyond"]) == {r.id for r in prof.runs}
    assert [j.name for j in jobs][-1] == "08_beyond"


def test_the_clinical_step_waits_for_every_run_and_the_report():
    """Notebook 09 reads every run's clinical.csv (and its cross-dataset files) and adds its
    block to the report that 06 rewrites: it waits for the runs, their evaluations and 06."""
    prof = P.load_profile("demo", ROOT)
    jobs = P.build_graph(prof, ROOT)
    needs = {j.name: j.needs for j in jobs}
    evals = {j.name for j in jobs if j.kind == "eval"}
    assert set(needs["09_clinical"]) == {r.id for r in prof.runs} | set(P.ANALYSIS_STEPS) \
        | evals
    assert prof.step_parameters("09_clinical")["tables_dir"] == \
        prof.step_parameters("06_dice_difference_plots")["tables_dir"]


def test_a_run_key_of_the_grid_is_refused_in_train(tmp_path):
    for where, text in [("train.seed", "train: {seed: 3}"),
                        ("models.cris.real_fraction", "models: {cris: {real_fraction: 0.5}}")]:
        path = tmp_path / "p.yaml"
        path.write_text(f"profile: p\n{text}\ngrid: []\n")
        with pytest.raises(P.ProfileError, match=rf"p\.yaml: {where}: .* set by a grid block"):
            P.load_profile(path)


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

@pytest.fixture
def micro(tmp_path):
    """A folder of small notebooks and a profile factory (absolute paths in tmp)."""
    return make_micro(tmp_path)


def _executions(tmp_path):
    return executions(tmp_path)



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
        injected = [c for c in executed.cells
                    if "injected-parameters" in c.metadata.get("tags", [])]
        assert f'prompt = "{rid[-2:]}"' in injected[0].source
    assert (runs / "steps" / "01_data_preparation.ipynb").is_file()
    assert (runs / "steps" / "06_dice_difference_plots.done.json").is_file()

    # resume: nothing to do, nothing executed
    again = P.reproduce(prof, notebooks_dir=nbs, root=tmp, log=quiet)
    assert again.executed == [] and len(again.skipped) == 4
    assert (tmp / "data" / "prepared.log").read_text() == "prepared\n"
    assert _executions(tmp) == ["clipseg_real_trained_p0", "clipseg_real_trained_p1"]

    # an incomplete run is redone; the analysis after it is judged again when its turn
    # comes: the redone run's metrics are the same bytes, so it is done for its inputs
    (runs / "clipseg_real_trained_p1" / "summary.json").unlink()
    assert P.status(prof, root=tmp).set_index("name").loc[
        "clipseg_real_trained_p1", "state"] == "damaged"
    third = P.reproduce(prof, notebooks_dir=nbs, root=tmp, log=quiet)
    assert third.executed == ["clipseg_real_trained_p1"]
    assert "06_dice_difference_plots" in third.skipped
    # the analysis follows the runs' results: other metrics make it stale, and it is redone
    p0 = runs / "clipseg_real_trained_p0"
    with open(p0 / "metrics.csv", "a") as f:
        f.write("clipseg,real\n")
    summary = json.loads((p0 / "summary.json").read_text())  # as a run rescored records it
    summary["files"] = file_records(p0, list(summary["files"]))
    (p0 / "summary.json").write_text(json.dumps(summary))
    assert P.status(prof, root=tmp).set_index("name").loc[
        "06_dice_difference_plots", "state"] == "stale"
    fourth = P.reproduce(prof, notebooks_dir=nbs, root=tmp, log=quiet)
    assert fourth.executed == ["06_dice_difference_plots"]

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


# ------------------------------------------------------------------ graph, staleness, locks


def _micro_with_prompts(micro, n_runs_prompts=("p0", "p1")):
    """The micro profile with steps 02 and 03 too (03 runs once per dataset)."""
    tmp, nbs, make = micro
    write_notebook(nbs / "02_sdm_synthesis.ipynb", 'out_dir = "x"\nsampler = "dpm++"',
              'import pathlib\np = pathlib.Path(out_dir)\np.mkdir(parents=True, exist_ok=True)\n'
              'with open(p / "sdm.log", "a") as f:\n    f.write(sampler + "\\n")')
    write_notebook(nbs / "03_prompt_generation.ipynb", 'real_dir = ""\ndatasets = "both"',
              'import pathlib\nwith open(pathlib.Path(real_dir) / f"tasks-{datasets}.log", "a")'
              ' as f:\n    f.write("written\\n")')
    path = make([{"models": ["clipseg"], "strategies": ["real", "synthetic"],
                  "prompts": list(n_runs_prompts), "encoders": ["trained"]}])
    prof = yaml.safe_load(path.read_text())
    prof["steps"]["02_sdm_synthesis"] = {"out_dir": str(tmp / "synthetic")}
    prof["steps"]["03_prompt_generation"] = {"real_dir": str(tmp / "data")}
    path.write_text(yaml.safe_dump(prof))
    return path


def test_the_graph_lets_real_runs_start_before_the_sdm(micro):
    tmp, nbs, _ = micro
    prof = P.load_profile(_micro_with_prompts(micro), tmp)
    needs = {j.name: j.needs for j in P.build_graph(prof, tmp)}
    assert needs["02_sdm_synthesis"] == ("01_data_preparation",)
    assert needs["03_prompt_generation:real"] == ("01_data_preparation",)
    assert needs["03_prompt_generation:synthetic"] == ("02_sdm_synthesis",)
    assert needs["clipseg_real_trained_p0"] == ("03_prompt_generation:real",)
    assert needs["clipseg_synthetic_trained_p0"] == (
        "03_prompt_generation:synthetic", "03_prompt_generation:real")
    assert set(needs["06_dice_difference_plots"]) == {
        "clipseg_real_trained_p0", "clipseg_real_trained_p1", "clipseg_synthetic_trained_p0",
        "clipseg_synthetic_trained_p1"}


@pytest.mark.notebook
def test_an_upstream_change_makes_what_is_below_stale_and_only_that_is_redone(micro):
    tmp, nbs, _ = micro
    path = _micro_with_prompts(micro)
    quiet = lambda msg: None  # noqa: E731
    first = P.reproduce(path, notebooks_dir=nbs, root=tmp, log=quiet, jobs=2)
    assert first.ok and len(first.executed) == 9  # 01, 02, 03 x 2, 4 runs, 06
    # the SDM's sampler changes: 02, the synthetic task files and runs, the analysis redo
    prof = yaml.safe_load(path.read_text())
    prof["steps"]["02_sdm_synthesis"]["sampler"] = "ddim"
    path.write_text(yaml.safe_dump(prof))
    table = P.status(path, root=tmp).set_index("name")["state"]
    stale = {"02_sdm_synthesis", "03_prompt_generation:synthetic", "clipseg_synthetic_trained_p0",
             "clipseg_synthetic_trained_p1", "06_dice_difference_plots"}
    assert set(table[table == "stale"].index) == stale
    assert set(table[table == "done"].index) == set(table.index) - stale
    again = P.reproduce(path, notebooks_dir=nbs, root=tmp, log=quiet)
    assert set(again.executed) == stale
    assert (tmp / "synthetic" / "sdm.log").read_text() == "dpm++\nddim\n"
    assert (tmp / "data" / "tasks-real.log").read_text() == "written\n"  # not redone
    assert _executions(tmp).count("clipseg_real_trained_p0") == 1
    assert _executions(tmp).count("clipseg_synthetic_trained_p0") == 2
    assert set(P.status(path, root=tmp)["state"]) == {"done"}
    # each call's timings are kept
    lines = (tmp / "runs" / "micro" / "reproduce_timings.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "01_data_preparation" in json.loads(lines[0])["seconds"]
    # with where the time went: the jobs' summed seconds and the longest chain of needs
    call = json.loads(lines[0])
    jobs = {k: v for k, v in call["seconds"].items() if k != "total"}
    assert call["critical_path"][0] == "01_data_preparation"
    assert call["busy_seconds"] == pytest.approx(sum(jobs.values()), abs=0.1 * len(jobs))
    assert call["critical_path_seconds"] == pytest.approx(
        sum(jobs[n] for n in call["critical_path"]), abs=0.1 * len(jobs))
    assert call["floor_seconds"] == pytest.approx(max(
        call["critical_path_seconds"], call["busy_seconds"] / call["workers"]), abs=0.1)
    assert call["floor_seconds"] <= call["seconds"]["total"]


@pytest.mark.notebook
def test_keep_stale_keeps_finished_runs_and_says_so(micro):
    tmp, nbs, make = micro
    path = make([{"models": ["cris"], "strategies": ["real"], "prompts": ["p1"],
                  "encoders": ["trained"]}], analysis=False)
    P.reproduce(path, notebooks_dir=nbs, root=tmp, log=lambda m: None)
    prof = yaml.safe_load(path.read_text())
    prof["steps"]["01_data_preparation"]["out_dir"] = str(tmp / "data2")
    path.write_text(yaml.safe_dump(prof))
    lines = []
    out = P.reproduce(path, notebooks_dir=nbs, root=tmp, log=lines.append, keep_stale=True)
    assert out.executed == ["01_data_preparation"] and out.stale_kept == ["cris_real_trained_p1"]
    assert any("stale (inputs changed: 01_data_preparation to be redone), kept" in ln
               for ln in lines)
    from echo_vlsm.analysis import stale_note

    note = stale_note(tmp / "runs" / "micro")  # what notebook 06 puts into the report
    assert len(note) == 1 and "`cris_real_trained_p1`" in note[0] and "--keep-stale" in note[0]
    P.reproduce(path, notebooks_dir=nbs, root=tmp, log=lambda m: None)  # redone this time
    assert stale_note(tmp / "runs" / "micro") == []
    assert _executions(tmp) == ["cris_real_trained_p1"] * 2


def test_parameters_are_checked_against_the_notebooks_before_anything_runs(micro):
    tmp, nbs, make = micro
    path = make([{"models": ["cris"], "strategies": ["real"], "prompts": ["p1"]}])
    prof = yaml.safe_load(path.read_text())
    prof["steps"]["01_data_preparation"]["out_dri"] = "typo"
    path.write_text(yaml.safe_dump(prof))
    with pytest.raises(P.ProfileError, match=r"micro\.yaml: 01_data_preparation: unknown "
                                             r"parameter 'out_dri'; did you mean 'out_dir'\?"):
        P.reproduce(path, notebooks_dir=nbs, root=tmp, log=lambda m: None)
    del prof["steps"]["01_data_preparation"]["out_dri"]
    prof["train"]["x = __import__('os').system('touch pwned') #"] = 1
    path.write_text(yaml.safe_dump(prof))
    with pytest.raises(P.ProfileError, match="is not a Python name"):
        P.reproduce(path, notebooks_dir=nbs, root=tmp, log=lambda m: None)
    assert not (tmp / "pwned").exists() and not (tmp / "data").exists()
    assert _executions(tmp) == []


REPRODUCE = """
import sys
from echo_vlsm import pipeline as P
P.reproduce(sys.argv[1], notebooks_dir=sys.argv[2], root=sys.argv[3],
            shard=None if sys.argv[4] == "-" else P.parse_shard(sys.argv[4]))
"""


@pytest.mark.notebook
@pytest.mark.parametrize("shards", [("-", "-"), ("1/2", "2/2")])
def test_two_runners_started_together_run_every_job_once(micro, shards):
    """Two processes on one profile at the same moment (or two shards): every job runs once,
    the prepare steps included, and both finish with the same results as one process."""
    import subprocess
    import sys

    tmp, nbs, make = micro
    path = make([{"models": ["clipseg", "cris"], "strategies": ["real"], "prompts": ["p0", "p1"],
                  "encoders": ["trained"]}])
    procs = [subprocess.Popen([sys.executable, "-c", REPRODUCE, str(path), str(nbs), str(tmp), s],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for s in shards]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert not any("BLOCKED" in log or "FAILED" in log for log in logs), logs
    assert sorted(_executions(tmp)) == ["clipseg_real_trained_p0", "clipseg_real_trained_p1",
                                        "cris_real_trained_p0", "cris_real_trained_p1"], logs
    assert (tmp / "data" / "prepared.log").read_text() == "prepared\n"  # 01 ran once
    assert (tmp / "paper" / "report.md").read_text() == (
        "micro: clipseg_real_trained_p0 clipseg_real_trained_p1 cris_real_trained_p0 "
        "cris_real_trained_p1")
    assert set(P.status(path, root=tmp)["state"]) == {"done"}


def test_a_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    import subprocess
    import sys

    path = tmp_path / ".job.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from echo_vlsm.pipeline import JobLock\n"
        f"lock = JobLock({str(path)!r}); assert lock.acquire(); print('held', flush=True)\n"
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    mine = P.JobLock(path)
    assert not mine.acquire()
    assert P.lock_holder(path)["pid"] == holder.pid
    holder.kill()
    holder.wait()
    assert P.lock_holder(path) is None  # the kernel released it with its dead holder
    assert mine.acquire() and P.lock_holder(path)["pid"] != holder.pid
    mine.release()


@pytest.mark.notebook
def test_fast_dev_run_rehearses_the_graph_in_its_own_folders(micro):
    tmp, nbs, make = micro
    # a train notebook that can cap its work, as notebook 04 does
    write_notebook(nbs / "04_train_vlsm.ipynb",
              'model = strategy = encoders = prompt = runs_root = fail_strategy = ""\n'
              'real_dir = ""\nfast_dev_run = None',
              "assert fast_dev_run == 2", TRAIN_SRC, TRAIN_WRITE)
    path = make([{"models": ["cris"], "strategies": ["real"], "prompts": ["p1"],
                  "encoders": ["trained"]}], train={"real_dir": str(tmp / "data")})
    p = P.plan(path, root=tmp, notebooks_dir=nbs, fast_dev_run=2, log=lambda m: None)
    jobs = {j.name: j for j in p.graph}
    assert p.prof.name == "micro-fdr" and p.prof.runs_root == str(tmp / "runs" / "micro-fdr")
    assert jobs["01_data_preparation"].params["out_dir"] == str(tmp / "data-fdr")
    assert "fast_dev_run" not in jobs["01_data_preparation"].params  # its notebook has none
    run = jobs["cris_real_trained_p1"]
    assert run.params["fast_dev_run"] == 2 and run.params["real_dir"] == str(tmp / "data-fdr")
    assert jobs["06_dice_difference_plots"].params["tables_dir"] == str(tmp / "paper-fdr")
    out = P.reproduce(path, root=tmp, notebooks_dir=nbs, fast_dev_run=2, log=lambda m: None)
    assert out.ok
    assert (tmp / "runs" / "micro-fdr" / "cris_real_trained_p1" / "metrics.csv").is_file()
    assert not (tmp / "runs" / "micro").exists() and not (tmp / "data").exists()
    assert (tmp / "paper-fdr" / "report.md").read_text().startswith("micro-fdr:")
    table = P.status(path, root=tmp, fast_dev_run=2, notebooks_dir=nbs)
    assert set(table["state"]) == {"done"}
    assert set(P.status(path, root=tmp)["state"]) == {"pending"}  # the real thing: untouched


def test_the_report_of_a_rehearsal_says_so():
    import pandas as pd

    from echo_vlsm import analysis as A

    metrics = pd.DataFrame({"model": ["cris"], "strategy": ["real"], "encoders": ["trained"],
                            "prompt": ["p1"], "seed": [0], "real_fraction": [1.0],
                            "provenance": [False], "dice": [50.0]})
    table1 = pd.DataFrame(columns=["strategy", "model", "prompt", "n", "dice_mean", "dice_std",
                                   "paper_mean", "paper_std"])
    sections = dict(A.report_sections("r/report.md", profile="paper-fdr", metrics=metrics,
                                      table1=table1))
    assert sections["What was run"].startswith("**REHEARSAL** (`--fast-dev-run`)")
    assert "`paper` profile" in sections["What was run"]
    plain = dict(A.report_sections("r/report.md", profile="paper", metrics=metrics,
                                   table1=table1))
    assert "REHEARSAL" not in plain["What was run"]


def test_a_profile_inherits_another_and_changes_only_what_it_says(tmp_path):
    child = tmp_path / "rehearsal.yaml"
    child.write_text("inherits: paper\nsteps:\n  01_data_preparation: {source: data/x}\n"
                     "train: {device: cpu}\n")
    prof = P.load_profile(child, ROOT)
    paper = P.load_profile("paper", ROOT)
    assert prof.name == "rehearsal" and prof.runs_root == "runs/rehearsal"
    assert prof.runs == paper.runs and prof.models == paper.models
    assert prof.steps["01_data_preparation"] == {**paper.steps["01_data_preparation"],
                                                 "source": "data/x"}
    assert prof.train == {**paper.train, "device": "cpu"}
    assert prof.steps["02_sdm_synthesis"] == paper.steps["02_sdm_synthesis"]
    loop = tmp_path / "a.yaml"
    loop.write_text("inherits: a.yaml\n")
    with pytest.raises(P.ProfileError, match="inherits itself"):
        P.load_profile(loop)


def test_plan_states_the_cost_of_a_grid_from_counted_flops(tmp_path):
    from echo_vlsm.pipeline.cost import Assumptions, format_plan, plan_cost, step_flops

    prof = P.load_profile("demo", ROOT)
    assume = Assumptions(tflops=100.0, utilization=0.5, epochs_per_run=4)
    table = plan_cost(prof, tmp_path, assume)  # no exported data here: the study's sizes
    evals = table["strategy"] == "eval:echonet"  # one test pass over EchoNet's 1277 videos
    assert table.loc[~evals, "runs"].sum() == table.loc[evals, "runs"].sum() == len(prof.runs)
    row = table.set_index(["model", "strategy", "encoders", "real_fraction"]).loc[
        ("cris", "eval:echonet", "trained", 1.0)]
    assert row["pflops_per_run"] == pytest.approx(
        2 * 1277 * step_flops("cris", "trained", "tiny")[1] / 1e15)
    row = table.set_index(["model", "strategy", "encoders", "real_fraction"]).loc[
        ("cris", "real", "trained", 1.0)]
    train, infer = step_flops("cris", "trained", "tiny")
    assert 0 < infer < train
    expect = 4 * (1600 * 3 * train + 400 * 3 * infer) + 200 * 3 * infer
    assert row["pflops_per_run"] == pytest.approx(expect / 1e15)
    assert row["gpu_hours"] == pytest.approx(row["runs"] * expect / (100e12 * 0.5) / 3600)
    frozen = step_flops("cris", "frozen", "tiny")[0]
    assert frozen < train  # no gradient through the encoders
    assert "total:" in format_plan(table, prof, assume)
    # beyond the study: a real fraction trains on that part of the real images, mixed on the
    # real and the synthetic ones together (validated on the real)
    from echo_vlsm.pipeline.cost import training_images
    images = {"real": {"train": 1600, "val": 400}, "synthetic": {"train": 8000, "val": 1000}}
    assert training_images(P.Run("cris", "real", "trained", "p1", real_fraction=0.25),
                           images) == (400, 100)
    assert training_images(P.Run("cris", "mixed", "trained", "p1", real_fraction=0.5),
                           images) == (800 + 8000, 200)
    assert training_images(P.Run("cris", "synthetic", "trained", "p1", seed=2),
                           images) == (8000, 1000)


def test_paper_profiles_optional_blocks_state_their_run_counts():
    """Each commented block of paper.yaml's grid selects as many runs beyond the study's
    grid as its comment says."""
    import re

    import yaml

    lines = (ROOT / "notebooks" / "params" / "paper.yaml").read_text().splitlines()
    tail = lines[lines.index("grid:") + 1:]
    paragraphs = "\n".join(ln[4:] if ln.startswith("  # ") else "" for ln in tail).split("\n\n")
    paper = set(P.load_profile("paper", ROOT).runs)
    blocks = []
    for par in paragraphs:
        if "- {" not in par:
            continue
        block = yaml.safe_load(" ".join(par[par.index("- {") + 2:].split()))
        blocks.append((block, int(re.search(r"(\d+) runs", " ".join(par.split())).group(1))))
    assert len(blocks) == 4
    for block, n in blocks:
        assert len(set(P.select_grid([block])) - paper) == n, block


def test_a_notebook_that_is_not_json_is_an_error_naming_it(tmp_path):
    broken = tmp_path / "04_train_vlsm.ipynb"
    broken.write_text("{ not json")
    with pytest.raises(P.ProfileError, match=r"04_train_vlsm\.ipynb: not a readable notebook"):
        P.notebook_parameters(broken)
