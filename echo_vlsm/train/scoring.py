"""Scoring a model: the validation loss and Dice of an epoch (``validate``), the logits of test
triplets (``predict``) and the tidy test metrics of a run (``evaluate``: Dice, IoU, HD95 per
triplet at the stored mask size, Synthetic Boost, Sec. 3), with the clinical indices of its LV
predictions (``clinical.csv``: ``evaluate``, or ``evaluate_clinical`` / ``ensure_clinical``
alone for a finished run, without training).

Validation and test draw their phrasings once, from the run's seed (``eval_generator``), so
every epoch is scored on the same texts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from echo_vlsm.device import autocast, resolve_device, resolve_precision
from echo_vlsm.grid import (
    CONFIG_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    WEIGHTS_FILE,
    parse_run_id,
    run_problem,
)
from echo_vlsm.io import write_png, write_text_atomic
from echo_vlsm.models.base import ModelSpec
from echo_vlsm.train import distributed as D
from echo_vlsm.train.checkpoint import load_weights, unwrap_segmentation
from echo_vlsm.train.clinical_eval import (
    LV,
    LVMasks,
    clinical_problem,
    clinical_table,
    write_clinical,
)
from echo_vlsm.train.config import TrainConfig
from echo_vlsm.train.data import build, load_split
from echo_vlsm.train.frozen_cache import SplitFeatures
from echo_vlsm.train.metrics import batch_dice, segmentation_metrics
from echo_vlsm.train.triplets import Triplets, normalise

__all__ = ["TestScores", "ensure_clinical", "eval_generator", "evaluate", "evaluate_clinical",
           "model_inputs", "predict", "scored_index", "validate"]

_EVAL_SEED_OFFSET = 7919  # phrasing draw of validation and test sets (fixed over epochs)


def eval_generator(config: TrainConfig) -> torch.Generator:
    """The generator of the validation and test phrasings (the same every epoch)."""
    return torch.Generator().manual_seed(config.seed * 1_000_003 + _EVAL_SEED_OFFSET)


def model_inputs(images: torch.Tensor, spec: ModelSpec, config: TrainConfig) -> torch.Tensor:
    """uint8 images as the model's normalised float input (channels-last when configured)."""
    return normalise(images, spec.mean, spec.std, channels_last=config.channels_last)


def _logit_cut(spec: ModelSpec) -> float:
    """The logit of ``spec.threshold``: a pixel is foreground above it."""
    return math.log(spec.threshold / (1 - spec.threshold))


