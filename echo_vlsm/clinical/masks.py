"""Masks before measuring: input checks, the one post-processing, isotropic resampling, contour.

``clean_mask`` is the single post-processing applied to every mask before it is measured
(ground truth and prediction alike): keep the largest 8-connected component, then fill its
holes. ``disc_diameters`` always applies it, so two callers cannot measure differently.

Examples::

    >>> import numpy as np
    >>> m = np.zeros((9, 9), bool); m[1:6, 1:6] = True; m[3, 3] = False; m[8, 8] = True
    >>> c = clean_mask(m)
    >>> int(c.sum()), bool(c[3, 3]), bool(c[8, 8])
    (25, True, False)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

_EIGHT = np.ones((3, 3), bool)


def as_binary(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """``mask`` as a 2-D boolean array.

    Accepts booleans, or numbers whose only values are {0, 1} or {0, 255} (a PNG mask).

    Raises:
        ValueError: ``mask`` is not 2-D, or holds other values (e.g. a multi-class label
            map: extract the LV cavity, label 1, first); the message names ``name``.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D mask, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    values = set(np.unique(arr).tolist())
    if not (values <= {0, 1} or values <= {0, 255}):
        shown = sorted(values)[:6]
        raise ValueError(f"{name}: expected a binary mask (values 0/1 or 0/255), got values "
                         f"{shown}; for a label map pass (label == 1) for the LV cavity")
    return arr > 0


def check_spacing(spacing: tuple[float, float], name: str = "spacing") -> tuple[float, float]:
    """``spacing`` as two positive finite floats ``(row_mm, col_mm)``, or a ValueError."""
    try:
        row, col = (float(s) for s in spacing)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected (row_mm, col_mm), got {spacing!r}") from err
    if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
        raise ValueError(f"{name}: pixel sizes must be positive and finite, got {spacing!r}")
    return row, col


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """The post-processing before measuring: the largest 8-connected component, holes filled.

    Args:
        mask: (H, W) binary mask (bool, 0/1 or 0/255).

    Returns:
        (H, W) bool; all False when ``mask`` is empty. Ties between components of equal
        size keep the one met first in row-major order.
    """
    binary = as_binary(mask)
    labels, count = ndimage.label(binary, structure=_EIGHT)
    out = np.zeros_like(binary)
    if count == 0:
        return out
    sizes = np.bincount(labels.ravel())[1:]
    keep = int(np.argmax(sizes)) + 1
    box = ndimage.find_objects(labels)[keep - 1]  # fill holes inside its bounding box only
    out[box] = ndimage.binary_fill_holes(labels[box] == keep)
    return out


def touches_border(mask: np.ndarray) -> bool:
    """Whether any pixel of ``mask`` lies on the first or last row or column."""
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def resample_isotropic(mask: np.ndarray, spacing: tuple[float, float]
                       ) -> tuple[np.ndarray, tuple[float, float]]:
    """Resample ``mask`` by nearest neighbour so that its pixels are square.

    The coarser axis is stretched to the finer pixel size: the new shape is the old shape
    times ``spacing / min(spacing)``, rounded. Each new pixel takes the old pixel under its
    centre.

    Returns:
        The resampled mask and its exact pixel size ``(row_mm, col_mm)`` (the physical
        extent over the new pixel count; equal to ``min(spacing)`` up to the rounding of
        the shape).
    """
    row_mm, col_mm = spacing
    finest = min(row_mm, col_mm)
    height, width = mask.shape
    new_h = max(1, round(height * row_mm / finest))
    new_w = max(1, round(width * col_mm / finest))
    rows = np.minimum(((np.arange(new_h) + 0.5) * height / new_h).astype(int), height - 1)
    cols = np.minimum(((np.arange(new_w) + 0.5) * width / new_w).astype(int), width - 1)
    out = mask[rows[:, None], cols[None, :]]
    return out, (height * row_mm / new_h, width * col_mm / new_w)


def outer_contour(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The outer contour of a non-empty mask, as an (N, 2) polygon in mm, (row, col) order.

    The contour is the 0.5 level line between pixel centres (scikit-image's marching
    squares), so a run of n pixels measures n pixel widths across. The polygon is closed
    implicitly (its last vertex joins its first); of several lines, the longest is kept.
    """
    padded = np.pad(mask.astype(np.float32), 1)
    lines = find_contours(padded, 0.5)
    line = max(lines, key=len)
    if np.allclose(line[0], line[-1]):
        line = line[:-1]
    return (line - 1.0) * np.asarray(spacing, dtype=float)
