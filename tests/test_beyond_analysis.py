"""Analysis beyond the study (issue #15) on fabricated runs whose answers are known: the new
run columns, the study's tables unchanged by extra runs, the seed table, the hierarchical
bootstrap and the claims' verdicts, data efficiency, the U-Net baseline, the report block."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from echo_vlsm import analysis as A
from echo_vlsm.analysis import beyond as beyond_mod
from echo_vlsm.grid import parse_run_id
from tests.tiny_runs import fake_samples, write_beyond_runs, write_fake_run


@pytest.fixture(scope="module")
def beyond(tmp_path_factory):
    """A folder with the study's seed-0 cells and every block beyond it."""
    root = tmp_path_factory.mktemp("beyond") / "runs"
    write_beyond_runs(root, study=True)
    return root


@pytest.fixture(scope="module")
def loaded(beyond):
    return A.load_metrics(beyond), A.load_summaries(beyond)


# -- loading ---------------------------------------------------------------------------------
def test_read_metrics_refuses_old_files_and_takes_the_new_vocabulary(tmp_path):
    old = write_fake_run(tmp_path, "cris_real_trained_p1", 80.0, legacy=True)
    assert "seed" not in pd.read_csv(old / "metrics.csv").columns
    with pytest.raises(A.MetricsFormatError,
                       match=r"cris_real_trained_p1.metrics\.csv: missing columns "
                             r"\['seed', 'real_fraction', 'provenance'\]"):
        A.read_metrics(old / "metrics.csv")
    df = A.read_metrics(write_fake_run(tmp_path, "cris_real_trained_p0", 80.0) / "metrics.csv")
    assert list(df.columns) == list(A.METRIC_COLUMNS)
    assert (df["seed"] == 0).all() and (df["real_fraction"] == 1.0).all()
    assert df["provenance"].dtype == bool and not df["provenance"].any()
    new = write_fake_run(tmp_path, "clipseg_mixed_trained_p1_seed2_real25_prov", 70.0)
    df = A.read_metrics(new / "metrics.csv")
    assert (df["seed"].tolist()[0], df["real_fraction"].iloc[0], df["provenance"].iloc[0]) \
        == (2, 0.25, True)
    unet = A.read_metrics(write_fake_run(tmp_path, "unet_real_trained_none", 85.0)
                          / "metrics.csv")
    assert set(unet["prompt"]) == {"none"} and set(unet["model"]) == {"unet"}
    bad = pd.read_csv(new / "metrics.csv").assign(real_fraction=1.5)
    bad.to_csv(new / "metrics.csv", index=False)
    with pytest.raises(A.MetricsFormatError, match=r"_prov.metrics\.csv.*real_fraction.*\(0, 1\]"):
        A.read_metrics(new / "metrics.csv")
    bad.assign(real_fraction=0.25, provenance="maybe").to_csv(new / "metrics.csv", index=False)
    with pytest.raises(A.MetricsFormatError, match="'provenance' must hold true or false"):
        A.read_metrics(new / "metrics.csv")
    bad.assign(real_fraction=0.25, seed=-1).to_csv(new / "metrics.csv", index=False)
    with pytest.raises(A.MetricsFormatError, match="'seed' must hold integers"):
        A.read_metrics(new / "metrics.csv")


def test_summaries_and_histories_carry_the_run_fields(loaded, beyond):
    df, sums = loaded
    row = sums.set_index("run_id").loc["clipseg_real_trained_p1_real25"]
    assert (row["seed"], row["real_fraction"], row["provenance"]) == (0, 0.25, False)
    assert row["real_train_images"] == 10
    assert sums.set_index("run_id").loc["cris_real_trained_p1", "real_train_images"] == 40
    hist = A.load_histories(beyond)
    assert set(A.RUN_COLUMNS) <= set(hist.columns)
    assert set(hist[hist["run_id"] == "cris_real_trained_p1_seed2"]["seed"]) == {2}
    study = A.study_rows(df)
    assert set(study["model"]) == {"clipseg", "cris"} and set(study["seed"]) == {0}
    assert set(study["strategy"]) == {"synthetic", "real", "synth-pt-real-ft"}
    assert (study["real_fraction"] == 1).all() and not study["provenance"].any()
    assert len(A.study_rows(df)) + len(A.beyond_rows(df)) == len(df)
    assert len(A.study_rows(sums)) == 7  # 2 x (synthetic, real, synth-pt) + CRIS frozen real
    bare = df.drop(columns=["real_fraction", "provenance"])
    for reader in (A.study_rows, A.with_run_columns):
        with pytest.raises(ValueError, match=r"lacks the run columns \['real_fraction', "
                                             r"'provenance'\]"):
            reader(bare)


