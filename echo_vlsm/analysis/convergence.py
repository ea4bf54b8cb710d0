"""Convergence: epochs and seconds to the best validation dice, real against
synth-pt-real-ft (the study: 4.55x faster for CRIS, 1.71x for CLIPSeg)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from echo_vlsm.analysis.loading import study_rows
from echo_vlsm.analysis.tables import order_rows
from echo_vlsm.grid import MODELS

STUDY_SPEEDUPS = {"clipseg": 1.71, "cris": 4.55}


def convergence_speedups(summaries: pd.DataFrame, histories: pd.DataFrame | None = None,
                         base: str = "real", boosted: str = "synth-pt-real-ft") -> pd.DataFrame:
    """Convergence speed-up of ``boosted`` over ``base`` per model, encoders and prompt run
    both ways (the study: 4.55x for CRIS, 1.71x for CLIPSeg; pretraining on synthetic images
    not counted, as in the study):

    - ``epoch_speedup``: epochs to the best validation dice, base / boosted;
    - ``time_speedup``: seconds to it (wall clock: noisy on a shared machine);
    - ``match_speedup`` (with ``histories``): base's epochs to its best validation dice over
      the first epoch at which ``boosted`` reaches that dice (NaN if it never does). Unlike
      the ratio of best epochs it stays meaningful when a run is stopped by its epoch cap;
    - ``base_at_cap``: the base run's best epoch is its last: it was still improving when it
      stopped (at its cap, or by early stopping after gains below ``min_delta``), so its best
      epoch (and ``epoch_speedup``) is censored.

    Only the study's own runs count (``study_rows``: seed 0, all the real data).
    """
    summaries = study_rows(summaries)
    if histories is not None:
        histories = study_rows(histories)
    keys = ["model", "encoders", "prompt"]
    a = summaries[summaries["strategy"] == base].set_index(keys)
    b = summaries[summaries["strategy"] == boosted].set_index(keys)
    rows = []
    for k in a.index.intersection(b.index):
        ea, eb = float(a.at[k, "best_epoch"]), float(b.at[k, "best_epoch"])
        sa, sb = float(a.at[k, "seconds_to_best"]), float(b.at[k, "seconds_to_best"])
        match = np.nan
        if histories is not None and "val_dice" in histories.columns:
            hb = histories[histories["run_id"] == "_".join((k[0], boosted, k[1], k[2]))]
            target = a.at[k, "best_val_dice"]
            reached = hb[hb["val_dice"] >= target]["epoch"] if pd.notna(target) else []
            if len(reached):
                match = float(min(reached))
        rows.append({
            **dict(zip(keys, k)),
            f"best_epoch_{base}": ea, f"best_epoch_{boosted}": eb,
            "epoch_speedup": ea / eb if eb > 0 else np.nan,
            f"epochs_{boosted}_to_match": match,
            "match_speedup": ea / match if match and match > 0 else np.nan,
            f"seconds_{base}": sa, f"seconds_{boosted}": sb,
            "time_speedup": sa / sb if sb > 0 else np.nan,
            f"{base}_at_cap": bool(ea >= float(a.at[k, "epochs_run"]))
            if pd.notna(a.at[k, "epochs_run"]) else False,
        })
    cols = keys + [f"best_epoch_{base}", f"best_epoch_{boosted}", "epoch_speedup",
                   f"epochs_{boosted}_to_match", "match_speedup", f"seconds_{base}",
                   f"seconds_{boosted}", "time_speedup", f"{base}_at_cap"]
    return order_rows(pd.DataFrame(rows, columns=cols))


def speedup_summary(speedups: pd.DataFrame) -> pd.DataFrame:
    """Mean convergence speed-ups per model (over encoders and prompts) next to the study's."""
    rows = []
    for model in MODELS:
        sel = speedups[speedups["model"] == model]
        if sel.empty:
            continue
        rows.append({"model": model, "pairs": len(sel),
                     "epoch_speedup": sel["epoch_speedup"].mean(),
                     "match_speedup": sel["match_speedup"].mean(),
                     "time_speedup": sel["time_speedup"].mean(),
                     "real_at_cap": int(sel.filter(like="_at_cap").iloc[:, 0].sum()),
                     "study": STUDY_SPEEDUPS[model]})
    return pd.DataFrame(rows, columns=["model", "pairs", "epoch_speedup", "match_speedup",
                                       "time_speedup", "real_at_cap", "study"])


#: How a run's training ended (``summary.json``'s ``stopped_by``).
STOPPED_BY = ("patience", "epochs", "fast_dev_run")


