"""Writing phantom patients as a CAMUS tree: the layout of either release, Info cfg files,
split files, the markers that make a second call resume, and ``write_phantom``.

A tree holds ``phantom.json`` (seed, layout, version, number of patients; written last, so
its presence marks a complete tree; ``.phantom.partial`` while a call runs) and in each
patient folder a ``.phantom_patient.json`` marker naming the phantom patient it holds.

Examples::

    >>> split_sizes(20)
    {'train': 14, 'val': 2, 'test': 4}
    >>> for row in patient_splits(3, "2019"):
    ...     print(row)
    (1, 'val', 'training/patient0001')
    (2, 'train', 'training/patient0051')
    (3, 'test', 'testing/patient0001')
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from echo_vlsm.data.camus import SPLIT_FILES_2023
from echo_vlsm.data.phantom.echonet import ECHONET_LAYOUT, write_echonet_phantom
from echo_vlsm.data.phantom.patients import PhantomPatient, simulate_patient
from echo_vlsm.io import clean_temp_files, write_json_atomic, write_text_atomic
from echo_vlsm.parallel import run_jobs
from echo_vlsm.structures import PHASES, VIEWS

PHANTOM_VERSION = 2  # 2: reference LV volumes by the method of discs (echo_vlsm.clinical)
MANIFEST = "phantom.json"
PARTIAL = ".phantom.partial"
PATIENT_MARKER = ".phantom_patient.json"  # in each patient folder: what it holds
LAYOUTS = ("2023", "2019")
_GROUPS = ("database_nifti", "training", "testing")  # the patient folders' parents


# --------------------------------------------------------------------------- splits


def split_sizes(n_patients: int, layout: str = "2023") -> dict[str, int]:
    """Number of patients per split: 2023 ~70/10/20 %, 2019 ~80/10/10 % (validation at
    most 50, the study's rule); at least one each from 3 patients on."""
    n = int(n_patients)
    if n < 3:
        return {"train": n - (n == 2), "val": 0, "test": int(n == 2)}
    test_frac = 0.2 if layout == "2023" else 0.1
    test = max(1, int(round(test_frac * n)))
    val = max(1, int(round(0.1 * n)))
    if layout == "2019":
        val = min(val, 50)
    train = n - test - val
    if train < 1:
        test, val, train = 1, 1, n - 2
    return {"train": train, "val": val, "test": test}


def patient_splits(
    n_patients: int, layout: str = "2023", sizes: Mapping[str, int] | None = None
) -> list[tuple[int, str, str]]:
    """``(number, split, folder)`` per phantom patient: the first patients form the
    validation split, the last ones the test split, the rest training.

    ``folder`` is the patient's path below the root. In the 2023 layout it is
    ``database_nifti/patientXXXX`` with XXXX the phantom number. In the 2019 layout the
    names follow the study's split rule (training patients 1-50 are validation): the
    validation patients are ``training/patient0001..``, the training ones start at
    ``training/patient0051``, and the test patients are numbered from 1 again,
    ``testing/patient0001..``, like the real release (so a stem such as ``patient0001_2CH_ED``
    repeats between validation and test: joins must be keyed by split and stem).
    ``read_camus`` recovers the same three splits for any number of patients.
    """
    check_layout(layout)
    sizes = check_sizes(sizes, n_patients) if sizes is not None else split_sizes(
        n_patients, layout)
    out = []
    for i in range(1, n_patients + 1):
        if i <= sizes["val"]:
            split = "val"
        elif i <= sizes["val"] + sizes["train"]:
            split = "train"
        else:
            split = "test"
        if layout == "2023":
            folder = f"database_nifti/patient{i:04d}"
        elif split == "val":
            folder = f"training/patient{i:04d}"
        elif split == "train":
            folder = f"training/patient{50 + i - sizes['val']:04d}"
        else:
            folder = f"testing/patient{i - sizes['val'] - sizes['train']:04d}"
        out.append((i, split, folder))
    return out


def check_sizes(sizes: Mapping[str, int], n_patients: int | None = None) -> dict[str, int]:
    """Patients per split as given (``{"train": 14, "val": 4, "test": 20}``): whole numbers,
    at least one training patient, and ``n_patients`` (when given) their sum.

        >>> check_sizes({"train": 14, "val": 4, "test": 20})
        {'train': 14, 'val': 4, 'test': 20}
    """
    if not isinstance(sizes, Mapping) or set(sizes) - {"train", "val", "test"}:
        raise ValueError(f"splits must map train/val/test to numbers of patients, got {sizes!r}")
    out = {k: sizes.get(k, 0) for k in ("train", "val", "test")}
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"splits[{k!r}] must be a whole number >= 0, got {v!r}")
    if out["train"] < 1:
        raise ValueError(f"splits needs at least one training patient, got {sizes!r}")
    if n_patients is not None and sum(out.values()) != n_patients:
        raise ValueError(f"splits {out} add up to {sum(out.values())} patients, not "
                         f"n_patients={n_patients}")
    return out


