"""Export CAMUS records to the project's dataset layout: square 8-bit PNGs, label maps, masks.

Layout of an exported dataset folder (see ARCHITECTURE.md)::

    images/<split>/<stem>.png              8-bit gray, size x size (area when shrinking,
                                           bilinear when growing, per axis)
    labels/<split>/<stem>.png              0 bg, 1 LV cavity, 2 myocardium, 3 LA (nearest)
    masks/<structure>/<split>/<stem>.png   binary 0/255 per structure (lv, myo, la)
    records.csv                            one row per image (``RECORD_COLUMNS``)
    .export_manifest.json                  what was exported from which source (for resuming)

Columns of ``records.csv``: ``stem, patient, view, phase, split, sex, age, quality`` as read
from CAMUS; ``source_height, source_width``: the SOURCE image's size in pixels;
``spacing_y, spacing_x``: the SOURCE image's pixel spacing in mm (row, column), not the
exported one. The exported PNGs are square, so their pixel size is
``spacing_y * source_height / size`` by ``spacing_x * source_width / size``.

Every file is written atomically. ``records.csv`` is written last and removed while an
export is in progress, so its presence marks a complete dataset. A second run skips images
whose sources (path, size, modification time) and export size are unchanged.

Examples::

    records = read_camus("data/raw/camus")
    export_dataset(records, "data/camus", size=512)
    table = read_records("data/camus")
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, wait
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from echo_vlsm.io import atomic_path, write_json_atomic, write_png
from echo_vlsm.parallel import process_pool
from echo_vlsm.structures import LABELS, SPLITS, STRUCTURES

RECORD_COLUMNS: tuple[str, ...] = (
    "stem", "patient", "view", "phase", "split", "sex", "age", "quality",
    "source_height", "source_width", "spacing_y", "spacing_x",
)  # fmt: skip
OPTIONAL_COLUMNS: tuple[str, ...] = ("source_stem",)
RECORDS_FILE = "records.csv"
MANIFEST_FILE = ".export_manifest.json"
_MANIFEST_VERSION = 1
_INT_COLUMNS = ("age", "source_height", "source_width")
_FLOAT_COLUMNS = ("spacing_y", "spacing_x")
# zlib level of the exported PNGs: OpenCV at level 1 encodes speckled echo images 3-5x faster
# than Pillow's default, for files about 15 % larger (echo_vlsm.io.write_png).
PNG_COMPRESSION = 1


# --------------------------------------------------------------------------- resizing


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W) uint8 image to (size, size): per axis, area averaging where it
    shrinks and bilinear interpolation where it grows (one rounding, in float32)."""
    import cv2

    out = image.astype(np.float32)
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
    import cv2

    if label.shape == (size, size):
        return label.copy()
    return cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)


# --------------------------------------------------------------------------- one record


def _key(record) -> str:
    return f"{record.split}/{record.stem}"


def _outputs(split: str, stem: str) -> list[str]:
    paths = [f"images/{split}/{stem}.png", f"labels/{split}/{stem}.png"]
    paths += [f"masks/{s}/{split}/{stem}.png" for s in STRUCTURES]
    return paths


def _file_sig(path) -> list:
    st = os.stat(path)
    return [str(path), st.st_size, st.st_mtime_ns]


def _signature(record, size: int) -> dict | None:
    """What an exported record depends on; None when a source file is missing."""
    try:
        return {
            "image": _file_sig(record.image_path),
            "label": _file_sig(record.label_path),
            "size": size,
        }
    except OSError:
        return None


def _write_png(path: Path, array: np.ndarray) -> None:
    write_png(path, array, compression=PNG_COMPRESSION)


def _export_one(record, out_dir: str, size: int) -> dict:
    """Load, resize and write one record's image, label map and masks; return its facts."""
    image, label = record.load()
    img = resize_image(image, size)
    lbl = resize_label(label, size)
    out = Path(out_dir)
    files = _outputs(record.split, record.stem)
    _write_png(out / files[0], img)
    _write_png(out / files[1], lbl)
    for structure, rel in zip(STRUCTURES, files[2:]):
        _write_png(out / rel, np.where(lbl == LABELS[structure], 255, 0).astype(np.uint8))
    return {"source_height": int(image.shape[0]), "source_width": int(image.shape[1])}


def _row(record, facts: Mapping) -> dict:
    return {
        "stem": record.stem,
        "patient": record.patient,
        "view": record.view,
        "phase": record.phase,
        "split": record.split,
        "sex": record.sex or "",
        "age": record.age,
        "quality": record.quality or "",
        "source_height": facts["source_height"],
        "source_width": facts["source_width"],
        "spacing_y": float(record.spacing[0]),
        "spacing_x": float(record.spacing[1]),
    }


