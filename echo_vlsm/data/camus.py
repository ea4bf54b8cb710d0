"""Reading the CAMUS echocardiography dataset (2019 .mhd and 2023 .nii.gz releases).

CAMUS (Leclerc et al., IEEE TMI 2019) holds apical two- and four-chamber views (2CH, 4CH)
of 500 patients at end-diastole (ED) and end-systole (ES), each with a label map
(0 background, 1 LV cavity, 2 myocardium, 3 left atrium) and an ``Info_<view>.cfg`` file.
Two public releases differ in layout:

- 2019: ``training/patientXXXX/`` and ``testing/patientXXXX/`` with ``.mhd`` headers (+ ``.raw``);
  the 2019 testing patients are numbered 0001-0050 again, so a stem is unique per split only.
- 2023: ``database_nifti/patientXXXX/`` with ``.nii.gz`` (or ``.nii``) files and
  ``database_split/subgroup_{training,validation,testing}.txt``.

CONTRACT:

- ``CamusRecord``: one (patient, view, phase) of a tree, metadata read eagerly, pixels lazily.
- ``read_camus(root, splits=None) -> list[CamusRecord]`` sorted by (patient, view, phase).
- ``validate(root) -> list[str]``: every problem in the tree, each naming its file.
- ``CamusFormatError``: raised on bad input, with the file and the problem in its message.

Examples::

    records = read_camus("data/raw/camus")            # release detected from the layout
    image, label = records[0].load()                  # (H, W) uint8 each
    problems = validate("data/raw/camus")             # [] for a sound tree
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_vlsm.structures import MAX_LABEL, PHASES, QUALITIES, SPLITS, VIEWS

# Keys every Info_<view>.cfg must carry for a record (the rest are read when present).
REQUIRED_CFG_KEYS: tuple[str, ...] = ("Sex", "Age", "ImageQuality")
CFG_KEYS = {
    "2019": ("ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "LVedv", "LVesv", "LVef"),
    "2023": ("ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "EF", "FrameRate"),
}
# The study's split of the 2019 release: training patients 1..50 form the validation set.
VAL_PATIENTS_2019 = 50
SPLIT_FILES_2023 = {
    "train": "subgroup_training.txt",
    "val": "subgroup_validation.txt",
    "test": "subgroup_testing.txt",
}
_PATIENT_RE = re.compile(r"^patient(\d+)$")
_SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}


class CamusFormatError(ValueError):
    """A CAMUS file is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # survives pickling across a process pool
        return (type(self), (str(self.path), self.problem))


