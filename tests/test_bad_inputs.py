"""Bad inputs that used to pass as good data: each case damages a tiny CAMUS tree, task file or
records.csv itself, and checks what is refused, naming which file, with which message.

A reader sees the cases at a glance in the tables below: (id, how the tree is damaged, the
file the error must name, the message it must carry). ``read_camus`` stops at the first
problem, ``validate`` lists it, and the export refuses it too (it reads through both).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from camus_trees import write_2019, write_2023

from echo_vlsm.data.camus import CamusFormatError, read_camus, validate
from echo_vlsm.dataset import read_records, write_records
from echo_vlsm.prompts import TaskFileError, read_tasks

IMG = "patient0001_2CH_ED"  # 2023 tree (patients 1-4)
IMG19 = "patient0049_2CH_ED"  # 2019 tree (training patient 49)


# --------------------------------------------------------------------------- damaging helpers


def _folder(root: Path, stem: str) -> Path:
    patient = stem.split("_")[0]
    nifti = root / "database_nifti" / patient
    return nifti if nifti.is_dir() else root / "training" / patient


def set_pixdim(root: Path, name: str, value: float, axis: int = 1) -> str:
    """Write ``value`` into pixdim[axis] of an uncompressed NIfTI-1 file (x: 1, y: 2)."""
    path = _folder(root, name) / name
    data = bytearray(path.read_bytes())
    data[76 + 4 * axis : 80 + 4 * axis] = struct.pack("<f", value)
    path.write_bytes(bytes(data))
    return name


def set_mhd_field(root: Path, name: str, key: str, value: str) -> str:
    path = _folder(root, name) / name
    text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", path.read_text())
    path.write_text(text)
    return name


def copy_as(root: Path, name: str, new_name: str) -> str:
    folder = _folder(root, name)
    (folder / new_name).write_bytes((folder / name).read_bytes())
    return new_name


def append_bytes(root: Path, name: str, n: int = 7) -> str:
    path = _folder(root, name) / name
    path.write_bytes(path.read_bytes() + b"\0" * n)
    return name


def set_age(root: Path, patient_view: str, age: str) -> str:
    patient, view = patient_view.split("_")
    path = _folder(root, patient) / f"Info_{view}.cfg"
    path.write_text(re.sub(r"(?m)^Age: .*$", f"Age: {age}", path.read_text()))
    return path.name


# (id, release/ext, damage(root) -> the file name the error must name, message pattern)
CASES = [
    ("nifti-nan-spacing-image", ".nii", lambda r: set_pixdim(r, f"{IMG}.nii", float("nan")),
     r"pixel spacing must be finite and > 0"),
    ("nifti-zero-spacing-image", ".nii", lambda r: set_pixdim(r, f"{IMG}.nii", 0.0, axis=2),
     r"pixdim.*0.*must be finite and > 0"),
    ("nifti-negative-spacing-label", ".nii", lambda r: set_pixdim(r, f"{IMG}_gt.nii", -0.3),
     r"-0.3.*must be finite and > 0"),
    ("nifti-inf-spacing-label", ".nii", lambda r: set_pixdim(r, f"{IMG}_gt.nii", float("inf")),
     r"inf.*must be finite and > 0"),
    ("nifti-nan-spacing-both", ".nii",
     lambda r: (set_pixdim(r, f"{IMG}_gt.nii", float("nan")),
                set_pixdim(r, f"{IMG}.nii", float("nan")))[1],
     r"is nan, 0.31; pixel spacing must be finite and > 0"),
    ("nii-beside-nii.gz", ".nii.gz", lambda r: copy_as(r, f"{IMG}.nii.gz", f"{IMG}.nii"),
     r"second file of the image .* one image per name"),
    ("mhd-negative-spacing", "2019",
     lambda r: set_mhd_field(r, f"{IMG19}.mhd", "ElementSpacing", "-0.2 0.3"),
     r"ElementSpacing is '-0.2 0.3'; pixel spacing must be finite numbers > 0"),
    ("mhd-zero-spacing", "2019",
     lambda r: set_mhd_field(r, f"{IMG19}.mhd", "ElementSpacing", "0 0"),
     r"ElementSpacing is '0 0'"),
    ("mhd-zero-spacing-both", "2019",
     lambda r: (set_mhd_field(r, f"{IMG19}_gt.mhd", "ElementSpacing", "0 0"),
                set_mhd_field(r, f"{IMG19}.mhd", "ElementSpacing", "0 0"))[1],
     r"ElementSpacing is '0 0'"),
    ("mhd-inf-spacing-label", "2019",
     lambda r: set_mhd_field(r, f"{IMG19}_gt.mhd", "ElementSpacing", "inf 0.3"),
     r"ElementSpacing is 'inf 0.3'"),
    ("mhd-nan-spacing-image", "2019",
     lambda r: set_mhd_field(r, f"{IMG19}.mhd", "ElementSpacing", "nan nan"),
     r"ElementSpacing is 'nan nan'"),
    ("mhd-data-file-of-the-label", "2019",
     lambda r: set_mhd_field(r, f"{IMG19}.mhd", "ElementDataFile", f"{IMG19}_gt.raw"),
     r"must carry the header's own name .*another image's data"),
    ("mhd-data-file-absolute", "2019",
     lambda r: set_mhd_field(r, f"{IMG19}.mhd", "ElementDataFile", "/etc/hostname"),
     r"must lie beside its header"),
    ("mhd-data-file-up", "2019",
     lambda r: set_mhd_field(r, f"{IMG19}.mhd", "ElementDataFile", f"../{IMG19}.raw"),
     r"must lie beside its header"),
    ("mhd-data-file-list", "2019",
     lambda r: set_mhd_field(r, f"{IMG19}.mhd", "ElementDataFile", "LIST"),
     r"a list or pattern of data files"),
    ("mhd-dimsize-shrunk", "2019",
     lambda r: (set_mhd_field(r, f"{IMG19}.mhd", "DimSize", "30 39"), f"{IMG19}.raw")[1],
     r"30 more than .* needs \(1170.*DimSize 30 39"),
    ("mhd-raw-longer", "2019", lambda r: append_bytes(r, f"{IMG19}_gt.raw"),
     r"1207 bytes, 7 more than .*_gt.mhd needs \(1200"),
    ("mhd-dimsize-swapped", "2019",
     lambda r: (set_mhd_field(r, f"{IMG19}.mhd", "DimSize", "40 30"), f"{IMG19}_gt.mhd")[1],
     rf"label shape \(40, 30\) differs from image {IMG19}.mhd shape \(30, 40\)"),
    ("age-999", ".nii.gz", lambda r: set_age(r, "patient0002_4CH", "999"),
     r"Age is '999'; expected a whole number of years in 0..120"),
    ("age-negative", "2019", lambda r: set_age(r, "patient0049_2CH", "-1"),
     r"Age is '-1'; expected a whole number of years in 0..120"),
]


def damaged_tree(tmp_path: Path, release: str, damage) -> tuple[Path, str]:
    root = tmp_path / "camus"
    if release == "2019":
        write_2019(root, training=(49, 51), testing=())
    else:
        write_2023(root, train=(1, 2), val=(), test=(), ext=release)
    return root, damage(root)


@pytest.mark.parametrize("case, release, damage, message", CASES, ids=[c[0] for c in CASES])
def test_damaged_tree_is_refused_naming_the_file(tmp_path, case, release, damage, message):
    root, name = damaged_tree(tmp_path, release, damage)
    with pytest.raises(CamusFormatError) as info:
        read_camus(root)
    assert info.value.path.name == name, str(info.value)
    assert re.search(message, info.value.problem), str(info.value)
    problems = validate(root)
    assert [p for p in problems if name in p and re.search(message, p)], problems


def test_the_sound_trees_still_read(tmp_path):
    """The checks refuse only the damage: the same trees, undamaged, read in full."""
    assert len(read_camus(write_2019(tmp_path / "a", training=(49, 51), testing=()))) == 8
    assert validate(tmp_path / "a") == []
    assert len(read_camus(write_2023(tmp_path / "b", train=(1, 2), val=(), test=(),
                                     ext=".nii"))) == 8
    assert validate(tmp_path / "b") == []


# --------------------------------------------------------------------------- reading outside


TASK = {"img_name": "images/train/a.png", "mask_name": "masks/lv/train/a.png",
        "structure": "lv", "prompts": {"p0": ""}}
TASK_CASES = [
    ("img-up", {"img_name": "../other/images/train/a.png"}, "img_name", "outside the dataset"),
    ("img-absolute", {"img_name": "/data/other/images/train/a.png"}, "img_name",
     "outside the dataset"),
    ("mask-up-inside", {"mask_name": "masks/../../x.png"}, "mask_name", "outside the dataset"),
    ("mask-windows-drive", {"mask_name": "C:\\data\\a.png"}, "mask_name", "outside the dataset"),
    ("mask-home", {"mask_name": "~/a.png"}, "mask_name", "outside the dataset"),
    ("img-not-a-string", {"img_name": 3}, "img_name", "must be a path inside"),
]


@pytest.mark.parametrize("case, change, key, message", TASK_CASES,
                         ids=[c[0] for c in TASK_CASES])
def test_task_file_pointing_outside_the_dataset_is_refused(tmp_path, case, change, key, message):
    path = tmp_path / "tasks" / "train.json"
    path.parent.mkdir()
    path.write_text(json.dumps([TASK, {**TASK, **change}]))
    with pytest.raises(TaskFileError) as info:
        read_tasks(tmp_path, "train")
    assert info.value.path == path
    assert info.value.problem.startswith(f"task 1: {key}") and message in info.value.problem
    path.write_text(json.dumps([TASK]))  # the sound entry alone reads
    assert read_tasks(tmp_path, "train") == [TASK]


ROW = {"stem": "patient0001_2CH_ED", "patient": "patient0001", "view": "2CH", "phase": "ED",
       "split": "train", "sex": "M", "age": 50, "quality": "Good", "source_height": 40,
       "source_width": 30, "spacing_y": 0.3, "spacing_x": 0.2}
STEM_CASES = [
    ("stem-up", {"stem": "../../etc/passwd"}, "stem"),
    ("stem-folder", {"stem": "a/b"}, "stem"),
    ("stem-absolute", {"stem": "/tmp/a"}, "stem"),
    ("stem-dotdot", {"stem": ".."}, "stem"),
    ("source-stem-up", {"source_stem": "../x"}, "source_stem"),
]


@pytest.mark.parametrize("case, change, column", STEM_CASES, ids=[c[0] for c in STEM_CASES])
def test_records_stem_that_is_not_a_plain_name_is_refused(tmp_path, case, change, column):
    sound = {**ROW, "source_stem": ""}
    write_records([sound, {**sound, "stem": "patient0002_2CH_ED", **change}], tmp_path)
    with pytest.raises(ValueError, match=rf"records.csv: column '{column}' row 2 holds .*plain "
                                         "file name"):
        read_records(tmp_path)
    write_records([sound], tmp_path)
    assert read_records(tmp_path)["stem"].tolist() == [ROW["stem"]]
