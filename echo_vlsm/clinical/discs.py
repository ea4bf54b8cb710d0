"""One apical view of the LV: mitral plane, long axis and the 20 disc diameters (method of discs).

The geometry follows CAMUS's published evaluation (Leclerc et al., IEEE TMI 2019), written
anew: the mask is cleaned (``clean_mask``), resampled to square pixels by nearest neighbour,
and its outer contour taken. The mitral plane is the longest chord between two contour
points whose direction lies within 45 degrees of the image rows (horizontal) and whose
contour stretch between them stays within ``chord_tolerance_mm`` of the chord; the base
point is the middle (by arc length) of that stretch; the apex is the contour point farthest
from the base point, at distance L (the long axis). Diameters are measured perpendicular to
the long axis at fractions 0, 1/20, ..., 19/20 of L from the base point, each from the
contour crossing nearest the axis on one side to the nearest on the other. The first is
taken ``chord_tolerance_mm`` inside the base (at most L/40): the base contour may wander that
far from the chord, and a line along a jagged base would cross it at random.

All lengths are in mm; everything runs on the contour polygon, so the result does not depend
on which pixel grid the mask was drawn on beyond the staircase of its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echo_vlsm.clinical.masks import (
    as_binary,
    check_spacing,
    clean_mask,
    outer_contour,
    resample_isotropic,
    touches_border,
)

#: The number of discs (CAMUS, ASE): 20.
N_DISCS = 20
#: How far the contour between the mitral chord's ends may stray from the chord, in mm
#: (CAMUS's script allows 8 pixels of its finest native grid, about 0.15 mm each).
CHORD_TOLERANCE_MM = 1.25
#: The shortest chord accepted as a mitral plane, in mm.
MIN_CHORD_MM = 5.0
#: The smallest cleaned mask that is measured, in mm2 (an adult LV cavity is 10-50 cm2).
MIN_AREA_MM2 = 100.0

# Reason codes; a reason reads "<code> (<detail>)".
EMPTY = "empty"
TINY = "tiny"
BORDER = "border"
NO_CHORD = "no mitral chord"


@dataclass(frozen=True)
class ViewMeasurement:
    """What one apical LV mask measures. On failure every number is NaN and ``reason`` says
    why (its first word(s) one of ``EMPTY``, ``TINY``, ``BORDER``, ``NO_CHORD``)."""

    diameters_mm: tuple[float, ...]  # N_DISCS diameters, base to apex
    long_axis_mm: float  # base point to apex
    mitral_chord_mm: float  # length of the mitral chord
    area_mm2: float  # area of the cleaned mask
    base_mm: tuple[float, float]  # (row, col) of the base point, mm from pixel (0, 0)'s centre
    apex_mm: tuple[float, float]  # (row, col) of the apex
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _failed(reason: str, area_mm2: float = float("nan")) -> ViewMeasurement:
    nan = float("nan")
    return ViewMeasurement((nan,) * N_DISCS, nan, nan, area_mm2, (nan, nan), (nan, nan),
                           reason)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _ray_arcs(points: np.ndarray, tol: float) -> np.ndarray:
    """``ok[i, m - 1]``: the contour from vertex i forward to vertex i + m stays within
    ``tol`` of the ray from vertex i through vertex i + m.

    All starts advance together; each keeps the interval of ray directions that every
    vertex passed so far allows (a vertex at distance r > tol allows the directions within
    asin(tol / r) of its own); a start whose interval is empty drops out, and the loop ends
    when none is left.
    """
    n = len(points)
    start = np.arange(n)
    center = np.zeros(n)
    half = np.full(n, np.inf)  # inf: no constraint yet
    hits: list[tuple[int, np.ndarray]] = []
    for m in range(1, n):
        vec = points[(start + m) % n] - points[start]
        dist = np.hypot(vec[:, 0], vec[:, 1])
        near = center + _wrap(np.arctan2(vec[:, 0], vec[:, 1]) - center)
        hits.append((m, start[np.abs(near - center) <= half + 1e-9]))
        width = np.arcsin(np.minimum(tol / np.maximum(dist, 1e-12), 1.0))
        free = np.isinf(half)
        lo = np.where(free, near - width, np.maximum(center - half, near - width))
        hi = np.where(free, near + width, np.minimum(center + half, near + width))
        update = dist > tol
        center = np.where(update, (lo + hi) / 2, center)
        half = np.where(update, (hi - lo) / 2, half)
        keep = ~update | (hi >= lo)
        start, center, half = start[keep], center[keep], half[keep]
        if not len(start):
            break
    ok = np.zeros((n, len(hits)), bool)
    for m, starts in hits:
        ok[starts, m - 1] = True
    return ok


def mitral_chord(contour: np.ndarray, tol: float = CHORD_TOLERANCE_MM,
                 min_chord: float = MIN_CHORD_MM) -> tuple[int, int] | None:
    """The mitral chord of a closed contour (N, 2) in mm: ``(i, m)`` such that the stretch
    runs from vertex i forward over m edges, or None when no chord qualifies.

    A chord qualifies when its direction is within 45 degrees of the rows (|drow| <= |dcol|),
    it is at least ``min_chord`` long, and the contour stretch between its ends stays within
    ``tol`` of it (checked as within ``tol`` of the ray from either end through the other).
    The longest qualifying chord wins (the first found, by start vertex then length of
    stretch, among equals). The search runs on vertices about ``tol / 2`` apart.
    """
    full = len(contour)
    keep = _every(contour, tol / 2)
    contour = contour[keep]
    n = len(contour)
    forward = _ray_arcs(contour, tol)
    backward = _ray_arcs(contour[::-1], tol)
    steps = min(forward.shape[1], backward.shape[1])
    starts = np.arange(n)[:, None]
    ends = (starts + np.arange(1, steps + 1)[None, :]) % n  # (n, steps)
    # backward[k, m - 1] starts at reversed vertex k = original vertex n - 1 - k.
    ok = forward[:, :steps] & backward[n - 1 - ends, np.arange(steps)[None, :]]
    vec = contour[ends] - contour[:, None, :]
    ok &= np.abs(vec[..., 0]) <= np.abs(vec[..., 1])
    length = np.where(ok, np.hypot(vec[..., 0], vec[..., 1]), -1.0)
    i, m = np.unravel_index(int(np.argmax(length)), length.shape)
    if length[i, m] < min_chord:
        return None
    first, last = int(keep[i]), int(keep[(i + m + 1) % n])
    return first, (last - first) % full


def _every(contour: np.ndarray, step: float) -> np.ndarray:
    """Indices of contour vertices at least ``step`` apart along the contour (the chord
    search runs on these: the same answer within ``step``, several times faster)."""
    seg = np.hypot(*np.diff(contour, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    marks = np.searchsorted(cum, np.arange(0.0, cum[-1], step))
    return np.unique(np.minimum(marks, len(contour) - 1))


def _arc_midpoint(contour: np.ndarray, start: int, steps: int) -> np.ndarray:
    """The point halfway, by arc length, along the contour from ``start`` over ``steps``."""
    idx = (start + np.arange(steps + 1)) % len(contour)
    stretch = contour[idx]
    seg = np.hypot(*np.diff(stretch, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    half = cum[-1] / 2
    k = min(int(np.searchsorted(cum, half, side="right")) - 1, steps - 1)
    frac = (half - cum[k]) / seg[k] if seg[k] > 0 else 0.0
    return stretch[k] + frac * (stretch[k + 1] - stretch[k])


def chord_lengths(contour: np.ndarray, points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Length of the polygon's interior along the unit vector ``normal`` through each of
    ``points`` (K, 2): from the nearest contour crossing on one side to the nearest on the
    other; 0 where a point lies outside the polygon.

    An edge crosses the line when its ends lie on strictly different sides, a vertex on the
    line counting as below it, so the parity of the crossings is exact even when the line
    runs through vertices.
    """
    ends = np.roll(contour, -1, axis=0)
    line = np.array([normal[1], -normal[0]])  # unit vector across the line
    side_a = (contour[None] - points[:, None]) @ line  # (K, N) signed distances
    side_b = (ends[None] - points[:, None]) @ line
    hit = (side_a > 0) != (side_b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(hit, side_a / (side_a - side_b), 0.0)
    cross = contour[None] + frac[..., None] * (ends - contour)[None]  # (K, N, 2)
    t = (cross - points[:, None]) @ normal
    ahead = np.where(hit & (t > 0), t, np.inf)
    behind = np.where(hit & (t <= 0), -t, np.inf)
    inside = (np.sum(hit & (t > 0), axis=1) % 2) == 1
    width = ahead.min(axis=1) + behind.min(axis=1)
    return np.where(inside & np.isfinite(width), width, 0.0)


def disc_diameters(mask: np.ndarray, spacing: tuple[float, float], *,
                   chord_tolerance_mm: float = CHORD_TOLERANCE_MM,
                   min_chord_mm: float = MIN_CHORD_MM,
                   min_area_mm2: float = MIN_AREA_MM2,
                   name: str = "mask") -> ViewMeasurement:
    """Measure one apical LV mask for the method of discs.

    Args:
        mask: (H, W) binary LV cavity mask (bool, 0/1 or 0/255).
        spacing: pixel size ``(row_mm, col_mm)``.
        chord_tolerance_mm, min_chord_mm: the mitral-chord rule (``mitral_chord``).
        min_area_mm2: a cleaned mask smaller than this is not measured.
        name: how errors name the mask.

    Returns:
        A ``ViewMeasurement``: ``N_DISCS`` diameters (mm) from base to apex and the long axis
        (mm); or NaNs and a reason when the mask is empty, tiny, touches the image border
        or has no mitral chord. Never raises for a mask's shape or content.

    Raises:
        ValueError: ``mask`` is not a 2-D binary array or ``spacing`` is not two positive
            numbers (a caller's mistake, not a measurement failure).

    Examples::

        >>> import numpy as np
        >>> rr, cc = np.mgrid[:200, :120]
        >>> half_ellipse = ((rr - 180) / 150) ** 2 + ((cc - 60) / 40) ** 2 <= 1
        >>> view = disc_diameters(half_ellipse & (rr <= 180), (0.5, 0.5))
        >>> round(view.long_axis_mm, 1), round(view.diameters_mm[0], 1), view.reason
        (75.5, 39.5, None)
    """
    binary = as_binary(mask, name)
    spacing = check_spacing(spacing, f"{name} spacing")
    cleaned = clean_mask(binary)
    if not cleaned.any():
        return _failed(f"{EMPTY} (no foreground pixel)")
    area = float(cleaned.sum()) * spacing[0] * spacing[1]
    if area < min_area_mm2:
        return _failed(f"{TINY} (largest component {area:.1f} mm2 < {min_area_mm2:g} mm2)",
                       area)
    if touches_border(cleaned):
        return _failed(f"{BORDER} (the mask touches the image border: cut off)", area)
    iso, iso_spacing = resample_isotropic(cleaned, spacing)
    contour = outer_contour(iso, iso_spacing)
    found = mitral_chord(contour, chord_tolerance_mm, min_chord_mm)
    if found is None:
        return _failed(f"{NO_CHORD} (no contour stretch within {chord_tolerance_mm:g} mm of "
                       f"a chord of at least {min_chord_mm:g} mm, within 45 degrees of "
                       "horizontal)", area)
    start, steps = found
    chord = float(np.hypot(*(contour[(start + steps) % len(contour)] - contour[start])))
    base = _arc_midpoint(contour, start, steps)
    dist = np.hypot(*(contour - base).T)
    apex = contour[int(np.argmax(dist))]
    length = float(dist.max())
    axis = (apex - base) / length
    normal = np.array([-axis[1], axis[0]])
    offsets = np.arange(N_DISCS) / N_DISCS * length
    offsets[0] = min(chord_tolerance_mm, length / (2 * N_DISCS))
    diameters = chord_lengths(contour, base + offsets[:, None] * axis, normal)
    return ViewMeasurement(tuple(float(d) for d in diameters), length, chord, area,
                           (float(base[0]), float(base[1])), (float(apex[0]), float(apex[1])))
