"""Data efficiency (beyond the study): how much real data does synthetic pretraining replace?

Runs with ``real_fraction`` < 1 train (and validate) on a patient-level subset of the real
training patients; each run's ``summary.json`` records ``real_train_images``, the unique real
images it trained on. ``efficiency_table`` puts the test dice of the strategies with real
training data (real, synth-pt-real-ft, mixed) against that number, ``efficiency_figure``
draws it, and ``images_to_reach`` says how many real images each strategy needs to reach the
dice of ``real`` with all of them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.analysis.figures import save_figure
from echo_vlsm.analysis.loading import CELL_COLUMNS, RUN_COLUMNS, with_run_columns
from echo_vlsm.analysis.seeds import run_means
from echo_vlsm.analysis.tables import MODEL_LABELS, STRATEGY_LABELS, order_rows, prompt_label
from echo_vlsm.grid import MODELS, NO_PROMPT, REAL_DATA_STRATEGIES, run_id

#: The curves of the efficiency figure: a strategy with real training data, with or without
#: provenance (mixed only), in legend order.
CURVES = ("real", "synth-pt-real-ft", "mixed", "mixed+prov")
CURVE_LABELS = {**STRATEGY_LABELS, "mixed+prov": "Mixed + provenance"}


def curve_name(strategy: str, provenance: bool) -> str:
    """``"mixed+prov"`` for mixed with provenance, else the strategy."""
    return f"{strategy}+prov" if provenance else strategy


def _check_real_images(runs: pd.DataFrame) -> None:
    """Raise ``ValueError`` naming the runs (by run id) whose ``summary.json`` lacks
    ``real_train_images`` or that have no ``summary.json``."""
    lacking = sorted(run_id(r.model, r.strategy, r.encoders, r.prompt, int(r.seed),
                            float(r.real_fraction), bool(r.provenance))
                     for r in runs[runs["real_train_images"].isna()].itertuples())
    if lacking:
        raise ValueError(
            f"summary.json lacks real_train_images for runs {lacking}: such run folders "
            "predate the current format and must be run again")


def efficiency_runs(df: pd.DataFrame, summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a strategy with real training data: its fields, test ``dice``
    (mean over samples and structures), ``real_train_images``, ``train_images`` and
    ``n_train`` (from its ``summary.json``; the last two NaN where it lacks them).

    Raises:
        ValueError: a run's ``summary.json`` lacks ``real_train_images`` (or is not there);
            the message lists the run ids.
    """
    runs = run_means(df)
    runs = runs[runs["strategy"].isin(REAL_DATA_STRATEGIES)]
    extra = [c for c in ("real_train_images", "train_images", "n_train") if c in summaries]
    sums = with_run_columns(summaries)[list(RUN_COLUMNS) + extra]
    out = runs.merge(sums, on=list(RUN_COLUMNS), how="left")
    for c in ("real_train_images", "train_images", "n_train"):
        if c not in out.columns:
            out[c] = np.nan
    _check_real_images(out)
    out["real_train_images"] = pd.to_numeric(out["real_train_images"])
    return out.reset_index(drop=True)


def efficiency_table(df: pd.DataFrame, summaries: pd.DataFrame) -> pd.DataFrame:
    """Per cell of a strategy with real training data (``CELL_COLUMNS``): real training
    images (mean over seeds), seeds, the mean over seeds of the test dice and its
    across-seed standard deviation (NaN with one seed); ``curve`` names its line in the
    figure (``mixed+prov`` for mixed with provenance)."""
    runs = efficiency_runs(df, summaries)
    rows = []
    for cell, g in runs.groupby(list(CELL_COLUMNS), sort=False):
        rec = dict(zip(CELL_COLUMNS, cell))
        rows.append({**rec, "curve": curve_name(rec["strategy"], rec["provenance"]),
                     "real_train_images": g["real_train_images"].mean(),
                     "n_seeds": len(g), "dice_mean": g["dice"].mean(),
                     "dice_std": g["dice"].std(ddof=1) if len(g) > 1 else np.nan})
    cols = [*CELL_COLUMNS, "curve", "real_train_images", "n_seeds", "dice_mean", "dice_std"]
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    out = out.sort_values("real_fraction", kind="stable")
    return order_rows(out)[cols]


