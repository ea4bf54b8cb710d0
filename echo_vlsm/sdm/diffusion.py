"""Diffusion for the SDM: cosine schedule, training with EMA and checkpoints, samplers.

The noise schedule is the cosine one (Nichol & Dhariwal 2021; ``squaredcos_cap_v2`` in
``diffusers``), T = 1000, and the network predicts the noise (epsilon). Training draws its
``alphas_cumprod`` from the same ``diffusers`` scheduler the samplers use, so the trained
model and every sampler agree on the schedule:

- ``ddpm``: the study's 1000-step ancestral sampler (``DDPMScheduler``),
- ``ddim``: deterministic DDIM (``DDIMScheduler``, default 50 steps),
- ``dpm++``: DPM-Solver++ (2M, ``DPMSolverMultistepScheduler``, default 20 steps).

Classifier-free guidance (Ho & Salimans 2022), which the study lacked: training replaces the
label map by an all-zero one-hot map with probability ``guidance_dropout``; sampling mixes
``eps = eps_uncond + s * (eps_cond - eps_uncond)``; ``s = 1`` is one plain conditional pass.

A run directory holds ``config.json``, ``model.safetensors`` (weights and EMA weights),
``state.pt`` (everything to resume: weights, optimizer, step, random states, history),
``history.csv``, ``samples/step_<n>.png`` (grids: label map, sample, real image) and,
when training ended, ``summary.json`` with ``"done": true``.

Examples::

    train_sdm("data/phantom", "runs/demo/sdm", SDMConfig(size="tiny", train_steps=200))
    sdm = load_sdm("runs/demo/sdm")
    images = sdm.sample(maps, sampler="dpm++", steps=20)    # uint8 (B, 64, 64)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from echo_vlsm.io import atomic_path, write_json_atomic, write_png, write_text_atomic
from echo_vlsm.sdm.labels import NUM_CLASSES, resize_map
from echo_vlsm.sdm.unet import SDMUNet, UNetSpec, build_unet, one_hot, unet_spec

NUM_TRAIN_TIMESTEPS = 1000
SCHEDULE = "squaredcos_cap_v2"
SAMPLERS = ("ddpm", "ddim", "dpm++")
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm++": 20}
VIEW_PHASE = {("2CH", "ED"): 0, ("2CH", "ES"): 1, ("4CH", "ED"): 2, ("4CH", "ES"): 3}
NULL_VIEW_PHASE = 4


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SDMConfig:
    """Everything a training run depends on. ``paper()`` gives the study's settings.

    ``unet`` overrides fields of the size's architecture (pairs ``(name, value)``);
    ``splits`` are the dataset splits trained on; ``precision`` is ``auto`` (bf16 autocast
    on a GPU that supports it, else fp32), ``bf16`` or ``fp32``; ``channels_last`` ``None``
    means on; ``sample_every`` 0 writes a grid at the end only.
    """

    size: str = "tiny"
    train_steps: int = 200
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    guidance_dropout: float = 0.1
    parameterization: str = "v"
    min_snr_gamma: float | None = None
    view_phase: bool = False
    hflip: bool = True
    splits: tuple[str, ...] = ("train",)
    precision: str = "auto"
    compile: bool = False
    channels_last: bool | None = None
    checkpoint_every: int = 200
    sample_every: int = 0
    seed: int = 0
    device: str = "auto"
    unet: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision {self.precision!r}: expected 'auto', 'bf16' or 'fp32'")
        if self.train_steps < 0 or self.batch_size < 1:
            raise ValueError("train_steps must be >= 0 and batch_size >= 1")
        if not 0.0 <= self.guidance_dropout < 1.0:
            raise ValueError(f"guidance_dropout {self.guidance_dropout}: expected 0 <= p < 1")
        object.__setattr__(self, "splits", tuple(self.splits))
        object.__setattr__(self, "unet", tuple((str(k), _freeze(v)) for k, v in self.unet))
        unet_spec(self.size, **dict(self.unet))  # fails early on a bad size or field

    @classmethod
    def paper(cls, **overrides) -> SDMConfig:
        """The study's SDM training (Echo from Noise): 256 px, lr 1e-4, batch 96, 50k steps,
        EMA 0.9999."""
        base = dict(size="paper", train_steps=50_000, batch_size=96, lr=1e-4, warmup_steps=0,
                    ema_decay=0.9999, checkpoint_every=2_000, sample_every=5_000)  # fmt: skip
        base.update(overrides)
        return cls(**base)

    @property
    def spec(self) -> UNetSpec:
        return unet_spec(self.size, view_phase_classes=4 if self.view_phase else 0,
                         **dict(self.unet))  # fmt: skip

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["splits"] = list(self.splits)
        d["unet"] = [[k, v] for k, v in self.unet]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SDMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"SDM config: unknown keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "unet" in d:
            d["unet"] = tuple((k, v) for k, v in d["unet"])
        if "splits" in d:
            d["splits"] = tuple(d["splits"])
        return cls(**d)


def _freeze(v):
    return tuple(v) if isinstance(v, list) else v


# Fields that change the network or the data it learns; a resumed run must keep them.
_ARCH_FIELDS = ("size", "view_phase", "unet", "splits")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where asked for or (``auto``) on a GPU that supports it; None means fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- schedule


def make_scheduler(sampler: str = "dpm++", steps: int | None = None):
    """A fresh ``diffusers`` scheduler for ``sampler`` (``ddpm``, ``ddim``, ``dpm++``) on the
    SDM's cosine schedule, with its timesteps set for ``steps`` (default 1000 / 50 / 20)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=SCHEDULE,
                  prediction_type="epsilon")  # fmt: skip
    if sampler == "ddpm":
        sched = DDPMScheduler(**common, variance_type="fixed_small", clip_sample=True)
    elif sampler == "ddim":
        sched = DDIMScheduler(**common, clip_sample=True, timestep_spacing="trailing")
    elif sampler == "dpm++":
        sched = DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
            sample_max_value=1.0, dynamic_thresholding_ratio=0.995,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    steps = DEFAULT_STEPS[sampler] if steps is None else int(steps)
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"steps {steps}: expected 1..{NUM_TRAIN_TIMESTEPS}")
    sched.set_timesteps(steps)
    return sched


