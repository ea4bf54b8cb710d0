"""Where a call's wall time went: busy seconds against the critical path (pipeline.timeline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo_vlsm.pipeline.graph import Job
from echo_vlsm.pipeline.timeline import timeline


def job(name: str, *needs: str) -> Job:
    return Job(name, "step", name, {}, needs, Path("."), "prepare")


#: the demo's shape: data, then the SDM and the real runs, the synthetic run after the SDM,
#: the finetuning after the synthetic run, the analysis after every run
GRAPH = [job("data"), job("sdm", "data"), job("real", "data"), job("synthetic", "sdm"),
         job("ft", "synthetic", "data"), job("eval", "ft"), job("analysis", "real", "ft")]
SECONDS = {"data": 20.0, "sdm": 150.0, "real": 100.0, "synthetic": 140.0, "ft": 60.0,
           "eval": 10.0, "analysis": 8.0, "total": 999.0}


def test_the_critical_path_is_the_longest_chain_of_needs():
    t = timeline(GRAPH, SECONDS, workers=2)
    assert t.chain == ("data", "sdm", "synthetic", "ft", "eval")
    assert t.chain_seconds == pytest.approx(20 + 150 + 140 + 60 + 10)
    assert t.busy == pytest.approx(488.0)  # "total" is not a job
    assert t.floor == pytest.approx(380.0)  # the chain, above 488 / 2
    assert timeline(GRAPH, SECONDS, workers=1).floor == pytest.approx(488.0)  # the busy time


def test_jobs_not_run_by_the_call_count_nothing_and_leave_the_chain():
    done_before = {k: v for k, v in SECONDS.items() if k not in ("data", "sdm", "synthetic")}
    t = timeline(GRAPH, done_before, workers=2)
    assert t.chain == ("real", "analysis")  # 108 s against ft -> eval's 70 s
    assert t.chain_seconds == pytest.approx(108.0)
    assert t.busy == pytest.approx(178.0)
    assert t.record() == {"busy_seconds": 178.0, "workers": 2,
                          "critical_path": ["real", "analysis"],
                          "critical_path_seconds": 108.0, "floor_seconds": 108.0}


def test_the_log_names_the_chain_with_each_jobs_seconds():
    text = timeline(GRAPH, SECONDS, workers=2).describe(SECONDS)
    assert "488 job-seconds on 2 worker(s) (244 s if every worker were always busy)" in text
    assert "380 s: data 20 s -> sdm 150 s -> synthetic 140 s -> ft 60 s -> eval 10 s" in text


def test_jobs_out_of_graph_order_or_no_worker_are_refused():
    with pytest.raises(ValueError, match="ft comes before a job it needs"):
        timeline([GRAPH[0], GRAPH[4], *GRAPH[1:4]], SECONDS, workers=2)
    with pytest.raises(ValueError, match="workers=0"):
        timeline(GRAPH, SECONDS, workers=0)


def test_the_demos_graph_in_build_order_is_accepted(tmp_path):
    from echo_vlsm.pipeline.graph import build_graph
    from echo_vlsm.pipeline.profiles import load_profile

    root = Path(__file__).resolve().parents[1]
    graph = build_graph(load_profile("demo", root), tmp_path)
    seconds = {j.name: 1.0 for j in graph}
    t = timeline(graph, seconds, workers=2)
    # data -> prompts -> synthetic run -> finetuning -> its evaluation or 05 -> 06 -> 07/09
    assert t.chain[0] == "01_data_preparation" and t.chain[1] == "02_sdm_synthesis"
    assert t.busy == len(graph) and t.chain_seconds == len(t.chain)
    assert t.chain[-1] in ("07_explore", "09_clinical")
