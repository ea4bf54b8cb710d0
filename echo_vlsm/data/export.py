"""Export CAMUS records to the project's dataset layout: square 8-bit PNGs, label maps, masks.

Layout of an exported dataset folder (see docs/architecture.md)::

    images/<split>/<stem>.png              8-bit gray, size x size (area when shrinking,
                                           bilinear when growing, per axis)
    labels/<split>/<stem>.png              0 bg, 1 LV cavity, 2 myocardium, 3 LA (nearest)
    masks/<structure>/<split>/<stem>.png   binary 0/255 per structure (lv, myo, la)
    records.csv                            one row per image (``RECORD_COLUMNS`` and
                                           ``export_spacing_y, export_spacing_x``)
    patients.csv                           one row per patient: reference EDV, ESV, EF
    .export_manifest.json                  what was exported from which source (for resuming)

Columns of ``records.csv``: ``stem, patient, view, phase, split, sex, age, quality`` as read
from CAMUS; ``source_height, source_width``: the SOURCE image's size in pixels;
``spacing_y, spacing_x``: the SOURCE image's pixel spacing in mm (row, column), not the
exported one; ``export_spacing_y, export_spacing_x``: the EXPORTED image's pixel size in mm,
``spacing_y * source_height / size`` by ``spacing_x * source_width / size`` (the images are
square, the pixels not). Masks measured with those spacings give the volumes of the source
masks (``echo_vlsm.clinical``).

Columns of ``patients.csv`` (``PATIENT_COLUMNS``), one row per (patient, split):
``release`` ("2019"/"2023", as read), ``ref_edv_ml, ref_esv_ml`` (mL) and ``ref_ef_percent``
(%): the reference values of the patient's ``Info_2CH.cfg`` (else ``Info_4CH.cfg``), an
empty field where the source gives none (the 2023 release: EF only). ``read_patients``
reads it back with floats (NaN where empty).

Every file is written atomically. ``patients.csv`` is written just before ``records.csv``;
``records.csv`` is written last and removed while an
export is in progress, so its presence marks a complete dataset. A second run skips images
whose sources (path, size, modification time) and export size are unchanged.

Examples::

    records = read_camus("data/raw/camus")
    export_dataset(records, "data/camus", size=512)
    table = read_records("data/camus")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.dataset import (
    OPTIONAL_COLUMNS,
    RECORD_COLUMNS,
    RECORDS_FILE,
    file_names,
    read_records,
    write_records,
)
from echo_vlsm.imaging import resize_image, resize_label
from echo_vlsm.io import atomic_path, clean_temp_files, write_json_atomic, write_png
from echo_vlsm.parallel import run_jobs
from echo_vlsm.structures import LABELS, SPLITS, STRUCTURES

__all__ = ["EXPORT_SPACING_COLUMNS", "MANIFEST_FILE", "OPTIONAL_COLUMNS", "PATIENTS_FILE",
           "PATIENT_COLUMNS", "PNG_COMPRESSION", "RECORD_COLUMNS", "RECORDS_FILE",
           "export_dataset", "read_patients", "read_records", "resize_image", "resize_label",
           "write_patients", "write_records"]

MANIFEST_FILE = ".export_manifest.json"
PATIENTS_FILE = "patients.csv"
PATIENT_COLUMNS: tuple[str, ...] = (
    "patient", "split", "release", "ref_edv_ml", "ref_esv_ml", "ref_ef_percent")
EXPORT_SPACING_COLUMNS: tuple[str, ...] = ("export_spacing_y", "export_spacing_x")
_MANIFEST_VERSION = 1
# zlib level of the exported PNGs: OpenCV at level 1 encodes speckled echo images 3-5x faster
# than Pillow's default, for files about 15 % larger (echo_vlsm.io.write_png).
PNG_COMPRESSION = 1


# --------------------------------------------------------------------------- one record


def _key(record) -> str:
    return f"{record.split}/{record.stem}"


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
    files = file_names(record.split, record.stem)
    _write_png(out / files[0], img)
    _write_png(out / files[1], lbl)
    for structure, rel in zip(STRUCTURES, files[2:]):
        _write_png(out / rel, np.where(lbl == LABELS[structure], 255, 0).astype(np.uint8))
    return {"source_height": int(image.shape[0]), "source_width": int(image.shape[1])}


def _row(record, facts: Mapping, size: int) -> dict:
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
        "export_spacing_y": float(record.spacing[0]) * facts["source_height"] / size,
        "export_spacing_x": float(record.spacing[1]) * facts["source_width"] / size,
    }


def _patient_rows(records: list) -> list[dict]:
    """One row per (patient, split): the reference values of its 2CH records, else 4CH."""
    rows: dict[tuple[str, str], dict] = {}
    for rec in sorted(records, key=lambda r: (r.patient, r.split, r.view != "2CH")):
        key = (rec.patient, rec.split)
        refs = {name: getattr(rec, name, None) for name in PATIENT_COLUMNS[3:]}
        if key not in rows:
            rows[key] = {"patient": rec.patient, "split": rec.split,
                         "release": getattr(rec, "release", ""), **refs}
        else:  # fill what the first view's cfg lacks
            for name, value in refs.items():
                if rows[key][name] is None:
                    rows[key][name] = value
    return list(rows.values())


def write_patients(rows: list[dict], dataset_dir: str | os.PathLike) -> Path:
    """Write ``patients.csv`` (``PATIENT_COLUMNS``) atomically; None is an empty field."""
    path = Path(dataset_dir) / PATIENTS_FILE
    df = pd.DataFrame(rows, columns=list(PATIENT_COLUMNS))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def read_patients(dataset_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``patients.csv`` of an exported dataset: text ``patient, split, release``, float
    reference values (NaN where the source gives none).

    Raises:
        FileNotFoundError: no ``patients.csv`` (an export older than it: export again).
        ValueError: a missing column or a value that is not a number, naming the file.
    """
    path = Path(dataset_dir) / PATIENTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no patients.csv; export the dataset again "
                                "(export_dataset writes it beside records.csv)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PATIENT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: lacks the columns {missing}; expected {list(PATIENT_COLUMNS)}")
    for col in PATIENT_COLUMNS[3:]:
        text = df[col].str.strip()
        num = pd.to_numeric(text.mask(text == ""), errors="coerce")
        bad = num.isna() & (text != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path}: column {col!r} row {i + 1} holds {df[col].iloc[i]!r}; "
                             "expected a number or an empty field")
        df[col] = num.astype("float64")
    return df


