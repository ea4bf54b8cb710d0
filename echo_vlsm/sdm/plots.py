"""Figures of notebook 02: perturbed maps, real vs synthetic, training loss, examples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from echo_vlsm.dataset import image_path, read_records
from echo_vlsm.imaging import resize_image
from echo_vlsm.io import read_png
from echo_vlsm.sdm.labels import colorize, map_path
from echo_vlsm.sdm.synthesize import real_sdm_map


def _axes(rows: int, cols: int, size: float = 2.2):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def plot_perturbations(sdm_map: np.ndarray, maps: Sequence[np.ndarray], title: str = ""):
    """The real 5-class map next to its perturbed versions."""
    fig, axes = _axes(1, 1 + len(maps))
    axes[0, 0].imshow(colorize(sdm_map))
    axes[0, 0].set_title(title or "real map", fontsize=8)
    for i, m in enumerate(maps, 1):
        axes[0, i].imshow(colorize(m))
        axes[0, i].set_title(f"perturbed s{i - 1}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_real_vs_synthetic(real_dir, sdm, stems: Sequence[tuple[str, str]], *,
                           sampler: str = "dpm++", steps: int | None = 20,
                           guidance_scale: float = 1.0, seed: int = 0):
    """For each (split, stem): the real image, its 5-class map, and an SDM sample from that
    same (unperturbed) map at the SDM's size."""
    pairs = [real_sdm_map(real_dir, split, stem) for split, stem in stems]
    maps = np.stack([m for _, m in pairs])
    synth = sdm.sample(maps, sampler=sampler, steps=steps, guidance_scale=guidance_scale,
                       seeds=[seed + i for i in range(len(maps))])
    fig, axes = _axes(len(stems), 3)
    for r, ((img, m), (_, stem), fake) in enumerate(zip(pairs, stems, synth)):
        axes[r, 0].imshow(resize_image(img, sdm.image_size), cmap="gray", vmin=0, vmax=255)
        axes[r, 1].imshow(colorize(m))
        axes[r, 2].imshow(fake, cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_ylabel(stem, fontsize=7)
    for c, name in enumerate(("real", "label map", f"synthetic ({sampler})")):
        axes[0, c].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def plot_synthetic_examples(dataset_dir, n: int = 6):
    """The first ``n`` images of a synthetic set above the maps they were sampled from."""
    rows = read_records(dataset_dir).head(n)
    fig, axes = _axes(2, max(1, len(rows)))
    for c, row in enumerate(rows.itertuples()):
        img = read_png(image_path(dataset_dir, row.split, row.stem))
        axes[0, c].imshow(img, cmap="gray", vmin=0, vmax=255)
        axes[0, c].set_title(row.stem, fontsize=6)
        maps = map_path(dataset_dir, row.split, row.stem)
        if maps.is_file():
            axes[1, c].imshow(colorize(read_png(maps)))
    fig.tight_layout()
    return fig


def plot_loss(history: Sequence[dict]):
    """Training loss per step (and its running mean)."""
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history])
    loss = np.array([h["loss"] for h in history])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, loss, lw=0.5, alpha=0.5, label="loss")
    if len(loss) >= 10:
        k = max(5, len(loss) // 20)
        ax.plot(steps[k - 1 :], np.convolve(loss, np.ones(k) / k, mode="valid"),
                label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return fig