def training_alphas_cumprod() -> torch.Tensor:
    """The cumulative alphas of the cosine schedule, as the samplers' scheduler holds them."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=SCHEDULE,
                          prediction_type="epsilon")  # fmt: skip
    return sched.alphas_cumprod.clone().float()


def diffusion_loss(
    net: torch.nn.Module,
    x0: torch.Tensor,
    seg: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    view_phase: torch.Tensor | None = None,
    parameterization: str = "v",
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """MSE between the network's output at ``x_t`` and its target: the noise (``eps``) or
    ``v = sqrt(a) * noise - sqrt(1 - a) * x0`` (``v``, Salimans & Ho 2022). Optional Min-SNR-gamma
    weighting (Hang et al. 2023)."""
    a = alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = net(xt, t, seg, view_phase).float()
    if parameterization == "eps":
        target = noise
    elif parameterization == "v":
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
    else:
        raise ValueError(f"parameterization {parameterization!r}: expected 'eps' or 'v'")
    err = (pred - target.float()).pow(2).mean(dim=(1, 2, 3))
    if min_snr_gamma:
        snr = (a / (1 - a)).view(-1).float()
        denom = snr if parameterization == "eps" else snr + 1
        err = err * snr.clamp(max=min_snr_gamma) / denom
    return err.mean()


class EpsilonModel(torch.nn.Module):
    """The SDM as the samplers see it: the noise (epsilon) at ``x_t``. With the ``v``
    parameterisation the network predicts ``v`` and ``eps = sqrt(a) * v + sqrt(1 - a) * x_t``:
    near pure noise the image estimate stays well conditioned (an epsilon network must get
    the noise right to 1e-4 there, or its image estimate, and so the image's brightness, drifts)."""

    def __init__(self, net: SDMUNet, parameterization: str = "v"):
        super().__init__()
        if parameterization not in ("eps", "v"):
            raise ValueError(f"parameterization {parameterization!r}: expected 'eps' or 'v'")
        self.net = net
        self.spec = net.spec
        self.parameterization = parameterization
        self.register_buffer("alphas_cumprod", training_alphas_cumprod(), persistent=False)

    def forward(self, x, t, seg, view_phase=None, spade_cache: dict | None = None):
        out = self.net(x, t, seg, view_phase, spade_cache)
        if self.parameterization == "eps":
            return out
        a = self.alphas_cumprod[t.long()].view(-1, 1, 1, 1).to(out.dtype)
        return a.sqrt() * out + (1 - a).sqrt() * x.to(out.dtype)


# --------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of a model's weights with warm-up
    (decay ``min(decay, (1 + n) / (10 + n))`` at update ``n``)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.lerp_(v.detach(), 1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)


# --------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """Images (N, S, S) uint8, 5-class maps (N, S, S) uint8, view/phase index (N,), stems."""

    images: torch.Tensor
    maps: torch.Tensor
    view_phase: torch.Tensor
    stems: list[str]


def load_training_data(dataset_dir, image_size: int, splits: Sequence[str] = ("train",),
                       progress: bool = True) -> TrainingData:  # fmt: skip
    """Read an exported dataset: each image with its 5-class SDM map (sector from the image),
    both shrunk to ``image_size`` (area for the image, majority class for the map)."""
    from echo_vlsm.data.export import read_records, resize_image
    from echo_vlsm.io import read_png
    from echo_vlsm.sdm.labels import sector_mask, to_sdm_map

    dataset_dir = Path(dataset_dir)
    rows = read_records(dataset_dir)
    rows = rows[rows["split"].isin(list(splits))]
    if rows.empty:
        raise ValueError(f"{dataset_dir}/records.csv: no images in the splits {list(splits)}")
    images, maps, vps, stems = [], [], [], []
    for row in tqdm(list(rows.itertuples()), desc="load", unit="img", disable=None if progress else True):
        img = read_png(dataset_dir / "images" / row.split / f"{row.stem}.png")
        lbl = read_png(dataset_dir / "labels" / row.split / f"{row.stem}.png")
        if img.shape != lbl.shape:
            raise ValueError(f"{dataset_dir}/labels/{row.split}/{row.stem}.png: shape {lbl.shape} "
                             f"differs from its image's {img.shape}")  # fmt: skip
        sdm_map = to_sdm_map(lbl, sector_mask(img))
        images.append(resize_image(img, image_size))
        maps.append(resize_map(sdm_map, image_size))
        vps.append(VIEW_PHASE.get((row.view, row.phase), NULL_VIEW_PHASE))
        stems.append(row.stem)
    return TrainingData(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(maps)),
                        torch.tensor(vps, dtype=torch.long), stems)  # fmt: skip