# --------------------------------------------------------------------------- manifest


def _load_manifest(out_dir: Path) -> dict:
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
    are removed, so the folder always mirrors ``records``; temporary files a killed export
    left are removed first. Returns ``out_dir``.
    """
    out = Path(out_dir)
    size = _check_size(size)
    records = _check_records(records)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    out.mkdir(parents=True, exist_ok=True)
    clean_temp_files(out, recursive=True)  # what a killed export left mid-write

    manifest = _load_manifest(out)
    sigs = {_key(rec): _signature(rec, size) for rec in records}
    todo = [rec for rec in records if not _fresh(out, manifest.get(_key(rec)), sigs[_key(rec)])]
    stale = [k for k in manifest if k not in sigs]
    if todo or stale or not (out / RECORDS_FILE).is_file():
        (out / RECORDS_FILE).unlink(missing_ok=True)  # present again only when complete
    _remove_stale(out, manifest, stale)

    def done(args, facts):
        rec = args[0]
        manifest[_key(rec)] = {"signature": sigs[_key(rec)],
                               "outputs": file_names(rec.split, rec.stem), **facts}

    try:
        run_jobs(_export_one, [(rec, str(out), size) for rec in todo], workers, done,
                 total=len(records), desc="export", unit="img",
                 checkpoint=lambda: _save_manifest(out, manifest))
    finally:
        _save_manifest(out, manifest)  # keeps what was finished, even on an error

    write_patients(_patient_rows(records), out)
    write_records([_row(rec, manifest[_key(rec)], size) for rec in records], out)
    return out


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
    return int(size)


def _check_records(records: Iterable) -> list:
    """The records as a list; each in a known split and none twice."""
    records, seen = list(records), set()
    for rec in records:
        if rec.split not in SPLITS:
            raise ValueError(f"{rec.stem}: split {rec.split!r} is not one of {SPLITS}")
        if _key(rec) in seen:
            raise ValueError(f"record {_key(rec)} appears twice in the records to export")
        seen.add(_key(rec))
    return records


def _fresh(out: Path, entry: dict | None, sig: dict | None) -> bool:
    """An exported record is up to date: same sources and size, every output present."""
    return (sig is not None and entry is not None and entry.get("signature") == sig
            and all((out / rel).is_file() for rel in entry.get("outputs", ())))


def _remove_stale(out: Path, manifest: dict, stale: list[str]) -> None:
    """Delete the outputs of records that are no longer part of the dataset."""
    for key in stale:
        for rel in manifest[key].get("outputs", ()):
            (out / rel).unlink(missing_ok=True)
        del manifest[key]
    if stale:
        _save_manifest(out, manifest)