def stopping_table(summaries: pd.DataFrame) -> pd.DataFrame:
    """How every trained run ended: by early stopping (``patience``), by its epoch cap
    (``epochs``: the run may still have been improving) or as a rehearsal (``fast_dev_run``),
    with its epochs run and best epoch, and whether its best validation dice beat that of
    the weights it started from (``beat_initial``; NA where a summary does not say): a run
    that never did learned nothing, however it stopped. Zero-shot runs (no training) are
    left out.

        >>> s = pd.DataFrame({"run_id": ["a", "b"], "model": ["cris", "clipseg"],
        ...     "strategy": ["real", "real"], "encoders": ["trained"] * 2,
        ...     "prompt": ["p1", "p1"], "epochs_run": [30, 10], "best_epoch": [22, 1],
        ...     "stopped_by": ["patience", "epochs"], "best_val_dice": [80.0, 16.8],
        ...     "initial_val_dice": [17.0, 17.4]})
        >>> stopping_table(s)[["run_id", "stopped_by", "epochs_after_best", "beat_initial"]
        ...                  ].values.tolist()
        [['b', 'epochs', 9, False], ['a', 'patience', 8, True]]
    """
    cols = ["run_id", "model", "strategy", "encoders", "prompt", "epochs_run", "best_epoch",
            "epochs_after_best", "stopped_by", "beat_initial"]
    if summaries.empty:
        return pd.DataFrame(columns=cols)
    rows = summaries[summaries["strategy"] != "zeroshot"].copy()
    unknown = sorted(set(rows["stopped_by"].dropna()) - set(STOPPED_BY))
    if unknown or rows["stopped_by"].isna().any():
        missing = rows.loc[rows["stopped_by"].isna(), "run_id"].tolist()
        raise ValueError(f"summaries without a known stopped_by: {missing or unknown}")
    rows["epochs_after_best"] = (rows["epochs_run"] - rows["best_epoch"]).astype(int)
    if {"best_val_dice", "initial_val_dice"} <= set(rows.columns):
        known = rows["initial_val_dice"].notna() & rows["best_val_dice"].notna()
        beat = rows["best_val_dice"] > rows["initial_val_dice"]
        rows["beat_initial"] = beat.astype(object).where(known, pd.NA)
    else:
        rows["beat_initial"] = pd.NA
    return order_rows(rows[cols].reset_index(drop=True))


def never_learned(table: pd.DataFrame) -> list[str]:
    """The runs of a ``stopping_table`` whose best validation dice never beat their starting
    weights' (``beat_initial`` False)."""
    if "beat_initial" not in table.columns:
        return []
    return table.loc[table["beat_initial"].eq(False), "run_id"].tolist()


def stopping_verdict(table: pd.DataFrame) -> str:
    """One sentence: how many runs stopped by early stopping and how many at their cap.

        >>> t = pd.DataFrame({"run_id": ["a", "b"], "stopped_by": ["patience", "epochs"]})
        >>> stopping_verdict(t)  # doctest: +NORMALIZE_WHITESPACE
        '1 of 2 runs stopped by early stopping; 1 stopped at the epoch cap (b), still able to
        improve: their results may reflect under-training.'
    """
    n = len(table)
    if n == 0:
        return "No trained run."
    by = table["stopped_by"]
    patience, capped = int((by == "patience").sum()), table.loc[by == "epochs", "run_id"]
    text = f"{patience} of {n} runs stopped by early stopping"
    if len(capped):
        text = (f"{text}; {len(capped)} stopped at the epoch cap ({', '.join(capped)}), still "
                "able to improve: their results may reflect under-training.")
    else:
        rehearsal = int((by == "fast_dev_run").sum())
        text += (f"; {rehearsal} rehearsal runs (fast_dev_run)." if rehearsal
                 else "; none reached its epoch cap.")
    if "epochs_after_best" in table.columns:
        creeping = table.loc[(by == "patience") & table["epochs_after_best"].eq(0), "run_id"]
        if len(creeping):
            text += (f" {len(creeping)} of them had their best validation dice at their last "
                     f"epoch ({', '.join(creeping)}): early stopping ended them after gains "
                     "below its min_delta, so they may still have been improving, slowly.")
    idle = never_learned(table)
    if idle:
        text += (f" {len(idle)} never beat the validation dice of the weights they started "
                 f"from ({', '.join(idle)}): they learned nothing, and their test scores say "
                 "nothing about their strategy.")
    return text


#: What the ``stopped_by`` values of ``stopping_table`` mean, as the reports explain them.
STOPPING_LEGEND = (
    "`stopped_by`: `patience` (early stopping: no better validation dice for the profile's "
    "patience), `epochs` (the epoch cap: the run may still have been improving), "
    "`fast_dev_run` (a rehearsal); `beat_initial`: whether the run's best validation dice "
    "beat that of the weights it started from (False: it learned nothing). Zero-shot runs "
    "do not train.")
