"""What a stricter early-stopping rule would have saved, and cost, on finished runs.

A run stopped by a stricter rule (less patience, a larger ``min_delta``) is the same run cut
short: every epoch before its stop is the recorded one (the plateau schedule watches the
validation loss, not the stopping rule), so replaying a run's `history.csv` through
`echo_vlsm.train.stopping.EarlyStopping` with another rule gives exactly where it would
have stopped, which epoch would have been its best and that epoch's validation dice. A rule
that would go on past the recorded stop cannot be replayed; such runs are counted apart.
For each rule: the epoch seconds saved (history's `seconds`, training and validation), the
runs whose best epoch moves (their test dice is then unknown) and the validation dice they
lose. The question it answers: can the demo's runs stop sooner without stopping before
they converge?

    python benchmarks/stopping_rules.py runs/demo [--no-write]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import update_section  # noqa: E402
from echo_vlsm.train.stopping import EarlyStopping  # noqa: E402

TITLE = "## Stricter early stopping, replayed on finished runs (`benchmarks/stopping_rules.py`)"
RULES = [(p, d) for p in (8, 6, 5) for d in (0.1, 0.25, 0.5, 1.0)]


def load(runs_root: Path) -> list[tuple[str, dict, list[dict]]]:
    """(name, summary, history rows) of every finished run stopped by patience that records
    its stopping floor; each must replay to its own recorded stop under its own rule."""
    out = []
    for summary in sorted(runs_root.glob("*/summary.json")):
        s = json.loads(summary.read_text())
        if not (s.get("done") and s.get("stopped_by") == "patience"
                and "early_stopping_from" in s):
            continue
        with open(summary.parent / "history.csv") as f:
            history = list(csv.DictReader(f))
        config = json.loads((summary.parent / "config.json").read_text())
        own = replay(s, history, int(config["patience"]), float(config["min_delta"]))
        if own != int(s["epochs_run"]):
            raise SystemExit(f"{summary.parent}: its own rule (patience {config['patience']}, "
                             f"min_delta {config['min_delta']}) replays to epoch {own}, not "
                             f"the {s['epochs_run']} it ran: the replay would not be exact")
        out.append((summary.parent.name, s, history))
    return out


def replay(s: dict, history: list[dict], patience: int, min_delta: float) -> int | None:
    """The epoch after which the rule stops the run, None if not within its history."""
    rule = EarlyStopping(patience=patience, min_delta=min_delta,
                         min_epochs=int(s["early_stopping_from"]), max_epochs=10**9)
    for row in history:
        if rule.update(int(row["epoch"]), float(row["val_dice"])):
            return int(row["epoch"])
    return None


def measure(runs: list[tuple[str, dict, list[dict]]], patience: int, min_delta: float) -> dict:
    saved, moved, lost, longer = 0.0, [], [], []
    for name, s, history in runs:
        stop = replay(s, history, patience, min_delta)
        if stop is None:
            longer.append(name)
            continue
        saved += sum(float(r["seconds"]) for r in history if int(r["epoch"]) > stop)
        dice = [float(r["val_dice"]) for r in history[:stop]]
        best = max(range(stop), key=dice.__getitem__) + 1
        if best != int(s["best_epoch"]):
            moved.append(name)
            lost.append(float(s["best_val_dice"]) - dice[best - 1])
    return {"patience": patience, "min_delta": min_delta, "saved": saved, "moved": moved,
            "lost": lost, "longer": longer}


def report(runs_root: Path, runs: list, rows: list[dict]) -> str:
    total = sum(float(r["seconds"]) for _, _, h in runs for r in h)
    lines = [TITLE, "",
             f"{len(runs)} finished runs of `{runs_root}`, all stopped by patience "
             f"({total:.0f} epoch-seconds: training and validation, as their histories record "
             "them), each replayed through the engine's `EarlyStopping` with another patience "
             "and `min_delta` (the same `min_steps` floor; each run's own rule replays to its "
             "recorded stop). Exact for rules that stop no later than the recorded one; "
             "runs a rule would train longer are counted apart.", "",
             "| patience | min_delta | epoch-seconds saved | runs whose best epoch moves | "
             "validation dice they lose, mean / max | runs it would train longer |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lost = (f"{sum(r['lost']) / len(r['lost']):.2f} / {max(r['lost']):.2f}"
                if r["lost"] else "-")
        lines.append(f"| {r['patience']} | {r['min_delta']} | {r['saved']:.0f} "
                     f"({r['saved'] / total:.0%}) | {len(r['moved'])} | {lost} | "
                     f"{len(r['longer'])} |")
    third = [r for r in rows if r["saved"] >= total / 3]
    if third:
        least = min(third, key=lambda r: sum(r["lost"]))
        lines += ["", "Of the rules above that save at least a third of the epoch-seconds, "
                  f"the one losing least validation dice in all is patience {least['patience']} "
                  f"with min_delta {least['min_delta']} ({least['saved'] / total:.0%}): the best "
                  f"epoch moves in {len(least['moved'])} of {len(runs)} runs, which lose up to "
                  f"{max(least['lost'], default=0):.1f} validation dice points: they would stop "
                  "before they converge."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs_root", type=Path, help="a profile's runs folder (runs/demo)")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args(argv)
    runs = load(args.runs_root)
    if not runs:
        raise SystemExit(f"{args.runs_root}: no finished run with early_stopping_from")
    text = report(args.runs_root, runs, [measure(runs, p, d) for p, d in RULES])
    print(text)
    if not args.no_write:
        update_section("stopping_rules", text)


if __name__ == "__main__":
    main()
