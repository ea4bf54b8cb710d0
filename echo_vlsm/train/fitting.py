"""Finetuning and scoring of a vision-language segmentation model (Synthetic Boost, Sec. 3).

``fit(config)`` runs one cell of the study's grid end to end and leaves a complete run
directory ``<runs_root>/<run_id>/``:

- ``config.json`` (the :class:`TrainConfig`), ``history.csv`` (one row per epoch: epoch,
  train_loss, val_loss, val_dice, lr, seconds, images_per_s), ``model.safetensors`` (the best
  weights by validation Dice), ``state.pt`` (resumable, after every epoch; deleted when the
  run completes unless ``keep_state``), ``best_state.pt`` (synthetic runs whose recipe
  continues them in ``synth-pt-real-ft``: the state at the best epoch, kept),
- ``metrics.csv`` (tidy, one row per test triplet: Dice, IoU, HD95 at the stored mask size),
- ``clinical.csv`` (one row per test patient: EDV, ESV, EF from the reference, the
  ground-truth and the predicted LV masks; ``clinical_eval``): a product of evaluation, not
  among the files the summary vouches for, so a complete run that lacks it gets it from its
  saved weights (``scoring.ensure_clinical``) and is never trained again for it,
- ``summary.json`` (best_epoch, best_val_dice, seconds_to_best, epochs_run, ``stopped_by``
  (``patience``, ``epochs`` or ``fast_dev_run``; ``epochs`` for zero-shot, which trains
  none), seconds_total, done: true, details of how it ran, the recipe's settings as used,
  ``provenance`` (``echo_vlsm.train.provenance``), and under ``files`` the size and SHA-256
  of the files it vouches for: config, history, weights, metrics;
  ``echo_vlsm.grid.run_problem`` checks them); beyond the study, ``train_images`` and
  ``real_train_images`` (unique images trained on, and the real ones of them), ``seed``,
  ``real_fraction`` and ``prompt_provenance``; ``frozen_cache``: whether the frozen
  encoders' outputs were computed once (``echo_vlsm.train.frozen_cache``), their size and
  files, or why not,
- ``real_subset.json`` when the run trains on part of the real patients (``real_fraction``
  < 1, ``echo_vlsm.train.subsets``): which patients of each split, how many images.

Beyond the study, the same engine trains the ``mixed`` strategy and the text-free ``unet``
baseline, whose per-triplet logits are its softmax log-odds of the triplet's structure
(``echo_vlsm.models.unet``).

The concerns live in their own modules: the run folder's life (``rundir``: complete,
damaged, resumed, settings), the model and data (``data``), the frozen encoders' outputs
computed once (``frozen_cache``), the epoch engine (``engine``, ``stopping``), scoring
(``scoring``) and weight provenance (``provenance``). ``recipe`` changes what the study's
code did differently (``docs/recipes.md``); ``fast_dev_run=N`` rehearses a run: N batches of
one epoch, N validation batches, N test images, and a complete, well-formed run folder.
"""

from __future__ import annotations

import time

from echo_vlsm.device import resolve_precision
from echo_vlsm.grid import (
    CONFIG_FILE,
    FILES_KEY,
    HISTORY_FILE,
    SUMMARY_FILE,
    file_records,
    run_files,
)
from echo_vlsm.io import clean_temp_files, write_json_atomic, write_text_atomic
from echo_vlsm.train import distributed as D
from echo_vlsm.train.checkpoint import STATE_FILE, WEIGHTS_FILE, load_weights
from echo_vlsm.train.config import TrainConfig
from echo_vlsm.train.data import build, load_training_data
from echo_vlsm.train.engine import Engine, EpochCallback, Setup, StepFn, train_step
from echo_vlsm.train.frozen_cache import cache_record, cache_unavailable, prepare_cache
from echo_vlsm.train.losses import make_loss
from echo_vlsm.train.provenance import run_provenance
from echo_vlsm.train.rundir import (
    RunResult,
    complete_run,
    history_frame,
    load_run,
    pretraining_state,
    pretraining_weights,
    saved_state,
)
from echo_vlsm.train.scoring import ensure_clinical, evaluate, validate
from echo_vlsm.train.stopping import BestScore
from echo_vlsm.train.subsets import write_subset_record

__all__ = ["fit", "prepare"]


def fit(config: TrainConfig, on_epoch_end: EpochCallback | None = None,
        progress: bool | None = None, overwrite: bool = False,
        step: StepFn = train_step) -> RunResult:
    """Train (or, for ``zeroshot``, only score) one run and leave its directory complete.

    A complete run folder is returned as it is (``overwrite=True`` starts afresh), its
    ``clinical.csv`` measured from the saved weights when it lacks one; an interrupted one
    continues from ``state.pt``. ``on_epoch_end(epoch, row)`` is called after
    each epoch's state is saved (rank 0). ``step`` is the optimisation step
    (``engine.train_step``'s signature): a wrapper can count, time or interrupt steps. Under
    ``torchrun --nproc_per_node N`` the processes share the work and rank 0 writes.

    Examples::

        result = fit(TrainConfig(model="clipseg", size="tiny", prompt="p2", epochs=5))
        result.metrics.groupby("structure").dice.mean()
    """
    dist = D.init_distributed(config.device)
    try:
        return _fit(config, dist, on_epoch_end, progress, overwrite, step)
    finally:
        D.shutdown(dist)


