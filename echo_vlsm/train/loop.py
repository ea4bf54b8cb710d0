"""Finetuning and scoring of a vision-language segmentation model (Synthetic Boost, Sec. 3).

``fit(config)`` runs one cell of the study's grid end to end and leaves a complete run
directory ``<runs_root>/<run_id>/``:

- ``config.json`` (the :class:`TrainConfig`), ``history.csv`` (one row per epoch: epoch,
  train_loss, val_loss, val_dice, lr, seconds, images_per_s), ``model.safetensors`` (the best
  weights by validation Dice), ``state.pt`` (resumable, after every epoch; deleted when the
  run completes unless ``keep_state``), ``best_state.pt`` (synthetic runs whose recipe
  continues them in ``synth-pt-real-ft``: the state at the best epoch, kept),
- ``metrics.csv`` (tidy, one row per test triplet: Dice, IoU, HD95 at the stored mask size),
- ``summary.json`` (best_epoch, best_val_dice, seconds_to_best, epochs_run, seconds_total,
  done: true, details of how it ran, the recipe's settings as used, ``provenance`` (what
  ``pretrained`` resolved to and the SHA-256 of the files read), and under ``files`` the size
  and SHA-256 of the files it vouches for: config, history, weights, metrics;
  ``echo_vlsm.grid.run_problem`` checks them); beyond the study, ``train_images`` and
  ``real_train_images`` (unique images trained on, and the real ones of them), ``seed``,
  ``real_fraction`` and ``prompt_provenance``,
- ``real_subset.json`` when the run trains on part of the real patients (``real_fraction``
  < 1, ``echo_vlsm.train.subsets``): which patients of each split, how many images.

Beyond the study, the same loop trains the ``mixed`` strategy (one training set of the real and
the synthetic triplets, ``concat_triplets``) and the text-free ``unet`` baseline, whose
per-triplet logits are its softmax log-odds of the triplet's structure
(``echo_vlsm.models.unet``).

A run folder whose files do not match its summary (a truncated ``model.safetensors``, a
damaged ``metrics.csv``) is not complete: ``fit`` redoes what is damaged (retrains when the
weights are, re-scores otherwise). Temporary files a killed run left are removed first.

The recipe: AdamW (weight decay 1e-3), ReduceLROnPlateau on the validation loss (factor 0.1,
patience 5), Dice + 0.25 x BCE on logits, gradient clipping 0.5, mixed precision (bf16 where
supported, else fp16 with a scaler, fp32 on CPU), early stopping on the validation Dice;
``recipe="as-run"`` changes what the study's code did differently (``docs/recipes.md``).
``fast_dev_run=N`` rehearses a run: N batches of one epoch, N validation batches, N test
images, and a complete, well-formed run folder.

Interrupted runs continue from ``state.pt``: every epoch draws its batch order, phrasings and
dropout from ``(seed, epoch)``, so a resumed run ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from echo_vlsm.device import autocast, resolve_device, resolve_precision
from echo_vlsm.grid import (
    CONFIG_FILE,
    FILES_KEY,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    SUBSET_FILE,
    SUMMARY_FILE,
    file_records,
    run_files,
    run_problem,
    safetensors_problem,
    sha256_file,
)
from echo_vlsm.grid import run_complete as is_complete
from echo_vlsm.io import clean_temp_files, write_json_atomic, write_png, write_text_atomic
from echo_vlsm.models import build_model
from echo_vlsm.models.weights import weights_provenance
from echo_vlsm.paths import resolve
from echo_vlsm.train import distributed as D
from echo_vlsm.train.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    BackgroundWriter,
    cpu_copy,
    load_state,
    load_weights,
    rng_state,
    save_state,
    save_weights,
    set_rng_state,
    unwrap,
)
from echo_vlsm.train.config import BEYOND_DEFAULTS, TrainConfig, result_fields
from echo_vlsm.train.losses import make_loss
from echo_vlsm.train.metrics import batch_dice, segmentation_metrics
from echo_vlsm.train.subsets import select_patients, synthetic_share, write_subset_record
from echo_vlsm.train.triplets import Triplets, concat_triplets, load_triplets, normalise

__all__ = [
    "MissingRunError", "RunResult", "Training", "build", "evaluate", "fit", "is_complete",
    "load_run", "load_split", "load_training_data", "make_optimizer", "predict", "train_step",
    "validate",
]

_EVAL_SEED_OFFSET = 7919  # phrasing draw of validation and test sets (fixed over epochs)
#: The state at the best epoch, which ``synth-pt-real-ft`` continues under ``as-run``.
BEST_STATE_FILE = "best_state.pt"


class MissingRunError(FileNotFoundError):
    """A run this run depends on (the synthetic pretraining of synth-pt-real-ft) is missing."""


@dataclass
class RunResult:
    """A finished run: its folder, config, summary, history and per-sample test metrics."""

    run_dir: Path
    config: TrainConfig
    summary: dict
    history: pd.DataFrame
    metrics: pd.DataFrame


def load_run(run_dir: str | Path) -> RunResult:
    """Read a run directory written by :func:`fit`."""
    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name}: missing; is the run complete?")
    config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    hist_path = run_dir / HISTORY_FILE
    history = pd.read_csv(hist_path) if hist_path.is_file() else _history_frame([])
    metrics = pd.read_csv(run_dir / METRICS_FILE, dtype={"sample": str, "prompt": str})
    return RunResult(run_dir, config, summary, history, metrics)


@dataclass
class Training:
    """What one run carries from step to step, in place of a dozen arguments.

    ``_prepare`` fills the first block (the run's settings, process, model, data, loss,
    precision, the weights it started from and a saved ``state.pt`` to continue from);
    ``_start_training`` the second (what the optimisation steps change); each epoch the
    third (what the run records).
    """

    config: TrainConfig
    dist: D.Dist
    model: nn.Module  # the plain model: weights are saved and loaded here
    val: Triplets
    train: Triplets | None  # None for zeroshot
    criterion: nn.Module
    precision: str  # resolved: bf16 | fp16 | fp32
    init: Path | None = None  # the weights synth-pt-real-ft started from
    saved: dict | None = None  # state.pt of an interrupted run
    carry: dict | None = None  # the synthetic run's best-epoch state continued (as-run)
    data: dict = field(default_factory=dict)  # unique training images, real and synthetic

    net: nn.Module | None = None  # what is called: the model, in DDP / torch.compile
    params: list[nn.Parameter] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    scaler: torch.amp.GradScaler | None = None
    sampler: DistributedSampler | None = None
    per_rank: int = 1  # batch size of this process

    history: list[dict] = field(default_factory=list)  # one row per epoch (HISTORY_COLUMNS)
    best: dict = field(default_factory=dict)  # best_epoch, best_val_dice, seconds_to_best, ...
    stopping: dict = field(default_factory=dict)  # early stopping: best (dice), wait (epochs)
    first_epoch: int = 1  # > 1 when continuing a synthetic run's state (as-run)
    epoch: int = 0  # the last finished epoch
    finished: bool = False

    @property
    def device(self) -> torch.device:
        return self.dist.device


# -- model, data ----------------------------------------------------------------------------
def build(config: TrainConfig, device: torch.device, pretrained=True):
    """The model of ``config`` on ``device`` (weights seeded by ``config.seed``)."""
    torch.manual_seed(config.seed)
    extra = {"trust": config.trust_weights, "dropout": float(config.setting("dropout"))} \
        if config.model == "cris" else {}
    model = build_model(config.model, size=config.size,
                        pretrained=config.pretrained if pretrained else None,
                        encoders=config.encoders, **extra)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def load_split(config: TrainConfig, model, dataset_dir: Path, split: str, device: torch.device,
               full_masks: bool = False, progress: bool | None = None,
               source: str = "real") -> Triplets:
    """The decoded triplets of a split for ``model`` (``load_triplets``), on ``device``.
    ``source`` (``real`` | ``synthetic``): where the split's images come from, which the
    prompts say when ``config.provenance`` (validation and test: real)."""
    return load_triplets(dataset_dir, split, config.prompt, unwrap(model).spec.image_size,
                         unwrap(model).tokenize, cache_dir=config.cache_dir,
                         full_masks=full_masks, device=device, progress=progress is not False,
                         provenance=source if config.provenance else None)


def load_training_data(config: TrainConfig, model, device: torch.device,
                       progress: bool | None = None) -> tuple[Triplets | None, Triplets, dict]:
    """``(train, val, record)``: the training set (None for zeroshot) and validation set of
    a run. ``real_fraction < 1``: both on that patient-level subset of the real patients
    (``echo_vlsm.train.subsets``); ``mixed``: the real training triplets and the synthetic
    ones (all, or ``synthetic_ratio`` per real image) in one set, validated on the real
    ones. ``record``: ``train_images``, ``real_train_images``, ``synthetic_train_images``
    (unique images) and, for a subset, ``subset`` (per split, the patients kept)."""
    def load(split: str, root: Path = config.train_dir, source: str = "real") -> Triplets:
        return load_split(config, model, root, split, device, False, progress, source)

    synthetic = config.strategy == "synthetic"
    val = load("val", source="synthetic" if synthetic else "real")
    train = None if config.strategy == "zeroshot" else load(
        "train", source="synthetic" if synthetic else "real")
    record: dict = {}
    if config.subset:
        subset = {}
        val, subset["val"] = select_patients(val, config.real_fraction, config.subset_seed,
                                             config.train_dir)
        if train is not None:
            train, subset["train"] = select_patients(train, config.real_fraction,
                                                     config.subset_seed, config.train_dir)
        record["subset"] = subset
    n_train = 0 if train is None else int(train.images.shape[0])
    real = 0 if synthetic else n_train
    n_syn = n_train if synthetic else 0
    if config.strategy == "mixed":
        syn = load("train", resolve(config.synthetic_dir), "synthetic")
        syn = synthetic_share(syn, config.synthetic_ratio, real, config.subset_seed)
        n_syn = int(syn.images.shape[0])
        train = concat_triplets([train, syn])
    record.update(train_images=real + n_syn, real_train_images=real, synthetic_train_images=n_syn)
    return train, val, record


def _eval_generator(config: TrainConfig) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + _EVAL_SEED_OFFSET)


def _epoch_seed(config: TrainConfig, epoch: int) -> int:
    return config.seed * 1_000_003 + epoch


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches; a trailing batch of one joins the previous one (batch norm needs
    two samples)."""
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


