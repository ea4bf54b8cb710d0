"""Where the files of an exported dataset live, and its ``records.csv`` (floor 1).

Every writer and reader of a dataset folder (the export of notebook 01, the SDM's
``synthesize``, the SDM-CAMUS import, the task files, the training data, the figures) takes
its paths from here, so the layout is spelled once::

    images/<split>/<stem>.png              8-bit gray, size x size
    labels/<split>/<stem>.png              0 bg, 1 LV cavity, 2 myocardium, 3 LA (nearest)
    masks/<structure>/<split>/<stem>.png   binary 0/255 per structure (lv, myo, la)
    records.csv                            one row per image (``RECORD_COLUMNS``)
    tasks/<split>.json                     prompts per image and structure (notebook 03)

Columns of ``records.csv``: ``stem, patient, view, phase, split, sex, age, quality`` as read
from CAMUS; ``source_height, source_width``: the SOURCE image's size in pixels;
``spacing_y, spacing_x``: the SOURCE image's pixel spacing in mm (row, column), not the
exported one; synthetic sets add ``source_stem`` (the real image a synthetic one came from).
``records.csv`` is written last by every writer, so its presence marks a complete dataset.

Examples::

    >>> image_name("train", "patient0001_2CH_ED")
    'images/train/patient0001_2CH_ED.png'
    >>> mask_name("lv", "test", "patient0001_2CH_ED")
    'masks/lv/test/patient0001_2CH_ED.png'
    >>> image_path("data/phantom", "val", "patient0002_4CH_ES").as_posix()
    'data/phantom/images/val/patient0002_4CH_ES.png'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.io import atomic_path
from echo_vlsm.structures import STRUCTURES, check_structure

RECORD_COLUMNS: tuple[str, ...] = (
    "stem", "patient", "view", "phase", "split", "sex", "age", "quality",
    "source_height", "source_width", "spacing_y", "spacing_x",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("source_stem",)
RECORDS_FILE = "records.csv"
TASKS_DIR = "tasks"
_INT_COLUMNS = ("age", "source_height", "source_width")
_FLOAT_COLUMNS = ("spacing_y", "spacing_x")
#: Numbers some datasets add (the exported image's pixel size; EchoNet's per-video EF, EDV, ESV)
_OPTIONAL_FLOAT_COLUMNS = ("export_spacing_y", "export_spacing_x", "ef", "edv", "esv")
_STEM_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


# --------------------------------------------------------------------------- names and paths


def image_name(split: str, stem: str) -> str:
    """The image's path inside a dataset folder: ``images/<split>/<stem>.png``."""
    return f"images/{split}/{stem}.png"


def label_name(split: str, stem: str) -> str:
    """The label map's path inside a dataset folder: ``labels/<split>/<stem>.png``."""
    return f"labels/{split}/{stem}.png"


def mask_name(structure: str, split: str, stem: str) -> str:
    """A structure's binary mask inside a dataset folder:
    ``masks/<structure>/<split>/<stem>.png``."""
    return f"masks/{check_structure(structure)}/{split}/{stem}.png"


def file_names(split: str, stem: str) -> list[str]:
    """Every file one exported image has: image, label map, then one mask per structure."""
    return [image_name(split, stem), label_name(split, stem),
            *(mask_name(s, split, stem) for s in STRUCTURES)]


def image_path(dataset_dir: str | os.PathLike, split: str, stem: str) -> Path:
    return Path(dataset_dir) / image_name(split, stem)


def label_path(dataset_dir: str | os.PathLike, split: str, stem: str) -> Path:
    return Path(dataset_dir) / label_name(split, stem)


def mask_path(dataset_dir: str | os.PathLike, structure: str, split: str, stem: str) -> Path:
    return Path(dataset_dir) / mask_name(structure, split, stem)


def images_dir(dataset_dir: str | os.PathLike, split: str) -> Path:
    """The folder of a split's images: ``<dataset>/images/<split>``."""
    return Path(dataset_dir) / "images" / split


