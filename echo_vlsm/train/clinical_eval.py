"""Clinical indices of a run's test predictions: the rows of ``clinical.csv`` (issue 21).

One row per test patient: the run's fields (``grid.RUN_COLUMNS``), the patient and its split, the
dataset's reference EDV, ESV and EF (``patients.csv``; NaN where it has none), and EDV, ESV
and EF measured by ``echo_vlsm.clinical.biplane_volumes`` (CAMUS disc height) on the
ground-truth LV masks (``gt_*``) and on the predicted ones (``pred_*``, thresholded as for
Dice), each with a reason when a value is NaN. Masks are the stored (exported) ones, measured
with the exported pixel size (``records.csv``'s ``export_spacing_y, export_spacing_x``).

A patient of the test split without all four LV images (2CH and 4CH at ED and ES) is listed
with NaN values and the reason (``missing 2CH_ES``; ``not scored (fast_dev_run): ...``).

``LVMasks`` collects the masks while the test split is scored (``scoring.evaluate``);
``clinical_table`` measures them. Nothing here runs a model. The ground-truth measurements,
the same for every run scored on a split, are kept in ``<cache_dir>/clinical_gt.json``
(``GroundTruthCache``), keyed by the masks, their spacing and the source of
``echo_vlsm.clinical``: a run measures only its own predictions once another run on the
same split has measured the ground truth.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import echo_vlsm.clinical
from echo_vlsm.clinical import biplane_volumes
from echo_vlsm.data.export import PATIENTS_FILE, read_patients
from echo_vlsm.dataset import read_records
from echo_vlsm.grid import CLINICAL_COLUMNS, CLINICAL_FILE
from echo_vlsm.io import write_json_atomic, write_text_atomic
from echo_vlsm.structures import PHASES, VIEWS
from echo_vlsm.train.config import TrainConfig

__all__ = ["CLINICAL_COLUMNS", "CLINICAL_FILE", "GT_CACHE_FILE", "IMAGE_NAMES", "LV",
           "GroundTruthCache", "LVMasks", "clinical_problem", "clinical_table",
           "write_clinical"]

#: The file each run's evaluation writes in its folder (``analysis.clinical`` reads it).
#: The structure measured: the LV cavity.
LV = "lv"
#: The four images of a patient, in ``biplane_volumes``' order.
IMAGE_NAMES: tuple[str, ...] = tuple(f"{v}_{p}" for v in VIEWS for p in PHASES)
_SPLIT = "test"
_NAN = float("nan")
#: The ground-truth measurements of a dataset's test patients, in its cache folder.
GT_CACHE_FILE = "clinical_gt.json"
Values = tuple[float, float, float, str]  # EDV, ESV, EF, reason ("" when all are numbers)


@dataclass
class LVMasks:
    """The LV masks of the scored test images by image stem, at the stored size: the
    prediction (bool, thresholded as for Dice) and the ground truth; ``available``: the stems
    of every LV triplet of the split, scored or not."""

    pred: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    available: set[str] = field(default_factory=set)

    def add(self, stem: str, pred: np.ndarray, truth: np.ndarray) -> None:
        self.pred[stem] = np.asarray(pred, dtype=bool)
        self.truth[stem] = np.asarray(truth, dtype=bool)


@dataclass(frozen=True)
class _Image:
    """One test image of ``records.csv``: its patient, name (``2CH_ED``) and pixel size."""

    stem: str
    patient: str
    name: str
    spacing: tuple[float, float] | None


class GroundTruthCache:
    """Measurements of ground-truth masks kept between runs, in one JSON file: key (the
    masks' bits, shapes and spacings, and the SHA-256 of ``echo_vlsm.clinical``'s source) ->
    ``[edv, esv, ef, reason]`` (null for NaN). A file that cannot be read as such a mapping
    is measured afresh and rewritten; ``path`` None keeps nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, list] = {}
        self.changed = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                print(f"{path}: not readable ({exc}); measuring the ground truth again",
                      flush=True)
                loaded = {}
            self.entries = loaded if isinstance(loaded, dict) else {}

    @staticmethod
    def key(masks: list[np.ndarray], spacings: list[tuple[float, float]]) -> str:
        h = hashlib.sha256(_method_version().encode())
        for mask, spacing in zip(masks, spacings, strict=True):
            h.update(repr((mask.shape, tuple(float(x) for x in spacing))).encode())
            h.update(np.packbits(mask).tobytes())
        return h.hexdigest()

    def get(self, key: str) -> Values | None:
        entry = self.entries.get(key)
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[3], str)):
            return None
        try:
            edv, esv, ef = (_NAN if v is None else float(v) for v in entry[:3])
        except (TypeError, ValueError):
            return None
        return edv, esv, ef, entry[3]

    def put(self, key: str, values: Values) -> None:
        self.entries[key] = [None if math.isnan(v) else v for v in values[:3]] + [values[3]]
        self.changed = True

    def save(self) -> None:
        if self.path is not None and self.changed:
            write_json_atomic(self.path, self.entries)
            self.changed = False