# -- the study's outputs do not see the extra runs ---------------------------------------------
def _study_outputs(root, out):
    df, sums, hist = A.load_metrics(root), A.load_summaries(root), A.load_histories(root)
    t1, t2 = A.summary_table(df, "trained"), A.summary_table(df, "frozen")
    tests, speed = A.study_tests(df), A.convergence_speedups(sums, hist)
    figs = {"strategy_difference": A.strategy_difference_figure(t1, out),
            "freeze_difference": A.freeze_difference_figure(df, out),
            "learning_curves": A.learning_curve_figure(hist, out),
            "per_structure": A.per_structure_figure(df, out)}
    sections = A.report_sections(out / "report.md", profile="demo", metrics=df, table1=t1,
                                 table2=t2, tests=tests, speedups=speed,
                                 gap=A.prompt_gap(t1), figures=figs)
    A.write_report(out / "report.md", "Report", sections)
    return {"t1": t1, "t2": t2, "tests": tests, "speed": speed,
            "freeze": A.freeze_differences(df), "report": (out / "report.md").read_text(),
            "png": {k: v[0].read_bytes() for k, v in figs.items()}}


def test_study_tables_figures_and_report_ignore_runs_beyond_the_study(beyond, tmp_path):
    only = tmp_path / "a" / "runs"
    only.mkdir(parents=True)
    for d in beyond.iterdir():
        if parse_run_id(d.name).is_study:
            shutil.copytree(d, only / d.name)
    assert 0 < len(list(only.iterdir())) < len(list(beyond.iterdir()))
    (tmp_path / "b").mkdir()
    shutil.copytree(beyond, tmp_path / "b" / "runs")
    a = _study_outputs(only, tmp_path / "a" / "out")
    b = _study_outputs(tmp_path / "b" / "runs", tmp_path / "b" / "out")
    for key in ("t1", "t2", "tests", "speed", "freeze"):
        pd.testing.assert_frame_equal(a[key], b[key])
    assert a["report"] == b["report"]
    assert "7 runs, 210 test scores (30-30 per run" in a["report"]
    assert a["png"] == b["png"]
    assert len(a["tests"]) == 3  # best synthetic vs best real, synth-pt vs real x 2


# -- seeds -----------------------------------------------------------------------------------
def test_seed_table_means_spread_and_study_values(loaded):
    df, _ = loaded
    t = A.seed_table(df).set_index(["model", "strategy", "encoders", "prompt", "real_fraction",
                                    "provenance"])
    cris = t.loc[("cris", "synth-pt-real-ft", "trained", "p1", 1.0, False)]
    assert cris["n_seeds"] == 3 and cris["seeds"] == "0,1,2" and cris["n"] == 30
    assert cris["dice_mean"] == pytest.approx(90.0, abs=0.3)
    assert cris["seed_std"] == pytest.approx(1.5, abs=0.3)  # offsets 0, -1.5, +1.5
    assert cris["paper_mean"] == 91.26  # the study's Table 1, CRIS synth-pt-real-ft P1
    assert t.loc[("cris", "real", "frozen", "p1", 1.0, False), "paper_mean"] == 88.41
    mixed = t.loc[("clipseg", "mixed", "trained", "p1", 1.0, True)]
    assert mixed["n_seeds"] == 1 and np.isnan(mixed["seed_std"]) and np.isnan(mixed["paper_mean"])
    assert np.isnan(t.loc[("clipseg", "real", "trained", "p1", 0.25, False), "paper_mean"])
    assert np.isnan(t.loc[("unet", "real", "trained", "none", 1.0, False), "paper_mean"])
    shown = A.seed_table_display(A.seed_table(df))
    cell = shown[(shown["model"] == "CRIS") & (shown["strategy"] == "Synth-PT:Real-FT")]
    assert cell["dice (mean over seeds)"].iloc[0] == f"{cris['dice_mean']:.2f} ± " \
        f"{cris['seed_std']:.2f}" and cell["range"].iloc[0].count("–") == 1