@dataclass(frozen=True)
class CamusRecord:
    """One image of CAMUS: a patient's apical view at end-diastole or end-systole.

    ``image_path``/``label_path`` point at the ``.mhd``, ``.nii.gz`` or ``.nii`` files;
    ``load()`` returns ``(image, label)``, both (H, W) uint8, label values in 0..3,
    checked for equal shape and spacing.
    """

    patient: str  # "patient0001"
    view: str  # "2CH" | "4CH"
    phase: str  # "ED" | "ES"
    split: str  # "train" | "val" | "test"
    image_path: Path
    label_path: Path
    spacing: tuple[float, float]  # (row, column) pixel size in mm
    sex: str | None  # "M" | "F"
    age: int | None
    quality: str | None  # "Good" | "Medium" | "Poor"
    release: str = "2023"  # "2019" | "2023"

    @property
    def stem(self) -> str:
        return f"{self.patient}_{self.view}_{self.phase}"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Read the pixels: ``(image, label)``, (H, W) uint8 each; bad files raise
        ``CamusFormatError`` naming the file."""
        image, image_spacing = read_image(self.image_path)
        label, label_spacing = read_image(self.label_path, is_label=True)
        _check_pair(
            self.image_path, self.label_path, image.shape, label.shape, image_spacing, label_spacing
        )
        return image, label


# --------------------------------------------------------------------------- files


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
    if data_file.upper() == "LOCAL" or "%" in data_file or data_file.upper() == "LIST":
        return fields
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
    return fields


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
    import gzip
    import zlib

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
    import struct

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


def _read_head(path: Path, n: int = 540) -> bytes:
    import gzip
    import zlib

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
        geometry = _nifti_geometry(_read_head(path))
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


def _check_pair(image_path, label_path, image_shape, label_shape, image_spacing, label_spacing):
    if tuple(image_shape) != tuple(label_shape):
        raise CamusFormatError(
            label_path,
            f"label shape {tuple(label_shape)} differs from image {Path(image_path).name} "
            f"shape {tuple(image_shape)} (rows, cols)",
        )
    if not np.allclose(image_spacing, label_spacing, rtol=1e-4, atol=1e-6):
        raise CamusFormatError(
            label_path,
            f"label spacing {_fmt_spacing(label_spacing)} differs from image "
            f"{Path(image_path).name} spacing {_fmt_spacing(image_spacing)} (row, col mm)",
        )


def _fmt_spacing(s) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in s) + ")"


def _short(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text[:200]


# --------------------------------------------------------------------------- Info cfg


def parse_cfg(path: str | Path) -> dict[str, str]:
    """Read an ``Info_<view>.cfg`` file (``Key: value`` lines) into a dict of strings.

    Blank lines and stray spaces are tolerated; any other line without a colon raises.
    """
    path = Path(path)
    if not path.is_file():
        raise CamusFormatError(path, "missing Info cfg file")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise CamusFormatError(path, f"cannot read ({exc})") from exc
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise CamusFormatError(path, f"line {i} is not 'Key: value': {line[:60]!r}")
        out[key.strip()] = value.strip()
    return out


def cfg_attributes(path: str | Path, cfg: Mapping[str, str] | None = None) -> dict:
    """Sex ("M"/"F"), age (int) and image quality ("Good"/"Medium"/"Poor") of an Info cfg."""
    cfg = parse_cfg(path) if cfg is None else cfg
    lower = {k.lower(): v for k, v in cfg.items()}
    for key in REQUIRED_CFG_KEYS:
        if key.lower() not in lower:
            raise CamusFormatError(
                path, f"missing key {key!r} (needed keys: {', '.join(REQUIRED_CFG_KEYS)})"
            )
    sex = lower["sex"].strip().upper()
    sex = {"MALE": "M", "FEMALE": "F"}.get(sex, sex)
    if sex not in ("M", "F"):
        raise CamusFormatError(path, f"Sex is {lower['sex']!r}; expected 'M' or 'F'")
    try:
        age_f = float(lower["age"])
        if not age_f.is_integer() or age_f < 0:
            raise ValueError
        age = int(age_f)
    except ValueError:
        raise CamusFormatError(
            path, f"Age is {lower['age']!r}; expected a whole number of years"
        ) from None
    quality = lower["imagequality"].strip().capitalize()
    if quality not in QUALITIES:
        raise CamusFormatError(
            path, f"ImageQuality is {lower['imagequality']!r}; expected one of {QUALITIES}"
        )
    return {"sex": sex, "age": age, "quality": quality}


# --------------------------------------------------------------------------- tree


@dataclass(frozen=True)
class _Patient:
    name: str  # "patient0001"
    folder: Path
    group: str  # "training"/"testing" (2019) or "database_nifti" (2023)


class _Problems:
    """Collects problems (validate) or raises the first one (read_camus)."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.items: list[str] = []

    def add(self, error: CamusFormatError) -> None:
        if self.strict:
            raise error
        self.items.append(str(error))


def _layout(folder: Path) -> str | None:
    if (folder / "database_nifti").is_dir():
        return "2023"
    if (folder / "training").is_dir() or (folder / "testing").is_dir():
        return "2019"
    return None


def find_root(root: str | Path) -> tuple[Path, str]:
    """The CAMUS folder and its release (``"2019"``/``"2023"``): ``root`` itself, or its one
    subfolder with a CAMUS layout (as an archive unpacks, e.g. ``CAMUS_public/``)."""
    root = Path(root)
    if not root.is_dir():
        raise CamusFormatError(root, "CAMUS folder does not exist")
    release = _layout(root)
    if release:
        return root, release
    found = [(p, _layout(p)) for p in sorted(root.iterdir()) if p.is_dir() and _layout(p)]
    if len(found) == 1:
        return found[0]
    raise CamusFormatError(
        root,
        "not a CAMUS tree: expected 'database_nifti/' and 'database_split/' (2023 release) "
        "or 'training/' and 'testing/' (2019 release)"
        + (f"; several candidates inside: {[p.name for p, _ in found]}" if found else ""),
    )


def detect_release(root: str | Path) -> str:
    """``"2019"`` or ``"2023"`` from the layout of a CAMUS folder, else CamusFormatError."""
    return find_root(root)[1]


def _patient_number(name: str) -> int:
    m = _PATIENT_RE.match(name)
    return int(m.group(1)) if m else -1


