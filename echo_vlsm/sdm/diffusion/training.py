"""Training the SDM: AdamW on the diffusion loss, EMA, checkpoints, resume, sample grids.

Every random draw of a step comes from one generator seeded by ``config.seed`` (batch,
timesteps, noise, guidance dropout, flips), and ``state.pt`` keeps that generator and the
global torch random state, so a run stopped and resumed ends with the same weights as one
that never stopped. Classifier-free guidance is learnt by replacing the label map with an
all-zero map (and the view/phase by the null one) with probability ``guidance_dropout``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from echo_vlsm.device import autocast, autocast_dtype, resolve_device
from echo_vlsm.io import clean_temp_files, write_png
from echo_vlsm.sdm.diffusion.checkpoints import (
    WEIGHTS_FILE,
    checkpoint,
    epsilon_model,
    read_resume_state,
    sample_grid_path,
    save_weights,
    weights_problem,
    write_config,
    write_summary,
)
from echo_vlsm.sdm.diffusion.config import NULL_VIEW_PHASE, SDMConfig, resolve_sdm_precision
from echo_vlsm.sdm.diffusion.data import TrainingData, load_training_data
from echo_vlsm.sdm.diffusion.ema import EMA
from echo_vlsm.sdm.diffusion.sampling import sample, to_uint8
from echo_vlsm.sdm.diffusion.schedule import (
    NUM_TRAIN_TIMESTEPS,
    diffusion_loss,
    training_alphas_cumprod,
)
from echo_vlsm.sdm.labels import NUM_CLASSES
from echo_vlsm.sdm.unet import build_unet, one_hot


def sample_grid(sdm_model, data: TrainingData, path: Path, n: int = 4, device=None, dtype=None,
                channels_last: bool = False) -> np.ndarray:
    """A PNG of ``n`` columns: label map (gray levels), DPM-Solver++ sample, real image."""
    idx = np.linspace(0, len(data.stems) - 1, min(n, len(data.stems))).round().astype(int)
    maps = data.maps[idx]
    x = sample(sdm_model, maps, sampler="dpm++", steps=20, seeds=list(range(len(idx))),
               device=device, dtype=dtype, channels_last=channels_last)
    rows = [
        np.concatenate(list((maps.numpy() * 60).astype(np.uint8)), axis=1),
        np.concatenate(list(to_uint8(x)), axis=1),
        np.concatenate(list(data.images[idx].numpy()), axis=1),
    ]
    grid = np.concatenate(rows, axis=0)
    write_png(path, grid)
    return grid


# --------------------------------------------------------------------------- one run


@dataclass
class _Run:
    """What changes while training: network, EMA, optimizer, generator, history, step."""

    config: SDMConfig
    device: torch.device
    precision: str
    model: torch.nn.Module
    ema: EMA
    opt: torch.optim.Optimizer
    gen: torch.Generator
    history: list[dict] = field(default_factory=list)
    step: int = 0

    @property
    def memory(self) -> torch.memory_format:
        return torch.channels_last if self.config.uses_channels_last else torch.contiguous_format

    def lr_at(self, step: int) -> float:
        """Linear warm-up to ``config.lr`` over ``warmup_steps``, then constant."""
        return self.config.lr * min(1.0, (step + 1) / max(1, self.config.warmup_steps))


def _start(config: SDMConfig, state: dict | None) -> _Run:
    """A fresh network, EMA, optimizer and generator (seeded), continued from ``state``."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    memory = torch.channels_last if config.uses_channels_last else torch.contiguous_format
    model = build_unet(config.spec).to(device).to(memory_format=memory)
    run = _Run(config, device, resolve_sdm_precision(config.precision, device), model,
               EMA(model, config.ema_decay),
               torch.optim.AdamW(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay),
               torch.Generator().manual_seed(config.seed))
    if state is not None:
        model.load_state_dict(state["model"])
        run.ema.load_state_dict(state["ema"])
        run.opt.load_state_dict(state["optimizer"])
        run.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        run.history = list(state["history"])
        run.step = int(state["step"])
    return run


@dataclass
class _OnDevice:
    """The training data on the training device."""

    images: torch.Tensor
    maps: torch.Tensor
    view_phase: torch.Tensor


def _draw_batch(run: _Run, data: _OnDevice):
    """One augmented batch: x0 in [-1, 1], one-hot maps (zeroed where guidance drops them),
    timesteps, noise and view/phase; all drawn from the run's generator."""
    cfg, gen, dev = run.config, run.gen, run.device
    b, size = cfg.batch_size, cfg.spec.image_size
    idx = torch.randint(0, len(data.images), (b,), generator=gen)
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,), generator=gen)
    noise = torch.randn(b, 1, size, size, generator=gen)
    drop = torch.rand(b, generator=gen) < cfg.guidance_dropout
    flip = (torch.rand(b, generator=gen) < 0.5) & torch.tensor(cfg.hflip)
    idx, t, noise, drop, flip = idx.to(dev), t.to(dev), noise.to(dev), drop.to(dev), flip.to(dev)
    x0 = data.images[idx].float().div(127.5).sub(1).unsqueeze(1)
    seg = one_hot(data.maps[idx], NUM_CLASSES)
    f4 = flip.view(-1, 1, 1, 1)
    x0 = torch.where(f4, x0.flip(-1), x0)
    seg = torch.where(f4, seg.flip(-1), seg)
    seg = seg * (~drop).view(-1, 1, 1, 1)
    vp = data.view_phase[idx]
    vp = torch.where(drop, torch.full_like(vp, NULL_VIEW_PHASE), vp)
    return x0, seg, t, noise, vp


