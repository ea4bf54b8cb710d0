"""Resizing of images and label maps to a square side, the one rule every step uses (floor 1).

Images shrink by area averaging (no aliasing of the speckle) and grow bilinearly, per axis;
label maps and masks are resampled by nearest neighbour, so no new label value appears.

Examples::

    >>> import numpy as np
    >>> resize_image(np.full((50, 10), 77, np.uint8), 25).shape
    (25, 25)
    >>> sorted(np.unique(resize_label(np.array([[0, 1], [2, 3]], np.uint8), 5)).tolist())
    [0, 1, 2, 3]
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W) uint8 image to (size, size): per axis, area averaging where it
    shrinks and bilinear interpolation where it grows (one rounding, in float32)."""
    out = image.astype(np.float32)
    h, w = out.shape
    if h != size:
        interp = cv2.INTER_AREA if size < h else cv2.INTER_LINEAR
        out = cv2.resize(out, (w, size), interpolation=interp)
    if w != size:
        interp = cv2.INTER_AREA if size < w else cv2.INTER_LINEAR
        out = cv2.resize(out, (size, size), interpolation=interp)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_label(label: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W) label map to (size, size) by nearest neighbour (pixel centres)."""
    if label.shape == (size, size):
        return label.copy()
    return cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
