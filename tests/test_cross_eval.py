"""Cross-dataset evaluation (issue 22, sec. 3): a finished tiny run scored on the EchoNet-layout
phantom's test split (``train.cross_eval``), and its place in the job graph (kind ``eval``,
its own record, lock and notebook in the run folder, after its run and the dataset's export)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from echo_vlsm import pipeline as P
from echo_vlsm.grid import (
    CLINICAL_COLUMNS,
    CONFIG_FILE,
    CROSS_CLINICAL_FILE,
    CROSS_METRICS_FILE,
    METRIC_COLUMNS,
    NO_PROMPT,
)
from echo_vlsm.pipeline.graph import Job, build_graph, graph_states, job_state, marker_record
from echo_vlsm.pipeline.profiles import (
    CROSS_NOTEBOOK,
    EVAL_DATASETS,
    EVAL_PROMPTS,
    fast_dev_profile,
    load_profile,
)
from echo_vlsm.pipeline.state import run_dir
from tests.tiny_runs import train_tiny_run

ROOT = Path(__file__).resolve().parents[1]
N_VIDEOS = 3


@pytest.fixture(scope="module")
def echonet(tmp_path_factory) -> Path:
    """The EchoNet-layout phantom (3 test videos) exported at 128 px with its task files."""
    from echo_vlsm.train.cross_eval import prepare_echonet

    base = tmp_path_factory.mktemp("echonet")
    return prepare_echonet(base / "export", phantom_dir=base / "raw", n_videos=N_VIDEOS,
                           splits={"test": N_VIDEOS}, seed=2, size=128, workers=0)


@pytest.fixture(scope="module")
def tiny_run(task_dataset, tmp_path_factory) -> Path:
    """A finished tiny CLIPSeg run (P1, one epoch) on the CAMUS-layout phantom."""
    runs = tmp_path_factory.mktemp("runs")
    return Path(train_tiny_run(task_dataset, runs, epochs=1).run_dir)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_echonet_export_has_lv_tasks_with_p0_to_p3(echonet):
    from echo_vlsm.prompts.tasks import read_tasks

    tasks = read_tasks(echonet, "test")
    assert len(tasks) == 2 * N_VIDEOS
    assert {t["structure"] for t in tasks} == {"lv"}
    assert {tuple(sorted(t["prompts"])) for t in tasks} == {("p0", "p1", "p2", "p3")}
    assert {t["attributes"]["view"] for t in tasks} == {"4CH"}
    assert {t["attributes"]["phase"] for t in tasks} == {"ED", "ES"}


def test_evaluate_on_writes_both_files_and_leaves_the_run_alone(tiny_run, echonet):
    from echo_vlsm.analysis.clinical import read_clinical
    from echo_vlsm.dataset import read_records
    from echo_vlsm.grid import run_problem
    from echo_vlsm.train.cross_eval import NO_SPACING_REASON, evaluate_on

    before = _digests(tiny_run)
    result = evaluate_on(tiny_run, "echonet", echonet, device="cpu", progress=False)
    metrics_path = tiny_run / CROSS_METRICS_FILE.format(dataset="echonet")
    clinical_path = tiny_run / CROSS_CLINICAL_FILE.format(dataset="echonet")
    assert result.paths == (metrics_path, clinical_path)
    after = _digests(tiny_run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
    assert set(after) - set(before) == {metrics_path.name, clinical_path.name}
    assert run_problem(tiny_run) is None

    metrics = pd.read_csv(metrics_path)
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert len(metrics) == 2 * N_VIDEOS and set(metrics["structure"]) == {"lv"}
    assert set(metrics["prompt"]) == {"p1"} and set(metrics["view"]) == {"4CH"}
    assert metrics["dice"].between(0, 100).all() and metrics["iou"].between(0, 100).all()

    clinical = read_clinical(clinical_path)  # the analysis reads it as a clinical.csv
    assert list(pd.read_csv(clinical_path).columns) == list(CLINICAL_COLUMNS)
    records = read_records(echonet)
    ef = records.groupby("patient")["ef"].first()
    assert sorted(clinical["patient"]) == sorted(ef.index) and len(clinical) == N_VIDEOS
    for row in clinical.itertuples():
        assert row.ref_ef_percent == pytest.approx(ef[row.patient])
        # the traced masks measure the published EF (the same tracings' discs, each instant
        # its own height): 0.8 points apart on average at 512 px (20 videos), here at 128
        assert abs(row.gt_ef_percent - row.ref_ef_percent) < 5, row.patient
        assert math.isnan(row.gt_edv_ml) and math.isnan(row.pred_esv_ml)
        assert row.gt_reason.startswith(NO_SPACING_REASON)
        assert row.pred_reason.startswith(NO_SPACING_REASON)
        assert math.isfinite(row.ref_edv_ml) and row.ref_edv_ml > row.ref_esv_ml


def test_a_prompt_echonet_cannot_make_is_refused(tiny_run, echonet, tmp_path):
    from echo_vlsm.train.cross_eval import CrossEvalError, evaluate_on

    run = tmp_path / "clipseg_real_frozen_p5"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*_echonet.csv"))
    config = json.loads((run / CONFIG_FILE).read_text())
    (run / CONFIG_FILE).write_text(json.dumps({**config, "prompt": "p5"}))
    with pytest.raises(ValueError, match="p5 needs the patient's age and sex"):
        evaluate_on(run, "echonet", echonet, device="cpu")
    assert not (run / "metrics_echonet.csv").exists()
    (run / CONFIG_FILE).write_text(json.dumps(config))  # back to P1, but summary.json gone
    (run / "summary.json").unlink()
    with pytest.raises(CrossEvalError, match="not a complete run"):
        evaluate_on(run, "echonet", echonet, device="cpu")
    with pytest.raises(CrossEvalError, match="records.csv"):
        evaluate_on(tiny_run, "echonet", tmp_path, device="cpu")
    with pytest.raises(ValueError, match="unknown"):
        evaluate_on(tiny_run, "kaggle", echonet)


def test_the_constants_repeated_for_the_runner_match_their_source():
    from echo_vlsm.data.echonet_export import PROMPT_KEYS
    from echo_vlsm.train.cross_eval import DATASETS

    assert EVAL_DATASETS == DATASETS
    assert EVAL_PROMPTS["echonet"] == (*PROMPT_KEYS, NO_PROMPT)


# ----------------------------------------------------------------------------- the graph


def test_demo_graph_has_one_evaluation_per_run_after_its_run_and_the_export():
    prof = load_profile("demo", ROOT)
    jobs = build_graph(prof, ROOT)
    by_name = {j.name: j for j in jobs}
    order = [j.name for j in jobs]
    prepare = by_name[f"{CROSS_NOTEBOOK}:echonet"]
    assert prepare.kind == "step" and prepare.stage == "prepare" and prepare.needs == ()
    assert prepare.params["dataset_dir"] == "data/phantom-echonet"
    evals = [j for j in jobs if j.kind == "eval"]
    assert len(evals) == len(prof.runs) >= 8
    for job in evals:
        assert job.needs == (job.run.id, prepare.name)
        assert order.index(job.name) > order.index(job.run.id)
        assert job.folder == run_dir(prof.runs_root, job.run, ROOT)
        own = {job.output.name, job.marker.name, job.lock_path.name, job.failure_path.name,
               job.slurm_record.name}
        assert own == {"10_cross_dataset-echonet.ipynb", "eval-echonet.job.json",
                       ".eval-echonet.lock", "eval-echonet.failure.json",
                       ".eval-echonet.slurm.json"}
        run = by_name[job.run.id]
        assert not own & {run.output.name, run.marker.name, run.lock_path.name,
                          run.failure_path.name, run.slurm_record.name}
        again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
        assert again.marker == job.marker and again.output == job.output
    assert set(e.name for e in evals) <= set(by_name["09_clinical"].needs)
    plan = P.plan("demo", root=ROOT, only=[evals[0].run.id], log=lambda m: None)
    assert evals[0].name in plan.in_call and evals[1].name not in plan.in_call


def test_prompts_echonet_cannot_make_get_no_evaluation(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("inherits: demo\nprofile: p\nruns_root: " + str(tmp_path / "runs") + "\n"
                    "grid: [{models: [clipseg], strategies: [real], prompts: [p3, p4],"
                    " encoders: [trained]}]\n")
    jobs = build_graph(load_profile(path, ROOT), ROOT)
    assert [j.name for j in jobs if j.kind == "eval"] == ["clipseg_real_trained_p3:eval-echonet"]
    rehearsal = fast_dev_profile(load_profile(path, ROOT), 2)
    assert rehearsal.datasets["echonet"]["dataset_dir"] == "data/phantom-echonet-fdr"
    assert rehearsal.datasets["echonet"]["phantom_dir"] == "data/raw/phantom-echonet-fdr"


@pytest.mark.parametrize("text, message", [
    ("evaluate_on: [kaggle]\n", "evaluate_on: ['kaggle'] unknown"),
    ("evaluate_on: echonet\n", "must be a list"),
    ("evaluate_on: [echonet]\ndatasets: {echonet: {phantom_dir: x}}\n",
     "'datasets.echonet.dataset_dir'"),
])
def test_bad_evaluation_keys_are_refused(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text("profile: p\n" + text)
    with pytest.raises(P.ProfileError, match=re.escape(message)):
        load_profile(path, ROOT)


@pytest.mark.slow  # a notebook kernel: ~15 s alone, 40 s under load
def test_an_evaluation_job_keeps_to_its_own_files(tiny_run, echonet, tmp_path):
    """The worker runs notebook 10 for an eval job: its record, lock and notebook are its own;
    the run's job record is untouched and the run stays done; a second call skips it."""
    from echo_vlsm.grid import parse_run_id
    from echo_vlsm.pipeline.worker import run_job

    run = parse_run_id(tiny_run.name)
    run_job_ = Job(run.id, "run", "04_train_vlsm", {"prompt": "p1"}, (), tiny_run, "runs", run)
    params = {"dataset": "echonet", "dataset_dir": str(echonet),
              "runs_root": str(tiny_run.parent), "run_id": run.id, "device": "cpu"}
    ev = Job(f"{run.id}:eval-echonet", "eval", CROSS_NOTEBOOK, params, (run.id,), tiny_run,
             "runs", run, {"dataset": "echonet"})
    by_name = {run.id: run_job_, ev.name: ev}
    (tiny_run / "job.json").write_text(json.dumps(marker_record(run_job_, by_name, "done")))
    for f in tiny_run.glob("*_echonet.csv"):
        f.unlink()
    record = (tiny_run / "job.json").read_bytes()
    assert job_state(ev, by_name).state == "pending"
    spec = {"job": ev.to_dict(), "upstream": [run_job_.to_dict()], "root": str(ROOT),
            "notebook": str(ROOT / "notebooks" / f"{CROSS_NOTEBOOK}.ipynb"),
            "env": {"OMP_NUM_THREADS": "1"}, "timeout": 300}
    out = run_job(spec)
    assert out["status"] == "done", out["message"]
    assert (tiny_run / "job.json").read_bytes() == record
    assert (tiny_run / "metrics_echonet.csv").is_file()
    assert (tiny_run / "10_cross_dataset-echonet.ipynb").is_file()
    assert json.loads((tiny_run / "eval-echonet.job.json").read_text())["state"] == "done"
    states = graph_states([run_job_, ev])
    assert states[run.id].state == "done" and states[ev.name].state == "done"
    assert run_job(spec)["status"] == "skipped"