_VERSION: list[str] = []


def _method_version() -> str:
    """The SHA-256 of ``echo_vlsm.clinical``'s source files: what a cached value was
    measured with."""
    if not _VERSION:
        h = hashlib.sha256()
        for path in sorted(Path(echo_vlsm.clinical.__file__).parent.glob("*.py")):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        _VERSION.append(h.hexdigest())
    return _VERSION[0]


def _spacing(row: pd.Series, size: tuple[int, int] | None) -> tuple[float, float] | None:
    """The exported image's pixel size ``(row_mm, col_mm)``: ``export_spacing_y/x``, else
    the source spacing times the source size over the stored mask's size ``(H, W)``; None
    when unknown."""
    ys, xs = row.get("export_spacing_y", _NAN), row.get("export_spacing_x", _NAN)
    if _finite(ys) and _finite(xs):
        return float(ys), float(xs)
    if size is None:
        return None
    try:
        ys = float(row["spacing_y"]) * float(row["source_height"]) / size[0]
        xs = float(row["spacing_x"]) * float(row["source_width"]) / size[1]
    except (TypeError, ValueError):
        return None
    return (ys, xs) if _finite(ys) and _finite(xs) and ys > 0 and xs > 0 else None


def _finite(value: float | str | None) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _test_images(dataset_dir: Path, stems: Iterable[str],
                 size: tuple[int, int] | None) -> dict[str, dict[str, _Image]]:
    """Per test patient (``records.csv``'s rows of the test split and the images ``stems``),
    its images by name (``2CH_ED``, ...).

    Raises:
        ValueError: an image of ``stems`` that ``records.csv`` does not list, naming the file.
    """
    records = read_records(dataset_dir)
    by_stem = {str(r["stem"]): r for _, r in records.iterrows()}
    unknown = sorted(set(stems) - set(by_stem))
    if unknown:
        raise ValueError(f"{dataset_dir / 'records.csv'}: lists no row for the test images "
                         f"{unknown[:3]}; the clinical measurement needs each image's patient, "
                         "view, phase and pixel size")
    patients: dict[str, dict[str, _Image]] = {}
    wanted = set(stems)
    for stem, row in by_stem.items():
        if str(row["split"]) != _SPLIT and stem not in wanted:
            continue
        patient = str(row["patient"])
        name = f"{row['view']}_{row['phase']}"
        images = patients.setdefault(patient, {})
        if name in IMAGE_NAMES:
            images[name] = _Image(stem, patient, name, _spacing(row, size))
    return patients


def _references(dataset_dir: Path) -> dict[str, tuple[float, float, float]]:
    """Per test patient, ``(ref_edv_ml, ref_esv_ml, ref_ef_percent)`` from ``patients.csv``;
    empty when the dataset has no ``patients.csv`` (synthetic sets, older exports)."""
    if not (dataset_dir / PATIENTS_FILE).is_file():
        return {}
    table = read_patients(dataset_dir)
    table = table[table["split"] == _SPLIT]
    return {str(r["patient"]): (float(r["ref_edv_ml"]), float(r["ref_esv_ml"]),
                                float(r["ref_ef_percent"])) for _, r in table.iterrows()}


def _measure(images: dict[str, _Image], masks: dict[str, np.ndarray], missing: str | None,
             cache: GroundTruthCache | None = None) -> Values:
    """EDV, ESV, EF and the reason ("" when all three are numbers) of one patient's masks;
    ``cache``: where ground-truth values are kept between runs."""
    if missing is not None:
        return _NAN, _NAN, _NAN, missing
    no_spacing = [n for n in IMAGE_NAMES if images[n].spacing is None]
    if no_spacing:
        return _NAN, _NAN, _NAN, (f"no pixel spacing in records.csv for "
                                  f"{', '.join(no_spacing)}")
    m = [masks[images[n].stem] for n in IMAGE_NAMES]
    sp = [spacing for n in IMAGE_NAMES if (spacing := images[n].spacing) is not None]
    key = GroundTruthCache.key(m, sp) if cache is not None else ""
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    v = biplane_volumes(m[0], m[1], m[2], m[3], sp[0], sp[2])
    values = [v.edv_ml, v.esv_ml, v.ef_percent]
    reasons = [v.reason] if v.reason else []
    bad = [label for label, x in zip(("EDV", "ESV"), values[:2]) if x <= 0]
    if bad:  # a volume of 0 mL is no measurement (read_clinical refuses it)
        reasons.append(f"{' and '.join(bad)} of 0 mL")
        values = [_NAN, _NAN, _NAN]
    out = (values[0], values[1], values[2], "; ".join(reasons))
    if cache is not None:
        cache.put(key, out)
    return out


