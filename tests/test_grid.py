"""The study's vocabulary and the run contract (echo_vlsm.grid), and that every part of the
package takes them from there."""

import json
import subprocess
import sys

import pytest

from echo_vlsm import grid as G


def test_run_id_round_trip_and_bad_ids():
    for model in G.VLSM_MODELS:
        for strategy in G.STRATEGIES:
            for encoders in G.ENCODERS:
                for prompt in G.STRATEGY_PROMPTS[strategy]:
                    run = G.Run(model, strategy, encoders, prompt)
                    assert G.parse_run_id(run.id) == run
                    assert run.id == G.run_id(model, strategy, encoders, prompt)
    for strategy in G.BASELINE_STRATEGIES:
        run = G.Run("unet", strategy, "trained", G.NO_PROMPT)
        assert G.parse_run_id(run.id) == run
    with pytest.raises(ValueError, match="not a run id"):
        G.parse_run_id("vnet_real_trained_p1")
    with pytest.raises(ValueError, match="not a run id"):
        G.parse_run_id("cris_real_trained")


def test_replicates_fractions_and_provenance_in_the_run_id():
    """The study's runs keep their four-part names; seeds, fractions and provenance add a
    suffix only when they differ from the defaults, and every id parses back."""
    study = G.Run("cris", "real", "trained", "p1")
    assert study.id == "cris_real_trained_p1" and study.is_study
    runs = [
        G.Run("cris", "real", "trained", "p1", seed=2),
        G.Run("cris", "real", "trained", "p1", real_fraction=0.05),
        G.Run("cris", "synth-pt-real-ft", "frozen", "p7", seed=1, real_fraction=0.125),
        G.Run("clipseg", "mixed", "trained", "p0", provenance=True),
        G.Run("clipseg", "mixed", "trained", "p3", seed=3, real_fraction=0.5, provenance=True),
        G.Run("unet", "synth-pt-real-ft", "trained", "none", seed=1, real_fraction=0.1),
    ]
    ids = [r.id for r in runs]
    assert ids == ["cris_real_trained_p1_seed2", "cris_real_trained_p1_real5",
                   "cris_synth-pt-real-ft_frozen_p7_seed1_real12.5",
                   "clipseg_mixed_trained_p0_prov", "clipseg_mixed_trained_p3_seed3_real50_prov",
                   "unet_synth-pt-real-ft_trained_none_seed1_real10"]
    assert [G.parse_run_id(i) for i in ids] == runs
    assert not any(r.is_study for r in runs)
    # the replicate's pretraining source is the same seed's synthetic run, with all the data
    assert G.pretrain_source(runs[2]) == G.Run("cris", "synthetic", "frozen", "p6", seed=1)
    # only the canonical spelling parses
    for text in ("cris_real_trained_p1_seed0", "cris_real_trained_p1_real100",
                 "cris_real_trained_p1_prov_seed1", "cris_real_trained_p1_seedx",
                 "cris_real_trained_p1_real"):
        with pytest.raises(ValueError):
            G.parse_run_id(text)
    # the parameters of a study run are its four fields, as before the suffixes existed
    assert study.as_dict() == {"model": "cris", "strategy": "real", "encoders": "trained",
                               "prompt": "p1"}
    assert runs[0].as_dict()["seed"] == 2
    assert runs[4].as_dict()["real_fraction"] == 0.5 and runs[4].as_dict()["provenance"]
    assert runs[0].as_record()["real_fraction"] == 1.0


