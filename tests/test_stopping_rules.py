"""benchmarks/stopping_rules.py: replaying finished runs through a stricter stopping rule."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.stopping_rules import load, measure  # noqa: E402

#: a run that climbs to 80 at epoch 6, creeps by 0.2 to 80.6 at epoch 9, then stalls; under
#: patience 3 and min_delta 0.1 it stops after epoch 12 (three epochs without a gain over 0.1)
CLIMB = [10, 40, 60, 70, 78, 80, 80.2, 80.4, 80.6, 80.5, 80.55, 80.5]


def write_run(root: Path, name: str, dice: list[float], stop: int, patience: int = 3) -> None:
    run = root / name
    run.mkdir(parents=True)
    best = max(range(stop), key=lambda i: dice[i]) + 1
    (run / "summary.json").write_text(json.dumps({
        "done": True, "stopped_by": "patience", "early_stopping_from": 1,
        "epochs_run": stop, "best_epoch": best, "best_val_dice": dice[best - 1]}))
    (run / "config.json").write_text(json.dumps({"patience": patience, "min_delta": 0.1}))
    with open(run / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "val_dice", "seconds"])
        w.writerows([i + 1, d, 2.0] for i, d in enumerate(dice[:stop]))


def test_a_stricter_rule_cuts_the_run_short_where_the_engines_rule_would(tmp_path):
    write_run(tmp_path, "climb", CLIMB, stop=12)
    runs = load(tmp_path)
    assert [name for name, _, _ in runs] == ["climb"]
    same = measure(runs, 3, 0.1)
    assert same["saved"] == 0 and same["moved"] == [] and same["longer"] == []
    # a gain must now beat 1.0: epoch 6 (80) is the last, so the run stops after epoch 9,
    # its best 80.6 at epoch 9 unchanged: 3 epochs of 2 s saved, nothing lost
    coarse = measure(runs, 3, 1.0)
    assert coarse["saved"] == pytest.approx(6.0) and coarse["moved"] == []
    # patience 1: stops after epoch 7 (80.2 is no gain over 80 + 1), its best epoch 7
    short = measure(runs, 1, 1.0)
    assert short["saved"] == pytest.approx(10.0) and short["moved"] == ["climb"]
    assert short["lost"] == [pytest.approx(80.6 - 80.2)]


def test_a_looser_rule_is_counted_apart_and_a_run_that_does_not_replay_is_refused(tmp_path):
    write_run(tmp_path, "climb", CLIMB, stop=12)
    assert measure(load(tmp_path), 5, 0.1)["longer"] == ["climb"]  # it would train on
    write_run(tmp_path, "odd", CLIMB, stop=10)  # its rule would have stopped it after 12
    with pytest.raises(SystemExit, match="odd: its own rule .* replays to epoch None, not the 10"):
        load(tmp_path)