@pytest.mark.slow  # six small notebooks through the runner: ~25 s
@pytest.mark.notebook
def test_the_runner_evaluates_each_run_once_and_never_redoes_a_run_for_it(tmp_path):
    """A micro profile with ``evaluate_on``: the export and one evaluation per run run after
    their run; a second call executes nothing (the run's record is not the evaluation's)."""
    import yaml

    from tests.micro import make_micro, write_notebook

    tmp, nbs, make = make_micro(tmp_path)
    write_notebook(nbs / f"{CROSS_NOTEBOOK}.ipynb",
                   'dataset = dataset_dir = runs_root = ""\nrun_id = None\ndevice = None',
                   'import pathlib\nout = pathlib.Path(dataset_dir)\n'
                   'if run_id is None:\n    out.mkdir(parents=True, exist_ok=True)\n'
                   '    (out / "records.csv").write_text("stem\\n")\n'
                   'else:\n    assert (out / "records.csv").is_file()\n'
                   '    d = pathlib.Path(runs_root) / run_id\n'
                   '    (d / f"metrics_{dataset}.csv").write_text("dice\\n1\\n")\n'
                   '    with open(d.parent.parent / "evaluations.log", "a") as f:\n'
                   '        f.write(run_id + "\\n")')
    path = make([{"models": ["clipseg"], "strategies": ["real"], "prompts": ["p1", "p5"],
                  "encoders": ["trained"]}])
    prof = yaml.safe_load(path.read_text())
    prof.update(evaluate_on=["echonet"],
                datasets={"echonet": {"dataset_dir": str(tmp / "echonet")}})
    path.write_text(yaml.safe_dump(prof))
    quiet = lambda msg: None  # noqa: E731
    out = P.reproduce(path, notebooks_dir=nbs, root=tmp, log=quiet)
    assert out.ok, out.failed
    p1 = "clipseg_real_trained_p1"
    assert out.executed.index(f"{p1}:eval-echonet") > out.executed.index(p1)
    assert f"{CROSS_NOTEBOOK}:echonet" in out.executed
    assert "clipseg_real_trained_p5:eval-echonet" not in out.executed  # P5: no EchoNet prompt
    run = tmp / "runs" / "micro" / p1
    assert (run / "metrics_echonet.csv").is_file() and (run / "eval-echonet.job.json").is_file()
    assert json.loads((run / "job.json").read_text())["job"] == p1
    again = P.reproduce(path, notebooks_dir=nbs, root=tmp, log=quiet)
    assert again.executed == []
    assert (tmp / "runs" / "evaluations.log").read_text() == f"{p1}\n"


def test_a_run_folder_cannot_grant_itself_trust_for_its_evaluation(tmp_path, monkeypatch):
    """A foreign zero-shot CRIS folder whose config.json says trust_weights: true is scored
    without trust unless the caller grants it (the model folder rule of load_model)."""
    import json

    from echo_vlsm.train import TrainConfig
    from echo_vlsm.train import cross_eval as CE

    run = tmp_path / "runs" / "cris_zeroshot_frozen_p1"
    run.mkdir(parents=True)
    config = TrainConfig(model="cris", size="tiny", strategy="zeroshot", encoders="frozen",
                         prompt="p1", trust_weights=True, runs_root=str(tmp_path / "runs"))
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    monkeypatch.setattr(CE, "run_problem", lambda folder: None)  # taken as complete
    data = tmp_path / "echonet"
    assert CE._run_config(run, "echonet", data, None).trust_weights is False
    assert CE._run_config(run, "echonet", data, None, trust_weights=True).trust_weights is True