def _cells(rng, k, n, level, seed_sd, sample_sd, effect=None):
    effect = rng.normal(0, sample_sd, n) if effect is None else effect
    return level + rng.normal(0, seed_sd, (k, 1)) + effect + rng.normal(0, 0.3, (k, n)), effect


def test_bootstrap_known_answers():
    rng = np.random.default_rng(1)
    xa, effect = _cells(rng, 3, 200, 90.0, 0.5, 8.0)
    xb, _ = _cells(rng, 3, 200, 80.0, 0.5, 8.0, effect)
    big = A.bootstrap_difference(xa, xb, n_boot=2000, seed=0)
    assert big.diff == pytest.approx(10.0, abs=1.0) and big.ci_low > 5 and big.share_positive == 1
    assert A.verdict(big, "greater") == "survives" and A.verdict(big, "less") == "reversed"
    xb0, _ = _cells(rng, 3, 200, 90.0, 0.5, 8.0, effect)
    zero = A.bootstrap_difference(xa, xb0, n_boot=2000, seed=0)
    assert zero.ci_low < 0 < zero.ci_high
    assert A.verdict(zero).startswith("does not survive")
    assert A.verdict(zero, "two-sided") == "no difference resolved"
    # deterministic under the seed, other draws under another
    assert A.bootstrap_difference(xa, xb0, seed=0) == zero
    assert A.bootstrap_difference(xa, xb0, seed=1) != zero
    # one seed a side: handled, the interval from the samples alone, not testable
    one = A.bootstrap_difference(xa[:1], xb[:1], n_boot=500, seed=0)
    assert one.n_seeds_a == 1 and np.isfinite([one.ci_low, one.ci_high]).all()
    assert A.verdict(one).startswith("not testable")


def test_bootstrap_interval_narrows_with_more_samples():
    rng = np.random.default_rng(2)
    widths = []
    for n in (30, 300, 3000):
        d = rng.normal(1.0, 6.0, n)  # per-sample differences, no seed spread
        xa, xb = np.vstack([d, d]), np.zeros((2, n))
        r = A.bootstrap_difference(xa, xb, n_boot=1000, seed=0)
        widths.append(r.ci_high - r.ci_low)
        # the sample level is the ordinary paired bootstrap of a mean: sd ~ 6 / sqrt(n)
        boot = A.seeds.bootstrap_replicates(xa, xb, n_boot=1000, seed=0)
        assert boot.std() == pytest.approx(d.std() / np.sqrt(n), rel=0.15)
    assert widths[0] > 2.5 * widths[1] > 2.5 * 2.5 * widths[2]


