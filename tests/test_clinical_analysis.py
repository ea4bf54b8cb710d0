"""The clinical analysis (issue 21, section 4) on fabricated ``clinical.csv`` files whose answers
are known: reading and its errors, agreement statistics, EF categories and kappa, NaN rates,
seeds, the floor, CAMUS's figures, the paired tests of the EF error, figures, report block."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from echo_vlsm import analysis as A
from echo_vlsm.analysis.report import BEYOND_BEGIN, BEYOND_END
from tests.clinical_runs import (
    GT_EF_BIAS,
    N_PATIENTS,
    REF_EDV,
    REF_EF,
    alternating,
    clinical_frame,
    write_clinical_run,
)

RUN = "cris_real_trained_p1"


# -- statistics with known values ------------------------------------------------------------
def test_agreement_by_hand():
    a = A.agreement([10.0, 20.0, 33.0, np.nan, 5.0], [11.0, 19.0, 30.0, 4.0, np.nan])
    d = np.array([-1.0, 1.0, 3.0])
    assert a.n == 3
    assert a.bias == pytest.approx(1.0)
    assert a.sd == pytest.approx(2.0)  # sqrt(((−2)² + 0² + 2²) / 2)
    assert (a.loa_low, a.loa_high) == pytest.approx((1.0 - 3.92, 1.0 + 3.92))
    assert a.mae == pytest.approx(np.abs(d).mean())
    assert a.pearson_r == pytest.approx(stats.pearsonr([10, 20, 33], [11, 19, 30])[0])
    one = A.agreement([5.0], [3.0])
    assert (one.n, one.bias, one.mae) == (1, 2.0, 2.0)
    assert np.isnan(one.sd) and np.isnan(one.pearson_r) and np.isnan(one.loa_low)
    none = A.agreement([np.nan], [1.0])
    assert none.n == 0 and np.isnan(none.bias) and np.isnan(none.mae)
    flat = A.agreement([50.0, 50.0], [40.0, 60.0])  # no variance on one side: r undefined
    assert np.isnan(flat.pearson_r) and flat.bias == 0.0


def test_ef_categories_and_kappa():
    assert A.ef_category([0.0, 39.99, 40.0, 49.99, 50.0, 80.0, np.nan])[:6].tolist() \
        == [0, 0, 1, 1, 2, 2]
    # p_o = 3/4; marginals (1/2, 1/4, 1/4) and (1/4, 1/2, 1/4): p_e = 5/16
    assert A.cohen_kappa([0, 0, 1, 2], [0, 1, 1, 2]) == pytest.approx((0.75 - 0.3125) / 0.6875)
    assert A.cohen_kappa([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)
    assert np.isnan(A.cohen_kappa([2, 2, 2], [2, 2, 2]))  # chance agreement certain
    assert A.cohen_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)
    n, pct, kappa = A.category_agreement([35.0, 45.0, 55.0, np.nan], [38.0, 52.0, 60.0, 50.0])
    assert n == 3 and pct == pytest.approx(200 / 3)
    assert kappa == pytest.approx(A.cohen_kappa([0, 1, 2], [0, 2, 2]))


def test_agreement_of_a_run_against_reference_and_masks(tmp_path):
    write_clinical_run(tmp_path, RUN, ef_bias=2.0, ef_spread=3.0, edv_scale=1.1)
    t = A.clinical_agreement(A.load_clinical(tmp_path)).set_index(["against", "index"])
    ef = t.loc[("reference", "ef")]
    assert ef["n"] == N_PATIENTS and ef["bias"] == pytest.approx(2.0)
    sd = 3.0 * np.sqrt(N_PATIENTS / (N_PATIENTS - 1))
    assert ef["sd"] == pytest.approx(sd)
    assert (ef["loa_low"], ef["loa_high"]) == pytest.approx((2 - 1.96 * sd, 2 + 1.96 * sd))
    assert ef["mae"] == pytest.approx(3.0)  # errors +5 and -1, half each
    pred = REF_EF + 2.0 + 3.0 * alternating()
    same = A.ef_category(pred) == A.ef_category(REF_EF)
    assert ef["category_agreement"] == pytest.approx(100 * same.mean())
    assert ef["kappa"] == pytest.approx(A.cohen_kappa(A.ef_category(pred),
                                                      A.ef_category(REF_EF)))
    assert t.loc[("masks", "ef"), "bias"] == pytest.approx(2.0 - GT_EF_BIAS)
    edv = t.loc[("reference", "edv")]
    assert edv["pearson_r"] == pytest.approx(1.0)
    assert edv["bias"] == pytest.approx(0.1 * REF_EDV.mean())
    assert np.isnan(edv["kappa"]) and np.isnan(edv["category_agreement"])


def test_nan_rates_and_unmeasured_patients(tmp_path):
    write_clinical_run(tmp_path, RUN, missing=(3, 7))
    df = A.load_clinical(tmp_path)
    assert len(df) == N_PATIENTS  # listed, not dropped
    nans = A.nan_rates(df).iloc[0]
    assert (nans["n_patients"], nans["pred_nan"], nans["pred_nan_rate"]) == (20, 2, 10.0)
    assert nans["pred_reasons"] == "missing 2CH_ES (2)" and nans["gt_nan_rate"] == 10.0
    t = A.clinical_agreement(df)
    assert set(t["n"]) == {N_PATIENTS - 2}
    assert A.floor_table(df).set_index("index").loc["ef", "n"] == N_PATIENTS - 2
    assert A.clinical.reason_code("4CH_ES: empty (no foreground pixel)") == "4CH_ES: empty"


def test_cells_average_seeds_and_floor(tmp_path):
    for seed, bias in ((0, 1.0), (1, 2.0), (2, 3.0)):
        rid = RUN if seed == 0 else f"{RUN}_seed{seed}"
        write_clinical_run(tmp_path, rid, ef_bias=bias, ef_spread=0.0)
    df = A.load_clinical(tmp_path)
    nans = A.nan_rates(df)
    cells = A.cell_agreement(A.clinical_agreement(df), nans)
    ef = cells[(cells["against"] == "reference") & (cells["index"] == "ef")].iloc[0]
    assert ef["n_seeds"] == 3 and ef["mae"] == pytest.approx(2.0)
    assert ef["mae_seed_std"] == pytest.approx(1.0) and ef["pred_nan_rate"] == 0.0
    floor = A.floor_table(df).set_index("index")
    assert floor.loc["ef", "n"] == N_PATIENTS  # once per patient, not once per run
    assert floor.loc["ef", "bias"] == pytest.approx(GT_EF_BIAS)
    assert floor.loc["ef", "kappa"] == pytest.approx(
        A.cohen_kappa(A.ef_category(REF_EF + GT_EF_BIAS), A.ef_category(REF_EF)))
    assert floor.loc["edv", "mae"] == pytest.approx(2.0)


def test_headline_sets_the_cells_beside_camus(tmp_path):
    write_clinical_run(tmp_path, RUN, ef_bias=2.0, ef_spread=3.0)
    df = A.load_clinical(tmp_path)
    res = A.clinical_results(df, n_boot=50)
    head = res["headline"].set_index("measured")
    camus = head.loc["CAMUS best network (Leclerc et al. 2019, cross-validation)"]
    assert (camus["EDV/ESV r (mean)"], camus["EDV/ESV MAE (mL, mean)"]) == (0.95, 9.5)
    assert (camus["EF r"], camus["EF MAE (points)"]) == (0.80, 5.6)
    assert head.loc["CRIS real P1", "EF MAE (points)"] == pytest.approx(3.0)
    assert head.loc["CRIS real P1", "patients"] == N_PATIENTS
    assert head.loc["ground-truth masks", "EF bias"] == pytest.approx(GT_EF_BIAS)
    masks = res["headline_masks"]
    assert list(masks["measured"]) == ["CRIS real P1"]  # no floor, no CAMUS against masks


def test_camus_reference_file_names_its_source(tmp_path):
    c = A.camus_clinical().set_index("index")
    assert c.loc["ef", "correlation"] == 0.80 and c.loc["edv_esv", "mae"] == 9.5
    assert "Leclerc" in c.loc["ef", "source"] and "IEEE" in c.loc["ef", "source"]
    assert "not the 50 test patients" in c.loc["ef", "evaluation"]
    bad = tmp_path / "camus.csv"
    bad.write_text("index,correlation\nef,0.8\n")
    with pytest.raises(A.ClinicalFormatError, match=r"camus\.csv: missing columns"):
        A.camus_clinical(bad)


# -- reading ---------------------------------------------------------------------------------
BAD_FILES = [
    ("a column missing", lambda d: d.drop(columns="pred_ef_percent"),
     r"missing columns \['pred_ef_percent'\]"),
    ("an unknown model", lambda d: d.assign(model="sam"), r"column 'model' has values \['sam'\]"),
    ("a NaN without its reason", lambda d: d.assign(pred_ef_percent=[np.nan] + [50.0] * 19),
     r"patients \['patient0001'\] have an empty pred value and no pred_reason"),
    ("a patient twice", lambda d: pd.concat([d, d.iloc[:1]]),
     r"patients \['patient0001'\] appear more than once"),
    ("two runs", lambda d: d.assign(seed=[0] * 10 + [1] * 10), "holds rows of 2 runs"),
    ("EF above 100", lambda d: d.assign(ref_ef_percent=120.0), "EF above 100"),
    ("a volume of 0", lambda d: d.assign(gt_edv_ml=0.0), r"'gt_edv_ml' has volumes <= 0"),
    ("text for a number", lambda d: d.assign(pred_esv_ml="big"), "not numbers"),
    ("a negative seed", lambda d: d.assign(seed=-1), "'seed' must hold integers"),
    ("no rows", lambda d: d.iloc[:0], "has a header but no rows"),
]


@pytest.mark.parametrize("case, edit, message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_clinical_file_is_an_error_naming_it(tmp_path, case, edit, message):
    path = tmp_path / RUN / "clinical.csv"
    path.parent.mkdir()
    edit(clinical_frame(RUN)).to_csv(path, index=False)
    with pytest.raises(A.ClinicalFormatError, match=message) as info:
        A.load_clinical(tmp_path)
    assert info.value.path == path and str(path) in str(info.value)


def test_reading_refuses_old_files_and_keeps_reasons(tmp_path):
    path = write_clinical_run(tmp_path, RUN, missing=(0,))
    df = A.read_clinical(path)
    assert list(df.columns) == list(A.CLINICAL_COLUMNS)
    assert (df["seed"] == 0).all() and df["provenance"].dtype == bool
    assert df.loc[0, "pred_reason"] == "missing 2CH_ES" and df.loc[1, "pred_reason"] == ""
    assert df["patient"].iloc[0] == "patient0001"
    pd.read_csv(path).drop(columns=["seed", "real_fraction", "provenance"]).to_csv(path,
                                                                                 index=False)
    with pytest.raises(A.ClinicalFormatError,
                       match=r"clinical\.csv: missing columns "
                             r"\['seed', 'real_fraction', 'provenance'\]"):
        A.read_clinical(path)


def test_load_clinical_without_files_is_empty_and_without_folder_an_error(tmp_path):
    empty = A.load_clinical(tmp_path)
    assert empty.empty and list(empty.columns) == list(A.CLINICAL_COLUMNS)
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder of runs"):
        A.load_clinical(tmp_path / "nowhere")


# -- paired tests ----------------------------------------------------------------------------
@pytest.fixture
def grid(tmp_path):
    """CRIS real and synth-pt-real-ft at P1 with 3 seeds each (synth-pt-real-ft 2 EF points
    closer to the reference on every patient), CLIPSeg real at P0 (one patient unmeasured),
    P1 and P2 (one seed each)."""
    root = tmp_path / "runs"
    for s in (0, 1, 2):
        tail = f"_seed{s}" if s else ""
        write_clinical_run(root, f"cris_real_trained_p1{tail}", ef_bias=5.0 + 0.3 * s,
                           ef_spread=1.0)
        write_clinical_run(root, f"cris_synth-pt-real-ft_trained_p1{tail}",
                           ef_bias=3.0 + 0.3 * s, ef_spread=1.0)
    write_clinical_run(root, "clipseg_real_trained_p0", ef_bias=6.0, ef_spread=0.5,
                       missing=(4,))
    write_clinical_run(root, "clipseg_real_trained_p1", ef_bias=2.0, ef_spread=0.5,
                       seed_noise=0.3)
    write_clinical_run(root, "clipseg_real_trained_p2", ef_bias=2.0, ef_spread=0.5,
                       seed_noise=0.3, rng_seed=1)
    return A.load_clinical(root)


def test_pairs_put_the_richer_or_pretrained_cell_first(grid):
    pairs = {(name, a["model"], a["prompt"], b["prompt"]) for name, a, b, _ in
             A.clinical_pairs(grid)}
    assert pairs == {("synth-pt-real-ft vs real", "cris", "p1", "p1"),
                     ("P1 vs P0", "clipseg", "p1", "p0"), ("P2 vs P1", "clipseg", "p2", "p1")}
    assert {alt for *_, alt in A.clinical_pairs(grid)} == {"less"}


def test_ef_error_tests_with_known_answers(grid):
    t = A.clinical_tests(grid, n_boot=300).set_index("comparison")
    pre = t.loc["synth-pt-real-ft vs real"]
    assert (pre["n_seeds_a"], pre["n_seeds_b"], pre["n"]) == (3, 3, N_PATIENTS)
    assert pre["diff"] == pytest.approx(-2.0)  # |3.3 ± 1| - |5.3 ± 1| on every patient
    assert pre["ci_high"] < 0 and pre["verdict"] == "survives"
    xa = np.abs(3.0 + alternating())
    xb = np.abs(5.0 + alternating())
    assert pre["wilcoxon_seed"] == 0
    assert pre["wilcoxon_p"] == pytest.approx(stats.wilcoxon(xa, xb, alternative="less").pvalue)
    p0 = t.loc["P1 vs P0"]
    assert (p0["a"], p0["b"]) == ("CLIPSeg real P1", "CLIPSeg real P0")
    assert (p0["n"], p0["n_unmeasured"]) == (N_PATIENTS - 1, 1)
    assert p0["diff"] < -3 and p0["wilcoxon_p"] < 1e-3
    assert p0["verdict"].startswith("not testable")
    p2 = t.loc["P2 vs P1"]  # the same cell up to noise: no direction resolved
    assert abs(p2["diff"]) < 0.5 and p2["wilcoxon_p"] > 0.05


def test_ef_error_comparison_against_masks_and_equal_cells(grid):
    a = {"model": "cris", "strategy": "synth-pt-real-ft", "encoders": "trained", "prompt": "p1"}
    res = A.ef_error_comparison(grid, a, a, against="masks", n_boot=50)
    assert res["diff"] == 0.0 and np.isnan(res["wilcoxon_p"])
    seeds, patients, x = A.clinical.error_matrix(grid, a, against="masks")
    assert seeds == [0, 1, 2] and len(patients) == N_PATIENTS
    assert x[0] == pytest.approx(np.abs(3.0 - GT_EF_BIAS + alternating()))
    with pytest.raises(ValueError, match="no clinical rows match"):
        A.clinical.error_matrix(grid, {**a, "model": "unet"})


# -- figures and the report ------------------------------------------------------------------
def test_figures_and_report_block(grid, tmp_path):
    res = A.clinical_results(grid, n_boot=100)
    assert [c["prompt"] for c in res["best"]] == ["p1", "p1"]  # real: CLIPSeg P1; sptrf
    pts = A.figure_points(grid, res["best"])
    assert set(pts["group"]) == {"CLIPSeg real P1", "CRIS synth-pt-real-ft P1",
                                 "ground-truth masks"}
    assert (pts["group"] == "CRIS synth-pt-real-ft P1").sum() == 3 * 3 * N_PATIENTS
    figs = {"bland_altman": A.bland_altman_figure(pts, tmp_path / "fig"),
            "scatter": A.clinical_scatter_figure(pts, tmp_path / "fig")}
    for paths in figs.values():
        assert paths[0].suffix == ".png" and paths[0].stat().st_size > 1000
        assert paths[1].suffix == ".pdf" and paths[1].is_file()
    with pytest.raises(ValueError, match="nothing to plot"):
        A.bland_altman_figure(pts.iloc[:0], tmp_path / "fig")
    report = tmp_path / "paper" / "report.md"
    by06 = A.write_report(report, "Reproduction report", [("Table 1", "numbers")]).read_bytes()
    A.update_report(report, [("Beyond the study: seeds", "beyond")])
    with_beyond = report.read_bytes()
    sections = A.clinical_sections(report, res, figures=figs, n_boot=100)
    assert [h for h, _ in sections] == ["Clinical indices",
                                        "Clinical indices: paired tests of the EF error"]
    body = sections[0][1]
    assert "![Bland-Altman plots](../fig/clinical_bland_altman.png)" in body
    assert "not from the 50 test patients" in body
    assert "| clipseg | real | trained | p0 | 0 | 20 | 5.00 | missing 2CH_ES (1) |" in body
    assert "| P1 vs P0 | CLIPSeg real P1 | CLIPSeg real P0 | 1/1 | 19 |" in sections[1][1]
    A.update_report(report, sections, markers=A.CLINICAL_MARKERS)
    A.update_report(report, sections, markers=A.CLINICAL_MARKERS)  # replaced, not repeated
    text = report.read_text()
    assert text.startswith(with_beyond.decode()) and text.count(A.CLINICAL_MARKERS[0]) == 1
    assert text.count(BEYOND_BEGIN) == 1 and text.count(BEYOND_END) == 1
    A.update_report(report, [("Beyond the study: seeds", "again")])  # 08 runs again
    assert report.read_text().count(A.CLINICAL_MARKERS[0]) == 1
    A.update_report(report, [], markers=A.CLINICAL_MARKERS)
    A.update_report(report, [])
    assert report.read_bytes() == by06
    assert A.clinical_sections(report, None) == []
    summary = A.clinical_summary(res, sections, profile="demo")
    assert summary["profile"] == "demo" and summary["n_runs"] == 9
    assert {t["comparison"] for t in summary["tests"]} == {"synth-pt-real-ft vs real",
                                                           "P1 vs P0", "P2 vs P1"}
