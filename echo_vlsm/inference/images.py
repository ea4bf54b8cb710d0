"""Reading one echo image to segment: PNG/JPEG, CAMUS MetaImage/NIfTI, 2-D DICOM, or an array.

Every reader returns an (H, W) uint8 gray image, the input the study's models were trained
on; colour images become gray, and a bad file raises :class:`ImageError` naming the file
and saying what would be accepted.

Examples::

    >>> import numpy as np
    >>> as_gray(np.full((4, 6, 3), 200, np.uint8)).shape
    (4, 6)
    >>> int(as_gray(np.ones((2, 2), np.float32)).max())
    255
    >>> stem_of("scan/patient0001_2CH_ED.nii.gz")
    'patient0001_2CH_ED'
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from echo_vlsm.data.headers import CamusFormatError
from echo_vlsm.data.headers import read_image as read_camus_image
from echo_vlsm.errors import PathError

#: The file types :func:`read_image` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".mhd", ".nii", ".nii.gz", ".dcm")
_ACCEPTED = ("accepted: a 2-D gray or colour PNG/JPEG, a CAMUS .mhd or .nii(.gz) image, a 2-D "
             "DICOM (.dcm, with pydicom installed), or an (H, W) / (H, W, 3) array")


class ImageError(PathError):
    """An image that cannot be segmented; the message names the file and the problem."""


def stem_of(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``.nii.gz`` counts as one)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def as_gray(array, source: str | os.PathLike = "<array>") -> np.ndarray:
    """An (H, W) uint8 gray image from an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array.

    uint8 passes as it is; bool and floats in [0, 1] are scaled by 255; other integer or
    float images are scaled from their own minimum and maximum to 0..255."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        if a.shape[2] == 1:
            a = a[..., 0]
        else:
            a = as_gray(a[..., :3].astype(np.float32).mean(axis=2)
                        if a.dtype != np.uint8 else
                        cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY),
                        source)
    if a.ndim != 2:
        raise ImageError(source, f"expected a 2-D image, got an array of shape {a.shape}; "
                                 f"{_ACCEPTED}")
    if min(a.shape) < 2:
        raise ImageError(source, f"image of {a.shape[1]}x{a.shape[0]} pixels is too small")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype.kind not in "iuf":
        raise ImageError(source, f"unsupported pixel type {a.dtype}; {_ACCEPTED}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageError(source, "image holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if a.dtype.kind == "f" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    scaled = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _read_raster(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageError(path, f"cannot decode the image; {_ACCEPTED}")
    if array.ndim == 3:  # OpenCV decodes to BGR(A)
        code = cv2.COLOR_BGR2GRAY if array.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        array = cv2.cvtColor(array, code)
    return as_gray(array, path)


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ImageError(path, "reading DICOM needs pydicom (pip install pydicom); or convert "
                               "the image to PNG") from None
    try:
        array = pydicom.dcmread(str(path)).pixel_array
    except Exception as err:  # noqa: BLE001 - name the file whatever pydicom says
        raise ImageError(path, f"unreadable DICOM ({type(err).__name__}: {err})") from err
    if array.ndim == 3 and array.shape[-1] not in (3, 4):
        if array.shape[0] != 1:
            raise ImageError(path, f"a DICOM of {array.shape[0]} frames; pass a 2-D image "
                                   "(one frame)")
        array = array[0]
    return as_gray(array, path)


def read_image(image, source: str | os.PathLike | None = None) -> np.ndarray:
    """An image to segment as (H, W) uint8: a path (see ``IMAGE_SUFFIXES``) or an array."""
    if not isinstance(image, (str, os.PathLike)):
        return as_gray(image, source or "<array>")
    path = Path(image)
    if not path.is_file():
        raise ImageError(path, "no such image file" if not path.exists() else "not a file")
    name = path.name.lower()
    if name.endswith((".mhd", ".nii", ".nii.gz")):
        try:
            array, _ = read_camus_image(path)
        except CamusFormatError as err:
            raise ImageError(path, err.problem) from err
        return as_gray(array, path)
    if name.endswith(".dcm"):
        return _read_dicom(path)
    return _read_raster(path)
