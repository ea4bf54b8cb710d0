"""Tiny exported datasets for the SDM tests: fan-shaped echo-like images with label maps.

Each image has a dark outside (0), a speckled sector (fan from the top centre), a dark LV
cavity, a bright myocardium around it (open towards the atrium) and a dark left atrium
below; written in the exported layout (images/labels/masks/records.csv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echo_vlsm.dataset import image_path, label_path, mask_path, write_records
from echo_vlsm.io import write_png
from echo_vlsm.sdm.labels import sector_mask, to_sdm_map

SPLIT_OF = ("train", "train", "train", "val", "test")


def echo_pair(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair at ``size`` px; label values 0 bg, 1 LV, 2 myo, 3 LA."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = np.hypot(yy - 0.02, xx - 0.5)
    ang = np.degrees(np.arctan2(xx - 0.5, yy - 0.02))
    sector = (r < 0.95) & (np.abs(ang) < 38)
    cy, cx = 0.42 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.03, 0.03)
    ay, ax = 0.22 + rng.uniform(-0.02, 0.02), 0.11 + rng.uniform(-0.01, 0.01)
    e = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2
    lv = e < 1
    myo = (e >= 1) & (((yy - cy) / (ay + 0.05)) ** 2 + ((xx - cx) / (ax + 0.05)) ** 2 < 1)
    myo &= yy < cy + ay * 0.8  # open at the base
    la = ((yy - (cy + ay + 0.12)) / 0.1) ** 2 + ((xx - cx) / 0.1) ** 2 < 1
    la &= ~lv & ~myo
    label = np.zeros((size, size), np.uint8)
    label[lv], label[myo], label[la] = 1, 2, 3
    label[~sector] = 0
    speckle = rng.gamma(2.0, 0.5, (size, size))
    base = np.full((size, size), 90.0)
    base[label == 2] = 180
    base[(label == 1) | (label == 3)] = 25
    image = np.clip(base * speckle, 1, 255)
    image[~sector] = 0
    return image.astype(np.uint8), label


def write_echo_dataset(root: Path, n_patients: int = 5, size: int = 64, seed: int = 0) -> Path:
    """A dataset folder with ``n_patients`` x (2CH, 4CH) x (ED, ES) images."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(1, n_patients + 1):
        split = SPLIT_OF[(p - 1) % len(SPLIT_OF)]
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                stem = f"patient{p:04d}_{view}_{phase}"
                image, label = echo_pair(size, rng)
                write_png(image_path(root, split, stem), image)
                write_png(label_path(root, split, stem), label)
                for s, v in (("lv", 1), ("myo", 2), ("la", 3)):
                    write_png(mask_path(root, s, split, stem),
                              np.where(label == v, 255, 0).astype(np.uint8))
                rows.append({
                    "stem": stem, "patient": f"patient{p:04d}", "view": view, "phase": phase,
                    "split": split, "sex": "MF"[p % 2], "age": 40 + p,
                    "quality": ("Good", "Medium", "Poor")[p % 3],
                    "source_height": 2 * size, "source_width": size,
                    "spacing_y": 0.3, "spacing_x": 0.15,
                })
    write_records(rows, root)
    return root


def write_release_tree(root: Path, size: int = 64) -> Path:
    """A tree laid out as the released SDM-CAMUS set (Zenodo 7921055): 2CH_ED and 4CH_ES,
    training and validation, plus a testing folder with real-style 0..3 annotations that must
    be skipped."""
    rng = np.random.default_rng(0)
    samples = [
        ("2CH_ED", "training", "patient0001_2CH_ED_training_0"),
        ("2CH_ED", "training", "patient0001_2CH_ED_training_1"),
        ("2CH_ED", "validation", "patient0003_2CH_ED_validation_4"),
        ("4CH_ES", "training", "patient0002_4CH_ES_training_2"),
        ("4CH_ES", "training", "patient0099_7"),  # view/phase from the folder
    ]
    for view, split, name in samples:
        image, label = echo_pair(size, rng)
        write_png(root / view / "images" / split / f"{name}.png", image)
        write_png(root / view / "annotations" / split / f"{name}.png",
                  to_sdm_map(label, sector_mask(image)))
    image, label = echo_pair(size, rng)
    write_png(root / "2CH_ED" / "images" / "testing" / "patient0001_2CH_ED_testing.png", image)
    write_png(root / "2CH_ED" / "annotations" / "testing" / "patient0001_2CH_ED_testing.png", label)
    return root