def _history_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def _inputs(images: torch.Tensor, spec, config: TrainConfig) -> torch.Tensor:
    return normalise(images, spec.mean, spec.std, channels_last=config.channels_last)


# -- validation -----------------------------------------------------------------------------
@torch.no_grad()
def validate(model, data, config: TrainConfig, criterion, precision: str,
             dist: D.Dist | None = None, batch_size: int | None = None) -> tuple[float, float]:
    """Validation loss and mean Dice (percent, at the model's input size) over ``data``;
    under torchrun each process scores its share and the sums are reduced."""
    dist = dist or D.Dist(0, 1, 0, data.device)
    spec = unwrap(model).spec
    was_training = model.training
    model.eval()
    phrasing = data.draw_phrasings(_eval_generator(config)).to(data.device)
    order = torch.arange(dist.rank, len(data), dist.world_size, device=data.device)
    bs = batch_size or max(1, config.global_batch_size // dist.world_size)
    cut = math.log(spec.threshold / (1 - spec.threshold))
    sums = torch.zeros(3, dtype=torch.float64, device=data.device)
    batches = torch.split(order, bs)
    if config.fast_dev_run is not None:
        batches = batches[:config.fast_dev_run]
    for idx in batches:
        images, masks, ids, attn = data.batch(idx, phrasing)
        x = _inputs(images, spec, config)
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


# -- a run ----------------------------------------------------------------------------------
def fit(config: TrainConfig, on_epoch_end: Callable[[int, dict], None] | None = None,
        progress: bool | None = None, overwrite: bool = False) -> RunResult:
    """Train (or, for ``zeroshot``, only score) one run and leave its directory complete.

    A complete run folder is returned as it is (``overwrite=True`` starts afresh); an
    interrupted one continues from ``state.pt``. ``on_epoch_end(epoch, row)`` is called after
    each epoch's state is saved (rank 0). Under ``torchrun --nproc_per_node N`` the processes
    share the work and rank 0 writes.

    Examples::

        result = fit(TrainConfig(model="clipseg", size="tiny", prompt="p2", epochs=5))
        result.metrics.groupby("structure").dice.mean()
    """
    dist = D.init_distributed(config.device)
    try:
        return _fit(config, dist, on_epoch_end, progress, overwrite)
    finally:
        D.shutdown(dist)


def _fit(config: TrainConfig, dist: D.Dist, on_epoch_end, progress, overwrite) -> RunResult:
    """The steps of ``fit``: reuse a complete run, else prepare, train (or score the initial
    model for zeroshot), score the best weights on the test split and write the summary."""
    if dist.main:
        clean_temp_files(config.run_dir, recursive=True)  # what a killed run left mid-write
    done = _complete_run(config, dist, overwrite)
    if done is not None:
        return done
    saved = _saved_state(config)
    if dist.main:
        write_json_atomic(config.run_dir / CONFIG_FILE, config.to_dict())
    run = _prepare(config, dist, saved, progress)
    t_start = time.perf_counter()
    if config.strategy == "zeroshot":
        summary = _score_initial(run)
    else:
        summary = _train(run, on_epoch_end, progress)
        D.barrier(dist)
        load_weights(run.model, config.run_dir / WEIGHTS_FILE)  # score the best epoch's weights
    result = _finish(run, summary, t_start, progress) if dist.main else None
    D.barrier(dist)
    return result if result is not None else load_run(config.run_dir)


def _check_same(config: TrainConfig, saved: dict, path: Path) -> None:
    """A run folder continues (or is returned) only for the settings it was made with."""
    now = result_fields(config)
    saved = {**BEYOND_DEFAULTS, **saved}  # written before these fields existed: the defaults
    saved = {k: v for k, v in saved.items() if k in now}
    diff = sorted(k for k in now if k in saved and saved[k] != now[k])
    if diff:
        raise ValueError(
            f"{path}: written by a run with different settings "
            f"({', '.join(f'{k}: {saved.get(k)!r} -> {now.get(k)!r}' for k in diff)}); "
            "use another runs_root, fit(..., overwrite=True), or delete the run folder")


def _complete_run(config: TrainConfig, dist: D.Dist, overwrite: bool) -> RunResult | None:
    """The run folder when it is complete (and made with these settings); with ``overwrite``
    its results are removed first, so nothing is reused."""
    run_dir = config.run_dir
    if overwrite and dist.main and run_dir.is_dir():
        for name in (SUMMARY_FILE, METRICS_FILE, STATE_FILE, WEIGHTS_FILE, HISTORY_FILE,
                     SUBSET_FILE):
            (run_dir / name).unlink(missing_ok=True)
    if dist.main and run_dir.is_dir():
        _forget_damaged(run_dir)
    D.barrier(dist)
    if not is_complete(run_dir):
        return None
    done = load_run(run_dir)
    _check_same(config, result_fields(done.config), run_dir / CONFIG_FILE)
    return done


def _forget_damaged(run_dir: Path) -> str | None:
    """A run folder marked done whose files do not match its summary is redone: damaged or
    missing weights (the best epoch's, which ``state.pt`` does not hold) retrain from the
    start, which ends with the same weights; any other damage re-scores the saved model.
    Returns the problem found (None for a folder that is intact or not done)."""
    problem = run_problem(run_dir, deep=True)
    summary = run_dir / SUMMARY_FILE
    if problem is None or not summary.is_file() or problem.startswith("incomplete"):
        return None
    weights = run_dir / WEIGHTS_FILE
    weights_bad = WEIGHTS_FILE in problem or (
        problem.startswith(f"damaged: {SUMMARY_FILE}") and weights.is_file()
        and safetensors_problem(weights) is not None)
    # scoring again resumes from state.pt; without it (deleted on completion unless
    # keep_state) the run is trained again, which ends with the same weights
    weights_bad = weights_bad or not (run_dir / STATE_FILE).is_file()
    redo = (SUMMARY_FILE, METRICS_FILE, STATE_FILE, WEIGHTS_FILE, HISTORY_FILE) if weights_bad \
        else (SUMMARY_FILE, METRICS_FILE)
    print(f"{run_dir}: {problem}; {'training again' if weights_bad else 'scoring again'} "
          f"(removed {', '.join(n for n in redo if (run_dir / n).exists())})", flush=True)
    for name in redo:
        (run_dir / name).unlink(missing_ok=True)
    return problem


def _saved_state(config: TrainConfig) -> dict | None:
    """``state.pt`` of an interrupted run with these settings, or None."""
    path = config.run_dir / STATE_FILE
    state = load_state(path) if path.is_file() else None
    if state is not None:
        _check_same(config, state.get("config") or {}, path)
    return state


def _pretraining_weights(config: TrainConfig) -> Path:
    if config.init_from is not None:
        path = resolve(config.init_from)
        if not path.is_file():
            raise MissingRunError(f"{path}: init_from weights do not exist")
        return path
    source = config.pretraining_run()
    weights = source / WEIGHTS_FILE
    problem = run_problem(source, deep=True)
    if problem is None and not weights.is_file():
        problem = f"missing: {WEIGHTS_FILE}"
    if problem is not None:
        prompt = source.name.rsplit("_", 1)[-1]
        raise MissingRunError(
            f"{source}: strategy 'synth-pt-real-ft' starts from the synthetic run "
            f"{source.name!r}, which is not complete and intact ({problem}); run it (again: "
            f"fit redoes what is damaged) with strategy='synthetic', prompt={prompt!r}, or "
            "pass init_from=<weights.safetensors>")
    return weights


def _pretraining_state(config: TrainConfig, weights: Path) -> dict | None:
    """The synthetic run's state at its best epoch, when the recipe continues it (``as-run``,
    as the study's ``ckpt_path=best.ckpt``); None when it starts afresh or from ``init_from``."""
    if config.init_from is not None or not config.setting("resume_pretraining"):
        return None
    path = weights.parent / BEST_STATE_FILE
    if not path.is_file():
        raise MissingRunError(
            f"{path}: missing; resume_pretraining continues the synthetic run's optimiser, "
            "schedule, epoch counter and early stopping from its best epoch, which only a "
            "synthetic run with resume_pretraining (recipe 'as-run') keeps; train that run "
            "again with it (another runs_root), or set resume_pretraining=False")
    return load_state(path)


def _prepare(config: TrainConfig, dist: D.Dist, saved: dict | None, progress) -> Training:
    """Precision, the initial model and the data of a run."""
    device = dist.device
    precision = resolve_precision(config.precision, device)
    carry = None
    if config.strategy == "synth-pt-real-ft" and saved is None:
        init = _pretraining_weights(config)
        carry = _pretraining_state(config, init)
        model = build(config, device, pretrained=False)  # every weight comes from `init`
        load_weights(model, init)
    else:
        init = None
        # a resumed run takes every weight from state.pt
        model = build(config, device, pretrained=saved is None)

    # data: rank 0 decodes (and fills the cache) first, the others then read the cache
    if not dist.main:
        D.barrier(dist)
    train, val, record = load_training_data(config, model, device, progress)
    if dist.main:
        if config.subset:
            write_subset_record(config.run_dir, config.real_fraction, config.subset_seed,
                                record["subset"])
        D.barrier(dist)
    criterion = make_loss(config.setting("loss"), config.dice_weight,
                          float(config.setting("bce_weight")))
    run = Training(config, dist, model, val, train, criterion, precision, init, saved)
    run.carry = carry
    run.data = {k: v for k, v in record.items() if k != "subset"}
    return run


def _score_initial(run: Training) -> dict:
    """Zeroshot: the summary of the initial (pretrained) model's validation score."""
    val_loss, val_dice = validate(run.model, run.val, run.config, run.criterion, run.precision,
                                  run.dist)
    return {"best_epoch": 0, "best_val_dice": val_dice, "seconds_to_best": 0.0,
            "epochs_run": 0, "initial_val_dice": val_dice, "initial_val_loss": val_loss}


def _finish(run: Training, summary: dict, t_start: float, progress) -> RunResult:
    """Rank 0: score the model on the test split, complete the summary, write the last files
    (``summary.json`` last: it marks the run complete)."""
    config, run_dir = run.config, run.config.run_dir
    seconds_train = float(sum(r["seconds"] for r in run.history))
    t_eval = time.perf_counter()
    metrics = evaluate(config, model=run.model, device=run.device, progress=progress, write=True)
    summary["recipe"] = {"name": config.recipe, **config.settings()}
    summary["provenance"] = _provenance(run)
    if config.fast_dev_run is not None:
        summary["fast_dev_run"] = config.fast_dev_run
    seconds_eval = time.perf_counter() - t_eval
    summary.update({
        "seconds_total": seconds_train + seconds_eval,
        "seconds_train": seconds_train, "seconds_eval": seconds_eval,
        "test_dice": float(metrics["dice"].mean()),
        "precision": run.precision, "device": str(run.device),
        "world_size": run.dist.world_size,
        "learning_rate": config.learning_rate, "batch_size": config.global_batch_size,
        # the first epoch's: differs from learning_rate when a synthetic run's optimiser
        # state is continued (as-run synth-pt-real-ft)
        "learning_rate_used": run.history[0]["lr"] if run.history else config.learning_rate,
        "image_size": run.model.spec.image_size,
        "n_train": len(run.train) if run.train is not None else 0,
        "n_val": len(run.val), "n_test": len(metrics),
        # unique images trained on, and the real ones of them (the data-efficiency axis)
        **run.data,
        "seed": config.seed, "real_fraction": float(config.real_fraction),
        "prompt_provenance": config.provenance,
        "wall_seconds_this_call": time.perf_counter() - t_start,
        "done": True,
    })
    history = _history_frame(run.history)
    write_text_atomic(run_dir / HISTORY_FILE, history.to_csv(index=False))
    summary[FILES_KEY] = file_records(run_dir, run_files(config.strategy, subset=config.subset))
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    if not config.keep_state:  # complete: nothing resumes from it (1.7 GB for paper CRIS)
        (run_dir / STATE_FILE).unlink(missing_ok=True)
    return RunResult(run_dir, config, summary, history, metrics)


def _provenance(run: Training) -> dict:
    """What the run's initial weights came from: ``pretrained`` resolved (path or hub id and
    revision, SHA-256 of the files), or the synthetic run's weights for synth-pt-real-ft."""
    config = run.config
    init = run.best.get("initialised_from")
    if init is not None:
        record = {"init": {"path": init, "sha256": sha256_file(init)}}
        if run.best.get("continued_from"):
            record["continued_from"] = run.best["continued_from"]
        return record
    return {"pretrained": weights_provenance(config.model, config.pretrained)}


# -- training -------------------------------------------------------------------------------
def _train(run: Training, on_epoch_end=None, progress: bool | None = None) -> dict:
    """Train epoch by epoch until ``config.epochs`` or early stopping; after each epoch the
    best weights and ``state.pt`` are written (rank 0). Returns the training summary."""
    config, dist = run.config, run.dist
    _start_training(run)
    hide = (None if progress is None else not progress) if dist.main else True
    total = 1 if config.fast_dev_run is not None else config.epochs - run.first_epoch + 1
    bar = tqdm(total=total, initial=run.epoch - run.first_epoch + 1, desc=config.run_id,
               unit="epoch", disable=hide)
    writer = BackgroundWriter()
    try:
        while not run.finished:
            row = _train_epoch(run, run.epoch + 1, hide)
            _record_epoch(run, row, writer)
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_dice=f"{row['val_dice']:.1f}",
                            best=f"{run.best['best_val_dice']:.1f}")
            D.barrier(dist)
            if on_epoch_end is not None and dist.main:
                on_epoch_end(run.epoch, row)
    finally:
        writer.wait()
        bar.close()
    return {**run.best, "epochs_run": len(run.history)}