def _optimize(run: _Run, forward, batch, alphas: torch.Tensor) -> float:
    """One AdamW step on the diffusion loss of ``batch``, then the EMA; returns the loss."""
    cfg, memory = run.config, run.memory
    x0, seg, t, noise, vp = batch
    for g in run.opt.param_groups:
        g["lr"] = run.lr_at(run.step)
    with autocast(run.device, run.precision):
        loss = diffusion_loss(forward, x0.contiguous(memory_format=memory),
                              seg.contiguous(memory_format=memory), t, noise, alphas,
                              vp if cfg.spec.view_phase_classes else None,
                              cfg.parameterization, cfg.min_snr_gamma)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"SDM loss is {loss.item()} at step {run.step}; lower lr "
                                 f"(now {cfg.lr}) or use precision='fp32'")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.opt.step()
    run.ema.update(run.model, run.step)
    return loss.item()


def _write_grid(run_dir: Path, run: _Run, data: TrainingData) -> None:
    """Sample grid from the EMA weights (the model and the random state are left untouched)."""
    net = epsilon_model(run.config, run.ema.state_dict(), run.device,
                        run.config.uses_channels_last, run_dir)
    rng_state = torch.get_rng_state()
    sample_grid(net, data, sample_grid_path(run_dir, run.step), device=run.device,
                dtype=autocast_dtype(run.precision),
                channels_last=run.config.uses_channels_last)
    torch.set_rng_state(rng_state)


def _checkpoint(run_dir: Path, run: _Run) -> None:
    checkpoint(run_dir, run.model, run.ema, run.opt, run.config, run.step, run.gen, run.history)


def _train_loop(run_dir: Path, run: _Run, data: TrainingData, progress: bool) -> int:
    """Train up to ``config.steps`` (``train_steps``, or ``fast_dev_run``), with grids and
    checkpoints on the way; returns the step of the last checkpoint."""
    cfg = run.config
    forward = torch.compile(run.model) if cfg.compile else run.model
    alphas = training_alphas_cumprod().to(run.device)
    on_device = _OnDevice(data.images.to(run.device), data.maps.to(run.device),
                          data.view_phase.to(run.device))
    t_start = time.perf_counter() - (run.history[-1]["seconds"] if run.history else 0.0)
    last_ckpt = run.step
    running = None
    bar = tqdm(total=cfg.steps, initial=run.step, desc="SDM", unit="step",
               disable=None if progress else True)
    run.model.train()
    try:
        while run.step < cfg.steps:
            loss = _optimize(run, forward, _draw_batch(run, on_device), alphas)
            run.step += 1
            running = loss if running is None else 0.95 * running + 0.05 * loss
            run.history.append({"step": run.step, "loss": loss, "lr": run.lr_at(run.step - 1),
                                "seconds": time.perf_counter() - t_start})
            bar.update()
            bar.set_postfix(loss=f"{running:.4f}")
            if cfg.sample_every and run.step % cfg.sample_every == 0:
                _write_grid(run_dir, run, data)
            if run.step - last_ckpt >= cfg.checkpoint_every or run.step == cfg.steps:
                _checkpoint(run_dir, run)
                last_ckpt = run.step
    finally:
        bar.close()
    return last_ckpt


def _check_size(data: TrainingData, config: SDMConfig) -> None:
    spec = config.spec
    if data.images.shape[-1] != spec.image_size:
        raise ValueError(f"training data are {data.images.shape[-1]} px; the {spec.name} SDM "
                         f"needs {spec.image_size} px")


def train_sdm(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike,
              config: SDMConfig = SDMConfig(), *, progress: bool = True,
              data: TrainingData | None = None) -> Path:
    """Train the SDM on an exported dataset's (image, 5-class map) pairs.

    Resumes from ``run_dir/state.pt`` when present; more ``train_steps`` continue a
    finished run, and a finished run is not trained again. A finished run whose
    ``model.safetensors`` is damaged or missing (``weights_problem``) gets it written again
    from ``state.pt``, which holds the same step's weights. Temporary files a killed run
    left are removed first.

    Args:
        data: the training data when already loaded (``load_training_data``).

    Returns:
        ``run_dir``.

    Raises:
        PathError: resuming with another architecture (``config.json`` names the field).
        FloatingPointError: the loss is not finite.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_temp_files(run_dir, recursive=True)
    state = read_resume_state(run_dir, config)
    if state is not None and state["step"] >= config.steps:
        problem = weights_problem(run_dir)
        if problem is not None:
            print(f"{run_dir}: {problem}; writing it again from state.pt (step "
                  f"{state['step']})", flush=True)
            run = _start(config, state)
            save_weights(run_dir, run.model, run.ema, config, run.step)
        write_summary(run_dir, state["step"], state["history"], done=True)
        return run_dir
    write_config(run_dir, config, dataset_dir)
    if data is None:
        data = load_training_data(dataset_dir, config.spec.image_size, config.splits, progress)
    _check_size(data, config)
    run = _start(config, state)
    last_ckpt = _train_loop(run_dir, run, data, progress)
    if run.step > last_ckpt or not (run_dir / WEIGHTS_FILE).is_file():
        _checkpoint(run_dir, run)
    if not config.sample_every or run.step % config.sample_every:
        _write_grid(run_dir, run, data)
    write_summary(run_dir, run.step, run.history, done=True)
    return run_dir