def check_layout(layout: str) -> str:
    if str(layout) not in LAYOUTS:
        raise ValueError(f"layout {layout!r} not known; expected one of {LAYOUTS}")
    return str(layout)


# --------------------------------------------------------------------------- writing


def _cfg_text(patient: PhantomPatient, view: str, layout: str) -> str:
    pv = patient.views[view]
    lines = [
        "ED: 1",
        f"ES: {patient.nb_frames}",
        f"NbFrame: {patient.nb_frames}",
        f"Sex: {patient.sex}",
        f"Age: {patient.age}",
        f"ImageQuality: {pv.quality}",
    ]
    if layout == "2023":
        lines += [f"EF: {patient.ef}", f"FrameRate: {patient.frame_rate}"]
    else:
        lines += [f"LVedv: {patient.lv_edv}", f"LVesv: {patient.lv_esv}", f"LVef: {patient.ef}"]
    return "\n".join(lines) + "\n"


def _write_sitk(array: np.ndarray, spacing: float, path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing((float(spacing), float(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mhd":  # header + .raw
        sitk.WriteImage(img, str(path), useCompression=False)
        return
    sitk.WriteImage(img, str(path), useCompression=True)


def write_patient(
    patient: PhantomPatient, folder: str | Path, layout: str = "2023", name: str | None = None
) -> Path:
    """Write one simulated patient's images, label maps and Info cfg files to ``folder``
    with CAMUS names (``.nii.gz`` for 2023, ``.mhd``/``.raw`` for 2019); ``name`` (default:
    the folder's name) is the ``patientXXXX`` prefix of the files."""
    layout = check_layout(layout)
    folder = Path(folder)
    name = name or folder.name
    ext = ".nii.gz" if layout == "2023" else ".mhd"
    for view, pv in patient.views.items():
        for phase in PHASES:
            _write_sitk(pv.images[phase], pv.spacing, folder / f"{name}_{view}_{phase}{ext}")
            _write_sitk(pv.labels[phase], pv.spacing, folder / f"{name}_{view}_{phase}_gt{ext}")
        write_text_atomic(folder / f"Info_{view}.cfg", _cfg_text(patient, view, layout))
    return folder


def _marker(seed: int, number: int, layout: str) -> dict:
    """What a patient folder of the tree holds: phantom patient ``number`` of ``seed``."""
    return {"version": PHANTOM_VERSION, "seed": seed, "layout": layout, "number": number}


def _write_one(seed: int, number: int, folder: str | Path, layout: str) -> int:
    """Simulate and write one patient into a hidden folder, with its marker file, then rename
    it into place, so a patient folder is always complete."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_patient(simulate_patient(seed, number), tmp, layout, name=folder.name)
    write_json_atomic(tmp / PATIENT_MARKER, _marker(seed, number, layout))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return number


def _up_to_date(folder: Path, layout: str, marker: dict) -> bool:
    """Whether ``folder`` holds the patient ``marker`` names, with all its files. A folder
    without a marker, or with another patient's (the 2019 folder names depend on the split
    sizes, so another number of patients moves patients), is not."""
    try:
        if json.loads((folder / PATIENT_MARKER).read_text()) != marker:
            return False
    except (OSError, ValueError):
        return False
    ext = ".nii.gz" if layout == "2023" else ".mhd"
    names = [f"{folder.name}_{v}_{p}{s}{ext}" for v in VIEWS for p in PHASES
             for s in ("", "_gt")] + [f"Info_{v}.cfg" for v in VIEWS]
    return all((folder / n).is_file() for n in names)


def write_phantom(
    root: str | Path,
    n_patients: int = 20,
    seed: int = 0,
    layout: str = "2023",
    workers: int | None = None,
    splits: Mapping[str, int] | None = None,
) -> Path:
    """Write a CAMUS-layout tree of ``n_patients`` phantom patients under ``root``.

    ``layout="2023"``: ``database_nifti/patientXXXX/*.nii.gz`` and
    ``database_split/subgroup_{training,validation,testing}.txt`` (~70/10/20 %);
    ``layout="2019"``: ``training/`` and ``testing/`` with ``.mhd``/``.raw`` files (see
    ``patient_splits`` for the numbering). A ``phantom.json`` records seed, layout, version
    and number of patients, and each patient folder a ``.phantom_patient.json`` (which
    phantom patient it holds, seed, layout, version). A second call skips the folders whose
    marker matches (an interrupted call resumes) and rewrites the others: another seed or
    layout rewrites the tree; another number of patients rewrites the 2019 folders whose
    patient moved (their names follow the split sizes) and the 2023 split files, and
    removes folders no longer part of the tree, so the result equals a fresh tree.
    A non-empty folder that is not a phantom tree is refused (it could be real data).
    ``layout="echonet"``: EchoNet-Dynamic's layout, ``n_patients`` videos
    (``phantom.echonet.write_echonet_phantom``).
    ``splits`` sets the patients per split (``{"train": 14, "val": 4, "test": 20}``, summing
    to ``n_patients``; default ``split_sizes``): validation first, then training, then test.
    ``workers`` processes share the patients (default ``min(4, cpus)`` from 8 patients to
    write on, else this process; 0 or 1: this process). Returns ``root``.

    Raises:
        ValueError: an unknown ``layout`` or a bad ``n_patients``.
        FileExistsError: ``root`` is a non-empty folder without a phantom manifest.
    """
    root = Path(root)
    if layout == ECHONET_LAYOUT:  # EchoNet-Dynamic's layout: videos (phantom/echonet.py)
        return write_echonet_phantom(root, n_patients, seed, workers=workers, splits=splits)
    layout = check_layout(layout)
    if isinstance(n_patients, bool) or int(n_patients) != n_patients or n_patients < 1:
        raise ValueError(f"n_patients must be a whole number >= 1, got {n_patients!r}")
    n_patients, seed = int(n_patients), int(seed)
    want = {"version": PHANTOM_VERSION, "seed": seed, "layout": layout}
    _claim_root(root, want)
    clean_temp_files(root, recursive=True)  # what a killed call left mid-write
    plan = patient_splits(n_patients, layout, splits)
    _remove_foreign_patients(root, plan)
    manifest = root / MANIFEST
    manifest.unlink(missing_ok=True)  # present again only when the tree is complete
    sizes = dict(Counter(split for _, split, _ in plan))
    manifest_text = json.dumps({**want, "n_patients": n_patients, "splits": sizes},
                               indent=2) + "\n"
    write_text_atomic(root / PARTIAL, manifest_text)  # marks the folder as ours meanwhile

    todo = [(seed, n, str(root / rel), layout) for n, _, rel in plan
            if not _up_to_date(root / rel, layout, _marker(seed, n, layout))]
    if workers is None:  # a pool pays off from a few patients per process on
        workers = min(4, os.cpu_count() or 1) if len(todo) >= 8 else 0
    run_jobs(_write_one, todo, workers, total=len(plan), desc="phantom", unit="patient")

    if layout == "2023":
        _write_split_files(root, plan)
    write_text_atomic(manifest, manifest_text)
    (root / PARTIAL).unlink(missing_ok=True)
    return root


def _claim_root(root: Path, want: dict) -> None:
    """Make ``root`` a phantom tree of ``want`` (version, seed, layout): create it, or keep
    one written before (its patient folders are cleared when ``want`` differs); refuse a
    non-empty folder that holds no phantom manifest."""
    manifest, partial = root / MANIFEST, root / PARTIAL
    if root.exists() and any(root.iterdir()):
        mine = manifest if manifest.is_file() else partial  # partial: an interrupted call
        if not mine.is_file():
            raise FileExistsError(
                f"{root}: folder is not empty and holds no {MANIFEST}; write the phantom "
                "into an empty or new folder (it will not overwrite other data)"
            )
        try:
            have = json.loads(mine.read_text())
        except (OSError, ValueError):
            have = {}
        if {k: have.get(k) for k in want} != want:
            for sub in ("database_nifti", "database_split", "training", "testing"):
                shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)


def _remove_foreign_patients(root: Path, plan: list[tuple[int, str, str]]) -> None:
    """Delete the patient folders not in ``plan`` (left by a larger tree) and the hidden
    folders an interrupted call left."""
    keep = {folder for _, _, folder in plan}
    for group in _GROUPS:
        if not (root / group).is_dir():
            continue
        for p in sorted((root / group).glob("patient*")):
            if f"{group}/{p.name}" not in keep:
                shutil.rmtree(p)
        for p in (root / group).glob(".patient*.tmp"):
            shutil.rmtree(p, ignore_errors=True)


def _write_split_files(root: Path, plan: list[tuple[int, str, str]]) -> None:
    """The 2023 release's ``database_split/subgroup_*.txt``: one patient folder a line."""
    for split, fname in SPLIT_FILES_2023.items():
        names = [Path(rel).name for _, s, rel in plan if s == split]
        write_text_atomic(root / "database_split" / fname, "".join(n + "\n" for n in names))
