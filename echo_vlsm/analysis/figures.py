"""Figures: strategy differences, freeze differences, learning curves, per structure; each
saved as PNG and PDF."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from echo_vlsm.analysis.differences import freeze_differences, strategy_differences
from echo_vlsm.analysis.loading import study_rows
from echo_vlsm.analysis.tables import MODEL_LABELS, STRATEGY_LABELS
from echo_vlsm.grid import MODELS, PROMPT_KEYS, STRATEGIES
from echo_vlsm.io import atomic_path
from echo_vlsm.structures import STRUCTURES

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_figure(fig, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` (150 dpi) and ``<name>.pdf`` in ``out_dir``, atomically."""
    out = []
    for ext in ("png", "pdf"):
        path = Path(out_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        out.append(path)
    return out


def _prompt_axis(ax, prompts):
    ax.set_xticks(range(len(prompts)))
    ax.set_xticklabels([p.upper() for p in prompts])
    ax.axhline(0, color="0.3", lw=0.8)


def _difference_panels(diffs: pd.DataFrame, hue: str, hue_order, title: str, ylabel: str,
                       facet: str = "model", facet_order=MODELS):
    import matplotlib.pyplot as plt
    import seaborn as sns

    facets = [f for f in facet_order if f in set(diffs[facet])] or [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.2 * len(facets), 3.4), squeeze=False,
                             sharey=True)
    hues = [h for h in hue_order if h in set(diffs[hue])]
    palette = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    prompts = [p for p in PROMPT_KEYS if p in set(diffs["prompt"])]
    width = 0.8 / max(len(hues), 1)
    for ax, f in zip(axes[0], facets):
        sub = diffs if f is None else diffs[diffs[facet] == f]
        for j, h in enumerate(hues):
            s = sub[sub[hue] == h].set_index("prompt").reindex(prompts)
            x = np.arange(len(prompts)) + (j - (len(hues) - 1) / 2) * width
            label = STRATEGY_LABELS.get(h, MODEL_LABELS.get(h, h))
            ax.bar(x, s["diff"], width=width, color=palette[h], label=label)
            ax.scatter(x, s["paper_diff"], marker="_", s=140, color="black", zorder=3,
                       label="study" if j == 0 else None)
        _prompt_axis(ax, prompts)
        ax.set_title(MODEL_LABELS.get(f, STRATEGY_LABELS.get(f, f)) if f else "")
        ax.set_xlabel("prompt")
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1.08))
    fig.suptitle(title, y=1.14)
    fig.tight_layout()
    return fig


def strategy_difference_figure(summary: pd.DataFrame, out_dir: str | os.PathLike,
                               name: str = "strategy_difference") -> list[Path]:
    """The study's main figure: mean dice of each strategy minus ``real`` per prompt and
    model (bars: this work; black ticks: the study)."""
    import matplotlib.pyplot as plt

    diffs = strategy_differences(summary)
    if diffs.empty:
        raise ValueError("no strategy run next to 'real' for the same model and prompt")
    fig = _difference_panels(diffs, "strategy", STRATEGIES, "Strategy minus real",
                             "Δ dice vs real (points)")
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def freeze_difference_figure(df: pd.DataFrame, out_dir: str | os.PathLike,
                             name: str = "freeze_difference") -> list[Path]:
    """Frozen minus trained encoders, mean dice per prompt and model, one panel per strategy
    (bars: this work; black ticks: the study's Table 2 minus Table 1)."""
    import matplotlib.pyplot as plt

    diffs = freeze_differences(df)
    if diffs.empty:
        raise ValueError("no run exists with both frozen and trained encoders")
    fig = _difference_panels(diffs, "model", MODELS, "Frozen minus trained encoders",
                             "Δ dice frozen − trained (points)", facet="strategy",
                             facet_order=STRATEGIES)
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def learning_curve_figure(histories: pd.DataFrame, out_dir: str | os.PathLike,
                          name: str = "learning_curves", y: str | None = None,
                          strategies: Iterable[str] = ("real", "synth-pt-real-ft"),
                          encoders: str = "trained") -> list[Path]:
    """Validation curves per epoch of ``strategies`` (default real vs synth-pt-real-ft),
    one panel per model, one line per prompt; the study's own runs only (``study_rows``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    histories = study_rows(histories)

    if y is None:
        y = next((c for c in ("val_dice", "val_loss", "train_loss") if c in histories.columns),
                 None)
    if y is None or y not in histories.columns:
        raise ValueError(f"history has no column {y!r}; columns: {list(histories.columns)}")
    h = histories[histories["strategy"].isin(list(strategies))
                  & (histories["encoders"] == encoders)]
    if h.empty:
        raise ValueError(f"no history of strategies {list(strategies)} with {encoders} encoders")
    models = [m for m in MODELS if m in set(h["model"])]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False)
    for ax, m in zip(axes[0], models):
        sns.lineplot(data=h[h["model"] == m], x="epoch", y=y, hue="strategy", style="prompt",
                     ax=ax, errorbar=None)
        ax.set_title(MODEL_LABELS[m])
        ax.legend(fontsize=6)
    fig.tight_layout()
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def per_structure_figure(df: pd.DataFrame, out_dir: str | os.PathLike,
                         name: str = "per_structure", encoders: str = "trained") -> list[Path]:
    """Mean dice per structure (LV cavity, myocardium, LA) for each strategy and model,
    averaged over prompts P1..P7 (P0 names no structure); the study's own runs only
    (``study_rows``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = study_rows(df)

    sel = df[((df["encoders"] == encoders) | (df["strategy"] == "zeroshot"))
             & (df["prompt"] != "p0")]
    if sel.empty:
        raise ValueError(f"no metrics with {encoders} encoders and a prompt other than P0")
    models = [m for m in MODELS if m in set(sel["model"])]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False,
                             sharey=True)
    order = [s for s in STRATEGIES if s in set(sel["strategy"])]
    for ax, m in zip(axes[0], models):
        sns.barplot(data=sel[sel["model"] == m], x="strategy", y="dice", hue="structure",
                    order=order, hue_order=[s for s in STRUCTURES if s in set(sel["structure"])],
                    errorbar=("ci", 95), seed=0, ax=ax, palette="colorblind")
        ax.set_title(MODEL_LABELS[m])
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([STRATEGY_LABELS[s] for s in order], rotation=20, fontsize=7)
        ax.set_ylabel("dice (%)")
    fig.tight_layout()
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