def _start_training(run: Training) -> None:
    """Optimizer, scheduler and scaler; the model wrapped for DDP / torch.compile; then the
    state of an interrupted run, or the initial validation score; the epoch sampler."""
    config, dist, device = run.config, run.dist, run.device
    run.params, run.optimizer, run.scheduler, run.scaler = make_optimizer(
        config, run.model, device, run.precision)
    run.net = run.model
    if dist.active:
        # the vision tower's layers past the deepest extracted one get no gradient
        run.net = DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    if config.compile:
        run.net = torch.compile(run.net)
    if run.saved is not None:
        _resume(run, run.saved)
    else:
        val_loss, val_dice = validate(run.net, run.val, config, run.criterion, run.precision,
                                      dist)
        run.best = {"best_epoch": 0, "best_val_dice": -math.inf, "seconds_to_best": 0.0,
                    "initial_val_dice": val_dice, "initial_val_loss": val_loss,
                    "initialised_from": str(run.init) if run.init is not None else None}
        run.stopping = {"best": -math.inf, "wait": 0}
        if run.carry is not None:
            _continue(run, run.carry)
    run.per_rank = max(1, math.ceil(config.global_batch_size / dist.world_size))
    run.sampler = DistributedSampler(range(len(run.train)), num_replicas=dist.world_size,
                                     rank=dist.rank, shuffle=True, seed=config.seed)