def task_path(dataset_dir: str | os.PathLike, split: str) -> Path:
    """A split's task file: ``<dataset>/tasks/<split>.json``."""
    return Path(dataset_dir) / TASKS_DIR / f"{split}.json"


# --------------------------------------------------------------------------- records.csv



def write_records(rows: Iterable[Mapping] | pd.DataFrame, dataset_dir: str | os.PathLike) -> Path:
    """Write ``records.csv`` of a dataset folder atomically; returns its path.

    ``rows`` (dicts or a DataFrame) must carry every column of ``RECORD_COLUMNS``; the
    optional ``source_stem`` (synthetic sets) and any extra columns follow them. Unknown
    values are written as empty fields.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    path = Path(dataset_dir) / RECORDS_FILE
    missing = [c for c in RECORD_COLUMNS if c not in df.columns]
    if missing and len(df):
        raise ValueError(f"{path}: rows lack the columns {missing}; needed: {list(RECORD_COLUMNS)}")
    for col in missing:
        df[col] = pd.Series(dtype=object)
    extra = [c for c in df.columns if c not in RECORD_COLUMNS]
    extra.sort(key=lambda c: (c not in OPTIONAL_COLUMNS, str(c)))
    df = df[list(RECORD_COLUMNS) + extra]
    for col in _INT_COLUMNS:
        df[col] = _as_int(df[col], path, col)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def _as_int(series: pd.Series, path: Path, col: str) -> pd.Series:
    text = series.astype("string").str.strip()
    text = text.mask(text == "", pd.NA)
    num = pd.to_numeric(text, errors="coerce")
    bad = num.isna() & text.notna()
    if not bad.any():
        nonint = num.notna() & (num != np.round(num))
        bad = bad | nonint
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{path}: column {col!r} row {i + 1} holds {series.iloc[i]!r}; "
            "expected a whole number or an empty field"
        )
    return num.round().astype("Int64")


def read_records(dataset_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``records.csv`` of a dataset folder (or the csv itself) into a DataFrame.

    Text columns (sex, quality, ...) stay strings, ``""`` where unknown; age and source size
    are nullable integers (``Int64``), spacing floats (NaN where unknown).
    """
    path = Path(dataset_dir)
    if path.is_dir() or path.suffix != ".csv":
        path = path / RECORDS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no records.csv; export the dataset first (export_dataset, notebook 01), "
            "or finish an interrupted export by running it again"
        )
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in RECORD_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: lacks the columns {missing}; a records.csv holds {list(RECORD_COLUMNS)}"
        )
    for col in _INT_COLUMNS:
        df[col] = _as_int(df[col], path, col)
    for col in (*_FLOAT_COLUMNS, *(c for c in _OPTIONAL_FLOAT_COLUMNS if c in df.columns)):
        text = df[col].str.strip()
        num = pd.to_numeric(text.mask(text == ""), errors="coerce")
        bad = num.isna() & (text != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}: column {col!r} row {i + 1} holds {df[col].iloc[i]!r}; expected a number"
            )
        df[col] = num.astype("float64")
    _check_stems(path, df)
    return df


def _check_stems(path: Path, df: pd.DataFrame) -> None:
    """Every ``stem`` (and ``source_stem``) is a plain file name: no folder, no ``..``, so
    the paths built from it stay inside the dataset folder."""
    for col in ("stem", *(c for c in OPTIONAL_COLUMNS if c in df.columns)):
        for i, stem in enumerate(df[col]):
            if col != "stem" and stem == "":
                continue
            if not _STEM_RE.fullmatch(stem) or stem in (".", ".."):
                raise ValueError(
                    f"{path}: column {col!r} row {i + 1} holds {stem!r}; a stem is a plain "
                    "file name (letters, digits, '_', '-', '.'), without a folder or '..'"
                )