# --------------------------------------------------------------------------- sampling


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
               spade_cache: dict | None = None, prepared: bool = False) -> torch.Tensor:  # fmt: skip
    """Classifier-free guidance (Ho & Salimans 2022): ``eps_u + s * (eps_c - eps_u)``, where
    ``eps_u`` sees the all-zero map (and the null view/phase); ``s = 1`` is one plain pass.
    ``prepared``: ``seg``/``view_phase`` already come from ``guidance_inputs``."""
    if not prepared:
        seg, view_phase = guidance_inputs(seg, view_phase, guidance_scale)
    if float(guidance_scale) == 1.0:
        return model(x, t, seg, view_phase, spade_cache).float()
    eps = model(torch.cat([x, x]), torch.cat([t, t]), seg, view_phase, spade_cache).float()
    cond, uncond = eps.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def sample(
    model: torch.nn.Module,
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
    """Sample images for 5-class label ``maps`` (B, H, W) at the model's size; returns
    (B, 1, H, W) in [-1, 1]. One seed per image makes each image reproducible whatever the
    batch; classifier-free guidance with ``guidance_scale`` != 1 (two passes per step)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    maps = torch.as_tensor(np.asarray(maps) if not torch.is_tensor(maps) else maps).long()
    if maps.ndim == 2:
        maps = maps[None]
    b, h, w = maps.shape
    if seeds is None:
        seeds = list(range(b))
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for {b} label maps")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(1, h, w, generator=g) for g in gens]).to(device)
    seg = one_hot(maps, model.spec.num_classes).to(device)
    vp = None
    if model.spec.view_phase_classes:
        vp = (torch.full((b,), NULL_VIEW_PHASE, dtype=torch.long) if view_phase is None
              else torch.as_tensor(view_phase, dtype=torch.long)).to(device)  # fmt: skip
    memory = torch.channels_last if channels_last else torch.contiguous_format
    seg, vp = guidance_inputs(seg, vp, guidance_scale)
    seg = seg.contiguous(memory_format=memory)
    cache: dict = {}  # SPADE scale/shift depend on the map only: computed at the first step
    sched = make_scheduler(sampler, steps)
    for t in tqdm(sched.timesteps, desc=sampler, leave=False, disable=None if progress else True):
        xin = sched.scale_model_input(x, t).contiguous(memory_format=memory)
        tt = torch.full((b,), int(t), device=device, dtype=torch.long)
        with _autocast(device, dtype):
            eps = guided_eps(model, xin, tt, seg, vp, guidance_scale, cache, prepared=True)
        x = sched.step(eps, t, x, generator=gens if sampler == "ddpm" else None).prev_sample
    return x


@dataclass
class SDM:
    """A trained SDM ready to sample: the (EMA) network as an ``EpsilonModel``, its config,
    device and precision."""

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
               batch_size: int = 64, progress: bool = False) -> np.ndarray:  # fmt: skip
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
                       progress=progress)  # fmt: skip
            out.append(to_uint8(x))
        return np.concatenate(out) if out else np.zeros((0, s, s), np.uint8)


def load_sdm(path, device: str = "auto", weights: str = "ema", precision: str = "auto") -> SDM:
    """Load a trained SDM from a run directory or its ``model.safetensors`` (EMA weights by
    default; ``weights="model"`` for the raw ones)."""
    from safetensors import safe_open

    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no SDM checkpoint; train one (train_sdm, notebook 02) "
                                "or pass a run directory holding model.safetensors")  # fmt: skip
    if weights not in ("ema", "model"):
        raise ValueError(f"weights {weights!r}: expected 'ema' or 'model'")
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{file}: lacks the SDM config in its metadata; not an SDM checkpoint")
        config = SDMConfig.from_dict(json.loads(meta["config"]))
        prefix = f"{weights}."
        state = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    dev = resolve_device(device)
    model = build_unet(config.spec)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{file}: weights do not fit the {config.size} SDM "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")  # fmt: skip
    cl = config.channels_last if config.channels_last is not None else True
    model = model.to(dev).eval()
    if cl:
        model = model.to(memory_format=torch.channels_last)
    wrapped = EpsilonModel(model, config.parameterization).to(dev).eval()
    return SDM(wrapped, config, dev, autocast_dtype(precision, dev), cl, int(meta.get("step", 0)))


# --------------------------------------------------------------------------- training


def _save_weights(run_dir: Path, model, ema: EMA, config: SDMConfig, step: int) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.contiguous().cpu() for k, v in ema.state_dict().items()})
    meta = {"config": json.dumps(config.to_dict()), "spec": json.dumps(config.spec.to_dict()),
            "step": str(step)}  # fmt: skip
    with atomic_path(run_dir / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _save_state(run_dir: Path, model, ema, opt, step, gen, history) -> None:
    state = {
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": {k: v.cpu() for k, v in ema.state_dict().items()},
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
    }
    with atomic_path(run_dir / "state.pt") as tmp:
        torch.save(state, tmp)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    lines = ["step,loss,lr,seconds"]
    lines += [f"{h['step']},{h['loss']:.6f},{h['lr']:.3g},{h['seconds']:.2f}" for h in history]
    write_text_atomic(run_dir / "history.csv", "\n".join(lines) + "\n")


def sample_grid(sdm_model, data: TrainingData, path: Path, n: int = 4, device=None, dtype=None,
                channels_last: bool = False) -> np.ndarray:  # fmt: skip
    """A PNG of ``n`` columns: label map (gray levels), DPM-Solver++ sample, real image."""
    idx = np.linspace(0, len(data.stems) - 1, min(n, len(data.stems))).round().astype(int)
    maps = data.maps[idx]
    x = sample(sdm_model, maps, sampler="dpm++", steps=20, seeds=list(range(len(idx))),
               device=device, dtype=dtype, channels_last=channels_last)  # fmt: skip
    rows = [
        np.concatenate(list((maps.numpy() * 60).astype(np.uint8)), axis=1),
        np.concatenate(list(to_uint8(x)), axis=1),
        np.concatenate(list(data.images[idx].numpy()), axis=1),
    ]
    grid = np.concatenate(rows, axis=0)
    write_png(path, grid)
    return grid


def train_sdm(dataset_dir, run_dir, config: SDMConfig = SDMConfig(), *,
              progress: bool = True, data: TrainingData | None = None) -> Path:  # fmt: skip
    """Train the SDM on an exported dataset's (image, 5-class map) pairs; resumes from
    ``run_dir/state.pt`` when present (more ``train_steps`` continue a finished run).
    Returns ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    channels_last = config.channels_last if config.channels_last is not None else True
    memory = torch.channels_last if channels_last else torch.contiguous_format
    spec = config.spec

    state_file = run_dir / "state.pt"
    state = None
    if state_file.is_file():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        old = json.loads((run_dir / "config.json").read_text())
        for key in _ARCH_FIELDS:
            new_v = json.loads(json.dumps(config.to_dict()[key]))
            if old.get(key) != new_v:
                raise ValueError(
                    f"{run_dir}/config.json: {key}={old.get(key)!r} differs from the requested "
                    f"{new_v!r}; resume with the same {key} or choose a new run directory"
                )
        if state["step"] >= config.train_steps and (run_dir / "model.safetensors").is_file():
            _write_summary(run_dir, state["step"], state["history"], done=True)
            return run_dir
    write_json_atomic(run_dir / "config.json",
                      {**config.to_dict(), "dataset": str(dataset_dir), "spec": spec.to_dict()})  # fmt: skip

    if data is None:
        data = load_training_data(dataset_dir, spec.image_size, config.splits, progress)
    if data.images.shape[-1] != spec.image_size:
        raise ValueError(f"training data are {data.images.shape[-1]} px; the {spec.name} SDM "
                         f"needs {spec.image_size} px")  # fmt: skip
    torch.manual_seed(config.seed)
    model = build_unet(spec).to(device).to(memory_format=memory)
    ema = EMA(model, config.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = list(state["history"])
        step = int(state["step"])
    forward = torch.compile(model) if config.compile else model
    alphas = training_alphas_cumprod().to(device)
    images = data.images.to(device)
    maps = data.maps.to(device)
    vps = data.view_phase.to(device)
    n = len(images)

    def lr_at(s: int) -> float:
        return config.lr * min(1.0, (s + 1) / max(1, config.warmup_steps))

    t_start = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    last_ckpt = step
    bar = tqdm(total=config.train_steps, initial=step, desc="SDM", unit="step",
               disable=None if progress else True)  # fmt: skip
    running = None
    model.train()
    try:
        while step < config.train_steps:
            b = config.batch_size
            idx = torch.randint(0, n, (b,), generator=gen)
            t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,), generator=gen)
            noise = torch.randn(b, 1, spec.image_size, spec.image_size, generator=gen)
            drop = torch.rand(b, generator=gen) < config.guidance_dropout
            flip = (torch.rand(b, generator=gen) < 0.5) & torch.tensor(config.hflip)
            idx_d, t, noise = idx.to(device), t.to(device), noise.to(device)
            drop, flip = drop.to(device), flip.to(device)
            x0 = images[idx_d].float().div(127.5).sub(1).unsqueeze(1)
            seg = one_hot(maps[idx_d], NUM_CLASSES)
            f4 = flip.view(-1, 1, 1, 1)
            x0 = torch.where(f4, x0.flip(-1), x0)
            seg = torch.where(f4, seg.flip(-1), seg)
            seg = seg * (~drop).view(-1, 1, 1, 1)
            vp = torch.where(drop, torch.full_like(vps[idx_d], NULL_VIEW_PHASE), vps[idx_d])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            with _autocast(device, dtype):
                loss = diffusion_loss(forward, x0.contiguous(memory_format=memory),
                                      seg.contiguous(memory_format=memory), t, noise, alphas,
                                      vp if spec.view_phase_classes else None,
                                      config.parameterization, config.min_snr_gamma)  # fmt: skip
            if not torch.isfinite(loss):
                raise FloatingPointError(f"SDM loss is {loss.item()} at step {step}; lower lr "
                                         f"(now {config.lr}) or use precision='fp32'")  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            ema.update(model, step)
            step += 1
            lv = loss.item()
            running = lv if running is None else 0.95 * running + 0.05 * lv
            history.append({"step": step, "loss": lv, "lr": lr_at(step - 1),
                            "seconds": time.perf_counter() - t_start})  # fmt: skip
            bar.update()
            bar.set_postfix(loss=f"{running:.4f}")
            if config.sample_every and step % config.sample_every == 0:
                _grid(run_dir, model, ema, config, data, step, device, dtype, channels_last)
            if step - last_ckpt >= config.checkpoint_every or step == config.train_steps:
                _checkpoint(run_dir, model, ema, opt, config, step, gen, history)
                last_ckpt = step
    finally:
        bar.close()
    if step > last_ckpt or not (run_dir / "model.safetensors").is_file():
        _checkpoint(run_dir, model, ema, opt, config, step, gen, history)
    if not config.sample_every or step % config.sample_every:
        _grid(run_dir, model, ema, config, data, step, device, dtype, channels_last)
    _write_summary(run_dir, step, history, done=True)
    return run_dir