def _continue(run: Training, state: dict) -> None:
    """``as-run`` synth-pt-real-ft: continue the synthetic run's best-epoch state, as the
    study's ``trainer.fit(ckpt_path=best.ckpt)``: its optimiser state (the learning rate
    included), plateau schedule, gradient scaler, epoch counter and early-stopping state; the
    best weights are chosen afresh (Lightning's checkpoint callback of another folder)."""
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch = int(state["epoch"])
    run.first_epoch = run.epoch + 1
    run.stopping = dict(state.get("stopping") or _stopping_from(state["best"], run.epoch))
    run.best["best_epoch"] = run.epoch
    run.best["first_epoch"] = run.first_epoch
    run.best["continued_from"] = str(run.init.parent / BEST_STATE_FILE)
    # at least one epoch is trained, even when the synthetic run ended past `epochs`


def _stopping_from(best: dict, epoch: int) -> dict:
    """The early-stopping state of a ``state.pt`` written before it was stored separately."""
    return {"best": best.get("best_val_dice", -math.inf),
            "wait": epoch - int(best.get("best_epoch", 0))}


def _resume(run: Training, state: dict) -> None:
    """Continue where ``state.pt`` left off: weights, optimizer, scheduler, scaler, random
    states, history and best score."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    run.history = list(state["history"])
    run.best = dict(state["best"])
    run.epoch = int(state["epoch"])
    run.finished = bool(state["finished"])
    run.stopping = dict(state.get("stopping") or _stopping_from(run.best, run.epoch))
    run.first_epoch = int(run.best.get("first_epoch", 1))


def _record_epoch(run: Training, row: dict, writer: BackgroundWriter) -> None:
    """Add an epoch's row, update the best score and whether to stop (epochs or early
    stopping); rank 0 saves improved weights and hands the state to the background writer."""
    config = run.config
    epoch = run.epoch = row["epoch"]
    run.history.append(row)
    improved = row["val_dice"] > run.best["best_val_dice"]
    if improved:
        run.best.update(best_epoch=epoch, best_val_dice=row["val_dice"],
                        seconds_to_best=sum(r["seconds"] for r in run.history))
    # early stopping (Lightning's EarlyStopping): a wait counter reset by an improvement of
    # more than min_delta; never before min_epochs
    if row["val_dice"] > run.stopping["best"] + float(config.setting("min_delta")):
        run.stopping = {"best": row["val_dice"], "wait": 0}
    else:
        run.stopping = {"best": run.stopping["best"], "wait": run.stopping["wait"] + 1}
    patience = config.early_stopping
    run.finished = epoch >= config.epochs or config.fast_dev_run is not None or (
        patience is not None and epoch >= config.min_epochs
        and run.stopping["wait"] >= patience)
    if run.dist.main:
        if improved:
            save_weights(run.model, config.run_dir / WEIGHTS_FILE)
        keep_best = improved and config.strategy == "synthetic" and \
            config.setting("resume_pretraining")
        writer.submit(_write_state, config.run_dir, _snapshot(run), keep_best)


def _snapshot(run: Training) -> dict:
    """What ``state.pt`` holds after an epoch, copied to the CPU (written in the background)."""
    return cpu_copy({
        "epoch": run.epoch, "finished": run.finished, "model": unwrap(run.model).state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(), "best": dict(run.best), "history": list(run.history),
        "stopping": dict(run.stopping), "rng": rng_state(), "config": result_fields(run.config)})


def train_step(net, pixel_values, input_ids, attention_mask, masks, criterion, optimizer, scaler,
               params, grad_clip: float | None, precision: str) -> torch.Tensor:
    """One optimisation step: forward under autocast, loss in fp32, scaled backward, gradient
    clipping, AdamW step. Returns the (undetached) loss."""
    with autocast(pixel_values.device, precision):
        logits = net(pixel_values, input_ids, attention_mask)
    loss = criterion(logits, masks[:, None])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss


def make_optimizer(config: TrainConfig, model, device: torch.device, precision: str):
    """AdamW (fused on CUDA) over the trainable parameters, ReduceLROnPlateau on the
    validation loss, and the gradient scaler (active for fp16 only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt_kwargs = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                  weight_decay=config.weight_decay, **opt_kwargs)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return params, optimizer, scheduler, scaler