_CLINICAL_PANELS = (("edv", "EDV (mL)"), ("esv", "ESV (mL)"), ("ef", "EF (%)"))


def _clinical_panels(points: pd.DataFrame, truth: str, draw, finish=None) -> Figure:
    """One panel per index (EDV, ESV, EF), one colour per group of ``points``
    (``clinical_report.figure_points``); ``draw(ax, sub, colour, label)`` plots a group,
    ``finish(ax, panel)`` (optional) what the panel's points share."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if points.empty:
        raise ValueError("no patient measured on both sides: nothing to plot")
    groups = list(dict.fromkeys(points["group"]))
    palette = dict(zip(groups, sns.color_palette("colorblind", len(groups))))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0), squeeze=False)
    for ax, (index, label) in zip(axes[0], _CLINICAL_PANELS):
        for g in groups:
            sub = points[(points["group"] == g) & (points["index"] == index)]
            if not sub.empty:
                draw(ax, sub, palette[g], g)
        if finish is not None:
            finish(ax, points[points["index"] == index])
        ax.set_title(f"{label} against the {truth}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # a group may lack EDV/ESV (a reference with EF only)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 3), frameon=False,
               bbox_to_anchor=(0.5, 1.12), fontsize=8)
    fig.tight_layout()
    return fig


def bland_altman_figure(points: pd.DataFrame, out_dir: str | os.PathLike,
                        name: str = "clinical_bland_altman", truth: str = "reference") \
        -> list[Path]:
    """Bland-Altman plots of EDV, ESV and EF: per patient the difference measured - truth
    against their mean, one colour per group (``clinical_report.figure_points``), each
    group's bias (solid) and 95 % limits of agreement (dashed)."""
    import matplotlib.pyplot as plt

    def draw(ax, sub: pd.DataFrame, colour, label: str) -> None:
        mean = (sub["measured"] + sub["truth"]) / 2
        diff = sub["measured"] - sub["truth"]
        ax.scatter(mean, diff, s=14, alpha=0.7, color=colour, label=label)
        bias = diff.mean()
        ax.axhline(bias, color=colour, lw=1.2)
        if len(diff) > 1:
            for side in (-1, 1):
                ax.axhline(bias + side * 1.96 * diff.std(ddof=1), color=colour, lw=0.9, ls="--")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xlabel(f"mean of measured and {truth}")
        ax.set_ylabel(f"measured - {truth}")

    fig = _clinical_panels(points, truth, draw)
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def clinical_scatter_figure(points: pd.DataFrame, out_dir: str | os.PathLike,
                            name: str = "clinical_scatter", truth: str = "reference") \
        -> list[Path]:
    """EDV, ESV and EF measured against the truth, one colour per group
    (``clinical_report.figure_points``), with the identity line."""
    import matplotlib.pyplot as plt

    def draw(ax, sub: pd.DataFrame, colour, label: str) -> None:
        ax.scatter(sub["truth"], sub["measured"], s=14, alpha=0.7, color=colour, label=label)

    def identity(ax, panel: pd.DataFrame) -> None:
        if not panel.empty:
            lo = min(panel["truth"].min(), panel["measured"].min())
            hi = max(panel["truth"].max(), panel["measured"].max())
            ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.6)
        ax.set_xlabel(truth)
        ax.set_ylabel("measured")

    fig = _clinical_panels(points, truth, draw, identity)
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def transfer_figure(runs: pd.DataFrame, out_dir: str | os.PathLike, dataset: str = "echonet",
                    name: str = "transfer_dice") -> list[Path]:
    """LV dice on the run's own test split (x) against dice on ``dataset``'s (y), one point
    per run of ``transfer.run_table``: colour per strategy, marker per model, the prompt
    beside it; the identity line (a point below it lost that much: its drop)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if runs.empty:
        raise ValueError(f"no run evaluated on {dataset}: nothing to plot")
    strategies = [s for s in STRATEGIES if s in set(runs["strategy"])]
    palette = dict(zip(strategies, sns.color_palette("colorblind", len(strategies))))
    markers = dict(zip(MODELS, ("o", "s", "^")))
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for (model, strategy), g in runs.groupby(["model", "strategy"], sort=False):
        ax.scatter(g["dice_in"], g["dice_cross"], s=36, color=palette[strategy],
                   marker=markers.get(model, "o"),
                   label=f"{MODEL_LABELS.get(model, model)} "
                         f"{STRATEGY_LABELS.get(strategy, strategy)}")
        for r in g.itertuples():
            ax.annotate(str(r.prompt).upper(), (r.dice_in, r.dice_cross), fontsize=6,
                        xytext=(3, 2), textcoords="offset points")
    lo = float(min(runs["dice_in"].min(), runs["dice_cross"].min(), 100.0)) - 2
    ax.plot([lo, 100], [lo, 100], color="0.3", lw=0.7)
    ax.set_xlabel("LV dice, own test split (%)")
    ax.set_ylabel(f"LV dice, {dataset} test split (%)")
    ax.set_title("Trained on one dataset, tested on another")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths
