"""Notebook 08 (beyond the study) under papermill on fabricated runs with known answers: every
block, and a folder with the study's runs only (each block says it has no runs; the report
stays as notebook 06 wrote it)."""

import json
import shutil

import pandas as pd
import pytest

from echo_vlsm import analysis as A
from echo_vlsm.grid import parse_run_id
from tests.tiny_runs import notebook_text, report_by_06, write_beyond_runs

TABLES = ("beyond_table", "stopping", "seed_table", "seed_claims", "seed_gain",
          "beyond_comparisons", "mixed_differences", "data_efficiency", "real_images_to_reach",
          "baseline")
CAPPED = "cris_real_trained_p1_seed2"  # a run that stopped at its epoch cap


def _params(tmp_path, runs):
    return {"profile": "demo-beyond", "runs_root": str(runs),
            "figures_dir": str(tmp_path / "fig"), "tables_dir": str(tmp_path / "paper"),
            "n_boot": 500, "seed": 0}


@pytest.mark.notebook
def test_notebook_08_every_block(run_notebook, tmp_path):
    runs = tmp_path / "runs" / "demo"
    write_beyond_runs(runs, study=True, capped=(CAPPED,))
    before = report_by_06(tmp_path / "paper", "demo-beyond")
    run_notebook("08_beyond.ipynb", _params(tmp_path, runs))
    paper = tmp_path / "paper"
    for name in TABLES:
        assert (paper / f"{name}.md").is_file() and (paper / f"{name}.csv").is_file(), name
    for name in ("data_efficiency", "mixed_difference"):
        assert (tmp_path / "fig" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "fig" / f"{name}.pdf").is_file()
    summary = json.loads((paper / "beyond.json").read_text())
    assert summary["blocks"] == dict.fromkeys(A.BLOCKS, True) and summary["n_boot"] == 500
    verdicts = {(c["comparison"], c["a"]): c["verdict"] for c in summary["claims"]}
    assert verdicts[("synth-pt-real-ft beats real", "CRIS synth-pt-real-ft P1")] == "survives"
    assert verdicts[("synth-pt-real-ft beats real", "CLIPSeg synth-pt-real-ft P1")] \
        == "does not survive (CI covers 0)"
    reach = {r["curve"]: r for r in summary["reach"]}
    assert reach["synth-pt-real-ft"]["images_needed"] == pytest.approx(15.0, abs=1.5)
    assert reach["mixed"]["needed"] == "<= 10 (smallest measured)"
    seeds = pd.read_csv(paper / "seed_table.csv")
    cris = seeds[(seeds["model"] == "cris") & (seeds["strategy"] == "synth-pt-real-ft")].iloc[0]
    assert cris["n_seeds"] == 3 and cris["dice_mean"] == pytest.approx(90.0, abs=0.3)
    assert cris["paper_mean"] == 91.26
    base = pd.read_csv(paper / "baseline.csv").set_index("strategy")
    assert base.loc["real", "dice_mean"] == pytest.approx(85.0, abs=0.5)
    assert "U-Net | trained | none |" in (paper / "beyond_table.md").read_text()
    report = (paper / "report.md").read_text()
    assert report.startswith(before.decode())  # notebook 06's part untouched
    assert report.count(A.report.BEYOND_BEGIN) == 1
    for heading in summary["sections"]:
        assert f"## {heading}\n" in report
    assert len(summary["sections"]) == 7
    # how every run ended (25 runs, one at its cap) and the gain over seeds, in words
    assert summary["stopped_by"] == {"patience": 24, "epochs": 1}
    assert ("24 of 25 runs stopped by early stopping; 1 stopped at the epoch cap "
            f"({CAPPED})") in report
    assert f"| {CAPPED} | cris | real | trained | p1 | 10 | 8 | 2 | epochs |" in report
    assert f"1 of the 12 runs compared here stopped at the epoch cap ({CAPPED})" in report
    assert "lies above 0: over these seeds, synthetic pretraining gave a higher" in report
    gain = pd.read_csv(paper / "seed_gain.csv").set_index("model")
    assert gain.loc["cris", "diff"] == pytest.approx(10.0, abs=0.3)
    assert gain.loc["cris", "verdict"] == "survives"
    assert "![Test dice against real training images](../fig/data_efficiency.png)" in report
    assert "94.1 mean dice on CAMUS" in report


@pytest.mark.notebook
def test_notebook_08_without_runs_beyond_the_study(run_notebook, tmp_path):
    full = tmp_path / "all"
    write_beyond_runs(full, study=True)
    runs = tmp_path / "runs" / "demo"
    runs.mkdir(parents=True)
    for d in full.iterdir():
        if parse_run_id(d.name).is_study:
            shutil.copytree(d, runs / d.name)
    before = report_by_06(tmp_path / "paper", "demo-beyond")
    nb = run_notebook("08_beyond.ipynb", _params(tmp_path, runs))
    summary = json.loads((tmp_path / "paper" / "beyond.json").read_text())
    assert summary["blocks"] == dict.fromkeys(A.BLOCKS, False) and summary["sections"] == []
    assert (tmp_path / "paper" / "report.md").read_bytes() == before
    text = notebook_text(nb)
    for said in ("No seed replicates", "No mixed run: this block is skipped",
                 "No run at a real fraction below 1", "No U-Net run",
                 "(no section beyond the study)"):
        assert said in text
    assert not (tmp_path / "fig" / "data_efficiency.png").exists()
