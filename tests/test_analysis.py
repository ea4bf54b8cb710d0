"""Analysis on metrics tables whose answers are known by construction."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from echo_vlsm import analysis as A
from tests.tiny_runs import fake_real_images

SAMPLES = [f"patient{i:04d}_2CH_ED" for i in range(1, 5)]


def _rows(model, strategy, encoders, prompt, dice_by_structure):
    """One row per (sample, structure); dice_by_structure[structure] is a list over SAMPLES."""
    rows = []
    for structure, values in dice_by_structure.items():
        for sample, d in zip(SAMPLES, values):
            rows.append(dict(model=model, strategy=strategy, encoders=encoders, prompt=prompt,
                             seed=0, real_fraction=1.0, provenance=False, sample=sample,
                             structure=structure, view="2CH", phase="ED",
                             dice=float(d), iou=float(d) * 0.8, hd95=5.0))
    return rows


def _const(v):
    return {s: [v] * len(SAMPLES) for s in ("lv", "myo", "la")}


@pytest.fixture
def table():
    rows = []
    # real p1: dice 80, 82, 84, 86 for every structure -> mean 83, std(ddof=1) sqrt(20/3)
    rows += _rows("cris", "real", "trained", "p1",
                  {s: [80, 82, 84, 86] for s in ("lv", "myo", "la")})
    rows += _rows("cris", "real", "trained", "p0", _const(40))
    rows += _rows("cris", "synthetic", "trained", "p1", _const(75))
    rows += _rows("cris", "synth-pt-real-ft", "trained", "p1", _const(85))
    rows += _rows("cris", "real", "frozen", "p1", _const(70))
    rows += _rows("cris", "zeroshot", "frozen", "p1", _const(9))
    rows += _rows("clipseg", "real", "trained", "p1", _const(60))
    return pd.DataFrame(rows)


def _write_run(root, run_id, df):
    d = root / run_id
    d.mkdir(parents=True)
    df.to_csv(d / "metrics.csv", index=False)
    return d


def test_load_metrics_concatenates_and_validates(tmp_path, table):
    for (m, s, e, p), g in table.groupby(["model", "strategy", "encoders", "prompt"]):
        _write_run(tmp_path / "runs", f"{m}_{s}_{e}_{p}", g)
    df = A.load_metrics(tmp_path / "runs")
    assert len(df) == len(table)
    assert list(df.columns) == list(A.METRIC_COLUMNS)
    assert isinstance(df["sample"].iloc[0], str) and df["sample"].iloc[0].startswith("patient")

    bad = tmp_path / "bad" / "cris_real_trained_p1"
    bad.mkdir(parents=True)
    table.drop(columns=["hd95"]).to_csv(bad / "metrics.csv", index=False)
    with pytest.raises(A.MetricsFormatError, match=r"cris_real_trained_p1.*metrics\.csv.*hd95"):
        A.load_metrics(tmp_path / "bad")

    table.assign(model="CRIS").to_csv(bad / "metrics.csv", index=False)
    with pytest.raises(A.MetricsFormatError, match=r"'model' has values \['CRIS'\]"):
        A.load_metrics(tmp_path / "bad")
    table.assign(dice=table["dice"] / 100 - 1).to_csv(bad / "metrics.csv", index=False)
    with pytest.raises(A.MetricsFormatError, match="outside 0..100"):
        A.load_metrics(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        A.load_metrics(tmp_path / "empty")


def test_summary_table_means_and_paper_columns(table):
    t1 = A.summary_table(table, "trained").set_index(["strategy", "model", "prompt"])
    r = t1.loc[("real", "cris", "p1")]
    assert r["n"] == 12
    assert r["dice_mean"] == pytest.approx(83.0)
    squares = sum((x - 83) ** 2 for x in [80, 82, 84, 86] * 3)
    assert r["dice_std"] == pytest.approx(math.sqrt(squares / 11))
    # the study's Table 1, CRIS real P1 = 91.00 +- 6.34
    assert (r["paper_mean"], r["paper_std"]) == (91.00, 6.34)
    # zero-shot belongs to Table 1 whatever its encoders label (study: CRIS P1 9.04)
    assert t1.loc[("zeroshot", "cris", "p1"), "dice_mean"] == 9
    assert t1.loc[("zeroshot", "cris", "p1"), "paper_mean"] == 9.04
    assert ("real", "clipseg", "p1") in t1.index
    # row order follows the study: zeroshot, synthetic, real, synth-pt-real-ft
    assert list(dict.fromkeys(t1.index.get_level_values(0))) == [
        "zeroshot", "synthetic", "real", "synth-pt-real-ft"]

    t2 = A.summary_table(table, "frozen").set_index(["strategy", "model", "prompt"])
    assert list(t2.index) == [("real", "cris", "p1")]
    assert t2.iloc[0]["dice_mean"] == 70 and t2.iloc[0]["paper_mean"] == 88.41

    full = A.summary_table(table, "frozen", all_paper_cells=True)
    assert len(full) == 2 * (7 + 8 + 8)  # Table 2: no zero-shot, synthetic has no P7
    assert (full["n"] == 0).sum() == len(full) - 1
    with pytest.raises(ValueError, match="expected one of"):
        A.summary_table(table, "unfrozen")


def test_format_and_write_table(tmp_path, table):
    t1 = A.summary_table(table, "trained")
    wide = A.format_table(t1)
    assert wide.loc[("Real", "CRIS", "this work"), "P1"] == "83.00 ± 2.34"
    assert wide.loc[("Real", "CRIS", "study"), "P1"] == "91.00 ± 6.34"
    assert wide.loc[("Synthetic", "CRIS", "this work"), "P0"] == "–"
    paths = A.write_table(t1, tmp_path / "paper", "table1", caption="Dice (%), encoders trained")
    md = paths["md"].read_text()
    assert "| Real | CRIS | this work | 40.00 ± 0.00 | 83.00 ± 2.34 |" in md
    tex = paths["tex"].read_text()
    assert r"\begin{tabular}{lllcc}" in tex and r"83.00 $\pm$ 2.34" in tex
    assert r"Synth-PT:Real-FT" in tex and r"Dice (\%)" in tex
    assert pd.read_csv(paths["csv"]).shape == t1.shape


def _exact_wilcoxon_greater(d):
    """P(W+ >= observed) under H0 by enumerating every sign assignment (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w_obs = ranks[d > 0].sum()
    count = sum(1 for signs in itertools.product([0, 1], repeat=len(d))
                if (ranks * np.array(signs)).sum() >= w_obs)
    return count / 2 ** len(d)


def _paired(diffs, base=50.0):
    """Metrics for a (strategy synth-pt-real-ft) and b (real) whose differences are diffs."""
    rows = []
    for i, d in enumerate(diffs):
        common = dict(model="cris", encoders="trained", prompt="p2", seed=0, real_fraction=1.0,
                      provenance=False, sample=f"s{i:03d}",
                      structure="lv", view="4CH", phase="ES", iou=1.0, hd95=1.0)
        rows.append({**common, "strategy": "real", "dice": base})
        rows.append({**common, "strategy": "synth-pt-real-ft", "dice": base + d})
    return pd.DataFrame(rows)


A_SEL = {"model": "cris", "strategy": "synth-pt-real-ft", "prompt": "p2"}
B_SEL = {"model": "cris", "strategy": "real", "prompt": "p2"}


def test_paired_wilcoxon_matches_exact_enumeration():
    d = np.array([1.5, -0.5, 2.5, 3.5, -1.0, 4.5, 0.25, 2.0])
    res = A.paired_test(_paired(d), A_SEL, B_SEL, alternative="greater")
    assert res.n == 8 and res.diff == pytest.approx(d.mean())
    assert res.median_diff == pytest.approx(np.median(d))
    assert res.pvalue == pytest.approx(_exact_wilcoxon_greater(d), rel=1e-12)
    assert res.statistic == 31.0  # W+ = 36 - ranks of -0.5 (2) and -1.0 (3)
    less = A.paired_test(_paired(d), A_SEL, B_SEL, alternative="less")
    assert less.pvalue == pytest.approx(_exact_wilcoxon_greater(-d), rel=1e-12)


def test_paired_wilcoxon_matches_normal_approximation():
    n = 80  # large n: scipy uses the normal approximation without continuity correction
    d = np.array([(i + 1) * 0.1 * (1 if i % 3 else -1) for i in range(n)])
    res = A.paired_test(_paired(d), A_SEL, B_SEL, alternative="greater")
    w_plus = np.arange(1, n + 1)[d > 0].sum()
    mu, sigma = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    z = (w_plus - mu) / sigma
    p_normal = 0.5 * math.erfc(z / math.sqrt(2))
    assert res.pvalue == pytest.approx(p_normal, rel=1e-6)
    assert 1e-3 < res.pvalue < 1e-2


def test_paired_ttest_matches_formula():
    d = np.array([1.0, 2.0, 0.5, -0.5, 3.0, 1.5])
    res = A.paired_test(_paired(d), A_SEL, B_SEL, test="ttest")
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert res.statistic == pytest.approx(t)
    from scipy.stats import t as student
    assert res.pvalue == pytest.approx(student.sf(t, len(d) - 1))


def test_paired_test_rejects_unmatched_and_duplicates():
    df = _paired(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"unmatched samples: 0 only in a.*1 only in b"):
        A.paired_test(df.drop(index=5), A_SEL, B_SEL)
    dup = pd.concat([df, df.iloc[[1]]])
    with pytest.raises(ValueError, match=r"selection a=.*2 rows sharing a \(sample, structure\)"):
        A.paired_test(dup, A_SEL, B_SEL)
    with pytest.raises(ValueError, match="no metrics rows match"):
        A.paired_test(df, {**A_SEL, "prompt": "p7"}, B_SEL)
    with pytest.raises(KeyError, match="not a metrics column"):
        A.paired_test(df, {"net": "cris"}, B_SEL)


def test_study_tests_pick_best_cells(table):
    tests = A.study_tests(table, "trained").set_index("comparison")
    best = tests.loc["best synthetic vs best real"]
    assert best["a"] == "CRIS synthetic P1" and best["b"] == "CRIS real P1"
    assert best["diff"] == pytest.approx(75 - 83) and best["n"] == 12
    assert tests.loc["synth-pt-real-ft vs real", "diff"] == pytest.approx(2.0)


def test_differences_gap_and_paper_freeze_effect(table):
    t1 = A.summary_table(table, "trained")
    diffs = A.strategy_differences(t1).set_index(["strategy", "model", "prompt"])
    assert diffs.loc[("synthetic", "cris", "p1"), "diff"] == pytest.approx(-8.0)
    assert diffs.loc[("synthetic", "cris", "p1"), "paper_diff"] == pytest.approx(84.72 - 91.00)
    fr = A.freeze_differences(table)
    assert fr[["strategy", "model", "prompt"]].values.tolist() == [["real", "cris", "p1"]]
    assert fr["diff"].iloc[0] == pytest.approx(70 - 83)
    assert fr["paper_diff"].iloc[0] == pytest.approx(88.41 - 91.00)
    gap = A.prompt_gap(t1)
    assert gap.loc[0, "gap"] == pytest.approx(43.0)
    assert gap.loc[0, "paper_gap"] == pytest.approx(91.00 - 46.46)
    effect = A.paper_freeze_effect().set_index("model")
    # the study's CLIPSeg tables barely differ (encoders never trained); CRIS's do
    assert effect.loc["clipseg", "max_abs_diff"] < 3 < effect.loc["cris", "max_abs_diff"]


def test_a_run_that_never_beat_its_initial_weights_is_named(tmp_path, table):
    runs = tmp_path / "runs"
    scores = {"cris_real_trained_p1": (17.4, 80.0), "clipseg_real_trained_p1": (17.4, 16.8)}
    for (m, s, e, p), g in table.groupby(["model", "strategy", "encoders", "prompt"]):
        rid = f"{m}_{s}_{e}_{p}"
        d = _write_run(runs, rid, g)
        initial, best = scores.get(rid, (10.0, 60.0))
        (d / "summary.json").write_text(json.dumps({
            "best_epoch": 1 if best < initial else 5, "best_val_dice": best,
            "initial_val_dice": initial, "seconds_to_best": 1.0, "epochs_run": 9,
            "stopped_by": "patience", "seconds_total": 9.0, "done": True}))
    sums = A.load_summaries(runs)
    assert sums.set_index("run_id").loc["clipseg_real_trained_p1", "initial_val_dice"] == 17.4
    stopping = A.stopping_table(sums)
    beat = stopping.set_index("run_id")["beat_initial"]
    assert beat["clipseg_real_trained_p1"] is False and beat["cris_real_trained_p1"] is True
    assert A.never_learned(stopping) == ["clipseg_real_trained_p1"]
    verdict = A.stopping_verdict(stopping)
    assert "had their best validation dice at their last epoch" not in verdict
    creeping = A.stopping_verdict(stopping.assign(epochs_after_best=np.where(
        stopping["run_id"] == "cris_real_trained_p1", 0, stopping["epochs_after_best"])))
    assert ("1 of them had their best validation dice at their last epoch "
            "(cris_real_trained_p1): early stopping ended them after gains below its "
            "min_delta, so they may still have been improving, slowly.") in creeping
    assert verdict.endswith("1 never beat the validation dice of the weights they started "
                            "from (clipseg_real_trained_p1): they learned nothing, and their "
                            "test scores say nothing about their strategy.")
    # summaries written before the field: unknown, not False, and no such sentence
    older = sums.assign(initial_val_dice=np.nan)
    assert A.stopping_table(older)["beat_initial"].isna().all()
    assert "never beat" not in A.stopping_verdict(A.stopping_table(older))


def test_histories_summaries_speedups_and_figures(tmp_path, table):
    runs = tmp_path / "runs"
    for (m, s, e, p), g in table.groupby(["model", "strategy", "encoders", "prompt"]):
        d = _write_run(runs, f"{m}_{s}_{e}_{p}", g)
        best = {"real": 8, "synth-pt-real-ft": 2}.get(s, 4)
        pd.DataFrame({"epoch": range(1, 11), "val_dice": np.linspace(0.2, 0.9, 10),
                      "train_loss": np.linspace(1, 0.1, 10)}).to_csv(d / "history.csv", index=False)
        (d / "summary.json").write_text(json.dumps({
            "best_epoch": best, "best_val_dice": 0.5 if s == "real" else 0.9,
            "seconds_to_best": best * 3.0,
            "epochs_run": 10, "seconds_total": 30.0, "done": True,
            "real_train_images": fake_real_images(s, 1.0)}))
    (runs / "steps").mkdir()  # not a run folder: ignored
    sums = A.load_summaries(runs)
    assert len(sums) == 7 and set(sums["done"]) == {True}
    hist = A.load_histories(runs)
    assert len(hist) == 70 and {"run_id", "model", "val_dice"} <= set(hist.columns)
    sp = A.convergence_speedups(sums, hist)
    assert sp[["model", "encoders", "prompt"]].values.tolist() == [["cris", "trained", "p1"]]
    assert sp["epoch_speedup"].iloc[0] == 4.0 and sp["time_speedup"].iloc[0] == 4.0
    # real's best val dice 0.5 at epoch 8; synth-pt-real-ft's curve 0.2..0.9 passes 0.5 at 5
    assert sp["epochs_synth-pt-real-ft_to_match"].iloc[0] == 5
    assert sp["match_speedup"].iloc[0] == pytest.approx(8 / 5)
    assert not sp["real_at_cap"].iloc[0]
    capped = sums.assign(epochs_run=np.where(sums["strategy"] == "real", 8, 10))
    assert A.convergence_speedups(capped)["real_at_cap"].iloc[0]
    summary = A.speedup_summary(sp)
    assert summary.loc[0, ["model", "pairs", "study"]].tolist() == ["cris", 1, 4.55]
    # the report names a real run whose best epoch is its last, however it stopped
    body = dict(A.report_sections("r/report.md", profile="demo", metrics=table,
                                  table1=A.summary_table(table, "trained"),
                                  speedups=A.convergence_speedups(capped)))["Convergence"]
    assert "**Caveat**: 1 of 1 real runs (cris trained P1) had their best validation dice " \
        "at their last epoch" in body
    plain = dict(A.report_sections("r/report.md", profile="demo", metrics=table,
                                   table1=A.summary_table(table, "trained"),
                                   speedups=sp))["Convergence"]
    assert "Caveat" not in plain

    figs = tmp_path / "figures"
    df = A.load_metrics(runs)
    t1 = A.summary_table(df, "trained")
    written = (A.strategy_difference_figure(t1, figs) + A.freeze_difference_figure(df, figs)
               + A.learning_curve_figure(hist, figs) + A.per_structure_figure(df, figs))
    assert sorted(p.name for p in written) == sorted(
        f"{n}.{e}" for n in ("strategy_difference", "freeze_difference", "learning_curves",
                             "per_structure") for e in ("png", "pdf"))
    for p in written:
        assert p.stat().st_size > 1000
        assert p.read_bytes()[:4] in (b"\x89PNG", b"%PDF")
    with pytest.raises(ValueError, match="both frozen and trained"):
        A.freeze_difference_figure(df[df["encoders"] == "trained"], figs)


def test_markdown_table_and_report(tmp_path):
    md = A.markdown_table(pd.DataFrame({"a": ["x"], "diff": [0.3456], "pvalue": [8.3e-6]}))
    assert "| x | 0.35 | 8.30e-06 |" in md
    p = A.write_report(tmp_path / "r" / "report.md", "Report", [("Tables", "body")])
    assert p.read_text() == "# Report\n\n## Tables\n\nbody\n"


def test_prompt_gap_verdict_is_honest():
    gap = pd.DataFrame({"strategy": ["real", "real"], "model": ["clipseg", "cris"],
                        "dice_p0": [40.0, 50.0], "dice_p1": [80.0, 52.0],
                        "gap": [40.0, 2.0], "paper_gap": [42.01, 44.54]})
    text = A.prompt_gap_verdict(gap)
    assert "holds in 1 of 2 cells run" in text and "Real CRIS: +2.0 (study +44.5)" in text
    assert "does not hold" in A.prompt_gap_verdict(gap.iloc[[1]])
    assert "untested" in A.prompt_gap_verdict(gap.iloc[[]])

