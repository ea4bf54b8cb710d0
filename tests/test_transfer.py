"""Cross-dataset transfer (``analysis.transfer``, ``analysis.transfer_report``) on fabricated
run folders with known answers: dice on both test splits and the drop, EF errors, the paired
question (does synthetic pretraining change the drop?), runs left out named, bad files named,
and the report's transfer block written once."""

import numpy as np
import pandas as pd
import pytest

from echo_vlsm import analysis as A
from echo_vlsm.analysis.clinical import ClinicalFormatError
from echo_vlsm.analysis.loading import MetricsFormatError
from echo_vlsm.analysis.transfer import drop_replicates, read_cross_clinical, unmakeable
from tests.clinical_runs import write_clinical_run
from tests.tiny_runs import fake_samples, report_by_06, write_fake_run
from tests.transfer_runs import CROSS_EFFECT, write_cross_run

#: A per-sample effect on the own test split (8 images; mean 0).
HOME_EFFECT = np.array([-3.0, -1.0, 1.0, 3.0, -3.0, -1.0, 1.0, 3.0])
#: CLIPSeg P0's per-sample gains of synth-pt-real-ft over real: mean 0 on both splits, alike.
NULL_HOME = np.array([-1.0, 1.0, -2.0, 2.0, -3.0, 3.0, 0.5, -0.5])
NULL_AWAY = np.tile([-1.0, 1.0, -2.0, 2.0], 5)
#: Seed offsets of the CRIS P1 runs: own split +o, other split +2o (their drop: -o).
OFFSET = {0: 0.0, 1: 0.5, 2: -0.5}


def _home(root, rid: str, lv) -> None:
    """A run's metrics.csv: LV dice ``lv`` per sample, myocardium and LA 50 (left out)."""
    dice = np.full((8, 3), 50.0)
    dice[:, 0] = lv
    write_fake_run(root, rid, dice.ravel(), fake_samples(8))


def write_grid(root) -> None:
    """CRIS P1, 3 seeds each: real 80 at home, 60 away (drop 20); synth-pt-real-ft 82 and 70
    (drop 12, change -8); EF error 5 / 3 at home, 4 away against the reference. CLIPSeg P0,
    one seed each: real 80 / 60, synth-pt-real-ft with zero-mean gains on both (change 0), no
    clinical file away. CRIS real P2 not evaluated, CRIS real P5 (EchoNet cannot make P5),
    CRIS real P3 unfinished."""
    for s, o in OFFSET.items():
        for strategy, home, away, ef in (("real", 80.0, 60.0, 5.0),
                                         ("synth-pt-real-ft", 82.0, 70.0, 3.0)):
            rid = f"cris_{strategy}_trained_p1{f'_seed{s}' if s else ''}"
            _home(root, rid, home + o + HOME_EFFECT)
            write_clinical_run(root, rid, ef_bias=ef, ef_spread=1.0)
            write_cross_run(root, rid, away + 2 * o + CROSS_EFFECT, ef_bias=4.0, ef_spread=2.0)
    _home(root, "clipseg_real_trained_p0", 80.0 + HOME_EFFECT)
    _home(root, "clipseg_synth-pt-real-ft_trained_p0", 80.0 + HOME_EFFECT + NULL_HOME)
    write_cross_run(root, "clipseg_real_trained_p0", 60.0 + CROSS_EFFECT, clinical=False)
    write_cross_run(root, "clipseg_synth-pt-real-ft_trained_p0",
                    60.0 + CROSS_EFFECT + NULL_AWAY, clinical=False)
    for rid in ("cris_real_trained_p2", "cris_real_trained_p5"):
        _home(root, rid, 75.0)
    (root / "cris_real_trained_p3").mkdir()


