"""Differences between cells: each strategy minus real (the study's main figure), frozen minus
trained encoders (Table 2 - Table 1), and the P0-versus-P1 prompt gap."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from echo_vlsm.analysis.loading import paper_results
from echo_vlsm.analysis.tables import MODEL_LABELS, STRATEGY_LABELS, order_rows, summary_table
from echo_vlsm.grid import MODELS


def strategy_differences(summary: pd.DataFrame, reference: str = "real") -> pd.DataFrame:
    """Mean dice of each strategy minus that of ``reference``, per model and prompt, for this
    work (``diff``) and the study (``paper_diff``): the study's main figure."""
    ref = summary[summary["strategy"] == reference].set_index(["model", "prompt"])
    rows = []
    for _, r in summary[summary["strategy"] != reference].iterrows():
        k = (r["model"], r["prompt"])
        if k not in ref.index:
            continue
        rows.append({
            "strategy": r["strategy"], "model": r["model"], "prompt": r["prompt"],
            "diff": r["dice_mean"] - ref.at[k, "dice_mean"],
            "paper_diff": r["paper_mean"] - ref.at[k, "paper_mean"],
        })
    cols = ["strategy", "model", "prompt", "diff", "paper_diff"]
    return order_rows(pd.DataFrame(rows, columns=cols))


def freeze_differences(df: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean dice with frozen minus with trained encoders, per strategy, model and prompt
    run both ways, with the study's Table 2 minus Table 1 (``paper_diff``)."""
    t_trained = summary_table(df, "trained", paper).set_index(["strategy", "model", "prompt"])
    t_frozen = summary_table(df, "frozen", paper).set_index(["strategy", "model", "prompt"])
    both = t_frozen.index.intersection(t_trained.index)
    rows = []
    for k in both:
        if t_frozen.at[k, "n"] == 0 or t_trained.at[k, "n"] == 0:
            continue
        rows.append({
            "strategy": k[0], "model": k[1], "prompt": k[2],
            "diff": t_frozen.at[k, "dice_mean"] - t_trained.at[k, "dice_mean"],
            "paper_diff": t_frozen.at[k, "paper_mean"] - t_trained.at[k, "paper_mean"],
        })
    cols = ["strategy", "model", "prompt", "diff", "paper_diff"]
    return order_rows(pd.DataFrame(rows, columns=cols))


def paper_freeze_effect(paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """The study's own Table 2 minus Table 1 per model: mean and largest absolute change.
    If CLIPSeg's encoders never trained (see README), its two tables differ only by noise."""
    paper = paper_results() if paper is None else paper
    keys = ["strategy", "model", "prompt"]
    t1 = paper[paper["encoders"] == "trained"].set_index(keys)["paper_mean"]
    t2 = paper[paper["encoders"] == "frozen"].set_index(keys)["paper_mean"]
    d = (t2 - t1).dropna().rename("diff").reset_index()
    out = d.groupby("model")["diff"].agg(
        cells="count", mean_diff="mean", mean_abs_diff=lambda x: x.abs().mean(),
        max_abs_diff=lambda x: x.abs().max(),
    )
    return out.reset_index()


def prompt_gap(summary: pd.DataFrame, strategies: Iterable[str] = ("real",),
               low: str = "p0", high: str = "p1") -> pd.DataFrame:
    """Dice at ``high`` minus dice at ``low`` (default P1 - P0: naming the structure versus
    the empty prompt) per strategy and model, ours and the study's."""
    rows = []
    for strategy in strategies:
        for model in MODELS:
            sel = summary[(summary["strategy"] == strategy) & (summary["model"] == model)]
            sel = sel.set_index("prompt")
            if low in sel.index and high in sel.index and sel.at[low, "n"] and sel.at[high, "n"]:
                rows.append({
                    "strategy": strategy, "model": model,
                    f"dice_{low}": sel.at[low, "dice_mean"],
                    f"dice_{high}": sel.at[high, "dice_mean"],
                    "gap": sel.at[high, "dice_mean"] - sel.at[low, "dice_mean"],
                    "paper_gap": sel.at[high, "paper_mean"] - sel.at[low, "paper_mean"],
                })
    cols = ["strategy", "model", f"dice_{low}", f"dice_{high}", "gap", "paper_gap"]
    return pd.DataFrame(rows, columns=cols)


def prompt_gap_verdict(gap: pd.DataFrame, far: float = 10.0) -> str:
    """An honest sentence on the study's pattern "P0 (empty prompt) far below P1": holds
    where P1 - P0 is at least ``far`` dice points."""
    if gap.empty:
        return "P0 and P1 were not both run for any strategy and model: the pattern is untested."
    cells = [f"{STRATEGY_LABELS.get(r.strategy, r.strategy)} {MODEL_LABELS[r.model]}: "
             f"{r.gap:+.1f} (study {r.paper_gap:+.1f})" for r in gap.itertuples()]
    held = int((gap["gap"] >= far).sum())
    if held == len(gap):
        verdict = "holds in every cell run"
    elif held == 0:
        verdict = "does not hold in any cell run"
    else:
        verdict = f"holds in {held} of {len(gap)} cells run"
    return (f"The study's pattern, P0 (the empty prompt) far below P1 (at least {far:g} dice "
            f"points), {verdict}. P1 - P0 in dice points: " + "; ".join(cells) + ".")