def _checkpoint(run_dir, model, ema, opt, config, step, gen, history) -> None:
    _save_weights(run_dir, model, ema, config, step)
    _save_state(run_dir, model, ema, opt, step, gen, history)
    _write_history(run_dir, history)


def _grid(run_dir, model, ema, config, data, step, device, dtype, channels_last) -> None:
    """Sample grid from the EMA weights (the model is left untouched)."""
    net = build_unet(config.spec).to(device)
    net.load_state_dict(ema.state_dict())
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net = EpsilonModel(net, config.parameterization).to(device)
    rng_state = torch.get_rng_state()
    sample_grid(net.eval(), data, run_dir / "samples" / f"step_{step:06d}.png",
                device=device, dtype=dtype, channels_last=channels_last)  # fmt: skip
    torch.set_rng_state(rng_state)


def _write_summary(run_dir: Path, step: int, history: list[dict], done: bool) -> None:
    tail = [h["loss"] for h in history[-50:]]
    write_json_atomic(run_dir / "summary.json", {
        "steps": step,
        "seconds_total": round(history[-1]["seconds"], 2) if history else 0.0,
        "final_loss": float(np.mean(tail)) if tail else math.nan,
        "done": done,
    })  # fmt: skip


def read_history(run_dir) -> list[dict]:
    """Rows of ``history.csv`` (step, loss, lr, seconds)."""
    import pandas as pd

    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training history; train the SDM first")
    return pd.read_csv(path).to_dict("records")


__all__ = [
    "DEFAULT_STEPS", "SAMPLERS", "SDM", "SDMConfig", "EMA", "TrainingData", "diffusion_loss",
    "load_sdm", "load_training_data", "make_scheduler", "resolve_device", "sample",
    "sample_grid", "train_sdm", "training_alphas_cumprod",
]  # fmt: skip