@pytest.mark.parametrize("fields, why", [
    (("unet", "real", "trained", "p1"), "takes prompt 'none'"),
    (("unet", "real", "frozen", "none"), "no CLIP encoders"),
    (("unet", "zeroshot", "trained", "none"), "trains with one of"),
    (("cris", "real", "trained", "none"), "unknown prompt"),
    (("cris", "synthetic", "trained", "p1", 0, 0.5), "real training data"),
    (("cris", "real", "trained", "p1", 0, 0.0), r"in \(0, 1\]"),
    (("cris", "real", "trained", "p1", 0, 1.5), r"in \(0, 1\]"),
    (("cris", "real", "trained", "p1", 0, 1.0, True), "provenance"),
    (("unet", "mixed", "trained", "none", 0, 1.0, True), "provenance"),
    (("cris", "zeroshot", "frozen", "p1", 1), "zero-shot"),
    (("cris", "real", "trained", "p1", -1), "seed"),
    (("cris", "real", "trained", "p1", True), "seed"),
])
def test_cells_the_grid_has_not(fields, why):
    with pytest.raises(ValueError, match=why):
        G.Run(*fields)
    with pytest.raises(ValueError, match="without '_'"):
        G.run_id("cris", "real", "trained", "p_1")


def test_strategies_in_dependency_order_and_synthetic_stops_at_p6():
    assert G.STUDY_STRATEGIES == ("zeroshot", "synthetic", "real", "synth-pt-real-ft")
    assert G.STRATEGIES == G.STUDY_STRATEGIES + ("mixed",)
    assert G.STRATEGY_PROMPTS["synthetic"] == G.SYNTHETIC_PROMPT_KEYS == G.PROMPT_KEYS[:7]
    assert G.STRATEGY_PROMPTS["mixed"] == G.SYNTHETIC_PROMPT_KEYS
    assert set(G.STRATEGY_PROMPTS) == set(G.STRATEGIES)


def test_pretrain_source_uses_p6_for_p7():
    src = G.pretrain_source(G.Run("clipseg", "synth-pt-real-ft", "trained", "p7"))
    assert src == G.Run("clipseg", "synthetic", "trained", "p6")
    assert G.pretrain_source(G.Run("clipseg", "synth-pt-real-ft", "frozen", "p3")).prompt == "p3"
    for strategy in ("zeroshot", "synthetic", "real"):
        assert G.pretrain_source(G.Run("cris", strategy, "trained", "p1")) is None


@pytest.mark.parametrize("summary, metrics, expected", [
    ({"done": True, "files": "metrics"}, True, True),
    ({"done": True, "files": "metrics"}, False, False),  # metrics.csv recorded, then gone
    ({"done": True}, True, False),        # no record of its files: vouches for nothing
    ({"done": False}, True, False),
    ("not json", True, False),            # damaged summary
    ([1, 2], True, False),                # valid JSON, not a mapping
    (None, True, False),                  # no summary.json
])
def test_run_complete(tmp_path, summary, metrics, expected):
    metrics_file = tmp_path / G.METRICS_FILE
    metrics_file.write_text(",".join(G.METRIC_COLUMNS) + "\n")
    if isinstance(summary, dict) and summary.get("files") == "metrics":
        summary = {**summary, "files": G.file_records(tmp_path, [G.METRICS_FILE])}
    if summary is not None:
        text = summary if isinstance(summary, str) else json.dumps(summary)
        (tmp_path / G.SUMMARY_FILE).write_text(text)
    if not metrics:
        metrics_file.unlink()
    assert G.run_complete(tmp_path) is expected


def test_one_spelling_of_the_vocabulary():
    """The other parts re-export grid's names, not copies of them."""
    from echo_vlsm import analysis, models, pipeline
    from echo_vlsm.train import config

    for mod in (analysis, config, models):
        assert mod.MODELS is G.MODELS and mod.ENCODERS is G.ENCODERS
    assert config.STRATEGIES is G.STRATEGIES and analysis.STRATEGIES is G.STRATEGIES
    assert analysis.METRIC_COLUMNS is G.METRIC_COLUMNS
    assert pipeline.Run is G.Run and pipeline.pretrain_source is G.pretrain_source


def test_runner_and_analysis_load_without_torch():
    code = ("import sys, echo_vlsm.grid, echo_vlsm.pipeline, echo_vlsm.analysis; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
