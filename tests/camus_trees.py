"""Tiny CAMUS trees of both public releases, written with SimpleITK, for the reader's tests.

Each image is small (rows x cols, default 40 x 30) with a distinct spacing per patient, an
intensity ramp that depends on (patient, view, phase), and a label map with the four values
0..3 laid out in bands, so tests can check values, orientation and spacing after reading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
SEXES = ("M", "F")
QUALITIES = ("Good", "Medium", "Poor")


def spacing_of(number: int) -> tuple[float, float]:
    """(row, col) spacing in mm of a patient: distinct for rows and columns and per patient."""
    return (0.30 + 0.01 * number, 0.15 + 0.01 * number)


def make_image(number: int, view: str, phase: str, shape=(40, 30)) -> np.ndarray:
    rows, cols = shape
    base = (number * 7 + VIEWS.index(view) * 50 + PHASES.index(phase) * 20) % 100
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    return ((base + r * 3 + c) % 256).astype(np.uint8)


def make_label(shape=(40, 30)) -> np.ndarray:
    """Bands: background rows 0-9, LV 10-19, myocardium 20-29, LA 30+ (cols 5.. only)."""
    rows, cols = shape
    label = np.zeros(shape, np.uint8)
    band = rows // 4
    label[band : 2 * band, 5:] = 1
    label[2 * band : 3 * band, 5:] = 2
    label[3 * band :, 5:] = 3
    return label


def write_image(path: Path, array: np.ndarray, spacing_rc, three_d: bool = False) -> None:
    """Write (H, W) ``array`` with (row, col) spacing; 3-D with one slice if ``three_d``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if three_d:
        img = sitk.GetImageFromArray(array[None])
        img.SetSpacing((spacing_rc[1], spacing_rc[0], 1.0))
    else:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((spacing_rc[1], spacing_rc[0]))
    sitk.WriteImage(img, str(path), useCompression=False)


def cfg_text(number: int, view: str, release: str) -> str:
    sex = SEXES[number % 2]
    age = 40 + number
    quality = QUALITIES[number % 3]
    if release == "2019":
        lines = [
            "ED: 1",
            "ES: 12",
            "NbFrame: 14",
            f"Sex: {sex}",
            f"Age: {age}",
            f"ImageQuality: {quality}",
            "LVedv: 100.0",
            "LVesv: 50.0",
            "LVef: 50.0",
        ]
    else:
        lines = [
            "ED: 1",
            "NbFrame: 14",
            "ES: 12",
            f"Sex: {sex}",
            f"Age: {age}",
            f"ImageQuality: {quality}",
            "EF: 50.0",
            "FrameRate: 30.0",
        ]
    return "\n".join(lines) + "\n"


def write_patient(
    folder: Path,
    number: int,
    release: str,
    ext: str,
    shape=(40, 30),
    three_d: bool = False,
    seed: int | None = None,
) -> None:
    """Write one patient folder; ``seed`` (default ``number``) sets spacing, pixels and cfg."""
    name = f"patient{number:04d}"
    number = number if seed is None else seed
    folder.mkdir(parents=True, exist_ok=True)
    spacing = spacing_of(number)
    for view in VIEWS:
        (folder / f"Info_{view}.cfg").write_text(cfg_text(number, view, release))
        for phase in PHASES:
            write_image(
                folder / f"{name}_{view}_{phase}{ext}",
                make_image(number, view, phase, shape),
                spacing,
                three_d,
            )
            write_image(
                folder / f"{name}_{view}_{phase}_gt{ext}", make_label(shape), spacing, three_d
            )
        # a sequence file the reader must ignore (3-D, several frames)
        seq = np.stack([make_image(number, view, "ED", shape)] * 3)
        img = sitk.GetImageFromArray(seq)
        sitk.WriteImage(img, str(folder / f"{name}_{view}_half_sequence{ext}"))


def write_2023(
    root: Path,
    train=(1, 2),
    val=(3,),
    test=(4,),
    ext=".nii.gz",
    shape=(40, 30),
    three_d: bool = False,
) -> Path:
    """A 2023-release tree: database_nifti/ + database_split/ with the given patient numbers."""
    root = Path(root)
    for n in (*train, *val, *test):
        write_patient(root / "database_nifti" / f"patient{n:04d}", n, "2023", ext, shape, three_d)
    split_dir = root / "database_split"
    split_dir.mkdir(parents=True, exist_ok=True)
    for fname, nums in (
        ("subgroup_training.txt", train),
        ("subgroup_validation.txt", val),
        ("subgroup_testing.txt", test),
    ):
        (split_dir / fname).write_text("".join(f"patient{n:04d}\n" for n in nums))
    return root


def write_2019(
    root: Path, training=(49, 50, 51, 52), testing=(1,), shape=(40, 30), three_d: bool = False
) -> Path:
    """A 2019-release tree: training/ and testing/ folders of .mhd/.raw files."""
    root = Path(root)
    for n in training:
        write_patient(root / "training" / f"patient{n:04d}", n, "2019", ".mhd", shape, three_d)
    for n in testing:
        # testing patients reuse the numbers 0001-0050 of training, with other contents
        write_patient(
            root / "testing" / f"patient{n:04d}", n, "2019", ".mhd", shape, three_d, seed=n + 20
        )
    return root