def _missing(images: dict[str, _Image], masks: LVMasks) -> str | None:
    """Why a patient cannot be measured for want of images, or None when all four are
    scored."""
    absent = [n for n in IMAGE_NAMES
              if n not in images or images[n].stem not in masks.available]
    if absent:
        return f"missing {', '.join(absent)}"
    unscored = [n for n in IMAGE_NAMES if images[n].stem not in masks.pred]
    if unscored:
        return f"not scored (fast_dev_run): {', '.join(unscored)}"
    return None


def clinical_table(config: TrainConfig, masks: LVMasks, dataset_dir: str | Path,
                   size: tuple[int, int] | None = None,
                   cache_dir: str | Path | None = None) -> pd.DataFrame:
    """The rows of ``clinical.csv`` (``CLINICAL_COLUMNS``), one per test patient, sorted.

    Args:
        config: the run (its fields fill the run columns).
        masks: the LV masks collected while scoring the test split.
        dataset_dir: the dataset scored (``records.csv``, ``patients.csv``).
        size: the stored masks' ``(H, W)``, for a dataset whose ``records.csv`` lacks
            ``export_spacing_y/x`` (the spacing is then derived from the source's).
        cache_dir: where the ground-truth measurements are kept between runs
            (``GT_CACHE_FILE``); None: measured every time.

    Raises:
        ValueError: ``records.csv`` lacks a scored image, or ``patients.csv`` is malformed
            (naming the file).
    """
    dataset_dir = Path(dataset_dir)
    patients = _test_images(dataset_dir, masks.available, size)
    refs = _references(dataset_dir)
    cache = GroundTruthCache(None if cache_dir is None else Path(cache_dir) / GT_CACHE_FILE)
    run = {"model": config.model, "strategy": config.strategy, "encoders": config.encoders,
           "prompt": config.prompt, "seed": int(config.seed),
           "real_fraction": float(config.real_fraction), "provenance": bool(config.provenance)}
    rows = []
    for patient in sorted(patients):
        images = patients[patient]
        missing = _missing(images, masks)
        gt = _measure(images, masks.truth, missing, cache)
        pred = _measure(images, masks.pred, missing)
        rows.append({**run, "patient": patient, "split": _SPLIT,
                     **dict(zip(("ref_edv_ml", "ref_esv_ml", "ref_ef_percent"),
                                refs.get(patient, (_NAN, _NAN, _NAN)))),
                     **dict(zip(("gt_edv_ml", "gt_esv_ml", "gt_ef_percent", "gt_reason"), gt)),
                     **dict(zip(("pred_edv_ml", "pred_esv_ml", "pred_ef_percent",
                                 "pred_reason"), pred))})
    cache.save()
    return pd.DataFrame(rows, columns=list(CLINICAL_COLUMNS))


def write_clinical(run_dir: str | Path, table: pd.DataFrame) -> Path:
    """Write ``table`` as ``<run_dir>/clinical.csv`` (atomically); returns the path."""
    path = Path(run_dir) / CLINICAL_FILE
    write_text_atomic(path, table.to_csv(index=False))
    return path


def clinical_problem(run_dir: str | Path) -> str | None:
    """Why ``<run_dir>/clinical.csv`` must be (re)measured: missing, unreadable, cut short
    (no final newline), or not the format (its header, at least one row, one line per row);
    None when it is there and well-formed."""
    path = Path(run_dir) / CLINICAL_FILE
    if not path.is_file():
        return f"{CLINICAL_FILE} missing"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"{CLINICAL_FILE} unreadable ({exc})"
    if not text.endswith("\n"):
        return f"{CLINICAL_FILE} cut short (no final newline)"
    lines = text.splitlines()
    if not lines or lines[0].split(",") != list(CLINICAL_COLUMNS):
        return f"{CLINICAL_FILE} has not the header {','.join(CLINICAL_COLUMNS)}"
    if len(lines) < 2:
        return f"{CLINICAL_FILE} has no rows"
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        return f"{CLINICAL_FILE} is not a readable CSV ({exc})"
    if len(table) != len(lines) - 1:
        return f"{CLINICAL_FILE} has rows that are not one line each"
    return None
