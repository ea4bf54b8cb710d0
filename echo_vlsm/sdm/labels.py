"""The SDM's 5-class label maps (Echo from Noise, ASMUS 2023) and the ultrasound sector.

The study conditions its semantic diffusion model on maps with five classes::

    0 outside the ultrasound sector    1 LV cavity    2 tissue inside the sector
    3 myocardium                       4 left atrium

built from a CAMUS label map (0 background, 1 LV, 2 myocardium, 3 LA) and the sector, which
is the non-zero region of the image. Here the sector is cleaned: a morphological closing and
a hole fill make dark cavities inside the fan count as sector, and only the largest connected
region is kept, so isolated specks outside the fan do not.

Examples::

    sector = sector_mask(image)                  # bool (H, W)
    sdm_map = to_sdm_map(label, sector)          # uint8 (H, W), values 0..4
    label_back = to_camus_label(sdm_map)         # uint8 (H, W), values 0..3

A synthetic dataset keeps the map each image was sampled from beside the exported layout
(``echo_vlsm.dataset``), in ``sdm_maps/<split>/<stem>.png``::

    >>> map_name("train", "patient0001_2CH_ED_s0")
    'sdm_maps/train/patient0001_2CH_ED_s0.png'
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

NUM_CLASSES = 5
OUTSIDE, LV, TISSUE, MYO, LA = 0, 1, 2, 3, 4
CLASS_NAMES = ("outside", "lv", "tissue", "myo", "la")
# CAMUS label value -> SDM class, and back (tissue and outside both become background).
CAMUS_TO_SDM = np.array([TISSUE, LV, MYO, LA], np.uint8)
SDM_TO_CAMUS = np.array([0, 1, 0, 2, 3], np.uint8)
STRUCTURE_CLASSES = (LV, MYO, LA)
MAPS_DIR = "sdm_maps"


def map_name(split: str, stem: str) -> str:
    """The 5-class map's path inside a synthetic dataset: ``sdm_maps/<split>/<stem>.png``."""
    return f"{MAPS_DIR}/{split}/{stem}.png"


def map_path(dataset_dir: str | os.PathLike, split: str, stem: str) -> Path:
    return Path(dataset_dir) / map_name(split, stem)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (empty stays empty)."""
    import cv2

    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask.copy()
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask.copy()
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return comp == best


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a boolean mask (regions not connected to the border)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(np.asarray(mask, bool))


def sector_mask(image: np.ndarray, threshold: int = 0, closing: float = 0.02) -> np.ndarray:
    """The ultrasound sector of an echo image: pixels above ``threshold``, closed with a disc
    of radius ``closing`` x image size, holes filled, largest region kept."""
    import cv2

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {image.shape}")
    mask = (image > threshold).astype(np.uint8)
    r = max(1, int(round(closing * max(image.shape))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    # pad so the closing does not glue the fan to the border
    padded = cv2.copyMakeBorder(mask, r, r, r, r, cv2.BORDER_CONSTANT, value=0)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[r:-r, r:-r]
    return fill_holes(largest_component(closed.astype(bool)))


def to_sdm_map(label: np.ndarray, sector: np.ndarray) -> np.ndarray:
    """5-class SDM map from a CAMUS label map (0..3) and a sector mask (structures count as
    sector even where the sector mask misses them)."""
    label = np.asarray(label)
    if label.shape != np.shape(sector):
        raise ValueError(f"label {label.shape} and sector {np.shape(sector)} differ in shape")
    if label.size and int(label.max()) > 3:
        raise ValueError(f"label values {sorted(np.unique(label).tolist())}: expected 0..3")
    out = CAMUS_TO_SDM[label]
    out[(label == 0) & ~np.asarray(sector, bool)] = OUTSIDE
    return out


def to_camus_label(sdm_map: np.ndarray) -> np.ndarray:
    """CAMUS label map (0 bg, 1 LV, 2 myocardium, 3 LA) from a 5-class SDM map."""
    sdm_map = np.asarray(sdm_map)
    if sdm_map.size and int(sdm_map.max()) >= NUM_CLASSES:
        raise ValueError(f"SDM map values {sorted(np.unique(sdm_map).tolist())}: expected 0..4")
    return SDM_TO_CAMUS[sdm_map]


def resize_map(sdm_map: np.ndarray, size: int) -> np.ndarray:
    """Resize a class map to (size, size): the class of largest area under each output pixel
    when shrinking (thin structures survive better than with nearest), nearest when growing."""
    import cv2

    sdm_map = np.asarray(sdm_map, np.uint8)
    h, w = sdm_map.shape
    if (h, w) == (size, size):
        return sdm_map.copy()
    if size > min(h, w):
        return cv2.resize(sdm_map, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
    n = int(sdm_map.max()) + 1
    votes = np.stack(
        [cv2.resize((sdm_map == c).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
         for c in range(n)]
    )
    return votes.argmax(0).astype(np.uint8)


def colorize(sdm_map: np.ndarray) -> np.ndarray:
    """RGB uint8 picture of a 5-class map for figures."""
    palette = np.array(
        [[0, 0, 0], [220, 60, 60], [90, 90, 90], [60, 160, 220], [240, 200, 60]], np.uint8
    )
    return palette[np.asarray(sdm_map, np.uint8).clip(0, NUM_CLASSES - 1)]
