"""Notebook 09 (clinical indices, cross-dataset transfer) under papermill on fabricated runs
with known answers: runs with ``clinical.csv`` and evaluations on EchoNet (tables, figures,
the report's clinical and transfer blocks beside notebook 06's part), and runs without them
(the notebook says so, ends cleanly, and leaves the report as it was)."""

import json

import pandas as pd
import pytest

from echo_vlsm import analysis as A
from tests.clinical_runs import N_PATIENTS, write_clinical_run
from tests.tiny_runs import notebook_text, report_by_06, write_fake_run
from tests.transfer_runs import CROSS_EFFECT, write_cross_run

TABLES = ("clinical_nan_rates", "clinical_floor", "clinical_table", "clinical_cells",
          "clinical_runs", "clinical_table_masks", "clinical_tests", "transfer_table",
          "transfer_runs", "transfer_tests")
#: (run id, EF bias against the reference, patients without all four images)
RUNS = [
    *((f"cris_real_trained_p1{f'_seed{s}' if s else ''}", 5.0 + 0.3 * s, ()) for s in range(3)),
    *((f"cris_synth-pt-real-ft_trained_p1{f'_seed{s}' if s else ''}", 3.0 + 0.3 * s, ())
      for s in range(3)),
    ("clipseg_real_trained_p0", 6.0, (4,)),
    ("clipseg_real_trained_p1", 2.0, ()),
]
#: Not evaluated on EchoNet (named by the transfer part).
NOT_EVALUATED = "clipseg_real_trained_p1"


def _write_runs(root, clinical: bool) -> None:
    """The runs of ``RUNS`` (dice 80 at home); with ``clinical``, their clinical.csv and, but
    for ``NOT_EVALUATED``, their evaluation on EchoNet: LV dice 60 (real) or 70
    (synth-pt-real-ft) + a per-sample effect, so synthetic pretraining drops 10 points less."""
    for rid, bias, missing in RUNS:
        write_fake_run(root, rid, 80.0, summary={"stopped_by": "patience"})
        if clinical:
            write_clinical_run(root, rid, ef_bias=bias, ef_spread=1.0, missing=missing)
            if rid != NOT_EVALUATED:
                away = 70.0 if "synth-pt-real-ft" in rid else 60.0
                write_cross_run(root, rid, away + CROSS_EFFECT)


def _params(tmp_path, runs):
    return {"profile": "demo", "runs_root": str(runs), "figures_dir": str(tmp_path / "fig"),
            "tables_dir": str(tmp_path / "paper"), "n_boot": 200, "seed": 0}


def _check_transfer(paper, fig) -> None:
    """The transfer part's numbers, figure and report block."""
    summary = json.loads((paper / "transfer.json").read_text())
    assert summary["n_evaluated"] == len(RUNS) - 1 and summary["dataset"] == "echonet"
    assert summary["status"][NOT_EVALUATED] == "no metrics_echonet.csv"
    (test,) = summary["tests"]
    assert test["b"] == "CRIS real P1" and test["change"] == pytest.approx(-10.0)
    assert test["verdict"] == "smaller drop (survives seed variation)"
    drops = {(r["model"], r["strategy"], r["prompt"]): r["drop"] for r in summary["table"]}
    assert drops[("cris", "real", "p1")] == pytest.approx(20.0)
    assert drops[("clipseg", "real", "p0")] == pytest.approx(20.0)
    assert (fig / "transfer_dice.png").stat().st_size > 1000
    report = (paper / "report.md").read_text()
    assert report.count(A.TRANSFER_MARKERS[0]) == 1 and report.count(A.TRANSFER_MARKERS[1]) == 1
    assert report.index(A.CLINICAL_MARKERS[1]) < report.index(A.TRANSFER_MARKERS[0])
    for heading in summary["sections"]:
        assert f"## {heading}\n" in report
    assert f"`{NOT_EVALUATED}`" in report


@pytest.mark.notebook
def test_notebook_09_with_clinical_files(run_notebook, tmp_path):
    runs = tmp_path / "runs" / "demo"
    _write_runs(runs, clinical=True)
    before = report_by_06(tmp_path / "paper", "demo")
    run_notebook("09_clinical.ipynb", _params(tmp_path, runs))
    paper = tmp_path / "paper"
    for name in TABLES:
        assert (paper / f"{name}.md").is_file() and (paper / f"{name}.csv").is_file(), name
    for name in ("clinical_bland_altman", "clinical_scatter"):
        assert (tmp_path / "fig" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "fig" / f"{name}.pdf").is_file()
    summary = json.loads((paper / "clinical.json").read_text())
    assert summary["n_runs"] == len(RUNS) and summary["n_boot"] == 200
    tests = {t["comparison"]: t for t in summary["tests"]}
    assert set(tests) == {"synth-pt-real-ft vs real", "P1 vs P0"}
    pre = tests["synth-pt-real-ft vs real"]
    assert pre["diff"] == pytest.approx(-2.0) and pre["verdict"] == "survives"
    assert tests["P1 vs P0"]["n"] == N_PATIENTS - 1 and tests["P1 vs P0"]["wilcoxon_p"] < 1e-3
    head = {r["measured"]: r for r in summary["headline"]}
    assert head["CAMUS best network (Leclerc et al. 2019, cross-validation)"]["EF r"] == 0.80
    assert head["CRIS real P1"]["seeds"] == 3
    assert head["CRIS real P1"]["EF bias"] == pytest.approx(5.3)  # mean over seeds 5, 5.3, 5.6
    nans = pd.read_csv(paper / "clinical_nan_rates.csv").set_index("prompt")
    assert nans.loc["p0", "pred_nan_rate"] == 5.0
    report = (paper / "report.md").read_text()
    assert report.startswith(before.decode())  # notebook 06's part untouched
    assert report.count(A.CLINICAL_MARKERS[0]) == 1 and report.count(A.CLINICAL_MARKERS[1]) == 1
    for heading in summary["sections"]:
        assert f"## {heading}\n" in report
    assert summary["sections"] == ["Clinical indices",
                                   "Clinical indices: paired tests of the EF error"]
    assert "![Bland-Altman plots](../fig/clinical_bland_altman.png)" in report
    assert "not from the 50 test patients" in report
    _check_transfer(paper, tmp_path / "fig")


@pytest.mark.notebook
def test_notebook_09_without_clinical_files(run_notebook, tmp_path):
    runs = tmp_path / "runs" / "demo"
    _write_runs(runs, clinical=False)
    before = report_by_06(tmp_path / "paper", "demo")
    nb = run_notebook("09_clinical.ipynb", _params(tmp_path, runs))
    assert f"No run under {runs} has clinical.csv yet" in notebook_text(nb)
    assert "(no clinical section)" in notebook_text(nb)
    assert f"No run under {runs} has metrics_echonet.csv yet" in notebook_text(nb)
    assert "(no transfer section)" in notebook_text(nb)
    assert (tmp_path / "paper" / "report.md").read_bytes() == before
    summary = json.loads((tmp_path / "paper" / "clinical.json").read_text())
    assert summary["n_runs"] == 0 and summary["sections"] == []
    transfer = json.loads((tmp_path / "paper" / "transfer.json").read_text())
    assert transfer["n_evaluated"] == 0 and transfer["sections"] == []
    assert set(transfer["status"].values()) == {"no metrics_echonet.csv"}
    assert not (tmp_path / "fig").exists()
