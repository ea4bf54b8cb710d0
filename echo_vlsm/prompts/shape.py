"""The shape word of a structure's mask, for prompt P7 (P6 of synthetic images).

The study asked a visual-question-answering model "What is the shape of the <structure>
enclosed in the green box?" and put its answer in the prompt (answers seen: circle, oval,
triangle, square, rectangle). The default here is deterministic geometry instead: the mask's
largest outer contour is measured and matched against the five shapes.

Measures (``shape_measures``), on a sub-pixel contour (the mask's bounding box, padded,
upsampled bilinearly to about 256 px and cut at 0.5, so staircase pixels do not distort small
shapes):

- ``rect_fill``: area / area of the minimum-area (rotated) rectangle - 1 for squares and
  rectangles, pi/4 for disks and ellipses, 1/2 for any triangle;
- ``triangle_fill``: area / area of the minimum enclosing triangle - 1 for triangles, about
  0.6 for ellipses, 1/2 for rectangles;
- ``ellipse_fill``: area / area of the least-squares ellipse (``cv2.fitEllipse``) - 1 for
  ellipses, about 0.9 for rectangles, 0.69 for triangles;
- ``rect_aspect``, ``ellipse_aspect``: long / short side (axis) of those fits;
- ``circularity`` 4 pi A / P^2 and ``solidity`` (area / convex hull area), reported only.

Classification: the nearest of three families in (rect_fill, triangle_fill, ellipse_fill)
space - ellipse (pi/4, 0.6, 1), box (1, 1/2, 0.9), triangle (1/2, 1, 0.69) - then within a
family the aspect ratio splits circle / oval and square / rectangle at sqrt(2). Shapes a
few pixels across cannot be told apart reliably; from about 20 px on, drawn shapes at any
rotation are classified correctly (tests/test_shape.py).

Myocardium (``structure="myo"``): its mask is a wall around the LV cavity, open at the
mitral plane, so its own contour is a thin U whose fill ratios are about 0.2-0.4 for every
family and the nearest family is arbitrary (all phantom myocardia came out "triangle").
For it the measures are taken on the filled outer outline instead: the convex hull of the
whole mask (every component), which closes the opening along the mitral plane and fills
the cavity, so the word describes the wall's outer shape (phantom: mostly circle, some oval
and triangle, as for the LV cavity and wall together). Other structures are measured as
they are (their largest component; holes never count, the outer contour is measured).

This module is the geometry only; ``echo_vlsm.prompts.shape_of`` (``shape_backends.py``)
chooses between it and a VQA model (``echo_vlsm.prompts.vqa``).

Examples::

    >>> import cv2, numpy as np
    >>> m = np.zeros((64, 64), np.uint8)
    >>> geometric_shape(cv2.circle(m, (32, 32), 20, 255, -1))
    'circle'
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from echo_vlsm.structures import check_structure

SHAPES: tuple[str, ...] = ("circle", "oval", "triangle", "square", "rectangle")

# Family prototypes in (rect_fill, triangle_fill, ellipse_fill).
_FAMILIES: dict[str, tuple[float, float, float]] = {
    "ellipse": (math.pi / 4, 0.60, 1.0),
    "box": (1.0, 0.5, 0.90),
    "triangle": (0.5, 1.0, 0.69),
}
_ASPECT_SPLIT = math.sqrt(2.0)  # between 1:1 and 2:1
_TARGET_PX = 256  # contour resolution: the short side of the box is upsampled to about this


def as_binary(mask, name: str = "mask") -> np.ndarray:
    """A 2-D boolean or numeric mask as booleans (``mask > 0``); errors name ``name``."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D mask (H, W), got shape {m.shape}")
    if m.dtype == bool:
        return m
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise ValueError(f"{name}: expected a boolean or numeric mask, got dtype {m.dtype}")
    return m > 0


def _largest_contour(mask, name: str = "mask", hull: bool = False) -> np.ndarray:
    """The largest outer contour of ``mask > 0``, sub-pixel (see the module docstring), in
    units of upsampled pixels; with ``hull`` the contour of the filled convex hull of all
    components (the myocardium's outer outline)."""
    m = as_binary(mask, name)
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        raise ValueError(
            f"{name}: the mask is empty (no pixel > 0); a shape needs at least one foreground pixel"
        )
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(m[y0:y1, x0:x1].astype(np.float32), 2)
    short = max(1, min(y1 - y0, x1 - x0))
    k = int(min(16, max(1, math.ceil(_TARGET_PX / short))))
    h, w = crop.shape
    up = cv2.resize(crop, (w * k, h * k), interpolation=cv2.INTER_LINEAR)
    binary: np.ndarray = (up >= 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if hull:
        outline = cv2.convexHull(np.concatenate(contours))
        binary = cv2.fillPoly(np.zeros_like(binary), [outline], 1)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    # largest by area; ties broken by position so the choice is deterministic
    return max(contours, key=lambda c: (cv2.contourArea(c), -int(c[0, 0, 1]), -int(c[0, 0, 0])))


def shape_measures(mask, structure: str | None = None) -> dict[str, float]:
    """Contour measures of the mask's largest component, or for ``structure="myo"`` of its
    filled outer outline (see the module docstring); ``area_px`` counts the mask's pixels."""
    if structure is not None:
        check_structure(structure)
    c = _largest_contour(mask, hull=structure == "myo")
    area = float(cv2.contourArea(c))
    perimeter = float(cv2.arcLength(c, True))
    hull_area = float(cv2.contourArea(cv2.convexHull(c)))
    (_, _), (rw, rh), _ = cv2.minAreaRect(c)
    rect_area = float(rw * rh)
    tri_area, _ = cv2.minEnclosingTriangle(c.astype(np.float32))
    if len(c) >= 5:
        (_, _), (ea, eb), _ = cv2.fitEllipse(c)
    else:  # too few points to fit: the rectangle's inscribed ellipse
        ea, eb = rw, rh
    ell_area = math.pi * ea * eb / 4.0

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b > 0 else 0.0

    return {
        "area_px": float(as_binary(mask).sum()),
        "circularity": ratio(4 * math.pi * area, perimeter**2),
        "solidity": ratio(area, hull_area),
        "rect_fill": ratio(area, rect_area),
        "triangle_fill": ratio(area, float(tri_area)),
        "ellipse_fill": ratio(area, ell_area),
        "rect_aspect": ratio(max(rw, rh), min(rw, rh)) if min(rw, rh) > 0 else float("inf"),
        "ellipse_aspect": ratio(max(ea, eb), min(ea, eb)) if min(ea, eb) > 0 else float("inf"),
    }


def classify_measures(measures: dict[str, float]) -> str:
    """One of ``SHAPES`` from ``shape_measures`` (nearest family, then aspect ratio)."""
    v = np.array([measures["rect_fill"], measures["triangle_fill"], measures["ellipse_fill"]])
    dist = {fam: float(np.sum((v - np.array(p)) ** 2)) for fam, p in _FAMILIES.items()}
    family = min(_FAMILIES, key=lambda f: dist[f])  # dict order breaks exact ties
    if family == "triangle":
        return "triangle"
    if family == "ellipse":
        return "circle" if measures["ellipse_aspect"] < _ASPECT_SPLIT else "oval"
    return "square" if measures["rect_aspect"] < _ASPECT_SPLIT else "rectangle"


def geometric_shape(mask, structure: str | None = None) -> str:
    """The shape word of a mask by geometry: one of ``SHAPES`` from ``shape_measures``
    (the filled outer outline for ``structure="myo"``, see the module docstring)."""
    return classify_measures(shape_measures(mask, structure))