def _write_state(run_dir: Path, state: dict, best: bool = False) -> None:
    save_state(run_dir / STATE_FILE, state)
    if best:  # what synth-pt-real-ft continues under as-run
        save_state(run_dir / BEST_STATE_FILE, state)
    write_text_atomic(run_dir / HISTORY_FILE,
                      _history_frame(state["history"]).to_csv(index=False))


def _train_epoch(run: Training, epoch: int, hide: bool | None = True) -> dict:
    """One epoch: batch order, phrasings and dropout drawn from (seed, epoch); then the
    validation loss and Dice, and the plateau scheduler's step. Returns the history row.
    ``hide``: the step bar's ``disable`` (None: shown on a TTY only)."""
    config, train, device = run.config, run.train, run.device
    spec = unwrap(run.net).spec
    t0 = time.perf_counter()
    run.sampler.set_epoch(epoch)
    order = torch.tensor(list(iter(run.sampler)), dtype=torch.long).to(train.device)
    phrasing = train.draw_phrasings(torch.Generator().manual_seed(_epoch_seed(config, epoch)))
    phrasing = phrasing.to(train.device)
    torch.manual_seed(_epoch_seed(config, epoch))  # dropout and anything else random
    run.net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_seen = 0
    lr = run.optimizer.param_groups[0]["lr"]
    batches = _batches(order, run.per_rank)
    if config.fast_dev_run is not None:
        batches = batches[:config.fast_dev_run]
    steps = tqdm(batches, desc=f"epoch {epoch}", unit="step", leave=False, disable=hide)
    for idx in steps:
        images, masks, ids, attn = train.batch(idx, phrasing)
        loss = train_step(run.net, _inputs(images, spec, config), ids, attn, masks, run.criterion,
                          run.optimizer, run.scaler, run.params, config.grad_clip, run.precision)
        loss_sum += loss.detach().double() * len(idx)
        n_seen += len(idx)
        if not steps.disable:
            steps.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
    steps.close()
    counts = torch.tensor([float(n_seen)], dtype=torch.float64, device=device)
    D.all_reduce_sum(run.dist, loss_sum)
    D.all_reduce_sum(run.dist, counts)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds_train = time.perf_counter() - t0
    val_loss, val_dice = validate(run.net, run.val, config, run.criterion, run.precision,
                                  run.dist)
    run.scheduler.step(val_loss)
    seconds = time.perf_counter() - t0
    return {"epoch": epoch, "train_loss": float(loss_sum) / float(counts), "val_loss": val_loss,
            "val_dice": val_dice, "lr": lr, "seconds": seconds,
            "images_per_s": float(counts) / max(seconds_train, 1e-9)}


