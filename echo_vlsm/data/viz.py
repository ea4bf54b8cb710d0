"""Looking at echo data: label overlays, example grids and count tables (notebook 01).

Colours follow the structures: LV cavity red, myocardium green, left atrium blue.

Examples::

    fig = show_examples(read_camus("data/raw/phantom"))     # patients x (2CH/4CH, ED/ES)
    table = count_table(read_records("data/phantom"))       # images per split, view, phase, quality
    fig = show_exported("data/phantom", split="test")        # the exported PNGs and masks
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from echo_vlsm.dataset import image_path, images_dir, label_path
from echo_vlsm.io import read_png
from echo_vlsm.structures import LABELS, PHASES, QUALITIES, SPLITS, STRUCTURES, VIEWS

COLORS: dict[str, tuple[int, int, int]] = {"lv": (230, 60, 60), "myo": (60, 200, 90),
                                           "la": (70, 130, 240)}


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.35,
            outline: bool = True) -> np.ndarray:
    """An (H, W, 3) uint8 picture of a gray image with its label map blended in (``alpha``)
    and each structure's border drawn in full colour."""
    image, label = np.asarray(image), np.asarray(label)
    if image.shape != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} differ in shape")
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    for key in STRUCTURES:
        mask = label == LABELS[key]
        if not mask.any():
            continue
        color = np.array(COLORS[key], np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * color
        if outline:
            m8 = mask.astype(np.uint8)
            edge = m8 - cv2.erode(m8, np.ones((3, 3), np.uint8))
            rgb[edge.astype(bool)] = color
    return np.clip(rgb, 0, 255).astype(np.uint8)


def pick_patients(records: Sequence, n: int = 3) -> list[str]:
    """Up to ``n`` patients that together show every image quality present (first the first
    patient of each quality, then the rest in order)."""
    by_patient: dict[str, set] = {}
    for r in records:
        by_patient.setdefault(r.patient, set()).add(r.quality)
    chosen: list[str] = []
    for q in QUALITIES:
        for p, qs in by_patient.items():
            if q in qs and p not in chosen:
                chosen.append(p)
                break
    chosen += [p for p in by_patient if p not in chosen]
    return chosen[:n]


def show_examples(records: Sequence, patients: Sequence[str] | None = None, n: int = 3,
                  size: float = 2.6):
    """A figure: one row per patient, columns 2CH ED, 2CH ES, 4CH ED, 4CH ES, each the
    image with its label overlay; titles carry view, phase and image quality."""
    import matplotlib.pyplot as plt

    patients = list(patients) if patients is not None else pick_patients(records, n)
    index = {(r.patient, r.view, r.phase): r for r in records}
    cols = [(v, p) for v in VIEWS for p in PHASES]
    fig, axes = plt.subplots(len(patients), len(cols), squeeze=False,
                             figsize=(size * len(cols), size * 1.15 * len(patients)))
    for i, patient in enumerate(patients):
        for j, (view, phase) in enumerate(cols):
            ax = axes[i, j]
            ax.axis("off")
            rec = index.get((patient, view, phase))
            if rec is None:
                continue
            image, label = rec.load()
            ax.imshow(overlay(image, label), aspect="equal")
            who = f"{rec.sex or '?'}, {rec.age if rec.age is not None else '?'} y"
            ax.set_title(f"{patient} {view} {phase}\n{rec.quality or '-'} quality, {who}",
                         fontsize=8)
    fig.legend(handles=_legend(), loc="lower center", ncol=3, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _legend():
    from matplotlib.patches import Patch

    names = {"lv": "LV cavity", "myo": "myocardium", "la": "left atrium"}
    rgb = {k: (r / 255, g / 255, b / 255) for k, (r, g, b) in COLORS.items()}
    return [Patch(color=rgb[k], label=names[k]) for k in STRUCTURES]


def count_table(records: pd.DataFrame | Sequence) -> pd.DataFrame:
    """Images per split and image quality (rows) and per view and phase (columns), with
    totals: the shape of a dataset at a glance. Accepts ``read_records`` output or
    ``CamusRecord``s."""
    if isinstance(records, pd.DataFrame):
        df = records.copy()
    else:
        df = pd.DataFrame([{"split": r.split, "view": r.view, "phase": r.phase,
                            "quality": r.quality} for r in records])
    if df.empty:
        raise ValueError("no records to count")
    df["quality"] = df["quality"].fillna("").replace("", "unknown")
    table = pd.crosstab([df["split"], df["quality"]], [df["view"], df["phase"]],
                        margins=True, margins_name="total")
    order = {s: i for i, s in enumerate((*SPLITS, "total"))}
    qorder = {q: i for i, q in enumerate((*QUALITIES, "unknown", ""))}
    rows = sorted(table.index, key=lambda k: (order.get(k[0], 9), qorder.get(k[1], 9), k))
    return table.loc[rows]


def show_exported(dataset_dir: str | os.PathLike, split: str = "train", n: int = 4,
                  size: float = 2.6):
    """A figure of ``n`` exported images of ``split`` with their label maps, read back from
    the PNG files (what training will see)."""
    import matplotlib.pyplot as plt

    root = Path(dataset_dir)
    stems = sorted(p.stem for p in images_dir(root, split).glob("*.png"))
    if not stems:
        raise FileNotFoundError(f"{images_dir(root, split)}: no exported images")
    picks = [stems[int(i)] for i in np.linspace(0, len(stems) - 1, min(n, len(stems)))]
    fig, axes = plt.subplots(1, len(picks), squeeze=False, figsize=(size * len(picks), size))
    for ax, stem in zip(axes[0], picks):
        image = read_png(image_path(root, split, stem))
        label = read_png(label_path(root, split, stem))
        ax.imshow(overlay(image, label))
        ax.set_title(f"{stem}\n{image.shape[0]} x {image.shape[1]}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def show_phantom_stages(stages: dict, size: float = 3.0):
    """A figure of how a phantom frame is made (``phantom.simulate_stages``): tissue classes
    and reflectivity on the scan lines, the echo envelope after log compression, and the
    scan-converted B-mode image with its labels."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(size * 5, size * 1.1))
    deg = np.degrees(stages["half_angle"])
    extent = (-deg, deg, stages["depth_mm"], 0)
    panels = [
        ("tissue classes\n(depth x angle)", stages["classes"], "tab10", None),
        ("reflectivity (dB)", 20 * np.log10(stages["reflectivity"] + 1e-3), "magma", None),
        ("envelope, log-compressed", stages["log_compressed"], "gray", None),
    ]
    for ax, (title, data, cmap, _) in zip(axes, panels):
        ax.imshow(data, cmap=cmap, aspect="auto", extent=extent, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("angle (deg)", fontsize=8)
        ax.set_ylabel("depth (mm)", fontsize=8)
    axes[3].imshow(stages["image"], cmap="gray", vmin=0, vmax=255)
    axes[3].set_title(f"B-mode, scan-converted\n({stages['quality']} quality)", fontsize=9)
    axes[4].imshow(overlay(stages["image"], stages["label"]))
    axes[4].set_title("with the label map", fontsize=9)
    for ax in axes[3:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