def test_bootstrap_seed_level_is_a_resampling_of_seeds():
    # seeds 0 and 10 on every sample, b = 0: a's resampled mean of 2 seeds is 0, 5 or 10
    xa = np.vstack([np.zeros(20), np.full(20, 10.0)])
    boot = A.seeds.bootstrap_replicates(xa, np.zeros((3, 20)), n_boot=4000, seed=3)
    values, counts = np.unique(boot.round(9), return_counts=True)
    assert values.tolist() == [0.0, 5.0, 10.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    r = A.bootstrap_difference(xa, np.zeros((3, 20)), n_boot=4000, seed=3)
    assert (r.ci_low, r.ci_high, r.diff) == (0.0, 10.0, 5.0)


def test_hierarchical_bootstrap_on_runs_and_errors(loaded):
    df, _ = loaded
    a = {"model": "cris", "strategy": "synth-pt-real-ft", "encoders": "trained", "prompt": "p1"}
    b = {**a, "strategy": "real"}
    r = A.hierarchical_bootstrap(df, a, b, n_boot=1000, seed=0)
    assert (r.n_seeds_a, r.n_seeds_b, r.n_samples) == (3, 3, 30)
    assert r.diff == pytest.approx(10.0, abs=0.5) and r.ci_low > 7
    with pytest.raises(ValueError, match="no metrics rows match"):
        A.hierarchical_bootstrap(df, {**a, "prompt": "p7"}, b)
    fewer = df[~((df["model"] == "cris") & (df["strategy"] == "real") & (df["seed"] == 2)
                 & (df["sample"] == df["sample"].iloc[0]))]
    with pytest.raises(ValueError, match=r"seeds \[2\] were not scored on the same test samples"):
        A.hierarchical_bootstrap(fewer, a, b)


def test_claim_verdicts(loaded):
    df, _ = loaded
    claims = A.claim_verdicts(df, n_boot=1000, seed=0)
    by = {(r.comparison, r.a): r for r in claims.itertuples()}
    cris = by[("synth-pt-real-ft beats real", "CRIS synth-pt-real-ft P1")]
    assert cris.verdict == "survives" and cris.study_diff == pytest.approx(91.26 - 91.00)
    assert cris.wilcoxon_significant == "3/3" and cris.wilcoxon_p < 1e-6
    clip = by[("synth-pt-real-ft beats real", "CLIPSeg synth-pt-real-ft P1")]
    assert clip.verdict == "does not survive (CI covers 0)" and clip.ci_low < 0 < clip.ci_high
    frozen = by[("frozen below trained encoders", "CRIS real frozen P1")]
    assert frozen.alternative == "less" and frozen.study_diff == pytest.approx(88.41 - 91.00)
    assert frozen.verdict.startswith("not testable (seeds: a 1, b 3")
    best = claims[claims["comparison"] == "best synthetic below best real"].iloc[0]
    assert best["study_diff"] == -5.19 and best["verdict"].startswith("not testable")
    text = A.claims_summary(claims, n_boot=1000)
    assert "1 survives" in text and "CRIS P1: +10.0" in text and "study: +0.34 at CRIS P2" in text
    # seed 0 only: nothing is testable; no pair at all: "not run"
    single = A.claim_verdicts(df[df["seed"] == 0], n_boot=200)
    assert single["verdict"].str.startswith("not testable").all()
    real_only = A.claim_verdicts(df[df["strategy"] == "real"], n_boot=200)
    assert (real_only.set_index("comparison").loc[
        ["synth-pt-real-ft beats real", "best synthetic below best real"], "verdict"]
        == "not run").all()


# -- blocks, mixed, efficiency, baseline ---------------------------------------------------------
def test_blocks_beyond_table_mixed_and_baseline(loaded, tmp_path):
    df, sums = loaded
    assert A.beyond_blocks(df) == dict.fromkeys(A.BLOCKS, True)
    assert not any(A.beyond_blocks(A.study_rows(df)).values())
    table = A.beyond_table(df).set_index(["model", "encoders", "prompt"])
    assert table.loc[("U-Net", "trained", "none"), "Real"].startswith("84.")
    assert table.loc[("CRIS", "trained", "P1"), "Synth-PT:Real-FT"].endswith("(3 seeds)")
    assert table.loc[("CLIPSeg", "trained", "P1"), "Mixed + provenance"].startswith("84.")
    assert table.loc[("CRIS", "trained", "P1"), "Mixed"] == "–"
    diffs = A.mixed_differences(df).set_index(["strategy", "model", "prompt"])
    assert diffs.loc[("mixed", "clipseg", "p1"), "diff"] == pytest.approx(2.0, abs=0.5)
    assert diffs.loc[("mixed+prov", "clipseg", "p1"), "diff"] == pytest.approx(4.0, abs=0.5)
    assert np.isnan(diffs.loc[("mixed", "clipseg", "p1"), "paper_diff"])
    paths = A.mixed_difference_figure(A.mixed_differences(df), tmp_path)
    assert [p.name for p in paths] == ["mixed_difference.png", "mixed_difference.pdf"]
    base = A.baseline_table(df).set_index("strategy")
    assert base.loc["real", "dice_mean"] == pytest.approx(85.0, abs=0.5)
    assert base.loc["real", "best_vlsm"] in ("CLIPSeg P1", "CRIS P1")
    assert base.loc["synth-pt-real-ft", "best_vlsm"] == "CRIS P1"
    assert base.loc["synth-pt-real-ft", "minus_best_vlsm"] == pytest.approx(-4.0, abs=0.6)
    assert base.loc["real", "study_best_vlsm"] == 91.03  # the study's best real VLSM (Table 1)
    assert (base["supervised_sota"] == 94.1).all() and A.SUPERVISED_SOTA == 94.1
    assert "94.1 mean dice on CAMUS" in A.SUPERVISED_SOTA_SOURCE


def test_data_efficiency_table_reach_and_figure(loaded, tmp_path):
    df, sums = loaded
    eff = A.efficiency_table(df, sums)
    row = eff[(eff["model"] == "clipseg") & (eff["curve"] == "real")
              & (eff["real_fraction"] == 1.0)].iloc[0]
    assert row["real_train_images"] == 40 and row["n_seeds"] == 3
    reach = A.images_to_reach(eff).set_index("curve")
    assert set(reach["model"]) == {"clipseg"}
    assert reach.loc["real", "images_needed"] == 40 and reach.loc["real", "needed"] == "40"
    # synth-pt-real-ft: 78 at 10 images, 82 at 20; real-at-100 % is 80 -> about 15 images
    assert reach.loc["synth-pt-real-ft", "images_needed"] == pytest.approx(15.0, abs=1.5)
    assert reach.loc["mixed", "needed"] == "<= 10 (smallest measured)"
    assert reach.loc["mixed", "share_of_reference"] == 25.0
    made = pd.DataFrame({"model": "cris", "encoders": "trained", "prompt": "p1",
                         "curve": ["real"] * 3 + ["mixed"] * 2,
                         "real_fraction": [0.25, 0.5, 1.0, 0.25, 1.0],
                         "real_train_images": [10, 20, 40, 10, 40],
                         "dice_mean": [50.0, 60.0, 70.0, 55.0, 65.0]})
    never = A.images_to_reach(made).set_index("curve")
    assert never.loc["mixed", "needed"] == "not reached" and np.isnan(
        never.loc["mixed", "images_needed"])
    assert never.loc["real", "images_needed"] == 40
    paths = A.efficiency_figure(eff, tmp_path)
    assert paths[0].name == "data_efficiency.png" and paths[0].stat().st_size > 1000
    with pytest.raises(ValueError, match="real fraction below 1"):
        A.efficiency_figure(eff[eff["real_fraction"] == 1.0], tmp_path)


def test_data_efficiency_refuses_summaries_without_real_train_images(beyond, tmp_path):
    old = ("clipseg_real_trained_p1", "clipseg_real_trained_p1_real25",
           "clipseg_synthetic_trained_p1")
    for rid in old:  # summaries of the format before real_train_images
        shutil.copytree(beyond / rid, tmp_path / rid)
        f = tmp_path / rid / "summary.json"
        summary = json.loads(f.read_text())
        del summary["real_train_images"]
        f.write_text(json.dumps(summary))
    df, sums = A.load_metrics(tmp_path), A.load_summaries(tmp_path)
    assert sums["real_train_images"].isna().all()
    # only the runs with real training data are named (the synthetic run is not on the axis)
    with pytest.raises(ValueError, match=r"summary\.json lacks real_train_images for runs "
                       r"\['clipseg_real_trained_p1', 'clipseg_real_trained_p1_real25'\]: "
                       r"such run folders predate the current format and must be run again"):
        A.efficiency_table(df, sums)
    with pytest.raises(ValueError, match=r"for runs \['clipseg_real_trained_p1_real25'\]"):
        A.efficiency_table(df, sums.assign(real_train_images=sums["run_id"].map(
            {"clipseg_real_trained_p1": 40})))
    fixed = A.efficiency_table(df, sums.assign(real_train_images=sums["run_id"].map(
        {"clipseg_real_trained_p1": 40, "clipseg_real_trained_p1_real25": 10})))
    assert sorted(fixed["real_train_images"]) == [10, 40]


# -- report ----------------------------------------------------------------------------------
def test_report_block_only_with_runs_beyond_and_replaced_in_place(loaded, tmp_path):
    df, sums = loaded
    report = tmp_path / "report.md"
    A.write_report(report, "Reproduction report: demo profile", [("Table 1", "rows")])
    original = report.read_bytes()
    none = A.beyond_results(A.study_rows(df), sums, n_boot=100)
    assert A.beyond_sections(report, none) == []
    A.update_report(report, [])
    assert report.read_bytes() == original

    results = A.beyond_results(df, sums, n_boot=200, seed=0)
    sections = A.beyond_sections(report, results, n_boot=200)
    assert [h for h, _ in sections] == [
        "Beyond the study: what was run", "Beyond the study: seed variation",
        "Beyond the study: mixed training and provenance", "Beyond the study: data efficiency",
        "Beyond the study: supervised baseline"]
    A.update_report(report, sections)
    once = report.read_text()
    assert once.startswith(original.decode()) and once.count(A.report.BEYOND_BEGIN) == 1
    assert "94.1 mean dice on CAMUS" in once and "survives" in once
    A.update_report(report, sections)
    assert report.read_text() == once  # replaced, not appended twice
    A.update_report(report, [])
    assert report.read_bytes() == original

    only_mixed = df[A.study_mask(df) | ((df["strategy"] == "mixed") & (df["real_fraction"] == 1))]
    res = A.beyond_results(only_mixed, sums, n_boot=200)
    heads = [h for h, _ in A.beyond_sections(report, res)]
    assert heads == ["Beyond the study: what was run",
                     "Beyond the study: mixed training and provenance"]
    body = dict(A.beyond_sections(report, res))["Beyond the study: what was run"]
    assert "No runs, so no section: seed replicates" in body
    json.dumps({k: v for k, v in res["blocks"].items()})


def test_fake_samples_cover_the_effect_cycle():
    assert len(fake_samples(10)) == 10 and len(set(fake_samples(10))) == 10


# -- convergence: how every run ended, the gain over seeds -------------------------------------
def test_demo_beyond_runs_stop_by_the_demos_rule():
    """Every run of demo-beyond trains under the demo's stopping rule and schedule (its
    profile sets no `train:` value), per model the same batch and learning rate whatever
    the strategy, seed or real fraction, and its seed-0 cells are the demo's own runs."""
    from echo_vlsm.pipeline import profiles as P
    from echo_vlsm.train import TrainConfig

    demo, beyond = P.load_profile("demo"), P.load_profile("demo-beyond")
    assert beyond.train == demo.train and beyond.runs_root == demo.runs_root
    fields = set(TrainConfig.__dataclass_fields__)
    rule, per_model = set(), {}
    for run in beyond.runs:
        config = TrainConfig(**{k: v for k, v in beyond.run_parameters(run).items()
                                if k in fields})
        rule.add((config.epochs, config.early_stopping, config.min_delta,
                  config.plateau_patience, config.plateau_factor, config.global_batch_size))
        per_model.setdefault(run.model, set()).add(config.learning_rate)
    assert rule == {(demo.train["epochs"], demo.train["patience"], demo.train["min_delta"],
                     demo.train["plateau_patience"], demo.train["plateau_factor"], 16)}
    assert all(len(lrs) == 1 for lrs in per_model.values()), per_model
    assert set(per_model) == {"clipseg", "cris", "unet"}
    shared = {r for r in beyond.runs if r.seed == 0 and r.real_fraction == 1.0
              and r.model != "unet" and r.strategy != "mixed"}
    assert shared and shared <= set(demo.runs)
    for run in shared:  # same parameters, so the same run folder is reused, not retrained
        assert beyond.run_parameters(run) == demo.run_parameters(run)
    assert sum(r.seed > 0 for r in beyond.runs) >= 8  # seeds 1, 2 of real and synth-pt x 2


def test_seed_gain_table_and_text(loaded):
    df, sums = loaded
    claims = A.claim_verdicts(df, n_boot=1000, seed=0)
    gain = beyond_mod.seed_gain_table(df, claims)
    assert list(gain["model"]) == ["clipseg", "cris"]
    cris = gain.set_index("model").loc["cris"]
    # CRIS: real 80 + (0, +1, -1), synth-pt-real-ft 90 + (0, -1.5, +1.5) per seed
    assert (cris.seeds_real, cris.seeds_synth) == (3, 3)
    assert cris["diff"] == pytest.approx(10.0, abs=0.3)
    assert cris.real_seed_std == pytest.approx(1.0, abs=0.15)
    assert cris.synth_seed_std == pytest.approx(1.5, abs=0.15)
    assert (cris.diff_min, cris.diff_max) == (pytest.approx(7.5, abs=0.3),
                                              pytest.approx(12.5, abs=0.3))
    assert cris.diff_per_seed.count("(seed ") == 3 and cris.verdict == "survives"
    assert cris.ci_low > 0
    clip = gain.set_index("model").loc["clipseg"]
    assert clip["diff"] == pytest.approx(0.0, abs=0.3) and clip.ci_low < 0 < clip.ci_high
    stopping = A.stopping_table(sums)
    text = beyond_mod.seed_gain_text(gain, stopping)
    assert re.search(r"\*\*CRIS P1\*\*: synth-pt-real-ft minus real is \+(9\.[7-9]|10\.[0-3])\d "
                     r"dice points \(mean over 3 seeds of synth-pt-real-ft and 3 of real; seed "
                     r"by seed \+", text)
    assert "lies above 0: over these seeds, synthetic pretraining gave a higher" in text
    assert "real's runs vary by 1.0" in text or "real's runs vary by 0.9" in text
    assert "includes 0: the difference cannot be told apart from what changing" in text
    assert "With 3 seeds per cell" in text
    assert "All 12 runs compared here stopped by early stopping, none at its epoch cap." in text
    capped = stopping.assign(stopped_by=np.where(
        stopping["run_id"] == "cris_real_trained_p1_seed2", "epochs", stopping["stopped_by"]))
    assert ("1 of the 12 runs compared here stopped at the epoch cap "
            "(cris_real_trained_p1_seed2): a run at its cap may still have been"
            in beyond_mod.seed_gain_text(gain, capped))
    # seed 0 only: no spread, said so; no pair at all: nothing claimed
    seed0 = df[df["seed"] == 0]
    single = beyond_mod.seed_gain_table(seed0, A.claim_verdicts(seed0, n_boot=100))
    one = beyond_mod.seed_gain_text(single)
    assert one.count("cannot be told apart from seed variation") == 2
    assert "seeds per cell" not in one
    assert "(mean over 1 seed of synth-pt-real-ft and 1 of real)." in one
    none = beyond_mod.seed_gain_table(df[df["strategy"] == "real"])
    assert none.empty and "no synthetic-pretraining difference" in \
        beyond_mod.seed_gain_text(none)


def test_report_shows_how_every_run_ended_and_the_gain(loaded, tmp_path):
    df, sums = loaded
    results = A.beyond_results(df, sums, n_boot=200, seed=0)
    assert len(results["stopping"]) == len(sums) == 25
    assert set(results["stopping"]["stopped_by"]) == {"patience"}
    report = tmp_path / "report.md"
    sections = beyond_mod.convergence_sections(
        A.beyond_sections(report, results, n_boot=200), results)
    assert [h for h, _ in sections] == [
        "Beyond the study: what was run", "Beyond the study: how every run ended",
        "Beyond the study: seed variation",
        "Beyond the study: synthetic pretraining over seeds",
        "Beyond the study: mixed training and provenance", "Beyond the study: data efficiency",
        "Beyond the study: supervised baseline"]
    ended = dict(sections)["Beyond the study: how every run ended"]
    assert "25 of 25 runs stopped by early stopping; none reached its epoch cap." in ended
    assert "| unet_synth-pt-real-ft_trained_none | unet |" in ended  # a run beyond the study
    assert "| cris_real_trained_p1 | cris |" in ended  # and one of the study's
    summary = A.beyond_summary(results, sections)
    assert summary["stopped_by"] == {"patience": 25}
    assert {r["model"]: r["verdict"] for r in summary["seed_gain"]}["cris"] == "survives"
    # no run beyond the study: no section at all (the report stays notebook 06's)
    none = A.beyond_results(A.study_rows(df), A.study_rows(sums), n_boot=100)
    assert beyond_mod.convergence_sections(A.beyond_sections(report, none), none) == []
    # a summary that does not say how its run ended is refused, naming the run
    lost = "unet_real_trained_none"
    bad = sums.assign(stopped_by=sums["stopped_by"].where(sums["run_id"] != lost))
    with pytest.raises(ValueError, match=rf"without a known stopped_by: \['{lost}'\]"):
        A.beyond_results(df, bad, n_boot=100)
