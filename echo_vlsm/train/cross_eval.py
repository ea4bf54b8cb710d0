"""A finished run scored on another dataset's test split, without retraining (issue 22, sec. 3).

``evaluate_on(run_dir, dataset, dataset_dir)`` loads the run's model as ``scoring.evaluate``
does (its best weights; a zero-shot run's initial model), predicts the LV on the test split of
an exported dataset (``records.csv``, ``images/``, ``masks/``, ``tasks/test.json``) with the
run's own prompt key, and writes two files in the run folder, atomically:

- ``metrics_<dataset>.csv`` (``grid.CROSS_METRICS_FILE``): the columns of ``metrics.csv``
  (``grid.METRIC_COLUMNS``), one row per LV test image: Dice and IoU in percent, HD95 in
  pixels of the exported size (512 by default), thresholded as for ``metrics.csv``;
- ``clinical_<dataset>.csv`` (``grid.CROSS_CLINICAL_FILE``): the columns of ``clinical.csv``
  (``grid.CLINICAL_COLUMNS``), one row per test patient (EchoNet: per video).

For EchoNet-Dynamic (``dataset="echonet"``) the clinical rows hold EF by single-plane discs
(``echo_vlsm.clinical.single_plane_volumes``, ``DISC_HEIGHT``: each instant its own disc
height) of the traced (``gt_ef_percent``) and the predicted (``pred_ef_percent``) 4CH masks
at ED and ES, beside the video's published EF,
EDV and ESV (``ref_*``, from ``records.csv``'s ``ef``, ``edv``, ``esv``). EchoNet publishes no
pixel spacing, so the measured EDV and ESV are empty (NaN) and every ``gt_reason`` and
``pred_reason`` starts with ``NO_SPACING_REASON``; EF is scale-free. The masks are measured at
a nominal pixel size (``NOMINAL_FIELD_MM`` over the exported width), which only sets the
measurement's millimetre thresholds (smallest cavity, mitral-chord tolerance) to a
plausible scale; EF does not depend on it otherwise.

For a CAMUS-format target (``dataset="camus"``, the reverse direction) the clinical rows are
``clinical_eval.clinical_table``'s (biplane, mL, with the exported pixel size).

A run whose prompt the dataset cannot make is refused before anything is loaded, with the
error of ``data.echonet_export.check_prompt`` (EchoNet: P0-P3 only).

``prepare_echonet`` makes the exported EchoNet dataset these evaluations read: the download
(``echonet_dir``) or the EchoNet-layout phantom, validated, exported, and its task files
(LV only, prompts P0-P3) written (``write_echonet_tasks``).

Examples::

    prepare_echonet("data/phantom-echonet", phantom_dir="data/raw/phantom-echonet",
                    n_videos=20, splits={"test": 20})
    result = evaluate_on("runs/demo/clipseg_real_trained_p1", "echonet",
                         "data/phantom-echonet")
    result.metrics["dice"].mean(), result.paths
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from echo_vlsm.clinical import single_plane_volumes
from echo_vlsm.data.echonet import read_echonet
from echo_vlsm.data.echonet import validate as validate_echonet
from echo_vlsm.data.echonet_export import PROMPT_KEYS as ECHONET_PROMPTS
from echo_vlsm.data.echonet_export import check_prompt, export_echonet
from echo_vlsm.data.phantom import write_phantom
from echo_vlsm.dataset import image_name, mask_name, read_records, task_path
from echo_vlsm.errors import PathError
from echo_vlsm.grid import (
    CLINICAL_COLUMNS,
    CONFIG_FILE,
    CROSS_CLINICAL_FILE,
    CROSS_METRICS_FILE,
    METRIC_COLUMNS,
    NO_PROMPT,
    run_problem,
)
from echo_vlsm.io import read_png, write_text_atomic
from echo_vlsm.paths import resolve
from echo_vlsm.prompts.shape_backends import shape_of
from echo_vlsm.prompts.tasks import dumps_tasks
from echo_vlsm.prompts.templates import Attributes, make_prompts
from echo_vlsm.structures import PHASES, SPLITS
from echo_vlsm.train.clinical_eval import LV, GroundTruthCache, LVMasks, clinical_table
from echo_vlsm.train.config import TrainConfig
from echo_vlsm.train.scoring import _score_test

__all__ = ["DATASETS", "DISC_HEIGHT", "NOMINAL_FIELD_MM", "NO_SPACING_REASON", "CrossResult",
           "cross_files", "echonet_clinical", "evaluate_on", "prepare_echonet",
           "write_echonet_tasks"]

#: The datasets a run can be evaluated on: EchoNet-Dynamic (or its phantom), and a CAMUS-format
#: export (the reverse direction, for a run trained elsewhere).
DATASETS: tuple[str, ...] = ("echonet", "camus")
#: The width of the field a 112-pixel EchoNet frame is taken to span (mm): its pixel size is
#: unpublished; 150 mm is a usual apical depth (the EchoNet-layout phantom: 135-170 mm).
NOMINAL_FIELD_MM = 150.0
#: The reason beside every EchoNet row's empty EDV and ESV (``reason_code``: its first words).
NO_SPACING_REASON = ("no pixel spacing (EchoNet-Dynamic publishes none: EDV and ESV are not "
                     "measured in mL; EF is scale-free)")
#: EchoNet's volumes: each instant's discs as high as its own long axis / 20 (the method of
#: discs as EchoNet-Dynamic's own code applies it to its tracings), not CAMUS's shared height.
DISC_HEIGHT: Final = "textbook"
_NAN = float("nan")
_SPLIT = "test"


class CrossEvalError(PathError):
    """A run or dataset that cannot be cross-evaluated; names the folder or file."""


@dataclass
class CrossResult:
    """What ``evaluate_on`` measured: the LV metrics, the clinical rows, the files written
    (empty when ``write=False``)."""

    metrics: pd.DataFrame
    clinical: pd.DataFrame
    paths: tuple[Path, ...]


def cross_files(run_dir: str | os.PathLike, dataset: str) -> tuple[Path, Path]:
    """``(metrics_<dataset>.csv, clinical_<dataset>.csv)`` of a run folder."""
    folder = Path(run_dir)
    return (folder / CROSS_METRICS_FILE.format(dataset=dataset),
            folder / CROSS_CLINICAL_FILE.format(dataset=dataset))


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r} unknown; a run can be evaluated on "
                         f"{list(DATASETS)}")
    return dataset


def _run_config(run_dir: Path, dataset: str, dataset_dir: Path,
                fast_dev_run: int | None, trust_weights: bool = False) -> TrainConfig:
    """The run's training config, pointed at ``dataset_dir`` for its test split; its prompt
    checked first (``_check_prompt``), then the run's completeness. ``trust_weights`` is the
    caller's: the folder's ``config.json`` cannot grant it (as for ``load_model``)."""
    return _config_of(run_dir, dataset, dataset_dir, fast_dev_run).replace(
        trust_weights=trust_weights)


def _config_of(run_dir: Path, dataset: str, dataset_dir: Path,
               fast_dev_run: int | None) -> TrainConfig:
    """The run's training config as its folder records it, pointed at ``dataset_dir`` for its
    test split; its prompt checked first (``_check_prompt``), then the run's completeness.

    Raises:
        ValueError: a prompt the dataset cannot make.
        CrossEvalError: the folder is not a complete, intact run.
    """
    try:
        config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise CrossEvalError(run_dir / CONFIG_FILE, f"not a training config ({exc})") from exc
    _check_prompt(dataset, config.prompt)
    problem = run_problem(run_dir)
    if problem is not None:
        raise CrossEvalError(run_dir, f"not a complete run ({problem}); a run is evaluated "
                                      "elsewhere only once it is finished")
    return config.replace(runs_root=str(run_dir.parent), real_dir=str(dataset_dir),
                          cache_dir=None, fast_dev_run=fast_dev_run, save_predictions=False)


def _check_prompt(dataset: str, prompt: str) -> None:
    """EchoNet makes P0-P3 only (and a text-free model's structure name)."""
    if dataset == "echonet" and prompt != NO_PROMPT:
        check_prompt(prompt)


def _check_exported(dataset_dir: Path) -> None:
    for need in (dataset_dir / "records.csv", task_path(dataset_dir, _SPLIT)):
        if not need.is_file():
            raise CrossEvalError(need, "missing: the dataset is not exported with its test "
                                       "task file (prepare_echonet, notebook 10 with "
                                       "run_dir None, or notebooks 01 and 03 for CAMUS)")


def evaluate_on(run_dir: str | os.PathLike, dataset: str, dataset_dir: str | os.PathLike,
                device: str | None = None, fast_dev_run: int | None = None,
                progress: bool | None = None, write: bool = True,
                trust_weights: bool = False) -> CrossResult:
    """Score the finished run in ``run_dir`` on the test split of ``dataset_dir`` (an
    exported ``dataset``, one of ``DATASETS``), and write ``metrics_<dataset>.csv`` and
    ``clinical_<dataset>.csv`` there when ``write`` (module docstring). The run's own files
    (``metrics.csv``, ``clinical.csv``, ``summary.json``, weights) are only read.

    Args:
        device: where the model runs (default: the run's own setting).
        fast_dev_run: score the first N test images only (a rehearsal).
        trust_weights: let a zero-shot CRIS run read a TorchScript or pickled ``RN50.pt``
            (runs code stored in it); the run folder's ``config.json`` cannot grant it.

    Raises:
        ValueError: an unknown dataset, or a prompt the dataset cannot make (naming the
            prompt and the attribute the dataset lacks).
        CrossEvalError: an incomplete run, or a dataset without records or test tasks.
    """
    _check_dataset(dataset)
    folder, data = resolve(run_dir), resolve(dataset_dir)
    config = _run_config(folder, dataset, data, fast_dev_run, trust_weights)
    _check_exported(data)
    scored = _score_test(config, None, None, device, False, progress)
    metrics = scored.metrics[scored.metrics["structure"] == LV].reset_index(drop=True)
    if metrics.empty:
        raise CrossEvalError(task_path(data, _SPLIT), "lists no LV task; nothing to score")
    cache = data / ".cache"
    if dataset == "echonet":
        clinical = echonet_clinical(config, scored.lv, data, scored.size, cache)
    else:
        clinical = clinical_table(config, scored.lv, data, scored.size, cache_dir=cache)
    paths: tuple[Path, ...] = ()
    if write:
        paths = cross_files(folder, dataset)
        write_text_atomic(paths[0], metrics[list(METRIC_COLUMNS)].to_csv(index=False))
        write_text_atomic(paths[1], clinical[list(CLINICAL_COLUMNS)].to_csv(index=False))
    return CrossResult(metrics, clinical, paths)


# ----------------------------------------------------------------------------- EchoNet's EF


def _nominal_spacing(size: tuple[int, int]) -> tuple[float, float]:
    return NOMINAL_FIELD_MM / size[0], NOMINAL_FIELD_MM / size[1]


def _ef_values(masks: dict[str, np.ndarray], stems: Mapping[str, str],
               spacing: tuple[float, float], cache: GroundTruthCache | None
               ) -> tuple[float, str]:
    """EF (%) of one video's ED and ES masks and the reason beside its row (always
    ``NO_SPACING_REASON``, then why EF is NaN when it is)."""
    pair = [masks[stems[p]] for p in PHASES]
    key = GroundTruthCache.key(pair, [spacing, spacing]) if cache is not None else ""
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        v = single_plane_volumes(pair[0], pair[1], spacing, disc_height=DISC_HEIGHT)
        hit = (_NAN, _NAN, v.ef_percent, v.reason or "")
        if cache is not None:
            cache.put(key, hit)
    ef, why = hit[2], hit[3]
    return ef, "; ".join([NO_SPACING_REASON] + ([why] if why and math.isnan(ef) else []))


def echonet_clinical(config: TrainConfig, masks: LVMasks, dataset_dir: str | os.PathLike,
                     size: tuple[int, int], cache_dir: str | os.PathLike | None = None
                     ) -> pd.DataFrame:
    """The rows of ``clinical_echonet.csv`` (``CLINICAL_COLUMNS``), one per test video,
    sorted: the published EDV, ESV, EF (``ref_*``), and EF by single-plane discs of the traced
    and the predicted masks at ED and ES (EDV, ESV empty: ``NO_SPACING_REASON``).

    Raises:
        CrossEvalError: ``records.csv`` lacks EchoNet's ``ef`` column (not an EchoNet export).
    """
    data = Path(dataset_dir)
    records = read_records(data)
    if "ef" not in records.columns:
        raise CrossEvalError(data / "records.csv", "has no 'ef' column: not an EchoNet export "
                                                   "(data.echonet_export.export_echonet)")
    test = records[records["split"] == _SPLIT]
    spacing = _nominal_spacing(size)
    cache = GroundTruthCache(None if cache_dir is None
                             else Path(cache_dir) / f"clinical_gt_echonet_{DISC_HEIGHT}.json")
    run = {"model": config.model, "strategy": config.strategy, "encoders": config.encoders,
           "prompt": config.prompt, "seed": int(config.seed),
           "real_fraction": float(config.real_fraction), "provenance": bool(config.provenance)}
    rows = []
    for video, group in sorted(test.groupby("patient"), key=lambda g: str(g[0])):
        stems = dict(zip(group["phase"].astype(str), group["stem"].astype(str), strict=True))
        first = group.iloc[0]
        ref = [float(first.get(c, _NAN)) for c in ("edv", "esv", "ef")]
        absent = [p for p in PHASES if p not in stems or stems[p] not in masks.available]
        unscored = [p for p in PHASES if p not in absent and stems[p] not in masks.pred]
        if absent or unscored:
            why = (f"missing 4CH_{', 4CH_'.join(absent)}" if absent
                   else f"not scored (fast_dev_run): 4CH_{', 4CH_'.join(unscored)}")
            gt = pred = (_NAN, f"{NO_SPACING_REASON}; {why}")
        else:
            gt = _ef_values(masks.truth, stems, spacing, cache)
            pred = _ef_values(masks.pred, stems, spacing, None)
        rows.append({**run, "patient": str(video), "split": _SPLIT,
                     "ref_edv_ml": ref[0], "ref_esv_ml": ref[1], "ref_ef_percent": ref[2],
                     "gt_edv_ml": _NAN, "gt_esv_ml": _NAN, "gt_ef_percent": gt[0],
                     "gt_reason": gt[1], "pred_edv_ml": _NAN, "pred_esv_ml": _NAN,
                     "pred_ef_percent": pred[0], "pred_reason": pred[1]})
    cache.save()
    return pd.DataFrame(rows, columns=list(CLINICAL_COLUMNS))


# ----------------------------------------------------------------------------- the dataset


def write_echonet_tasks(dataset_dir: str | os.PathLike) -> dict[str, Path]:
    """``tasks/<split>.json`` of an exported EchoNet dataset: one task per image, the LV
    only (EchoNet traces nothing else), prompts P0-P3 (the attributes it has: structure,
    view, phase), the shape word measured from the mask (``shape_of``) among the attributes.
    Files are written atomically and only when their text changes. Returns ``{split: path}``.

    Raises:
        ValueError: an empty LV mask, naming the file.
    """
    root = Path(dataset_dir)
    records = read_records(root)
    out: dict[str, Path] = {}
    for split in SPLITS:
        rows = records[records["split"] == split].sort_values("stem", kind="stable")
        if rows.empty:
            continue
        entries = []
        for row in rows.itertuples(index=False):
            stem, name = str(row.stem), mask_name(LV, split, str(row.stem))
            mask = read_png(root / name)
            if not mask.any():
                raise ValueError(f"{root / name}: empty LV mask; the tracing of {stem} "
                                 "drew no cavity")
            attrs = Attributes(LV, str(row.view), str(row.phase),
                               shape=shape_of(mask, structure=LV))
            entries.append({
                "img_name": image_name(split, stem), "mask_name": name, "structure": LV,
                "attributes": {"stem": stem, "structure": LV, "view": attrs.view,
                               "phase": attrs.phase, "sex": None, "age": None,
                               "quality": None, "shape": attrs.shape},
                "prompts": make_prompts(attrs, "camus", keys=ECHONET_PROMPTS)})
        path, text = task_path(root, split), dumps_tasks(entries)
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            write_text_atomic(path, text)
        out[split] = path
    return out


def prepare_echonet(out_dir: str | os.PathLike, echonet_dir: str | os.PathLike | None = None,
                    phantom_dir: str | os.PathLike | None = None, n_videos: int = 20,
                    splits: Mapping[str, int] | None = None, seed: int = 1, size: int = 512,
                    workers: int | None = None) -> Path:
    """The exported EchoNet dataset at ``out_dir``, with its task files: from the download
    at ``echonet_dir``, or (``echonet_dir`` None) from the EchoNet-layout phantom written to
    ``phantom_dir`` (``n_videos`` videos, ``splits`` videos per split, ``seed``). The tree is
    validated first; a second call skips what is unchanged. Returns ``out_dir``.

    Raises:
        ValueError: neither folder given, or the tree's problems (all of them, each naming
            its file and line).
    """
    if echonet_dir is not None:
        root = resolve(echonet_dir)
    elif phantom_dir is not None:
        root = write_phantom(resolve(phantom_dir), n_videos, seed, "echonet", workers=workers,
                             splits=splits)
    else:
        raise ValueError("prepare_echonet: give echonet_dir (a download) or phantom_dir")
    problems = validate_echonet(root)
    if problems:
        shown = "\n".join(problems[:20])
        raise ValueError(f"{root}: {len(problems)} problem(s) in the EchoNet-Dynamic tree:\n"
                         f"{shown}")
    out = export_echonet(read_echonet(root), resolve(out_dir), size=size, workers=workers)
    write_echonet_tasks(out)
    return out
