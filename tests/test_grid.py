"""The study's vocabulary and the run contract (echo_vlsm.grid), and that every part of the
package takes them from there."""

import json
import subprocess
import sys

import pytest

from echo_vlsm import grid as G


def test_run_id_round_trip_and_bad_ids():
    for model in G.MODELS:
        for strategy in G.STRATEGIES:
            for encoders in G.ENCODERS:
                for prompt in G.STRATEGY_PROMPTS[strategy]:
                    run = G.Run(model, strategy, encoders, prompt)
                    assert G.parse_run_id(run.id) == run
                    assert run.id == G.run_id(model, strategy, encoders, prompt)
    with pytest.raises(ValueError, match="not a run id"):
        G.parse_run_id("unet_real_trained_p1")
    with pytest.raises(ValueError, match="not a run id"):
        G.parse_run_id("cris_real_trained")
    with pytest.raises(ValueError, match="without '_'"):
        G.run_id("cris", "real", "trained", "p_1")


def test_strategies_in_dependency_order_and_synthetic_stops_at_p6():
    assert G.STRATEGIES == ("zeroshot", "synthetic", "real", "synth-pt-real-ft")
    assert G.STRATEGY_PROMPTS["synthetic"] == G.SYNTHETIC_PROMPT_KEYS == G.PROMPT_KEYS[:7]
    assert set(G.STRATEGY_PROMPTS) == set(G.STRATEGIES)


def test_pretrain_source_uses_p6_for_p7():
    src = G.pretrain_source(G.Run("clipseg", "synth-pt-real-ft", "trained", "p7"))
    assert src == G.Run("clipseg", "synthetic", "trained", "p6")
    assert G.pretrain_source(G.Run("clipseg", "synth-pt-real-ft", "frozen", "p3")).prompt == "p3"
    for strategy in ("zeroshot", "synthetic", "real"):
        assert G.pretrain_source(G.Run("cris", strategy, "trained", "p1")) is None


@pytest.mark.parametrize("summary, metrics, expected", [
    ({"done": True}, True, True),
    ({"done": True}, False, False),       # no metrics.csv
    ({"done": False}, True, False),
    ("not json", True, False),            # damaged summary
    ([1, 2], True, False),                # valid JSON, not a mapping
    (None, True, False),                  # no summary.json
])
def test_run_complete(tmp_path, summary, metrics, expected):
    if summary is not None:
        text = summary if isinstance(summary, str) else json.dumps(summary)
        (tmp_path / G.SUMMARY_FILE).write_text(text)
    if metrics:
        (tmp_path / G.METRICS_FILE).write_text(",".join(G.METRIC_COLUMNS) + "\n")
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
