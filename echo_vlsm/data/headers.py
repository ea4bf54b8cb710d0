"""CAMUS image files: the headers and pixels of MetaImage (``.mhd`` + ``.raw``) and NIfTI
(``.nii``, ``.nii.gz``) files, as the reader of ``echo_vlsm.data.camus`` needs them.

``read_header`` gives shape and spacing from the header alone: a MetaImage header is a text
of ``Key = value`` lines, a NIfTI-1/-2 header a fixed binary record, both parsed here (50-100x
quicker than SimpleITK, which reads the unusual files). ``read_image`` reads the pixels with
SimpleITK, after checking that the data file is long enough (SimpleITK fills a truncated file
with zeros without a word). Both raise ``CamusFormatError`` naming the file.

Shapes are ``(rows, cols)`` and spacings ``(row, col)`` in mm; SimpleITK's own order is
``(x, y)``, i.e. ``(col, row)``.

Examples::

    >>> _row_col_spacing((0.31000000238, 0.154))
    (0.154, 0.31)
    >>> _parse_nifti(b"not a NIfTI header") is None
    True
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_vlsm.errors import PathError
from echo_vlsm.structures import MAX_LABEL


class CamusFormatError(PathError):
    """A CAMUS file is missing, unreadable or inconsistent; the message names the file."""


def _sitk():
    import SimpleITK as sitk

    return sitk


def _squeeze_size(path: Path, size: tuple[int, ...]) -> tuple[int, int]:
    """SimpleITK size (x, y[, z...]) -> (rows, cols); extra axes must be singletons."""
    if len(size) < 2 or any(s != 1 for s in size[2:]):
        raise CamusFormatError(
            path, f"expected a 2-D image (or 3-D with one slice), got size {tuple(size)} (x, y, z)"
        )
    return int(size[1]), int(size[0])


def _check_meta_data_file(path: Path) -> dict[str, str]:
    """For a ``.mhd`` header: the data file it names exists and is long enough.

    Returns the header's fields (lower-case keys)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise CamusFormatError(path, f"cannot read MetaImage header ({exc})") from exc
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    data_file = fields.get("elementdatafile")
    if not data_file:
        raise CamusFormatError(path, "MetaImage header lacks 'ElementDataFile'")
    _check_meta_spacing(path, fields)
    if data_file.upper() == "LOCAL":
        return fields
    if data_file.upper().startswith("LIST") or "%" in data_file:
        raise CamusFormatError(
            path, f"ElementDataFile is {data_file!r}: a list or pattern of data files; a CAMUS "
            f"header names one data file beside it, '{path.stem}.raw'")
    name = Path(data_file.replace("\\", "/"))
    if name.is_absolute() or len(name.parts) != 1 or name.name in (".", ".."):
        raise CamusFormatError(
            path, f"ElementDataFile is {data_file!r}: the data file must lie beside its "
            f"header, named without a folder ('{path.stem}.raw')")
    if name.stem != path.stem:
        raise CamusFormatError(
            path, f"ElementDataFile is {data_file!r}: the data file must carry the header's own "
            f"name ('{path.stem}.raw'); another image's data would be read")
    raw = path.parent / data_file
    if not raw.is_file():
        raise CamusFormatError(raw, f"missing data file named by {path.name}")
    header_text = fields.get("headersize", "0") or "0"
    try:
        header_size = int(header_text)
        if header_size < -1:
            raise ValueError
    except ValueError:
        raise CamusFormatError(
            path,
            f"HeaderSize is {header_text!r}; expected a whole number of bytes >= 0 "
            "(or -1: the pixels end the data file)",
        ) from None
    if fields.get("compresseddata", "false").lower() == "true":
        return fields
    try:
        dims = [int(v) for v in fields["dimsize"].split()]
        channels = int(fields.get("elementnumberofchannels", "1"))
        nbytes = _MET_BYTES[fields["elementtype"].upper()]
    except (KeyError, ValueError):
        return fields  # SimpleITK will judge the header itself
    need = math.prod(dims) * channels * nbytes + max(header_size, 0)
    have = raw.stat().st_size
    if have < need:
        raise CamusFormatError(raw, f"truncated data file: {have} bytes, header needs {need}")
    if have > need and header_size != -1:
        raise CamusFormatError(
            raw, f"data file is {have} bytes, {have - need} more than {path.name} needs ({need}: "
            f"DimSize {fields['dimsize']}, {fields['elementtype']}); the header's DimSize or "
            "ElementType does not describe this file")
    return fields


def _check_meta_spacing(path: Path, fields: Mapping[str, str]) -> None:
    """ElementSpacing (or ElementSize) of a MetaImage header: numbers, finite and > 0."""
    for key in ("elementspacing", "elementsize"):
        text = fields.get(key)
        if text is None:
            continue
        try:
            values = [float(v) for v in text.split()][:2]  # x, y: what the pixel size is
        except ValueError:
            values = []
        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            label = "ElementSpacing" if key == "elementspacing" else "ElementSize"
            raise CamusFormatError(
                path, f"{label} is {text!r}; pixel spacing must be finite numbers > 0 (mm)")