@torch.no_grad()
def validate(model: nn.Module, data: Triplets, config: TrainConfig, criterion: nn.Module,
             precision: str, dist: D.Dist | None = None, batch_size: int | None = None,
             features: SplitFeatures | None = None) -> tuple[float, float]:
    """Validation loss and mean Dice (percent, at the model's input size) over ``data``;
    under torchrun each process scores its share and the sums are reduced. ``features``:
    ``data``'s cached frozen-encoder values, which ``model`` (a ``CachedModel``) is called
    on instead of the images and texts."""
    dist = dist or D.Dist(0, 1, 0, data.device)
    spec = unwrap_segmentation(model).spec
    was_training = model.training
    model.eval()
    phrasing = data.draw_phrasings(eval_generator(config)).to(data.device)
    order = torch.arange(dist.rank, len(data), dist.world_size, device=data.device)
    bs = batch_size or max(1, config.global_batch_size // dist.world_size)
    cut = _logit_cut(spec)
    sums = torch.zeros(3, dtype=torch.float64, device=data.device)
    batches = torch.split(order, bs)
    if config.fast_dev_run is not None:
        batches = batches[:config.fast_dev_run]
    for idx in batches:
        images, masks, ids, attn = data.batch(idx, phrasing)
        if features is None:
            x = model_inputs(images, spec, config)
        else:  # the rows of the cached values
            x, ids = features.rows(data, idx, phrasing)
        with autocast(data.device, precision):
            logits = model(x, ids, attn)
        logits = logits.float()
        sums[0] += criterion(logits, masks[:, None]).double() * len(idx)
        sums[1] += batch_dice(logits[:, 0] > cut, masks).double().sum()
        sums[2] += len(idx)
    D.all_reduce_sum(dist, sums)
    model.train(was_training)
    n = max(float(sums[2]), 1.0)
    return float(sums[0]) / n, float(sums[1]) / n


@torch.no_grad()
def predict(model: nn.Module, data: Triplets, index: torch.Tensor, config: TrainConfig,
            precision: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Logits of triplets ``index`` resized (bilinearly) to ``size`` (default: the model's
    input size), float32 ``(B, H, W)``; phrasings drawn as in validation."""
    spec = unwrap_segmentation(model).spec
    phrasing = data.draw_phrasings(eval_generator(config))
    images, _, ids, attn = data.batch(index, phrasing)
    with autocast(data.device, precision):
        logits = model(model_inputs(images, spec, config), ids, attn)
    logits = logits.float()
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits[:, 0]


def scored_index(data: Triplets, fast_dev_run: int | None) -> torch.Tensor:
    """The test triplets scored: all, or those of the first ``fast_dev_run`` images."""
    if fast_dev_run is None:
        return torch.arange(len(data))
    first = sorted({s["sample"] for s in data.samples})[:fast_dev_run]
    keep = set(first)
    return torch.tensor([i for i, s in enumerate(data.samples) if s["sample"] in keep],
                        dtype=torch.long)


def _metric_row(config: TrainConfig, sample: dict, scores: dict, j: int) -> dict:
    """One row of ``metrics.csv`` (``METRIC_COLUMNS``): the run's fields, the triplet's."""
    return {"model": config.model, "strategy": config.strategy, "encoders": config.encoders,
            "prompt": config.prompt, "seed": config.seed,
            "real_fraction": float(config.real_fraction),
            "provenance": bool(config.provenance), "sample": sample["sample"],
            "structure": sample["structure"], "view": sample["view"], "phase": sample["phase"],
            "dice": scores["dice"][j], "iou": scores["iou"][j], "hd95": scores["hd95"][j]}


def _scoring_model(config: TrainConfig, weights: str | Path | None,
                   device: torch.device) -> nn.Module:
    """The model of ``config`` with ``weights`` (default: the run's best weights; none for
    zeroshot, which scores the pretrained model)."""
    model = build(config, device)
    if weights is None and config.strategy != "zeroshot":
        weights = config.run_dir / WEIGHTS_FILE
    if weights is not None:
        load_weights(model, weights)
    return model


@dataclass
class TestScores:
    """What scoring the test split gives: the tidy metrics, the LV masks for the clinical
    indices and the stored masks' size."""

    metrics: pd.DataFrame
    lv: LVMasks
    size: tuple[int, int]


def _score_test(config: TrainConfig, weights: str | Path | None, model: nn.Module | None,
                device: str | torch.device | None, save: bool,
                progress: bool | None) -> TestScores:
    """Score the test split (see ``evaluate``); ``save``: write the predictions as PNG."""
    device = torch.device(resolve_device(config.device) if device is None else device)
    if model is None:
        model = _scoring_model(config, weights, device)
    precision = resolve_precision(config.precision, device)
    data = load_split(config, model, config.test_dir, "test", device, full_masks=True,
                      progress=progress)
    assert data.full_masks is not None  # loaded with full_masks=True
    height, width = data.full_masks.shape[-2:]
    size = (int(height), int(width))
    cut = _logit_cut(unwrap_segmentation(model).spec)
    was_training = model.training
    model.eval()
    bs = max(1, min(config.global_batch_size, 64))
    rows = []
    lv = LVMasks(available={s["sample"] for s in data.samples if s["structure"] == LV})
    for idx in tqdm(list(torch.split(scored_index(data, config.fast_dev_run), bs)), desc="test",
                    leave=False, disable=None if progress is None else not progress):
        pred = (predict(model, data, idx, config, precision, size) > cut).cpu()
        truth = data.full_mask(idx)
        scores = segmentation_metrics(pred, truth)
        for j, i in enumerate(idx.tolist()):
            s = data.samples[i]
            rows.append(_metric_row(config, s, scores, j))
            if s["structure"] == LV:
                lv.add(s["sample"], pred[j].numpy(), truth[j].numpy())
            if save:
                name = Path(s["mask_name"])
                out = config.run_dir / "predictions" / (s["structure"] or name.parent.name)
                write_png(out / f"{s['sample']}.png", pred[j].numpy().astype("uint8") * 255)
    model.train(was_training)
    return TestScores(pd.DataFrame(rows, columns=list(METRIC_COLUMNS)), lv, size)


def evaluate(config: TrainConfig, weights: str | Path | None = None,
             model: nn.Module | None = None, device: str | torch.device | None = None,
             write: bool = True, save_predictions: bool | None = None,
             progress: bool | None = None) -> pd.DataFrame:
    """Score a model on the real test split: logits resized to the stored mask size (512 in
    the study), thresholded at ``spec.threshold``; per triplet Dice, IoU (percent) and HD95
    (pixels) as the tidy table, written to ``<run_dir>/metrics.csv`` when ``write``, with the
    clinical indices of the LV predictions (``clinical_eval``) to ``<run_dir>/clinical.csv``.

    The model is ``model`` if given, else built from ``config`` with ``weights`` loaded
    (default: the run's ``model.safetensors``; for ``zeroshot`` the initial, pretrained model).
    """
    save = config.save_predictions if save_predictions is None else save_predictions
    scored = _score_test(config, weights, model, device, save and write, progress)
    if write:
        write_text_atomic(config.run_dir / METRICS_FILE, scored.metrics.to_csv(index=False))
        write_clinical(config.run_dir, _clinical(config, scored))
    return scored.metrics


def _clinical(config: TrainConfig, scored: TestScores) -> pd.DataFrame:
    cache = Path(config.cache_dir) if config.cache_dir else config.test_dir / ".cache"
    return clinical_table(config, scored.lv, config.test_dir, scored.size, cache_dir=cache)


def evaluate_clinical(config: TrainConfig, weights: str | Path | None = None,
                      model: nn.Module | None = None, device: str | torch.device | None = None,
                      write: bool = True, progress: bool | None = None) -> pd.DataFrame:
    """The clinical indices of a run (``clinical.csv``, ``clinical_eval.CLINICAL_COLUMNS``)
    by evaluation alone: the test split scored exactly as ``evaluate`` scores it (same
    model, phrasings, batches and threshold), written to ``<run_dir>/clinical.csv`` when
    ``write``; ``metrics.csv`` and every file the run's summary vouches for stay untouched."""
    scored = _score_test(config, weights, model, device, False, progress)
    table = _clinical(config, scored)
    if write:
        write_clinical(config.run_dir, table)
    return table


def ensure_clinical(config: TrainConfig, device: str | torch.device | None = None,
                    progress: bool | None = None) -> str | None:
    """Give a complete run its ``clinical.csv`` when it lacks one (or has a damaged one),
    by ``evaluate_clinical`` with the run's saved weights: never by training. Returns why it
    measured (``clinical_eval.clinical_problem``), None when the file was already sound."""
    problem = clinical_problem(config.run_dir)
    if problem is not None:
        print(f"{config.run_dir}: {problem}; measuring the saved model's test predictions",
              flush=True)
        evaluate_clinical(config, device=device, progress=progress)
    return problem


def _is_run_id(name: str) -> bool:
    try:
        parse_run_id(name)
    except ValueError:
        return False
    return True


def ensure_runs_clinical(runs_root: str | Path, device: str | torch.device | None = None,
                         progress: bool | None = None) -> list[str]:
    """``ensure_clinical`` for every complete run folder under ``runs_root`` (the clinical
    step reads them all; runs finished before ``clinical.csv`` existed get it here, from
    their saved weights). Incomplete or damaged runs are left to their own job. Returns the
    ids of the runs measured now."""
    measured = []
    for run_dir in sorted(p for p in Path(runs_root).iterdir() if p.is_dir()):
        if not _is_run_id(run_dir.name) or run_problem(run_dir) is not None:
            continue  # another folder (the SDM's, steps/), or a run its own job finishes
        config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
        config = replace(config, runs_root=str(run_dir.parent))  # where the folder is now
        if ensure_clinical(config, device, progress) is not None:
            measured.append(run_dir.name)
    return measured
