"""What an SDM training run depends on (``SDMConfig``), and the SDM's device rule.

Precision ``auto`` of the SDM is bf16 autocast on a GPU that supports it and fp32 everywhere
else (never fp16: sampling drifts in fp16), so the SDM resolves it with
``echo_vlsm.device.resolve_precision(..., gpu_fallback="fp32")``.

Examples::

    >>> cfg = SDMConfig(train_steps=10)
    >>> (cfg.size, cfg.spec.image_size)
    ('tiny', 64)
    >>> SDMConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> import torch
    >>> resolve_sdm_precision("auto", torch.device("cpu"))
    'fp32'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from echo_vlsm.device import resolve_precision
from echo_vlsm.sdm.unet import UNetSpec, unet_spec

SDM_PRECISIONS = ("auto", "bf16", "fp32")
#: The view/phase index of the optional view/phase conditioning; ``NULL_VIEW_PHASE`` is
#: "unknown" (and the unconditional input of classifier-free guidance).
VIEW_PHASE = {("2CH", "ED"): 0, ("2CH", "ES"): 1, ("4CH", "ED"): 2, ("4CH", "ES"): 3}
NULL_VIEW_PHASE = 4
#: Fields that change the network or the data it learns; a resumed run must keep them.
ARCH_FIELDS = ("size", "view_phase", "unet", "splits")


@dataclass(frozen=True)
class SDMConfig:
    """Everything a training run depends on. ``paper()`` gives the study's settings.

    ``unet`` overrides fields of the size's architecture (pairs ``(name, value)``);
    ``splits`` are the dataset splits trained on; ``precision`` is ``auto`` (bf16 autocast
    on a GPU that supports it, else fp32), ``bf16`` or ``fp32``; ``channels_last`` ``None``
    means on; ``sample_every`` 0 writes a grid at the end only. ``fast_dev_run`` ``N``
    (as Lightning's): train only ``min(train_steps, N)`` steps (:attr:`steps`), everything
    else as configured; a rehearsal of the path, not a model.
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
    fast_dev_run: int | None = None

    def __post_init__(self):
        fdr = self.fast_dev_run
        if fdr is not None and (isinstance(fdr, bool) or int(fdr) != fdr or fdr < 1):
            raise ValueError(f"fast_dev_run {fdr!r}: expected None or a whole number >= 1")
        if self.precision not in SDM_PRECISIONS:
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
        base: dict[str, Any] = dict(
            size="paper", train_steps=50_000, batch_size=96, lr=1e-4, warmup_steps=0,
            ema_decay=0.9999, checkpoint_every=2_000, sample_every=5_000)
        base.update(overrides)
        return cls(**base)

    @property
    def steps(self) -> int:
        """The steps this run trains: ``train_steps``, or at most ``fast_dev_run``.

        >>> SDMConfig(train_steps=200, fast_dev_run=2).steps
        2
        """
        if self.fast_dev_run is None:
            return self.train_steps
        return min(self.train_steps, int(self.fast_dev_run))

    @property
    def spec(self) -> UNetSpec:
        return unet_spec(self.size, view_phase_classes=4 if self.view_phase else 0,
                         **dict(self.unet))

    @property
    def uses_channels_last(self) -> bool:
        """``channels_last`` with its default (``None``: on) filled in."""
        return self.channels_last if self.channels_last is not None else True

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


def resolve_sdm_precision(precision: str, device: torch.device) -> str:
    """The SDM's precision rule: ``auto`` -> bf16 on a GPU that supports it, else fp32."""
    return resolve_precision(precision, device, gpu_fallback="fp32")