def _reach(points: pd.DataFrame, target: float) -> tuple[float, str]:
    """Real images at which a curve (real_train_images, dice_mean) first reaches ``target``,
    by linear interpolation between measured points; and how it reads."""
    pts = points.dropna(subset=["real_train_images"]).sort_values("real_train_images")
    x, y = pts["real_train_images"].to_numpy(float), pts["dice_mean"].to_numpy(float)
    if len(x) == 0:
        return math.nan, "no image counts"
    if y[0] >= target:
        return x[0], f"<= {x[0]:g} (smallest measured)"
    for i in range(1, len(x)):
        if y[i] >= target:
            xi = x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1])
            return float(xi), f"{xi:.0f}"
    return math.nan, "not reached"


def images_to_reach(table: pd.DataFrame, reference: str = "real") -> pd.DataFrame:
    """The real training images each curve (strategy, and provenance for mixed) needs to
    reach the test dice of ``reference`` trained on all the real data, per model, encoders
    and prompt: linear interpolation between measured fractions; ``"not reached"`` when no
    measured point reaches it, ``"<= N (smallest measured)"`` when the smallest already
    does. ``share_of_reference``: those images over the reference's, in percent. Only
    model, encoders and prompt with a run at a real fraction below 1 are listed."""
    rows = []
    keys = ["model", "encoders", "prompt"]
    for k, g in table.groupby(keys, sort=False):
        if not (g["real_fraction"] < 1).any():
            continue
        ref = g[(g["curve"] == reference) & (g["real_fraction"] == 1.0)]
        if ref.empty:
            continue
        target = float(ref["dice_mean"].iloc[0])
        ref_images = float(ref["real_train_images"].iloc[0])
        for curve in [c for c in CURVES if c in set(g["curve"])]:
            pts = g[g["curve"] == curve]
            images, text = _reach(pts, target)
            rows.append({
                **dict(zip(keys, k)), "curve": curve, "target_dice": target,
                "reference_images": ref_images, "fractions": ", ".join(
                    f"{f * 100:g} %" for f in sorted(pts["real_fraction"])),
                "images_needed": images, "needed": text,
                "share_of_reference": 100 * images / ref_images
                if ref_images and not math.isnan(images) else np.nan,
            })
    cols = keys + ["curve", "target_dice", "reference_images", "fractions", "images_needed",
                   "needed", "share_of_reference"]
    return pd.DataFrame(rows, columns=cols)


def efficiency_figure(table: pd.DataFrame, out_dir: str | os.PathLike,
                      name: str = "data_efficiency", log_x: bool = True) -> list[Path]:
    """Test dice against the number of real training images, one panel per model (and
    encoders/prompt where several), one line per strategy; error bars: the across-seed
    standard deviation where a point has 2 or more seeds; a dashed line at ``real`` with all
    the real data. Only model, encoders and prompt with a run at a real fraction below 1
    get a panel. Saved as PNG and PDF."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = table.dropna(subset=["real_train_images"])
    partial = table.groupby(["model", "encoders", "prompt"])["real_fraction"].transform(
        lambda f: (f < 1).any()) if not table.empty else table["real_fraction"]
    table = table[partial.astype(bool)]
    if table.empty:
        raise ValueError("no run at a real fraction below 1 has a number of real training "
                         "images (summary.json real_train_images)")
    panels = list(dict.fromkeys(
        (m, e, p) for m in MODELS for e, p in
        table[table["model"] == m][["encoders", "prompt"]].itertuples(index=False)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False,
                             sharey=True)
    curves = [c for c in CURVES if c in set(table["curve"])]
    palette = dict(zip(curves, sns.color_palette("colorblind", len(curves))))
    for ax, (model, enc, prompt) in zip(axes[0], panels):
        sub = table[(table["model"] == model) & (table["encoders"] == enc)
                    & (table["prompt"] == prompt)]
        for curve in curves:
            pts = sub[sub["curve"] == curve].sort_values("real_train_images")
            if pts.empty:
                continue
            ax.errorbar(pts["real_train_images"], pts["dice_mean"],
                        yerr=pts["dice_std"].fillna(0), marker="o", capsize=3,
                        color=palette[curve], label=CURVE_LABELS.get(curve, curve))
        ref = sub[(sub["curve"] == "real") & (sub["real_fraction"] == 1.0)]
        if not ref.empty:
            ax.axhline(ref["dice_mean"].iloc[0], color="0.4", ls="--", lw=0.8,
                       label="real, all images")
        if log_x:  # ticks at the measured image counts, written as plain numbers
            from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(sorted(set(sub["real_train_images"]))))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
        title = MODEL_LABELS.get(model, model)
        title += f" {prompt_label(prompt)}" if prompt != NO_PROMPT else ""
        title += " (frozen)" if enc == "frozen" else ""
        ax.set_title(title)
        ax.set_xlabel("real training images")
    axes[0][0].set_ylabel("test dice (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths
