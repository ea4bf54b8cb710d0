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

- ``CamusRecord``: one (patient, view, phase) of a tree, metadata read eagerly (with the
  reference EDV/ESV/EF of its Info cfg, ``echo_vlsm.data.camus_cfg``), pixels lazily.
- ``read_camus(root, splits=None) -> list[CamusRecord]`` sorted by (patient, view, phase).
- ``validate(root) -> list[str]``: every problem in the tree, each naming its file.
- ``CamusFormatError``: raised on bad input, with the file and the problem in its message
  (an ``echo_vlsm.errors.PathError``).
- ``read_header``/``read_image`` (from ``echo_vlsm.data.headers``): one image file's shape
  and spacing, or its pixels.

Examples::

    records = read_camus("data/raw/camus")            # release detected from the layout
    image, label = records[0].load()                  # (H, W) uint8 each
    problems = validate("data/raw/camus")             # [] for a sound tree
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_vlsm.data.camus_cfg import (
    CFG_KEYS,
    MAX_AGE,
    REQUIRED_CFG_KEYS,
    cfg_attributes,
    cfg_reference,
    parse_cfg,
)
from echo_vlsm.data.headers import CamusFormatError, read_header, read_image
from echo_vlsm.structures import PHASES, SPLITS, VIEWS

__all__ = ["CFG_KEYS", "MAX_AGE", "REQUIRED_CFG_KEYS", "SPLIT_FILES_2023", "VAL_PATIENTS_2019",
           "CamusFormatError", "CamusRecord", "cfg_attributes", "cfg_reference",
           "detect_release", "find_root", "normalize_patient", "parse_cfg", "read_camus",
           "read_header", "read_image", "validate"]

# The study's split of the 2019 release: training patients 1..50 form the validation set.
VAL_PATIENTS_2019 = 50
SPLIT_FILES_2023 = {
    "train": "subgroup_training.txt",
    "val": "subgroup_validation.txt",
    "test": "subgroup_testing.txt",
}
_PATIENT_RE = re.compile(r"^patient(\d+)$")
_SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}


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
    # Reference values of the view's Info cfg (None where the release gives none):
    ref_edv_ml: float | None = None  # 2019 LVedv
    ref_esv_ml: float | None = None  # 2019 LVesv
    ref_ef_percent: float | None = None  # 2019 LVef, 2023 EF

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


# --------------------------------------------------------------------------- image pairs


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
    found = [(p, layout) for p in sorted(root.iterdir())
             if p.is_dir() and (layout := _layout(p))]
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
    """The one image file named ``base`` (``.mhd``; ``.nii.gz`` or ``.nii``), None if none.

    Raises:
        CamusFormatError: both ``base.nii.gz`` and ``base.nii``: which one is the image?
    """
    exts = (".mhd",) if release == "2019" else (".nii.gz", ".nii")
    found = [folder / f"{base}{ext}" for ext in exts if (folder / f"{base}{ext}").is_file()]
    if len(found) > 1:
        raise CamusFormatError(
            found[-1], f"a second file of the image {base}, beside {found[0].name}; one image "
            "per name: remove one of them")
    return found[0] if found else None


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
            cfg = parse_cfg(cfg_path)
            attrs = {**cfg_attributes(cfg_path, cfg),
                     **{f"ref_{k}": v for k, v in cfg_reference(cfg_path, cfg).items()}}
        except CamusFormatError as exc:
            problems.add(exc)
        for phase in PHASES:
            base = f"{patient.name}_{view}_{phase}"
            try:
                image_path = _find_file(patient.folder, base, release)
                label_path = _find_file(patient.folder, base + "_gt", release)
            except CamusFormatError as exc:
                problems.add(exc)
                continue
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
                    ref_edv_ml=attrs["ref_edv_ml"],
                    ref_esv_ml=attrs["ref_esv_ml"],
                    ref_ef_percent=attrs["ref_ef_percent"],
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
