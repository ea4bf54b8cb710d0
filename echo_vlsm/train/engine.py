"""The epoch engine: optimisation steps, epochs, the best weights, early stopping, ``state.pt``
after every epoch, fast-dev-run and DDP.

The recipe: AdamW (weight decay 1e-3), ReduceLROnPlateau on the validation loss (factor 0.1,
patience 5), the recipe's loss, gradient clipping 0.5, mixed precision (bf16 where supported,
else fp16 with a scaler, fp32 on CPU), early stopping on the validation Dice
(``EarlyStopping``). Every epoch draws its batch order, phrasings and dropout from
``(seed, epoch)``, so a run resumed from ``state.pt`` ends exactly where an uninterrupted one
does. Under ``torchrun`` the model is wrapped in DDP, each process trains its share of every
batch, and rank 0 writes.

``Engine(setup, step=...)`` takes the optimisation step as a parameter (``train_step``'s
signature): a wrapper can count, time or interrupt steps.

With frozen encoders the run trains from their outputs computed once (``Setup.cache``,
``echo_vlsm.train.frozen_cache``): the network called is a ``CachedModel`` and the step's
``pixel_values`` and ``input_ids`` are the rows of the cached image and text values.

With ``image_batching`` (beyond the study; ``echo_vlsm.train.image_batching``) an epoch is
ordered by image and cut into batches of whole images; without the cache the network called
is an ``ImageBatchedModel`` whose ``pixel_values`` are the triplets' image rows (the image
encoder runs once per distinct image); with it, only the order and the batches change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from echo_vlsm.device import autocast
from echo_vlsm.grid import HISTORY_FILE
from echo_vlsm.io import write_text_atomic
from echo_vlsm.models.base import SegmentationModel
from echo_vlsm.train import distributed as D
from echo_vlsm.train.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    BackgroundWriter,
    cpu_copy,
    rng_state,
    save_state,
    save_weights,
    set_rng_state,
    unwrap,
    unwrap_segmentation,
)
from echo_vlsm.train.config import TrainConfig, result_fields
from echo_vlsm.train.data import TrainingData
from echo_vlsm.train.frozen_cache import CachedModel, FrozenCache
from echo_vlsm.train.image_batching import ImageBatchedModel, image_batches, image_order
from echo_vlsm.train.rundir import BEST_STATE_FILE, history_frame
from echo_vlsm.train.scoring import model_inputs, validate
from echo_vlsm.train.stopping import BestScore, EarlyStopping

__all__ = ["Engine", "Setup", "StepFn", "batches", "epoch_seed", "make_optimizer",
           "train_step"]

#: Devices whose AdamW has a fused kernel (the CPU's since torch 2.4).
FUSED_ADAMW = ("cuda", "cpu")

#: The optimisation step: ``train_step``'s signature, returning the (undetached) loss.
StepFn = Callable[..., torch.Tensor]
#: What ``fit`` calls after each epoch (rank 0): ``(epoch, history row)``.
EpochCallback = Callable[[int, dict], None]


def epoch_seed(config: TrainConfig, epoch: int) -> int:
    """The seed of an epoch's batch order, phrasings and dropout."""
    return config.seed * 1_000_003 + epoch


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches; a trailing batch of one joins the previous one (batch norm needs
    two samples)."""
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()  # (popped first: an assignment's target is read after its value)
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def train_step(net: nn.Module, pixel_values: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor, masks: torch.Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               params: list[nn.Parameter], grad_clip: float | None,
               precision: str) -> torch.Tensor:
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


def make_optimizer(config: TrainConfig, model: nn.Module, device: torch.device,
                   precision: str) -> tuple[list[nn.Parameter], torch.optim.Optimizer, Any,
                                            torch.amp.GradScaler]:
    """``(params, optimizer, scheduler, scaler)``: AdamW (fused on CUDA and on the CPU)
    over the trainable parameters, ReduceLROnPlateau on the validation loss, and the
    gradient scaler (active for fp16 only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for every tensor instead of a Python loop over 200+ of them (the
    # tiny CLIPSeg's step: 3.7 ms against 21 ms on one CPU thread); its rounding differs
    # from the loop's in the last bit of fp32
    opt_kwargs: dict[str, Any] = {"fused": True} if device.type in FUSED_ADAMW else {}
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                  weight_decay=config.weight_decay, **opt_kwargs)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return params, optimizer, scheduler, scaler


@dataclass
class Setup:
    """What a run trains with, fixed from its start to its end: settings, process, the
    model (plain: weights are saved and loaded here), data, loss, resolved precision; the
    weights synth-pt-real-ft started from (``init``), the ``state.pt`` of an interrupted run
    (``saved``) and the synthetic run's best-epoch state it continues (``carry``, as-run);
    the frozen encoders' outputs computed once (``cache``), or None."""

    config: TrainConfig
    dist: D.Dist
    model: SegmentationModel
    data: TrainingData
    criterion: nn.Module
    precision: str  # resolved: bf16 | fp16 | fp32
    init: Path | None = None
    saved: dict | None = None
    carry: dict | None = None
    cache: FrozenCache | None = None

    @property
    def device(self) -> torch.device:
        return self.dist.device


def _write_state(run_dir: Path, state: dict, best: bool = False) -> None:
    save_state(run_dir / STATE_FILE, state)
    if best:  # what synth-pt-real-ft continues under as-run
        save_state(run_dir / BEST_STATE_FILE, state)
    write_text_atomic(run_dir / HISTORY_FILE, history_frame(state["history"]).to_csv(index=False))


class Engine:
    """Trains one run epoch by epoch (``run``) from its ``Setup``: a fresh start (the
    initial validation score), a resumed ``state.pt``, or a continued synthetic state.
    ``step``: the optimisation step (default ``train_step``)."""

    def __init__(self, setup: Setup, step: StepFn = train_step) -> None:
        config = setup.config
        self.setup, self.step = setup, step
        self.history: list[dict] = []  # one row per epoch (HISTORY_COLUMNS)
        self.best = BestScore()
        self.epoch = 0  # the last finished epoch
        self.first_epoch = 1  # > 1 when continuing a synthetic run's state (as-run)
        self.per_rank = max(1, math.ceil(config.global_batch_size / setup.dist.world_size))
        assert setup.data.train is not None  # zeroshot runs train no epoch
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(len(setup.data.train)),  # type: ignore[arg-type]  # len() is all it reads
                                          num_replicas=setup.dist.world_size,
                                          rank=setup.dist.rank, shuffle=True, seed=config.seed)
        self.steps_per_epoch = len(self.epoch_batches(1))
        self.stopping = EarlyStopping.of(config, self.steps_per_epoch)
        self.params, self.optimizer, self.scheduler, self.scaler = make_optimizer(
            config, setup.model, setup.device, setup.precision)
        # what is called: the model (on cached values), in DDP / compile
        self.net: nn.Module = setup.model
        self.val_net: nn.Module | None = None  # validation's, when it differs from net
        if setup.cache is not None:
            self.net = CachedModel(setup.model, setup.cache.train)
            self.val_net = CachedModel(setup.model, setup.cache.val)
        elif config.image_batching and setup.data.train is not None:
            self.net = ImageBatchedModel(setup.model, setup.data.train.images,
                                         config.channels_last)
            self.val_net = setup.model  # validation: the plain forward
        if config.image_batching and setup.dist.active:
            raise ValueError(f"{config.run_id}: image_batching trains in one process; under "
                             "torchrun set image_batching: false")
        if setup.dist.active:
            # the vision tower's layers past the deepest extracted one get no gradient
            self.net = DistributedDataParallel(
                self.net, find_unused_parameters=True,
                device_ids=[setup.device.index] if setup.device.type == "cuda" else None)
        if config.compile:
            # a compiled module is a module (OptimizedModule); torch types it as a callable
            self.net = cast(nn.Module, torch.compile(self.net))
        if setup.saved is not None:
            self._resume(setup.saved)
        else:
            val_loss, val_dice = self.validate()
            init = str(setup.init) if setup.init is not None else None
            self.best = BestScore(initial_val_dice=val_dice, initial_val_loss=val_loss,
                                  initialised_from=init)
            if setup.carry is not None:
                self._continue(setup.carry)

    def validate(self) -> tuple[float, float]:
        """The validation loss and Dice of the model as it is (``scoring.validate``)."""
        s = self.setup
        if s.cache is None:
            net = self.net if self.val_net is None else self.val_net
            return validate(net, s.data.val, s.config, s.criterion, s.precision, s.dist)
        assert self.val_net is not None  # made with the cache
        return validate(self.val_net, s.data.val, s.config, s.criterion, s.precision, s.dist,
                        features=s.cache.val)

    @property
    def finished(self) -> bool:
        return self.stopping.stopped_by is not None

    def _load_optimisation(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def _continue(self, state: dict) -> None:
        """``as-run`` synth-pt-real-ft: continue the synthetic run's best-epoch state, as the
        study's ``trainer.fit(ckpt_path=best.ckpt)``: its optimiser state (the learning rate
        included), plateau schedule, gradient scaler, epoch counter and early-stopping state;
        the best weights are chosen afresh (Lightning's checkpoint callback of another
        folder). At least one epoch is trained, even when the synthetic run ended past
        ``epochs``."""
        self._load_optimisation(state)
        self.epoch = int(state["epoch"])
        self.first_epoch = self.epoch + 1
        self.stopping.load_state_dict(state["stopping"])
        self.best.best_epoch = self.epoch
        self.best.first_epoch = self.first_epoch
        assert self.setup.init is not None  # carry comes with the weights it started from
        self.best.continued_from = str(self.setup.init.parent / BEST_STATE_FILE)

    def _resume(self, state: dict) -> None:
        """Continue where ``state.pt`` left off: weights, optimizer, scheduler, scaler,
        random states, history, best score and early stopping."""
        self.setup.model.load_state_dict(state["model"])
        self._load_optimisation(state)
        set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.best = BestScore.from_dict(state["best"])
        self.epoch = int(state["epoch"])
        self.stopping.load_state_dict(state["stopping"],
                                      self.epoch if state["finished"] else None)
        self.first_epoch = self.best.first_epoch or 1

    def run(self, on_epoch_end: EpochCallback | None = None,
            progress: bool | None = None) -> dict:
        """Train until the run stops (``EarlyStopping``); after each epoch the best weights
        and ``state.pt`` are written (rank 0). Returns the training part of the summary."""
        config, dist = self.setup.config, self.setup.dist
        hide = (None if progress is None else not progress) if dist.main else True
        total = 1 if config.fast_dev_run is not None else config.epochs - self.first_epoch + 1
        bar = tqdm(total=total, initial=self.epoch - self.first_epoch + 1, desc=config.run_id,
                   unit="epoch", disable=hide)
        writer = BackgroundWriter()
        try:
            while not self.finished:
                row = self.train_epoch(self.epoch + 1, hide)
                self._record(row, writer)
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                                val_dice=f"{row['val_dice']:.1f}",
                                best=f"{self.best.best_val_dice:.1f}")
                D.barrier(dist)
                if on_epoch_end is not None and dist.main:
                    on_epoch_end(self.epoch, row)
        finally:
            writer.wait()
            bar.close()
        return {**self.best.as_dict(), "epochs_run": len(self.history),
                "stopped_by": self.stopping.stopped_by,
                "steps_per_epoch": self.steps_per_epoch,
                "early_stopping_from": self.stopping.min_epochs}

    def _record(self, row: dict, writer: BackgroundWriter) -> None:
        """Add an epoch's row, update the best score and early stopping; rank 0 saves
        improved weights and hands the state to the background writer."""
        config = self.setup.config
        epoch = self.epoch = row["epoch"]
        self.history.append(row)
        improved = self.best.update(epoch, row["val_dice"],
                                    sum(r["seconds"] for r in self.history))
        self.stopping.update(epoch, row["val_dice"])
        if self.setup.dist.main:
            if improved:
                save_weights(self.setup.model, config.run_dir / WEIGHTS_FILE)
            keep_best = improved and config.strategy == "synthetic" and \
                config.setting("resume_pretraining")
            writer.submit(_write_state, config.run_dir, self.snapshot(), keep_best)

    def snapshot(self) -> dict:
        """What ``state.pt`` holds after an epoch, copied to the CPU (written in the
        background)."""
        return cpu_copy({
            "epoch": self.epoch, "finished": self.finished,
            "model": unwrap(self.setup.model).state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "best": self.best.as_dict(),
            "history": list(self.history), "stopping": self.stopping.state_dict(),
            "rng": rng_state(), "config": result_fields(self.setup.config)})

    def epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        """This process's batches of an epoch (triplet indices on the data's device): the
        sampler's order drawn from (seed, epoch), or with ``image_batching`` the images
        permuted by a generator seeded with ``epoch_seed`` and cut into whole images."""
        config, train = self.setup.config, self.setup.data.train
        assert train is not None  # zeroshot runs train no epoch
        if config.image_batching:
            order = image_order(train.image_index,
                                torch.Generator().manual_seed(epoch_seed(config, epoch)))
            return [b.to(train.device)
                    for b in image_batches(order, train.image_index, self.per_rank)]
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long).to(train.device)
        return batches(order, self.per_rank)

    def train_epoch(self, epoch: int, hide: bool | None = True) -> dict:
        """One epoch: batch order, phrasings and dropout drawn from (seed, epoch); then the
        validation loss and Dice, and the plateau scheduler's step. Returns the history row.
        ``hide``: the step bar's ``disable`` (None: shown on a TTY only)."""
        s = self.setup
        config, train, device = s.config, s.data.train, s.device
        assert train is not None  # zeroshot runs train no epoch
        spec = unwrap_segmentation(self.net).spec
        t0 = time.perf_counter()
        chunks = self.epoch_batches(epoch)
        phrasing = train.draw_phrasings(torch.Generator().manual_seed(epoch_seed(config, epoch)))
        phrasing = phrasing.to(train.device)
        torch.manual_seed(epoch_seed(config, epoch))  # dropout and anything else random
        self.net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        if config.fast_dev_run is not None:
            chunks = chunks[:config.fast_dev_run]
        steps = tqdm(chunks, desc=f"epoch {epoch}", unit="step", leave=False, disable=hide)
        cache = s.cache.train if s.cache is not None else None
        for idx in steps:
            images, masks, ids, attn = train.batch(idx, phrasing)
            if cache is None:
                x = (train.image_index[idx] if config.image_batching
                     else model_inputs(images, spec, config))
            else:  # the rows of the cached values
                x, ids = cache.rows(train, idx, phrasing)
            loss = self.step(self.net, x, ids, attn, masks, s.criterion, self.optimizer,
                             self.scaler, self.params, config.grad_clip, s.precision)
            loss_sum += loss.detach().double() * len(idx)
            n_seen += len(idx)
            if not steps.disable:
                steps.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
        steps.close()
        counts = torch.tensor([float(n_seen)], dtype=torch.float64, device=device)
        D.all_reduce_sum(s.dist, loss_sum)
        D.all_reduce_sum(s.dist, counts)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds_train = time.perf_counter() - t0
        val_loss, val_dice = self.validate()
        self.scheduler.step(val_loss)
        seconds = time.perf_counter() - t0
        return {"epoch": epoch, "train_loss": float(loss_sum) / float(counts),
                "val_loss": val_loss, "val_dice": val_dice, "lr": lr, "seconds": seconds,
                "images_per_s": float(counts) / max(seconds_train, 1e-9)}
