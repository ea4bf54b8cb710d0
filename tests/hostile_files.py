"""Hostile files for tests/test_hardening.py (issue 23, sec. 4): each writer makes one damaged
or unusual image file, as a user might pass to ``segment``, and returns its path."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gray(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth gray image, different under every flip and turn."""
    yy, xx = np.mgrid[0:h, 0:w]
    return (40 + 3 * yy + xx + 60 * (xx < w // 4)).clip(0, 255).astype(np.uint8)


def write_png_bomb(path: Path, side: int) -> Path:
    """A valid 8-bit gray PNG of ``side`` x ``side`` black pixels, streamed (a few MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    squeeze, row, idat = zlib.compressobj(1), bytes(side + 1), bytearray()
    for start in range(0, side, 64):
        idat += squeeze.compress(row * min(64, side - start))
    idat += squeeze.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", bytes(idat))
                     + chunk(b"IEND", b""))
    return path


def write_nifti(path: Path, size_xyz: tuple[int, ...], data: bytes | None = None) -> Path:
    """A NIfTI-1 file of uint8 pixels, ``size_xyz`` its dim[1:]; without ``data`` the pixel
    data is a sparse hole of the length the header needs."""
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, len(size_xyz), *size_xyz, *[1] * (7 - len(size_xyz)))
    struct.pack_into("<hh", h, 70, 2, 8)  # uint8, 8 bits
    struct.pack_into("<8f", h, 76, 1, 0.3, 0.3, 1, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)
    h[123], h[344:348] = 2, b"n+1\0"  # millimetres; NIfTI-1 in one file
    with open(path, "wb") as f:
        f.write(bytes(h) + bytes(4))
        if data is None:
            f.truncate(352 + math.prod(size_xyz))
        else:
            f.write(data)
    return path


def write_mhd(path: Path, dims: str, data: bytes | None = None, n: int = 0) -> Path:
    """A MetaImage header and its ``.raw`` file (sparse, ``n`` bytes, without ``data``)."""
    path.write_text(f"ObjectType = Image\nNDims = {len(dims.split())}\nDimSize = {dims}\n"
                    f"ElementSpacing = {' '.join(['0.3'] * len(dims.split()))}\n"
                    f"ElementType = MET_UCHAR\nElementDataFile = {path.stem}.raw\n")
    with open(path.with_suffix(".raw"), "wb") as f:
        if data is None:
            f.truncate(n)
        else:
            f.write(data)
    return path


def save(image: Image.Image, path: Path, **kw) -> Path:
    image.save(path, **kw)
    return path


def gzipped(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes(), 1))
    path.unlink()
    return gz


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A small JPEG whose SOF header is changed to declare ``width`` x ``height``."""
    save(Image.fromarray(gray()), path, format="JPEG")
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def exif_jpeg(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to display
    return save(Image.fromarray(gray()), path, format="JPEG", quality=95, exif=exif)


def palette(path: Path, transparency: bool) -> Path:
    """A palette PNG: indices 5..31, entry i the gray 255 - 8 i."""
    pal = Image.frombytes("P", (64, 48), (gray() // 8).tobytes())
    pal.putpalette([v for i in range(256) for v in (255 - 8 * i % 256,) * 3])
    return save(pal, path, format="PNG", **({"transparency": 7} if transparency else {}))
