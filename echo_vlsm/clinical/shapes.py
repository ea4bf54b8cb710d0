"""Masks of known volume: apical sections of a half-ellipsoid, for testing the method of discs.

The LV is modelled as half of an ellipsoid, cut through its centre perpendicular to its long
axis (the base): semi-axes L (base to apex) and A, B (the half-widths at the base seen in
the 2-chamber and 4-chamber planes). Its volume is 2/3 * pi * A * B * L; each apical view
is a half-ellipse of semi-axes L and A (or B).

Twenty discs sampled at fractions 0, 1/20, ..., 19/20 of L from the base (CAMUS's
positions) give pi * A * B * L * (1/20) * sum(1 - (i/20)^2) = 0.69125 * pi * A * B * L: the
exact volume times 1.0369 (a left Riemann sum of a decreasing profile).

Examples::

    >>> round(half_ellipsoid_ml(80, 25, 25), 2), round(discs_ml(80, 25, 25), 2)
    (104.72, 108.58)
    >>> m = half_ellipse_mask((400, 300), (0.3, 0.25), 80, 25, tilt_deg=15)
    >>> m.shape, m.dtype.name, bool(m[0].any())
    ((400, 300), 'bool', False)
"""

from __future__ import annotations

import math

import numpy as np

#: (1/20) * sum_{i<20} (1 - (i/20)^2): twenty discs at CAMUS's positions on a half-ellipsoid.
DISC_FACTOR_20 = 1 - sum(i * i for i in range(20)) / 20**3


def half_ellipsoid_ml(long_mm: float, a_mm: float, b_mm: float) -> float:
    """Volume (mL) of a half-ellipsoid with semi-axes ``long_mm`` and base semi-axes
    ``a_mm``, ``b_mm``."""
    return 2 / 3 * math.pi * a_mm * b_mm * long_mm / 1000.0


def discs_ml(long_mm: float, a_mm: float, b_mm: float, height_mm: float | None = None) -> float:
    """What 20 discs at fractions i/20 of the long axis measure on that half-ellipsoid, with
    disc height ``height_mm`` (default ``long_mm / 20``)."""
    h = long_mm / 20 if height_mm is None else height_mm
    return math.pi * a_mm * b_mm * 20 * h * DISC_FACTOR_20 / 1000.0


def half_ellipse_mask(shape: tuple[int, int], spacing: tuple[float, float], long_mm: float,
                      half_width_mm: float, *, tilt_deg: float = 0.0,
                      base_mm: tuple[float, float] | None = None) -> np.ndarray:
    """An apical view of the half-ellipsoid: a boolean mask of a half-ellipse.

    Args:
        shape: (H, W) of the mask.
        spacing: pixel size ``(row_mm, col_mm)``; pixel (r, c) has its centre at
            (r * row_mm, c * col_mm).
        long_mm: base-to-apex semi-axis L; the apex points up (to row 0), as in CAMUS.
        half_width_mm: the half-width at the base (A or B).
        tilt_deg: rotation of the long axis from the vertical (positive: apex to the right).
        base_mm: (row, col) of the base centre in mm; default: centred across, at 85 % of
            the height.

    Returns:
        (H, W) bool; a pixel is in when its centre is inside the half-ellipse.
    """
    height, width = shape
    row_mm, col_mm = spacing
    if base_mm is None:
        base_mm = (0.85 * (height - 1) * row_mm, 0.5 * (width - 1) * col_mm)
    t = math.radians(tilt_deg)
    axis = np.array([-math.cos(t), math.sin(t)])  # base -> apex, (row, col)
    normal = np.array([math.sin(t), math.cos(t)])
    rows = np.arange(height)[:, None] * row_mm - base_mm[0]
    cols = np.arange(width)[None, :] * col_mm - base_mm[1]
    along = rows * axis[0] + cols * axis[1]
    across = rows * normal[0] + cols * normal[1]
    return (along >= 0) & ((along / long_mm) ** 2 + (across / half_width_mm) ** 2 <= 1)