# --------------------------------------------------------------------------- manifest


def _load_manifest(out_dir: Path) -> dict:
    import json

    path = out_dir / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
        if data.get("version") == _MANIFEST_VERSION and isinstance(data.get("entries"), dict):
            return data["entries"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def _save_manifest(out_dir: Path, entries: dict) -> None:
    write_json_atomic(
        out_dir / MANIFEST_FILE, {"version": _MANIFEST_VERSION, "entries": entries}, indent=None
    )


# --------------------------------------------------------------------------- export


def export_dataset(
    records: Iterable,
    out_dir: str | os.PathLike,
    size: int = 512,
    workers: int | None = None,
) -> Path:
    """Write ``records`` (``CamusRecord``s) as a dataset folder of ``size`` x ``size`` PNGs.

    Images are 8-bit gray (area averaging when shrinking, bilinear when growing), label maps
    nearest-neighbour, and each structure (``lv``, ``myo``, ``la``) gets a binary 0/255 mask,
    as the study's 512 x 512 CAMUS set. ``workers`` processes (default ``min(4, cpus)``;
    0 or 1 runs in this process) share the work. Images whose sources and size are unchanged
    since the last export into ``out_dir`` are skipped; outputs of records no longer passed
    are removed, so the folder always mirrors ``records``. Returns ``out_dir``.
    """
    out = Path(out_dir)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
    size = int(size)
    records = list(records)
    keys: dict[str, object] = {}
    for rec in records:
        if rec.split not in SPLITS:
            raise ValueError(f"{rec.stem}: split {rec.split!r} is not one of {SPLITS}")
        key = _key(rec)
        if key in keys:
            raise ValueError(f"record {key} appears twice in the records to export")
        keys[key] = rec
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    out.mkdir(parents=True, exist_ok=True)

    manifest = _load_manifest(out)
    todo, sigs = [], {}
    for rec in records:
        key = _key(rec)
        sig = _signature(rec, size)
        sigs[key] = sig
        entry = manifest.get(key)
        fresh = (
            sig is not None
            and entry is not None
            and entry.get("signature") == sig
            and all((out / rel).is_file() for rel in entry.get("outputs", ()))
        )
        if not fresh:
            todo.append(rec)
    stale = [k for k in manifest if k not in keys]

    if todo or stale or not (out / RECORDS_FILE).is_file():
        (out / RECORDS_FILE).unlink(missing_ok=True)  # present again only when complete
    for key in stale:  # outputs of records that are no longer part of the dataset
        for rel in manifest[key].get("outputs", ()):
            (out / rel).unlink(missing_ok=True)
        del manifest[key]
    if stale:
        _save_manifest(out, manifest)

    def done(rec, facts):
        key = _key(rec)
        manifest[key] = {
            "signature": sigs[key],
            "outputs": _outputs(rec.split, rec.stem),
            "source_height": facts["source_height"],
            "source_width": facts["source_width"],
        }

    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="export",
               unit="img", disable=None)  # fmt: skip
    last_save = time.monotonic()
    try:
        if workers <= 1 or len(todo) <= 1:
            for rec in todo:
                done(rec, _export_one(rec, str(out), size))
                bar.update()
                if time.monotonic() - last_save > 5:
                    _save_manifest(out, manifest)
                    last_save = time.monotonic()
        else:
            with process_pool(min(workers, len(todo))) as pool:
                pending = {pool.submit(_export_one, rec, str(out), size): rec for rec in todo}
                try:
                    while pending:
                        finished, _ = wait(pending, timeout=5, return_when=FIRST_EXCEPTION)
                        for fut in finished:
                            rec = pending.pop(fut)
                            done(rec, fut.result())  # re-raises a worker's error here
                            bar.update()
                        if time.monotonic() - last_save > 5:
                            _save_manifest(out, manifest)
                            last_save = time.monotonic()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
        _save_manifest(out, manifest)  # keeps what was finished, even on an error

    rows = [_row(rec, manifest[_key(rec)]) for rec in records]
    write_records(rows, out)
    return out


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
    for col in _FLOAT_COLUMNS:
        text = df[col].str.strip()
        num = pd.to_numeric(text.mask(text == ""), errors="coerce")
        bad = num.isna() & (text != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}: column {col!r} row {i + 1} holds {df[col].iloc[i]!r}; expected a number"
            )
        df[col] = num.astype("float64")
    return df