@pytest.fixture
def grid(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    write_grid(root)
    return root


def test_status_names_every_run_left_out(grid):
    status = A.load_transfer(grid).status.set_index("run_id")["status"]
    assert status["cris_real_trained_p2"] == "no metrics_echonet.csv"
    assert status["cris_real_trained_p5"].startswith("not evaluable: prompt p5 needs the "
                                                     "patient's age and sex")
    assert status["cris_real_trained_p3"] == "unfinished (no metrics.csv)"
    assert (status == "evaluated").sum() == 8
    note = A.status_note(A.load_transfer(grid).status)
    assert "**Not evaluated on echonet** (1, no `metrics_echonet.csv`): " \
           "`cris_real_trained_p2`." in note
    assert "`cris_real_trained_p5`" in note and "`cris_real_trained_p3`" in note
    assert "**Evaluated without EF** (2, no `clinical_echonet.csv`" in note
    assert unmakeable("echonet", "none") is None and unmakeable("echonet", "p3") is None


def test_run_and_cell_tables(grid):
    runs = A.run_table(A.load_transfer(grid)).set_index(["model", "strategy", "prompt", "seed"])
    real = runs.loc[("cris", "real", "p1", 0)]
    assert (real["n_in"], real["n_cross"]) == (8, 20)  # LV rows only
    assert real["dice_in"] == pytest.approx(80.0) and real["dice_cross"] == pytest.approx(60.0)
    assert real["drop"] == pytest.approx(20.0)
    assert real["ef_mae_in"] == pytest.approx(5.0) and real["ef_mae_cross"] == pytest.approx(4.0)
    assert real["ef_mae_cross_masks"] == pytest.approx(3.0) and real["ef_nan_cross"] == 0
    assert runs.loc[("cris", "synth-pt-real-ft", "p1", 1), "drop"] == pytest.approx(11.5)
    assert np.isnan(runs.loc[("clipseg", "real", "p0", 0), "ef_mae_cross"])
    table = A.transfer_table(A.run_table(A.load_transfer(grid)))
    cell = table.set_index(["model", "strategy", "prompt"]).loc[("cris", "synth-pt-real-ft",
                                                                 "p1")]
    assert cell["n_seeds"] == 3 and cell["drop"] == pytest.approx(12.0)
    assert cell["drop_seed_std"] == pytest.approx(0.5) and cell["ef_mae_in"] == pytest.approx(3)
    assert list(table["strategy"]) == ["real", "real", "synth-pt-real-ft", "synth-pt-real-ft"]


def test_synthetic_pretraining_and_the_drop(grid):
    tests = A.drop_tests(A.load_transfer(grid), n_boot=500).set_index("b")
    assert set(tests.index) == {"CRIS real P1", "CLIPSeg real P0"}
    cris = tests.loc["CRIS real P1"]
    assert (cris["n_seeds_a"], cris["n_in"], cris["n_cross"]) == (3, 8, 20)
    assert cris["gain_in"] == pytest.approx(2.0) and cris["gain_cross"] == pytest.approx(10.0)
    assert cris["change"] == pytest.approx(cris["drop_a"] - cris["drop_b"]) == pytest.approx(-8)
    assert cris["ci_high"] < 0 and cris["verdict"] == "smaller drop (survives seed variation)"
    assert cris["p_change"] < 1e-3 and cris["rank_biserial"] == pytest.approx(-1.0)
    assert cris["p_gain_in"] < 0.05 and cris["p_gain_cross"] < 0.05 and cris["test_seed"] == 0
    clip = tests.loc["CLIPSeg real P0"]
    assert clip["change"] == pytest.approx(0.0, abs=1e-9) and clip["p_change"] > 0.5
    assert clip["verdict"] == "no change shown (p >= 0.05; one run per cell)"
    text = A.drop_summary(tests.reset_index())
    assert "in 2 pair(s) of cells" in text and "A change is resolved in 1 of 2: CRIS" in text
    assert "smaller drop" in text and "1 of the 2 pair(s) rest on one run per cell" in text


def test_a_pair_scored_on_other_samples_is_reported_not_compared(grid):
    path = grid / "clipseg_synth-pt-real-ft_trained_p0" / "metrics_echonet.csv"
    pd.read_csv(path).iloc[:-1].to_csv(path, index=False)
    tests = A.drop_tests(A.load_transfer(grid), n_boot=100).set_index("b")
    clip = tests.loc["CLIPSeg real P0"]
    assert clip["verdict"].startswith("not comparable: unmatched samples")
    assert np.isnan(clip["change"])
    text = A.drop_summary(tests.reset_index())
    assert "in 1 pair(s) of cells" in text and "CLIPSeg P0: not comparable" in text


def test_drop_replicates_resample_seeds_and_both_test_sets():
    ia, ib = np.array([[80.0, 82.0], [84.0, 86.0]]), np.array([[78.0, 80.0]])
    ca, cb = np.array([[60.0, 64.0, 62.0], [66.0, 70.0, 68.0]]), np.array([[60.0, 64.0, 62.0]])
    boot = drop_replicates(ia, ib, ca, cb, n_boot=400, seed=1)
    observed = (ia.mean() - ib.mean()) - (ca.mean() - cb.mean())
    assert observed == pytest.approx(1.0)
    # a's seed 2 is 4 points up at home and 6 away; with w its share of a drawn pair of
    # seeds, every replicate is 2 - 2w (0, 1 or 2) whatever samples are drawn, if and only
    # if a run keeps its two scores (one seed draw for both test sets)
    assert set(np.round(boot, 9)) == {0.0, 1.0, 2.0}
    assert np.array_equal(boot, drop_replicates(ia, ib, ca, cb, n_boot=400, seed=1))


def test_bad_cross_files_are_named(grid):
    d = grid / "cris_real_trained_p1"
    wrong = pd.read_csv(d / "metrics_echonet.csv").assign(prompt="p2")
    wrong.to_csv(d / "metrics_echonet.csv", index=False)
    with pytest.raises(MetricsFormatError, match=r"metrics_echonet.csv.*\['prompt'\] are not "
                                                 "those of its folder's run cris_real_"):
        A.load_transfer(grid)
    wrong.assign(prompt="p1", structure="myo").to_csv(d / "metrics_echonet.csv", index=False)
    with pytest.raises(MetricsFormatError, match="metrics_echonet.csv.*holds no LV row"):
        A.load_transfer(grid)
    clinical = pd.read_csv(d / "clinical_echonet.csv", dtype={"pred_reason": str})
    clinical.loc[2, "pred_ef_percent"] = np.nan
    clinical.to_csv(d / "clinical_echonet.csv", index=False)
    with pytest.raises(ClinicalFormatError, match=r"clinical_echonet.csv.*patients "
                                                  r"\['0X0003EC40'\] have no pred EF"):
        read_cross_clinical(d / "clinical_echonet.csv")
    clinical.loc[2, "pred_reason"] = "4CH_ES: empty (no foreground pixel)"
    clinical.to_csv(d / "clinical_echonet.csv", index=False)
    assert read_cross_clinical(d / "clinical_echonet.csv")["pred_ef_percent"].isna().sum() == 1
    with pytest.raises(FileNotFoundError, match="no such folder of runs"):
        A.load_transfer(grid / "absent")


def test_report_block_written_once_and_removed(grid, tmp_path):
    before = report_by_06(tmp_path / "paper", "demo")
    report = tmp_path / "paper" / "report.md"
    results = A.transfer_results(grid, n_boot=200)
    fig = A.transfer_figure(results["runs"], tmp_path / "fig")
    assert fig[0].stat().st_size > 1000 and fig[1].suffix == ".pdf"
    sections = A.transfer_sections(report, results, figures={"transfer": fig}, n_boot=200)
    assert [h for h, _ in sections] == [
        "Cross-dataset transfer: tested on EchoNet-Dynamic",
        "Cross-dataset transfer: does synthetic pretraining change the drop?"]
    for _ in range(2):
        A.update_report(report, sections, markers=A.TRANSFER_MARKERS)
    text = report.read_text()
    assert text.startswith(before.decode()) and text.count(A.TRANSFER_MARKERS[0]) == 1
    assert text.count("## Cross-dataset transfer: tested on EchoNet-Dynamic\n") == 1
    assert "![LV dice on the own test split and on EchoNet-Dynamic](../fig/transfer_dice.png)" \
        in text and "`cris_real_trained_p2`" in text
    summary = A.transfer_summary(results, sections, profile="demo")
    assert summary["n_evaluated"] == 8 and summary["status"]["cris_real_trained_p3"] \
        == "unfinished (no metrics.csv)"
    assert A.transfer_sections(report, A.transfer_results(tmp_path / "paper")) == []
    A.update_report(report, [], markers=A.TRANSFER_MARKERS)
    assert report.read_bytes() == before


@pytest.mark.parametrize(("change", "p", "ci", "seeds", "verdict"), [
    (-2.0, 0.01, (-4.0, -0.5), (1, 1), "smaller drop (p < 0.05; one run per cell, seed "
                                       "variation not measured)"),
    (-1.3, 0.008, (-4.5, 2.7), (1, 1), "no change shown (p < 0.05 but the interval covers 0; "
                                       "one run per cell)"),
    (2.0, 0.01, (0.5, 4.0), (1, 1), "larger drop (p < 0.05; one run per cell, seed "
                                    "variation not measured)"),
    (-2.7, 0.08, (-5.7, 0.3), (1, 1), "no change shown (p >= 0.05; one run per cell)"),
    (-2.0, 0.9, (-4.0, -0.5), (3, 3), "smaller drop (survives seed variation)"),
    (-2.0, 0.01, (-4.0, 0.5), (3, 2), "no change resolved (interval covers 0)"),
])
def test_drop_verdict_claims_no_more_than_the_test_and_the_interval(change, p, ci, seeds,
                                                                     verdict):
    from echo_vlsm.analysis.transfer import drop_verdict

    assert drop_verdict(change, p, ci, seeds) == verdict
