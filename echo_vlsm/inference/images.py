"""Reading one echo image to segment: PNG/JPEG, CAMUS MetaImage/NIfTI, 2-D DICOM, or an array.

Every reader returns an (H, W) uint8 gray image, the input the study's models were trained
on; colour images become gray, and a bad file raises :class:`ImageError` naming the file
and saying what would be accepted. Files come from anywhere: each is refused from its header,
before its pixels are read, when it declares more than ``MAX_IMAGE_PIXELS`` (see
:func:`echo_vlsm.imaging.read_raster` for PNG/JPEG; the header of a MetaImage, NIfTI or DICOM
is read first too).

Examples::

    >>> import numpy as np
    >>> as_gray(np.full((4, 6, 3), 200, np.uint8)).shape
    (4, 6)
    >>> int(as_gray(np.ones((2, 2), np.float32)).max())
    255
    >>> as_gray(np.array([[0, 1], [1, 0]], np.int64)).tolist()  # integers are intensities
    [[0, 1], [1, 0]]
    >>> stem_of("scan/patient0001_2CH_ED.nii.gz")
    'patient0001_2CH_ED'
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from echo_vlsm.data.headers import CamusFormatError, read_header
from echo_vlsm.data.headers import read_image as read_camus_image
from echo_vlsm.imaging import MAX_IMAGE_PIXELS, ImageError, check_image_size, read_raster

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "ImageError", "as_gray", "read_image",
           "stem_of"]

#: The file types :func:`read_image` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".mhd", ".nii", ".nii.gz", ".dcm")
_ACCEPTED = ("accepted: a 2-D gray or colour PNG/JPEG, a CAMUS .mhd or .nii(.gz) image, a 2-D "
             "DICOM (.dcm, with pydicom installed), or an (H, W) / (H, W, 3) array")


def stem_of(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``.nii.gz`` counts as one)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def as_gray(array, source: str | os.PathLike = "<array>") -> np.ndarray:
    """An (H, W) uint8 gray image from an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array
    (RGB(A): luma 0.299 R + 0.587 G + 0.114 B, alpha dropped).

    uint8 passes as it is; bool and floats in [0, 1] are scaled by 255; integers in 0..255
    are taken as they are (their values are intensities; an integer image of 0s and 1s stays
    nearly black); other integer or float images are scaled from their own minimum and
    maximum to 0..255 (a 16-bit image, whatever range its values use). At most
    ``MAX_IMAGE_PIXELS`` pixels."""
    a = np.asarray(array)
    kind = a.dtype.kind  # of the pixels given, before any conversion
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., 0] if a.shape[2] == 1 else _luma(a[..., :3])
    if a.ndim != 2:
        raise ImageError(source, f"expected a 2-D image, got an array of shape {a.shape}; "
                                 f"{_ACCEPTED}")
    if min(a.shape) < 2:
        raise ImageError(source, f"image of {a.shape[1]}x{a.shape[0]} pixels is too small")
    check_image_size(source, a.shape[1], a.shape[0], array=True)
    if kind == "b":
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if kind not in "iuf":
        raise ImageError(source, f"unsupported pixel type {a.dtype}; {_ACCEPTED}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ImageError(source, "image holds NaN or infinite values")
    lo, hi = a.min(), a.max()
    if kind == "f" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    elif kind in "iu" and lo >= 0 and hi <= 255:
        return np.rint(a).astype(np.uint8)  # rint: the luma of an integer RGB image
    lo, hi = float(lo), float(hi)
    scaled = (a.astype(np.float64) - lo) / (hi - lo) * 255 if hi > lo else np.zeros(a.shape)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Gray of an (H, W, 3) RGB array: ITU-R BT.601 luma, as OpenCV computes it for uint8."""
    if rgb.dtype == np.uint8:
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    if rgb.dtype.kind == "b":
        rgb = rgb.astype(np.uint8)
    weights = np.array([0.299, 0.587, 0.114], np.float64 if rgb.dtype.itemsize > 4 else np.float32)
    return rgb @ weights


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ImageError(path, "reading DICOM needs pydicom (pip install pydicom); or convert "
                               "the image to PNG") from None
    try:
        header = pydicom.dcmread(str(path), stop_before_pixels=True)
        frames = int(getattr(header, "NumberOfFrames", 1) or 1)
        rows, cols = int(getattr(header, "Rows", 0) or 0), int(getattr(header, "Columns", 0) or 0)
    except Exception as err:  # noqa: BLE001 - name the file whatever pydicom says
        raise ImageError(path, f"unreadable DICOM ({type(err).__name__}: {err})") from err
    if frames != 1:
        raise ImageError(path, f"a DICOM of {frames} frames; pass a 2-D image (one frame)")
    check_image_size(path, cols, rows)
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
            (rows, cols), _ = read_header(path)  # the header only: 2-D, and its size
            check_image_size(path, cols, rows)
            array, _ = read_camus_image(path)
        except CamusFormatError as err:
            raise ImageError(err.path, err.problem) from err
        return as_gray(array, path)
    if name.endswith(".dcm"):
        return _read_dicom(path)
    return as_gray(read_raster(path), path)
