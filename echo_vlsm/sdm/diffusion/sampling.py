"""Sampling the SDM: ``diffusers`` schedulers, classifier-free guidance, seeded batches.

- ``ddpm``: the study's 1000-step ancestral sampler (``DDPMScheduler``),
- ``ddim``: deterministic DDIM (``DDIMScheduler``, default 50 steps),
- ``dpm++``: DPM-Solver++ (2M, ``DPMSolverMultistepScheduler``, default 20 steps).

Classifier-free guidance (Ho & Salimans 2022): ``eps = eps_u + s * (eps_c - eps_u)``, where
``eps_u`` sees the all-zero map (and the null view/phase); ``s = 1`` is one plain pass.
Every image has its own seed, so it is the same whatever batch it is sampled in.

Examples::

    >>> [len(make_scheduler(name).timesteps) for name in SAMPLERS]
    [1000, 50, 20]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from echo_vlsm.device import autocast
from echo_vlsm.sdm.diffusion.config import NULL_VIEW_PHASE, SDMConfig
from echo_vlsm.sdm.diffusion.schedule import NUM_TRAIN_TIMESTEPS, SCHEDULE, EpsilonModel
from echo_vlsm.sdm.labels import resize_map
from echo_vlsm.sdm.unet import one_hot

SAMPLERS = ("ddpm", "ddim", "dpm++")
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm++": 20}
#: The precision name of an autocast dtype (``None``: fp32), for ``echo_vlsm.device.autocast``.
_PRECISION_OF = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def make_scheduler(sampler: str = "dpm++", steps: int | None = None):
    """A fresh ``diffusers`` scheduler for ``sampler`` (``ddpm``, ``ddim``, ``dpm++``) on the
    SDM's cosine schedule, with its timesteps set for ``steps`` (default 1000 / 50 / 20).

    Raises:
        ValueError: an unknown sampler, or ``steps`` outside 1..1000.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=SCHEDULE,
                  prediction_type="epsilon")
    # Any: to a type checker diffusers' top-level names are its torch-less placeholder classes
    sched: Any
    if sampler == "ddpm":
        sched = DDPMScheduler(**common, variance_type="fixed_small", clip_sample=True)
    elif sampler == "ddim":
        sched = DDIMScheduler(**common, clip_sample=True, timestep_spacing="trailing")
    elif sampler == "dpm++":
        sched = DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
            sample_max_value=1.0, dynamic_thresholding_ratio=0.995,
        )
    else:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    steps = DEFAULT_STEPS[sampler] if steps is None else int(steps)
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"steps {steps}: expected 1..{NUM_TRAIN_TIMESTEPS}")
    sched.set_timesteps(steps)
    return sched


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) in [-1, 1] -> (B, H, W) uint8."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round()
    return x[:, 0].to(torch.uint8).cpu().numpy()


def guidance_inputs(seg: torch.Tensor, view_phase: torch.Tensor | None, guidance_scale: float):
    """The map (and view/phase) batch of a guided pass: conditional, then unconditional
    (all-zero map, null view/phase); unchanged when ``guidance_scale`` is 1."""
    if float(guidance_scale) == 1.0:
        return seg, view_phase
    vp = None
    if view_phase is not None:
        vp = torch.cat([view_phase, torch.full_like(view_phase, NULL_VIEW_PHASE)])
    return torch.cat([seg, torch.zeros_like(seg)]), vp