def check_spacing(path: Path, spacing_xy, field: str = "spacing") -> None:
    """Raise ``CamusFormatError`` naming ``path`` unless every spacing is finite and > 0."""
    shown = tuple(float(v) for v in spacing_xy)
    if not shown or not all(math.isfinite(v) and v > 0 for v in shown):
        raise CamusFormatError(
            path, f"{field} is {', '.join(f'{v:g}' for v in shown)} (x, y); pixel spacing must "
            "be finite and > 0 mm")


_MET_BYTES = {
    "MET_UCHAR": 1,
    "MET_CHAR": 1,
    "MET_USHORT": 2,
    "MET_SHORT": 2,
    "MET_UINT": 4,
    "MET_INT": 4,
    "MET_ULONG": 8,
    "MET_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_LONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _check_nifti_data(path: Path, decompress: bool) -> None:
    """SimpleITK fills a truncated NIfTI with zeros without a word; check the length here.

    ``.nii``: from the file size. ``.nii.gz``: only when ``decompress`` (reads the stream)."""
    gz = path.name.lower().endswith(".gz")
    if gz and not decompress:
        return
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                head = f.read(540)
                have = len(head)
                while chunk := f.read(1 << 20):
                    have += len(chunk)
        else:
            with open(path, "rb") as f:
                head = f.read(540)
            have = path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise CamusFormatError(path, f"unreadable image ({exc})") from exc
    header = _parse_nifti(head)  # not NIfTI: SimpleITK then judges the file
    need = header.data_end() if header is not None else None
    if need is not None and have < need:
        raise CamusFormatError(path, f"unreadable image: truncated, {have} bytes of {need}")


def _meta_geometry(fields: Mapping[str, str]):
    """Size and spacing (x, y, ...) from MetaImage fields, as SimpleITK reads them; None when
    the header is unusual (SimpleITK then reads it)."""
    try:
        size = tuple(int(v) for v in fields["dimsize"].split())
        spacing_text = fields.get("elementspacing") or fields.get("elementsize")
        spacing = tuple(float(v) for v in spacing_text.split()) if spacing_text else None
        ndims = int(fields.get("ndims", len(size)))
        channels = int(fields.get("elementnumberofchannels", "1"))
    except (KeyError, ValueError):
        return None
    spacing = spacing or (1.0,) * len(size)
    if len(size) != ndims or len(spacing) != ndims or ndims < 2 or channels != 1:
        return None
    if fields.get("elementtype", "").upper() not in _MET_BYTES or min(spacing) <= 0:
        return None
    return size, spacing


_NIFTI_UNIT_SCALE = {1: 1000.0, 2: 1.0, 3: 0.001}  # meter, mm, micron -> mm (as ITK does)
_NIFTI_SCALAR_TYPES = {2, 4, 8, 16, 64, 256, 512, 768, 1024, 1280}


@dataclass(frozen=True)
class _NiftiHeader:
    """The fields of a NIfTI-1 or NIfTI-2 header that the reader uses."""

    dim: tuple[int, ...]  # dim[0]: number of axes, then the size of each
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]  # pixdim[1..]: spacing per axis
    vox_offset: int  # where the pixels start
    units: int  # xyzt_units & 7: 1 m, 2 mm, 3 micron
    magic_ok: bool  # "n+1"/"ni1" (NIfTI-1) or "n+2"/"ni2" (NIfTI-2)

    @property
    def ndim(self) -> int:
        return max(0, min(self.dim[0], 7))

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.dim[1 : 1 + self.ndim])

    def data_end(self) -> int:
        """Bytes the file needs: voxel offset + pixel data."""
        return self.vox_offset + math.prod(self.size) * self.bitpix // 8