def _fit(config: TrainConfig, dist: D.Dist, on_epoch_end: EpochCallback | None,
         progress: bool | None, overwrite: bool, step: StepFn) -> RunResult:
    """The steps of ``fit``: reuse a complete run, else prepare, train (or score the initial
    model for zeroshot), score the best weights on the test split and write the summary."""
    if dist.main:
        clean_temp_files(config.run_dir, recursive=True)  # what a killed run left mid-write
    done = complete_run(config, dist, overwrite)
    if done is not None:
        if dist.main:  # evaluation's product: measured from the saved weights, never trained
            ensure_clinical(config, device=dist.device, progress=progress)
        D.barrier(dist)
        return done
    saved = saved_state(config)
    if dist.main:
        write_json_atomic(config.run_dir / CONFIG_FILE, config.to_dict())
    setup = prepare(config, dist, saved, progress)
    t_start = time.perf_counter()
    if config.strategy == "zeroshot":
        summary, history, best = _score_initial(setup), [], BestScore()
    else:
        engine = Engine(setup, step)
        summary = engine.run(on_epoch_end, progress)
        history, best = engine.history, engine.best
        D.barrier(dist)
        load_weights(setup.model, config.run_dir / WEIGHTS_FILE)  # the best epoch's weights
    result = _finish(setup, summary, history, best, t_start, progress) if dist.main else None
    D.barrier(dist)
    return result if result is not None else load_run(config.run_dir)


def prepare(config: TrainConfig, dist: D.Dist, saved: dict | None = None,
            progress: bool | None = None) -> Setup:
    """Precision, the initial model and the data of a run (``saved``: the ``state.pt`` it
    resumes, whose weights it takes)."""
    device = dist.device
    precision = resolve_precision(config.precision, device)
    carry = None
    if config.strategy == "synth-pt-real-ft" and saved is None:
        init = pretraining_weights(config)
        carry = pretraining_state(config, init)
        model = build(config, device, pretrained=False)  # every weight comes from `init`
        load_weights(model, init)
    else:
        init = None
        # a resumed run takes every weight from state.pt
        model = build(config, device, pretrained=saved is None)

    # data: rank 0 decodes (and fills the caches) first, the others then read the caches
    if not dist.main:
        D.barrier(dist)
    data = load_training_data(config, model, device, progress)
    cache = None
    if cache_unavailable(config, model) is None:  # frozen encoders: computed once
        if saved is not None:  # the weights it continues with (Engine._resume loads them)
            model.load_state_dict(saved["model"])
        cache = prepare_cache(config, model, data, precision, progress)
    if dist.main:
        if config.subset:
            assert data.subset is not None  # load_training_data records it for a subset
            write_subset_record(config.run_dir, config.real_fraction, config.subset_seed,
                                data.subset)
        D.barrier(dist)
    criterion = make_loss(config.setting("loss"), config.dice_weight,
                          float(config.setting("bce_weight")))
    return Setup(config, dist, model, data, criterion, precision, init, saved, carry, cache)


def _score_initial(setup: Setup) -> dict:
    """Zeroshot: the summary of the initial (pretrained) model's validation score."""
    val_loss, val_dice = validate(setup.model, setup.data.val, setup.config, setup.criterion,
                                  setup.precision, setup.dist)
    stopped_by = "fast_dev_run" if setup.config.fast_dev_run is not None else "epochs"
    return {"best_epoch": 0, "best_val_dice": val_dice, "seconds_to_best": 0.0,
            "epochs_run": 0, "stopped_by": stopped_by, "initial_val_dice": val_dice,
            "initial_val_loss": val_loss}


def _finish(setup: Setup, summary: dict, history: list[dict], best: BestScore,
            t_start: float, progress: bool | None) -> RunResult:
    """Rank 0: score the model on the test split, complete the summary, write the last files
    (``summary.json`` last: it marks the run complete)."""
    config, run_dir = setup.config, setup.config.run_dir
    seconds_train = float(sum(r["seconds"] for r in history))
    t_eval = time.perf_counter()
    metrics = evaluate(config, model=setup.model, device=setup.device, progress=progress,
                       write=True)
    summary["recipe"] = {"name": config.recipe, **config.settings()}
    summary["provenance"] = run_provenance(config, best)
    if config.fast_dev_run is not None:
        summary["fast_dev_run"] = config.fast_dev_run
    seconds_eval = time.perf_counter() - t_eval
    data = setup.data
    summary.update({
        "seconds_total": seconds_train + seconds_eval,
        "seconds_train": seconds_train, "seconds_eval": seconds_eval,
        "test_dice": float(metrics["dice"].mean()),
        "precision": setup.precision, "device": str(setup.device),
        "world_size": setup.dist.world_size,
        "learning_rate": config.learning_rate, "batch_size": config.global_batch_size,
        # the first epoch's: differs from learning_rate when a synthetic run's optimiser
        # state is continued (as-run synth-pt-real-ft)
        "learning_rate_used": history[0]["lr"] if history else config.learning_rate,
        "image_size": setup.model.spec.image_size,
        "n_train": len(data.train) if data.train is not None else 0,
        "n_val": len(data.val), "n_test": len(metrics),
        # unique images trained on, and the real ones of them (the data-efficiency axis)
        **data.images.summary(),
        "seed": config.seed, "real_fraction": float(config.real_fraction),
        "prompt_provenance": config.provenance,
        "frozen_cache": cache_record(config, setup.model, setup.cache),
        "wall_seconds_this_call": time.perf_counter() - t_start,
        "done": True,
    })
    frame = history_frame(history)
    write_text_atomic(run_dir / HISTORY_FILE, frame.to_csv(index=False))
    summary[FILES_KEY] = file_records(run_dir, run_files(config.strategy, subset=config.subset))
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    if not config.keep_state:  # complete: nothing resumes from it (1.7 GB for paper CRIS)
        (run_dir / STATE_FILE).unlink(missing_ok=True)
    return RunResult(run_dir, config, summary, frame, metrics)