def guided_eps(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, seg: torch.Tensor,
               view_phase: torch.Tensor | None = None, guidance_scale: float = 1.0,
               spade_cache: dict | None = None, prepared: bool = False) -> torch.Tensor:
    """Classifier-free guidance: ``eps_u + s * (eps_c - eps_u)`` in one batch of two passes;
    ``s = 1`` is one plain pass. ``prepared``: ``seg``/``view_phase`` already come from
    ``guidance_inputs``."""
    if not prepared:
        seg, view_phase = guidance_inputs(seg, view_phase, guidance_scale)
    if float(guidance_scale) == 1.0:
        return model(x, t, seg, view_phase, spade_cache).float()
    eps = model(torch.cat([x, x]), torch.cat([t, t]), seg, view_phase, spade_cache).float()
    cond, uncond = eps.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def _initial_noise(seeds: Sequence[int], h: int, w: int) -> tuple[torch.Tensor, list]:
    """x_T (B, 1, H, W), one generator per image, and the generators (DDPM draws from them)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(1, h, w, generator=g) for g in gens]), gens


@torch.no_grad()
def sample(
    model: EpsilonModel,
    maps,
    *,
    sampler: str = "dpm++",
    steps: int | None = None,
    guidance_scale: float = 1.0,
    view_phase=None,
    seeds: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Sample images for 5-class label ``maps`` (B, H, W) at the model's size.

    Args:
        model: an ``EpsilonModel`` (anything returning the noise, with a ``spec``).
        seeds: one per image (default ``0..B-1``): each image is reproducible in any batch.
        guidance_scale: classifier-free guidance; != 1 costs two passes per step.
        dtype: the autocast dtype (None: fp32).

    Returns:
        (B, 1, H, W) in [-1, 1].
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    maps = torch.as_tensor(np.asarray(maps) if not torch.is_tensor(maps) else maps).long()
    if maps.ndim == 2:
        maps = maps[None]
    b, h, w = maps.shape
    if seeds is None:
        seeds = list(range(b))
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for {b} label maps")
    x, gens = _initial_noise(seeds, h, w)
    x = x.to(device)
    seg = one_hot(maps, model.spec.num_classes).to(device)
    vp = None
    if model.spec.view_phase_classes:
        vp = (torch.full((b,), NULL_VIEW_PHASE, dtype=torch.long) if view_phase is None
              else torch.as_tensor(view_phase, dtype=torch.long)).to(device)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    seg, vp = guidance_inputs(seg, vp, guidance_scale)
    seg = seg.contiguous(memory_format=memory)
    cache: dict = {}  # SPADE scale/shift depend on the map only: computed at the first step
    sched = make_scheduler(sampler, steps)
    for t in tqdm(sched.timesteps, desc=sampler, leave=False, disable=None if progress else True):
        xin = sched.scale_model_input(x, t).contiguous(memory_format=memory)
        tt = torch.full((b,), int(t), device=device, dtype=torch.long)
        with autocast(device, _PRECISION_OF[dtype]):
            eps = guided_eps(model, xin, tt, seg, vp, guidance_scale, cache, prepared=True)
        x = sched.step(eps, t, x, generator=gens if sampler == "ddpm" else None).prev_sample
    return x


@dataclass
class SDM:
    """A trained SDM ready to sample: the (EMA) network as an ``EpsilonModel``, its config,
    device and autocast dtype (None: fp32)."""

    model: EpsilonModel
    config: SDMConfig
    device: torch.device
    dtype: torch.dtype | None = None
    channels_last: bool = False
    step: int = 0

    @property
    def image_size(self) -> int:
        return self.model.spec.image_size

    def sample(self, maps, *, sampler: str = "dpm++", steps: int | None = None,
               guidance_scale: float = 1.0, view_phase=None, seeds=None,
               batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """uint8 images (B, S, S) for 5-class maps (B, H, W) of any size (resized to S)."""
        maps = np.asarray(maps)
        if maps.ndim == 2:
            maps = maps[None]
        s = self.image_size
        if maps.shape[1:] != (s, s):
            maps = np.stack([resize_map(m, s) for m in maps])
        seeds = list(range(len(maps))) if seeds is None else list(seeds)
        vp = None if view_phase is None else np.asarray(view_phase)
        out = []
        for i in range(0, len(maps), batch_size):
            x = sample(self.model, maps[i : i + batch_size], sampler=sampler, steps=steps,
                       guidance_scale=guidance_scale, seeds=seeds[i : i + batch_size],
                       view_phase=None if vp is None else vp[i : i + batch_size],
                       device=self.device, dtype=self.dtype, channels_last=self.channels_last,
                       progress=progress)
            out.append(to_uint8(x))
        return np.concatenate(out) if out else np.zeros((0, s, s), np.uint8)