def _list_patients(root: Path, release: str) -> list[_Patient]:
    groups = ["database_nifti"] if release == "2023" else ["training", "testing"]
    out = []
    for group in groups:
        folder = root / group
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_dir() and _PATIENT_RE.match(p.name):
                out.append(_Patient(p.name, p, group))
    return out


def _find_file(folder: Path, base: str, release: str) -> Path | None:
    exts = (".mhd",) if release == "2019" else (".nii.gz", ".nii")
    for ext in exts:
        p = folder / f"{base}{ext}"
        if p.is_file():
            return p
    return None


def normalize_patient(patient: str | int) -> str:
    """``12``, ``"12"``, ``"0012"`` or ``"patient0012"`` -> ``"patient0012"``."""
    if isinstance(patient, (int, np.integer)) and not isinstance(patient, bool):
        n = int(patient)
    else:
        text = str(patient).strip()
        m = _PATIENT_RE.match(text)
        if m:
            n = int(m.group(1))
        elif text.isdigit():
            n = int(text)
        else:
            raise ValueError(
                f"patient id {patient!r} not understood; use 'patient0001' or the number 1"
            )
    if n < 0:
        raise ValueError(f"patient id {patient!r} is negative")
    return f"patient{n:04d}"


def _user_assignment(
    splits: Mapping[str, Iterable], patients: list[_Patient]
) -> dict[_Patient, str]:
    """Map the tree's patients to the user's splits; unlisted patients are dropped."""
    if not isinstance(splits, Mapping):
        raise TypeError(
            "splits must be a mapping like {'train': [...], 'val': [...], 'test': [...]}"
        )
    by_name: dict[str, list[_Patient]] = {}
    for p in patients:
        by_name.setdefault(normalize_patient(p.name), []).append(p)
    out: dict[_Patient, str] = {}
    for split, members in splits.items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} in splits; expected keys among {SPLITS}")
        if isinstance(members, (str, int)):
            raise TypeError(f"splits[{split!r}] must be a list of patients, not {members!r}")
        for member in members:
            group = None
            text = str(member)
            if "/" in text:  # "training/patient0001" picks one of the 2019 groups
                group, _, text = text.rpartition("/")
            name = normalize_patient(text if "/" in str(member) else member)
            found = [p for p in by_name.get(name, []) if group is None or p.group == group]
            if not found:
                raise ValueError(f"splits[{split!r}] lists {member!r}, which is not in the tree")
            if len(found) > 1:
                raise ValueError(
                    f"splits[{split!r}] lists {member!r}, which names several patient folders "
                    f"({', '.join(f'{p.group}/{p.name}' for p in found)}); "
                    f"write e.g. '{found[0].group}/{name}'"
                )
            p = found[0]
            if p in out and out[p] != split:
                raise ValueError(f"patient {member!r} is listed in both {out[p]!r} and {split!r}")
            out[p] = split
    return out


def _split_2019(patient: _Patient) -> str:
    if patient.group == "testing":
        return "test"
    return "val" if _patient_number(patient.name) <= VAL_PATIENTS_2019 else "train"


def _read_split_files(root: Path, patients: list[_Patient], problems: _Problems) -> dict:
    folder = root / "database_split"
    names = {p.name: p for p in patients}
    where: dict[str, tuple[str, Path]] = {}
    for split, fname in SPLIT_FILES_2023.items():
        path = folder / fname
        if not path.is_file():
            problems.add(
                CamusFormatError(
                    path,
                    "missing split file (the 2023 release ships database_split/"
                    "subgroup_{training,validation,testing}.txt; or pass splits=...)",
                )
            )
            continue
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
        for i, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                name = normalize_patient(line)
            except ValueError:
                problems.add(CamusFormatError(path, f"line {i}: {line[:40]!r} is not a patient id"))
                continue
            if name in where and where[name][0] != split:
                problems.add(
                    CamusFormatError(path, f"{name} is also listed in {where[name][1].name}")
                )
                continue
            where[name] = (split, path)
            if name not in names:
                problems.add(
                    CamusFormatError(
                        path, f"line {i}: {name} has no folder in {root / 'database_nifti'}"
                    )
                )
    out = {}
    for p in patients:
        if p.name in where:
            out[p] = where[p.name][0]
        elif folder.is_dir() and all((folder / f).is_file() for f in SPLIT_FILES_2023.values()):
            problems.add(
                CamusFormatError(p.folder, f"{p.name} is in none of the split files in {folder}")
            )
    return out