def _parse_nifti(head: bytes) -> _NiftiHeader | None:
    """The header of a NIfTI-1 (348 bytes) or NIfTI-2 (540 bytes) file, either byte order,
    from its first bytes; None when they are not a NIfTI header."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            return _NiftiHeader(
                dim=struct.unpack(order + "8h", head[40:56]),
                datatype=struct.unpack(order + "h", head[70:72])[0],
                bitpix=struct.unpack(order + "h", head[72:74])[0],
                pixdim=struct.unpack(order + "8f", head[76:108]),
                vox_offset=int(struct.unpack(order + "f", head[108:112])[0]),
                units=head[123] & 0x07,
                magic_ok=head[344:347] in (b"n+1", b"ni1"),
            )
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            return _NiftiHeader(
                dim=struct.unpack(order + "8q", head[16:80]),
                datatype=struct.unpack(order + "h", head[12:14])[0],
                bitpix=struct.unpack(order + "h", head[14:16])[0],
                pixdim=struct.unpack(order + "8d", head[104:168]),
                vox_offset=int(struct.unpack(order + "q", head[168:176])[0]),
                units=struct.unpack(order + "i", head[500:504])[0] & 0x07,
                magic_ok=head[4:7] in (b"n+2", b"ni2"),
            )
    return None


def _nifti_geometry(head: bytes):
    """Size and spacing (x, y, ...) from a NIfTI-1/-2 header, as SimpleITK reads them; None
    when the header is unusual (SimpleITK then reads it)."""
    h = _parse_nifti(head)
    if h is None or not h.magic_ok:
        return None
    ndim = h.dim[0]
    if not 2 <= ndim <= 7 or h.datatype not in _NIFTI_SCALAR_TYPES:
        return None
    size = h.size
    spacing = tuple(abs(float(v)) for v in h.pixdim[1 : 1 + ndim])
    if min(size) < 1 or min(spacing[:2]) <= 0 or not all(map(math.isfinite, spacing)):
        return None
    scale = _NIFTI_UNIT_SCALE.get(h.units, 1.0)
    return size, tuple(v * scale for v in spacing)


def _check_nifti_spacing(path: Path, head: bytes) -> None:
    """pixdim[1], pixdim[2] of a NIfTI header (the row and column spacing): finite and > 0.
    SimpleITK reads NaN or zero as 1.0 mm and a negative value as its size: either would
    become the image's pixel size without a word."""
    h = _parse_nifti(head)
    if h is None:
        return  # not NIfTI: SimpleITK judges the file
    values = [float(v) for v in h.pixdim[1:3]]
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise CamusFormatError(
            path, f"pixdim[1:3] (pixel spacing x, y) is {', '.join(f'{v:g}' for v in values)}; "
            "pixel spacing must be finite and > 0 mm")


def _read_head(path: Path, n: int = 540) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read(n)
        with open(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise CamusFormatError(path, f"unreadable image header ({exc})") from exc


def read_header(path: str | Path) -> tuple[tuple[int, int], tuple[float, float]]:
    """Shape (rows, cols) and spacing (row, col) in mm of an image file, from its header only."""
    path = Path(path)
    if not path.is_file():
        raise CamusFormatError(path, "missing file")
    geometry = None
    if path.suffix.lower() == ".mhd":
        geometry = _meta_geometry(_check_meta_data_file(path))
    elif path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_data(path, decompress=False)
        head = _read_head(path)
        _check_nifti_spacing(path, head)
        geometry = _nifti_geometry(head)
    if geometry is not None:  # fast path: 50-100x quicker than SimpleITK's header reading
        size, spacing = geometry
        return _squeeze_size(path, size), _row_col_spacing(spacing)
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise CamusFormatError(path, f"unreadable image header ({_short(exc)})") from exc
    if reader.GetNumberOfComponents() != 1:
        raise CamusFormatError(
            path, f"expected one gray channel, got {reader.GetNumberOfComponents()} components"
        )
    shape = _squeeze_size(path, reader.GetSize())
    check_spacing(path, reader.GetSpacing()[:2])
    return shape, _row_col_spacing(reader.GetSpacing())


def read_image(path: str | Path, is_label: bool = False) -> tuple[np.ndarray, tuple[float, float]]:
    """Read a 2-D CAMUS image or label map as (H, W) uint8 and its (row, col) spacing in mm.

    Images may be stored as 2-D or as 3-D with one slice. Integer pixels outside 0..255 (or,
    for a label map, outside 0..3) raise ``CamusFormatError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CamusFormatError(path, "missing file")
    if path.suffix.lower() == ".mhd":
        _check_meta_data_file(path)
    elif path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_data(path, decompress=True)
        _check_nifti_spacing(path, _read_head(path))
    sitk = _sitk()
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CamusFormatError(path, f"unreadable image ({_short(exc)})") from exc
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CamusFormatError(
            path, f"expected one gray channel, got {img.GetNumberOfComponentsPerPixel()}"
        )
    rows, cols = _squeeze_size(path, img.GetSize())
    spacing = img.GetSpacing()
    check_spacing(path, spacing[:2])
    array = sitk.GetArrayViewFromImage(img).reshape(rows, cols)
    array = _to_uint8(path, array, is_label)
    return array, _row_col_spacing(spacing)


def _row_col_spacing(spacing_xy) -> tuple[float, float]:
    """SimpleITK (x, y, ...) spacing -> (row, col); 7 significant digits drop float32 noise
    of NIfTI headers (0.31000000238 -> 0.31)."""
    return (float(f"{spacing_xy[1]:.7g}"), float(f"{spacing_xy[0]:.7g}"))


def _to_uint8(path: Path, array: np.ndarray, is_label: bool) -> np.ndarray:
    hi = MAX_LABEL if is_label else 255
    what = "label values" if is_label else "pixel values"
    if array.dtype == np.uint8 and not is_label:
        return array.copy()
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all() or not np.array_equal(array, np.round(array)):
            raise CamusFormatError(
                path, f"{what} must be whole numbers in 0..{hi}; got non-integer floats"
            )
    elif array.dtype.kind not in "iub":
        raise CamusFormatError(path, f"unsupported pixel type {array.dtype}")
    values = np.unique(array) if is_label else np.array([array.min(), array.max()])
    bad = values[(values < 0) | (values > hi)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise CamusFormatError(path, f"{what} outside 0..{hi}: {shown}")
    return array.astype(np.uint8)


def _short(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text[:200]

