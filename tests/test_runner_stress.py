"""Runners started together on one project folder share its jobs and run each exactly once.

A few rounds of ``tools/stress_runners.py`` (which runs 30 and more): a fresh micro project
per round (01 -> 03 -> a real and a synthetic run -> 06; 03 and the runs sleep, so a round's
wall time is its sleeping, not the 2-core machine's CPU), two or three ``reproduce``
processes at random offsets, each execution counted from the record it appends. One runner
alone on the same project is the time to beat.
"""

import random

import pytest

from tools import stress_runners as S

SLEEP, STEP_SLEEP = 3.0, 1.5  # seconds per run, per part of 03: what a second runner saves


@pytest.mark.notebook
@pytest.mark.slow
def test_runners_together_execute_every_job_once_and_share_the_work(tmp_path):
    base = S.run_round(tmp_path / "one", [0.0], SLEEP, step_sleep=STEP_SLEEP)
    jobs = S.graph_jobs(tmp_path / "one" / "stress.yaml", tmp_path / "one")
    assert jobs == ["01_data_preparation", "03_prompt_generation:real",
                    "03_prompt_generation:synthetic", "clipseg_synthetic_trained_p1",
                    "clipseg_real_trained_p1", "06_dice_difference_plots"]
    assert base.right(jobs) and base.by_runner() == {"0": len(jobs)}, base.logs
    rng = random.Random()
    for k, n in enumerate((2, 3)):
        r = S.run_round(tmp_path / f"round{k}", [rng.uniform(0, 1.0) for _ in range(n)], SLEEP,
                        step_sleep=STEP_SLEEP)
        what = f"round {k}: {r.describe(jobs)}; one runner {base.wall:.1f} s\n" + "\n".join(
            r.logs)
        assert r.returncodes == [0] * n, what
        assert r.counts() == dict.fromkeys(jobs, 1), what  # every job exactly once
        assert len(r.by_runner()) >= 2, what               # not one runner doing all
        if n == 2:  # a third runner adds CPU (its kernels, its polling) a loaded 2-core
            assert r.wall < base.wall, what  # machine may not repay: tools/stress_runners.py
        for log in r.logs:  # whoever did not run a job learnt it was done elsewhere
            assert "FAILED" not in log and "BLOCKED" not in log, what