def _patient_records(
    patient: _Patient, split: str, release: str, problems: _Problems
) -> list[CamusRecord]:
    records = []
    for view in VIEWS:
        cfg_path = patient.folder / f"Info_{view}.cfg"
        attrs = None
        try:
            attrs = cfg_attributes(cfg_path)
        except CamusFormatError as exc:
            problems.add(exc)
        for phase in PHASES:
            base = f"{patient.name}_{view}_{phase}"
            image_path = _find_file(patient.folder, base, release)
            label_path = _find_file(patient.folder, base + "_gt", release)
            ext = ".mhd" if release == "2019" else ".nii.gz"
            if image_path is None:
                problems.add(CamusFormatError(patient.folder / f"{base}{ext}", "missing image"))
            if label_path is None:
                hint = (
                    " (the original 2019 testing download has no labels; use the release "
                    "with test labels, or pass splits= without the testing patients)"
                    if patient.group == "testing"
                    else ""
                )
                problems.add(
                    CamusFormatError(patient.folder / f"{base}_gt{ext}", "missing label map" + hint)
                )
            if image_path is None or label_path is None:
                continue
            try:
                image_shape, image_spacing = read_header(image_path)
                label_shape, label_spacing = read_header(label_path)
                _check_pair(
                    image_path, label_path, image_shape, label_shape, image_spacing, label_spacing
                )
            except CamusFormatError as exc:
                problems.add(exc)
                continue
            if attrs is None:
                continue
            records.append(
                CamusRecord(
                    patient=patient.name,
                    view=view,
                    phase=phase,
                    split=split,
                    image_path=image_path,
                    label_path=label_path,
                    spacing=image_spacing,
                    sex=attrs["sex"],
                    age=attrs["age"],
                    quality=attrs["quality"],
                    release=release,
                )
            )
    return records


def _scan(root, splits, problems: _Problems) -> list[CamusRecord]:
    root, release = find_root(root)
    patients = _list_patients(root, release)
    if not patients:
        where = "database_nifti/" if release == "2023" else "training/ or testing/"
        problems.add(CamusFormatError(root, f"no patientXXXX folders in {where}"))
        return []
    if splits is not None:
        assignment = _user_assignment(splits, patients)
    elif release == "2019":
        assignment = {p: _split_2019(p) for p in patients}
    else:
        assignment = _read_split_files(root, patients, problems)
    records: list[CamusRecord] = []
    for p in patients:
        if p in assignment:
            records.extend(_patient_records(p, assignment[p], release, problems))
    records.sort(key=lambda r: (r.patient, r.view, r.phase, _SPLIT_ORDER.get(r.split, 9)))
    return records


def read_camus(
    root: str | Path, splits: Mapping[str, Iterable[str | int]] | None = None
) -> list[CamusRecord]:
    """Read a CAMUS tree (2019 or 2023 release, detected from its layout) into records.

    One ``CamusRecord`` per (patient, view, phase), sorted by (patient, view, phase).
    Metadata (Info cfg, image headers: shape and spacing of image and label) is read and
    checked here; pixels are read by ``record.load()``. The first problem met raises
    ``CamusFormatError`` naming the file; ``validate`` lists them all.

    Splits: by default the 2019 release follows Synthetic Boost (``testing/`` -> test,
    training patients 1-50 -> val, the rest -> train) and the 2023 release its official
    ``database_split`` files. ``splits={"train": [...], "val": [...], "test": [...]}`` gives
    your own lists of patients (``"patient0001"`` or ``1``; in a 2019 tree where a number is
    both in training/ and testing/, write ``"testing/patient0001"``); patients not listed
    are left out.
    """
    return _scan(root, splits, _Problems(strict=True))


def validate(
    root: str | Path, splits: Mapping[str, Iterable[str | int]] | None = None
) -> list[str]:
    """Every problem of a CAMUS tree, one string each (``"<file>: <problem>"``); ``[]`` if sound.

    Unlike ``read_camus`` it does not stop at the first problem, and it reads all pixels
    (label values in 0..3, 8-bit images, pixel data that matches the headers).
    """
    problems = _Problems(strict=False)
    try:
        records = _scan(root, splits, problems)
    except CamusFormatError as exc:  # the root itself is unusable
        return problems.items + [str(exc)]
    for rec in records:
        try:
            rec.load()
        except CamusFormatError as exc:
            problems.add(exc)
    return problems.items