# -- evaluation -----------------------------------------------------------------------------
@torch.no_grad()
def predict(model, data, index: torch.Tensor, config: TrainConfig, precision: str,
            size: tuple[int, int] | None = None) -> torch.Tensor:
    """Logits of triplets ``index`` resized (bilinearly) to ``size`` (default: the model's
    input size), float32 ``(B, H, W)``; phrasings drawn as in validation."""
    spec = unwrap(model).spec
    phrasing = data.draw_phrasings(_eval_generator(config))
    images, _, ids, attn = data.batch(index, phrasing)
    with autocast(data.device, precision):
        logits = model(_inputs(images, spec, config), ids, attn)
    logits = logits.float()
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits[:, 0]


def _test_index(data, fast_dev_run: int | None) -> torch.Tensor:
    """The test triplets scored: all, or those of the first ``fast_dev_run`` images."""
    if fast_dev_run is None:
        return torch.arange(len(data))
    first = sorted({s["sample"] for s in data.samples})[:fast_dev_run]
    keep = set(first)
    return torch.tensor([i for i, s in enumerate(data.samples) if s["sample"] in keep],
                        dtype=torch.long)


def evaluate(config: TrainConfig, weights: str | Path | None = None, model=None,
             device: str | torch.device | None = None, write: bool = True,
             save_predictions: bool | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Score a model on the real test split: logits resized to the stored mask size (512 in
    the study), thresholded at ``spec.threshold``; per triplet Dice, IoU (percent) and HD95
    (pixels) as the tidy table, written to ``<run_dir>/metrics.csv`` when ``write``.

    The model is ``model`` if given, else built from ``config`` with ``weights`` loaded
    (default: the run's ``model.safetensors``; for ``zeroshot`` the initial, pretrained model).
    """
    if device is None:
        device = resolve_device(config.device)
    device = torch.device(device)
    if model is None:
        model = build(config, device)
        if weights is None and config.strategy != "zeroshot":
            weights = config.run_dir / WEIGHTS_FILE
        if weights is not None:
            load_weights(model, weights)
    precision = resolve_precision(config.precision, device)
    spec = unwrap(model).spec
    data = load_split(config, model, config.test_dir, "test", device, full_masks=True,
                      progress=progress)
    size = tuple(data.full_masks.shape[-2:])
    cut = math.log(spec.threshold / (1 - spec.threshold))
    was_training = model.training
    model.eval()
    save = config.save_predictions if save_predictions is None else save_predictions
    bs = max(1, min(config.global_batch_size, 64))
    rows = []
    for idx in tqdm(list(torch.split(_test_index(data, config.fast_dev_run), bs)), desc="test",
                    leave=False, disable=None if progress is None else not progress):
        pred = (predict(model, data, idx, config, precision, size) > cut).cpu()
        scores = segmentation_metrics(pred, data.full_mask(idx))
        for j, i in enumerate(idx.tolist()):
            s = data.samples[i]
            rows.append({"model": config.model, "strategy": config.strategy,
                         "encoders": config.encoders, "prompt": config.prompt,
                         "seed": config.seed, "real_fraction": float(config.real_fraction),
                         "provenance": bool(config.provenance), "sample": s["sample"],
                         "structure": s["structure"], "view": s["view"],
                         "phase": s["phase"], "dice": scores["dice"][j], "iou": scores["iou"][j],
                         "hd95": scores["hd95"][j]})
            if save and write:
                name = Path(s["mask_name"])
                out = config.run_dir / "predictions" / (s["structure"] or name.parent.name)
                write_png(out / f"{s['sample']}.png", pred[j].numpy().astype("uint8") * 255)
    model.train(was_training)
    metrics = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    if write:
        write_text_atomic(config.run_dir / METRICS_FILE, metrics.to_csv(index=False))
    return metrics
