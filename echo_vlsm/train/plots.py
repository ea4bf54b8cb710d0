"""Figures of one run for notebook 04: learning curves and test predictions with their prompts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from echo_vlsm.device import resolve_device, resolve_precision
from echo_vlsm.io import read_png
from echo_vlsm.train.checkpoint import WEIGHTS_FILE, load_weights
from echo_vlsm.train.data import build, load_split
from echo_vlsm.train.metrics import segmentation_metrics
from echo_vlsm.train.scoring import eval_generator, predict


def plot_history(history: pd.DataFrame, summary: dict | None = None, ax=None):
    """Training and validation loss (left axis) and validation Dice (right axis) per epoch;
    the best epoch is marked. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    else:
        fig = ax.figure
    if history.empty:
        ax.text(0.5, 0.5, "no training epochs (zero-shot run)", ha="center", va="center",
                transform=ax.transAxes)
        return fig
    ax.plot(history["epoch"], history["train_loss"], "o-", label="train loss")
    ax.plot(history["epoch"], history["val_loss"], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Dice + 0.25 BCE")
    right = ax.twinx()
    right.plot(history["epoch"], history["val_dice"], "^-", color="C2", label="validation Dice")
    right.set_ylabel("validation Dice (%)")
    if summary and summary.get("best_epoch"):
        ax.axvline(summary["best_epoch"], color="gray", ls=":", label="best epoch")
    lines = ax.get_lines() + right.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    fig.tight_layout()
    return fig


def pick_samples(samples: list[dict], n: int) -> list[int]:
    """``n`` triplets spread over structures and images (first image of each structure, then
    the next, ...)."""
    by_structure: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_structure.setdefault(s["structure"], []).append(i)
    picked: list[int] = []
    rank = 0
    while len(picked) < min(n, len(samples)):
        added = False
        for idx in by_structure.values():
            step = max(1, len(idx) // max(1, n))
            j = rank * step
            if j < len(idx) and len(picked) < n:
                picked.append(idx[j])
                added = True
        if not added:
            break
        rank += 1
    return picked


def show_predictions(config, n: int = 6, weights: str | Path | None = None, device=None):
    """Test images with the ground truth (green) and the prediction (red) of ``n`` triplets,
    titled with the prompt the model read and the sample's Dice (a rehearsal's: at most its
    ``fast_dev_run`` triplets). Returns the figure."""
    import matplotlib.pyplot as plt

    if config.fast_dev_run is not None:
        n = min(n, config.fast_dev_run)

    dev = torch.device(device) if device is not None else resolve_device(config.device)
    model = build(config, dev)
    if weights is None and config.strategy != "zeroshot":
        weights = config.run_dir / WEIGHTS_FILE
    if weights is not None:
        load_weights(model, weights)
    data = load_split(config, model, config.test_dir, "test", dev, full_masks=True,
                      progress=False)
    picked = pick_samples(data.samples, n)
    index = torch.tensor(picked)
    precision = resolve_precision(config.precision, dev)
    assert data.full_masks is not None  # loaded with full_masks=True
    height, width = data.full_masks.shape[-2:]
    size = (int(height), int(width))
    logits = predict(model, data, index, config, precision, size).cpu()
    cut = float(np.log(model.spec.threshold / (1 - model.spec.threshold)))
    pred = logits > cut
    truth = data.full_mask(index)
    dice = segmentation_metrics(pred, truth)["dice"]
    phrasing = data.draw_phrasings(eval_generator(config))
    root = Path(data.source["dataset"])
    images = [read_png(root / data.samples[i]["img_name"]) for i in picked]  # stored size

    cols = min(3, len(picked))
    rows = -(-len(picked) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(picked):
        ax = axes.flat[k]
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=255)
        ax.contour(truth[k].numpy(), levels=[0.5], colors="lime", linewidths=1)
        if pred[k].any():
            ax.contour(pred[k].numpy(), levels=[0.5], colors="red", linewidths=1)
        text = data.prompt_text(i, phrasing) or "(empty prompt)"
        ax.set_title(f"{data.samples[i]['sample']} {data.samples[i]['structure']}: "
                     f"Dice {dice[k]:.1f}\n{_wrap(text)}", fontsize=7)
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text
