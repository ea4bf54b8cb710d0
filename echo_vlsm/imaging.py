"""Resizing of images and label maps to a square side, the one rule every step uses, and the
safe reading of PNG/JPEG files that come from elsewhere (floor 1).

Images shrink by area averaging (no aliasing of the speckle) and grow bilinearly, per axis;
label maps and masks are resampled by nearest neighbour, so no new label value appears.

``read_raster`` decodes a PNG or JPEG only after its header has passed ``check_image_size``:
an image declaring more than ``MAX_IMAGE_PIXELS`` is refused before any pixel is decoded (a
PNG of 4 MB can declare 30,000 x 30,000 pixels, 900 MB once decoded). It applies the EXIF
orientation, drops alpha, resolves palettes and CMYK to RGB, keeps 16 bits as ``uint16``, and
a truncated or damaged file raises :class:`ImageError` naming it.

Examples::

    >>> import numpy as np
    >>> resize_image(np.full((50, 10), 77, np.uint8), 25).shape
    (25, 25)
    >>> sorted(np.unique(resize_label(np.array([[0, 1], [2, 3]], np.uint8), 5)).tolist())
    [0, 1, 2, 3]
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from echo_vlsm.errors import PathError

#: The most pixels an image from elsewhere may declare: 4096 x 4096 (16.8 megapixels). Echo
#: frames are at most a few thousand pixels a side (CAMUS: under 1,200; a 4K screen capture:
#: 8.3 megapixels); anything larger is refused from its header, before decoding.
MAX_IMAGE_PIXELS = 4096 * 4096
#: The file formats ``read_raster`` decodes (Pillow's names; a JPEG with extra pictures, as
#: some cameras write, opens as an MPO: its first picture is read).
RASTER_FORMATS = ("PNG", "JPEG")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(PathError):
    """An image that cannot be read or segmented; the message names the file and the problem."""


def check_image_size(source: str | os.PathLike, width: int, height: int,
                     array: bool = False) -> None:
    """Raise :class:`ImageError` naming ``source`` unless ``width`` x ``height`` is a
    non-empty image of at most ``MAX_IMAGE_PIXELS`` pixels (``array``: an array in memory,
    not a file's header).

    >>> check_image_size("frame.png", 1024, 768)  # passes
    >>> try:
    ...     check_image_size("bomb.png", 30000, 30000)
    ... except ImageError as err:
    ...     print(str(err)[:60])
    bomb.png: its header declares 30000 x 30000 pixels (900.0 me
    """
    what = "the array has" if array else "its header declares"
    if width < 1 or height < 1:
        raise ImageError(source, f"{what} {width} x {height} pixels: an empty image")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            source, f"{what} {width} x {height} pixels ({width * height / 1e6:.1f} megapixels), "
            f"more than the {MAX_IMAGE_PIXELS} (4096 x 4096) an echo frame may have"
            + ("" if array else "; refused before decoding") + ": crop or downscale it")


def png_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk at the start of a PNG file's first 24 bytes; None
    when they are not a PNG's."""
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def read_raster(path: str | os.PathLike) -> np.ndarray:
    """The pixels of a PNG or JPEG file as it is displayed: (H, W) or (H, W, 3), ``uint8``, or
    ``uint16`` for a 16-bit gray PNG.

    The size is checked from the header before decoding (our own IHDR reading for PNG,
    Pillow's lazy header for JPEG); the EXIF orientation is applied; alpha is dropped;
    palette, CMYK and YCbCr images become RGB.

    Raises:
        ImageError: naming the file: not a PNG or JPEG, more than ``MAX_IMAGE_PIXELS``,
            truncated or damaged, or a pixel mode with no gray meaning.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise ImageError(path, f"cannot read the file ({exc.strerror})") from exc
    size = png_size(head)
    if size is not None:  # before Pillow sees it
        check_image_size(path, *size)
    try:
        image = Image.open(path, formats=RASTER_FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own limit, far above ours
        raise ImageError(path, f"its header declares too many pixels ({exc}); refused before "
                               f"decoding") from None
    except UnidentifiedImageError:
        raise ImageError(path, "cannot decode the image: not a PNG or JPEG file") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a damaged header
        raise ImageError(path, f"cannot decode the image header ({exc})") from exc
    with image:
        check_image_size(path, *image.size)
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _pixels(path, upright)
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated data: OSError, EOFError, zlib ...
            raise ImageError(path, f"cannot decode the image: truncated or damaged "
                                   f"{image.format} ({exc})") from exc


def _pixels(path: Path, image: Image.Image) -> np.ndarray:
    """An opened image's pixels: gray as (H, W), colour as (H, W, 3) RGB, alpha dropped."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image).copy()
    if mode == "1":
        return np.asarray(image.convert("L")).copy()
    if mode in ("LA", "La"):
        return np.asarray(image.getchannel("L")).copy()
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        return np.asarray(image).astype(np.int32)
    if mode in ("P", "PA", "RGBA", "RGBa"):
        return np.asarray(image.convert("RGBA"))[..., :3].copy()
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(image.convert("RGB")).copy()
    raise ImageError(path, f"pixel mode {mode!r} of a {image.format} has no gray meaning here; "
                           "save it as an 8-bit gray or RGB PNG")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W) uint8 image to (size, size): per axis, area averaging where it
    shrinks and bilinear interpolation where it grows (one rounding, in float32)."""
    out: np.ndarray = image.astype(np.float32)
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
