"""New label maps from real ones, as Echo from Noise (ASMUS 2023) made them for its SDM.

Each new map is the real 5-class map under a random affine transform (rotation +-5 deg,
vertical shift up to 5 % of the height, scale 0.8-1.05, shear 5 deg, nearest neighbour),
then an elastic deformation (10 x 10 control points of a cubic B-spline, the border ones
locked, displacements up to 30 px at 256 px, scaled to the map's size; as torchio's
RandomElasticDeformation), clipped to the real map's ultrasound sector: outside the sector
stays 0, sector pixels left without a class become tissue (2). Beyond the study, each
structure is kept as one connected piece (largest component, holes filled), so every new map
is anatomically plausible; labels stay in 0..4. The same seed gives the same maps.

Examples::

    maps = perturb_maps(sdm_map, n=5, seed=0)        # list of 5 uint8 maps like sdm_map
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from echo_vlsm.sdm.labels import (
    NUM_CLASSES,
    OUTSIDE,
    STRUCTURE_CLASSES,
    TISSUE,
    fill_holes,
    largest_component,
)


@dataclass(frozen=True)
class PerturbConfig:
    """The study's perturbation settings (torchvision RandomAffine + torchio elastic)."""

    degrees: float = 5.0
    translate_y: float = 0.05  # fraction of the height
    scale: tuple[float, float] = (0.8, 1.05)
    shear: float = 5.0  # degrees, along x
    control_points: int = 10
    max_displacement: float = 30 / 256  # fraction of the map size (30 px at 256 px)
    retries: int = 5  # new draws when a structure of the source vanished


def _affine(sdm_map: np.ndarray, rng: np.random.Generator, cfg: PerturbConfig) -> np.ndarray:
    import cv2

    h, w = sdm_map.shape
    angle = math.radians(rng.uniform(-cfg.degrees, cfg.degrees))
    ty = rng.uniform(-cfg.translate_y, cfg.translate_y) * h
    s = rng.uniform(*cfg.scale)
    shear = math.radians(rng.uniform(-cfg.shear, cfg.shear))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shr = np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
    lin = rot @ shr * s  # acts on (x, y)
    centre = np.array([cx, cy])
    offset = centre + np.array([0.0, ty]) - lin @ centre
    matrix = np.hstack([lin, offset[:, None]]).astype(np.float64)
    return cv2.warpAffine(sdm_map, matrix, (w, h), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _bspline_weights(n_pixels: int, n_points: int) -> np.ndarray:
    """(n_pixels, n_points) cubic B-spline weights of a control grid whose mesh of
    ``n_points - 3`` cells spans the image (as SimpleITK's BSplineTransform, used by torchio)."""
    cell = n_pixels / (n_points - 3)
    u = (np.arange(n_pixels)[:, None] + 0.5) / cell + 1 - np.arange(n_points)[None, :]
    a = np.abs(u)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def _elastic(sdm_map: np.ndarray, rng: np.random.Generator, cfg: PerturbConfig) -> np.ndarray:
    import cv2

    h, w = sdm_map.shape
    k = cfg.control_points
    d = cfg.max_displacement * max(h, w)
    grid = rng.uniform(-d, d, size=(2, k, k))
    grid[:, 0, :] = grid[:, -1, :] = grid[:, :, 0] = grid[:, :, -1] = 0  # locked borders
    wy, wx = _bspline_weights(h, k), _bspline_weights(w, k)
    dy = (wy @ grid[0] @ wx.T).astype(np.float32)
    dx = (wy @ grid[1] @ wx.T).astype(np.float32)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(sdm_map, cols + dx, rows + dy, interpolation=cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def clean_map(warped: np.ndarray, sector: np.ndarray) -> np.ndarray:
    """Clip a warped map to ``sector`` and keep each structure one filled connected piece."""
    sector = np.asarray(sector, bool)
    out = np.where(sector, warped, OUTSIDE).astype(np.uint8)
    out[sector & (out == OUTSIDE)] = TISSUE
    for cls in STRUCTURE_CLASSES:
        mask = out == cls
        if not mask.any():
            continue
        keep = largest_component(mask)
        out[mask & ~keep] = TISSUE
        holes = fill_holes(keep) & ~keep & (out == TISSUE)
        out[holes] = cls
    return out


def perturb_map(
    sdm_map: np.ndarray, rng: np.random.Generator, config: PerturbConfig = PerturbConfig()
) -> np.ndarray:
    """One new 5-class map: random affine, elastic deformation, clipped to the sector."""
    sdm_map = np.asarray(sdm_map)
    if sdm_map.ndim != 2:
        raise ValueError(f"expected a 2-D label map, got shape {sdm_map.shape}")
    if sdm_map.size and int(sdm_map.max()) >= NUM_CLASSES:
        raise ValueError(
            f"label values {sorted(np.unique(sdm_map).tolist())}: an SDM map holds 0..4"
        )
    sdm_map = sdm_map.astype(np.uint8)
    sector = sdm_map != OUTSIDE
    present = [c for c in STRUCTURE_CLASSES if (sdm_map == c).any()]
    out = sdm_map
    for _ in range(max(1, config.retries)):
        out = clean_map(_elastic(_affine(sdm_map, rng, config), rng, config), sector)
        if all((out == c).any() for c in present):
            break
    return out


def perturb_maps(
    sdm_map: np.ndarray, n: int = 5, seed: int | np.random.SeedSequence | list = 0,
    config: PerturbConfig = PerturbConfig(),
) -> list[np.ndarray]:
    """``n`` new maps from one real map (the study makes 5 per real map); deterministic."""
    rng = np.random.default_rng(seed)
    return [perturb_map(sdm_map, rng, config) for _ in range(n)]
