"""The semantic diffusion model's UNet (SDM, Wang et al. 2022; Echo from Noise, ASMUS 2023).

The encoder sees the noisy image and the timestep; the label map enters only the middle and
decoder blocks, through SPADE group norms: GroupNorm without affine, then per-pixel scale
and shift predicted from the one-hot label map resized (nearest) to the block's size,
``x * (1 + gamma) + beta``. The timestep embedding scales and shifts every residual block
(as in guided diffusion); an optional view/phase embedding is added to it. A zero one-hot
map (and the null view/phase index) is the "no condition" input of classifier-free guidance.

Sizes come from a registry (``UNET_SIZES``): ``paper`` is the study's (256 px, 256 channels,
multipliers 1,1,2,2,4,4, 2 residual blocks per level, attention at 32/16/8 px, 64 channels
per head, SPADE hidden width 128); ``tiny`` is the same architecture at 64 px and small
width for CPUs, tests and the demo.

The study predicted a learned variance; this model predicts the noise only (epsilon) and
leaves the variance to the sampler (``diffusers`` schedulers), which is what fast samplers
such as DPM-Solver++ need.

Examples::

    net = build_unet("tiny")
    eps = net(x_t, t, one_hot(label_map, 5))       # x_t (B, 1, 64, 64), t (B,)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetSpec:
    """Architecture of one SDM size."""

    name: str
    image_size: int
    channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]  # in pixels
    head_channels: int
    spade_hidden: int
    groups: int = 32
    num_classes: int = 5
    view_phase_classes: int = 0  # 0: no view/phase conditioning; 4: (2CH, 4CH) x (ED, ES)
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


UNET_SIZES: dict[str, UNetSpec] = {
    "paper": UNetSpec("paper", 256, 256, (1, 1, 2, 2, 4, 4), 2, (32, 16, 8), 64, 128),
    "tiny": UNetSpec("tiny", 64, 16, (1, 2, 4, 4), 1, (8,), 32, 16, groups=8),
}


def unet_spec(size: str | UNetSpec, **overrides) -> UNetSpec:
    """The registered spec of ``size`` (``paper`` or ``tiny``), with fields overridden."""
    if isinstance(size, UNetSpec):
        spec = size
    elif size in UNET_SIZES:
        spec = UNET_SIZES[size]
    else:
        raise ValueError(f"unknown SDM size {size!r}; expected one of {sorted(UNET_SIZES)}")
    if "channel_mult" in overrides:
        overrides["channel_mult"] = tuple(overrides["channel_mult"])
    if "attention_resolutions" in overrides:
        overrides["attention_resolutions"] = tuple(overrides["attention_resolutions"])
    return replace(spec, **overrides) if overrides else spec


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class SPADEGroupNorm(nn.Module):
    """SPADE group norm (Park et al. 2019, as in SDM): ``GN(x) * (1 + gamma(m)) + beta(m)``
    with ``gamma``, ``beta`` predicted per pixel from the label map ``m`` by a 3x3 conv to
    ``hidden`` channels + ReLU, then one 3x3 conv each."""

    def __init__(self, channels: int, label_channels: int, hidden: int = 128, groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def modulation(self, seg: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta) of a one-hot map at ``size``."""
        if seg.shape[-2:] != tuple(size):
            seg = F.interpolate(seg, size=size, mode="nearest")
        feat = self.shared(seg)
        return 1 + self.gamma(feat), self.beta(feat)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, cache: dict | None = None):
        """``cache``: a dict kept across calls with the same ``seg`` (the steps of one
        sampling run): gamma and beta depend on the map only, so they are computed once."""
        if cache is None:
            scale, beta = self.modulation(seg, x.shape[-2:])
        else:
            key = id(self)
            if key not in cache:
                cache[key] = self.modulation(seg, x.shape[-2:])
            scale, beta = cache[key]
        return torch.addcmul(beta, self.norm(x), scale)


class ResBlock(nn.Module):
    """Residual block with timestep scale-shift; SPADE norms where ``label_channels`` > 0."""

    def __init__(self, cin: int, cout: int, emb_dim: int, spec: UNetSpec, spade: bool):
        super().__init__()
        self.spade = spade
        self.norm1: nn.Module
        self.norm2: nn.Module
        if spade:
            self.norm1 = SPADEGroupNorm(cin, spec.num_classes, spec.spade_hidden, spec.groups)
            self.norm2 = SPADEGroupNorm(cout, spec.num_classes, spec.spade_hidden, spec.groups)
        else:
            self.norm1 = nn.GroupNorm(spec.groups, cin)
            self.norm2 = nn.GroupNorm(spec.groups, cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.dropout = nn.Dropout(spec.dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def _norm(self, norm: nn.Module, x: torch.Tensor, seg, cache) -> torch.Tensor:
        return norm(x, seg, cache) if self.spade else norm(x)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, seg: torch.Tensor | None,
                cache: dict | None = None):
        h = self.conv1(F.silu(self._norm(self.norm1, x, seg, cache)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self._norm(self.norm2, h, seg, cache) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over pixels (``head_channels`` per head)."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class _Level(nn.Module):
    """Residual blocks (+ attention) at one resolution."""

    def __init__(self, res: nn.ModuleList, attn: nn.ModuleList):
        super().__init__()
        self.res, self.attn = res, attn


class SDMUNet(nn.Module):
    """SPADE-conditioned UNet predicting the noise of ``x_t`` given ``t`` and a label map.

    ``forward(x, t, seg, view_phase=None, spade_cache=None)``: ``x`` (B, 1, S, S) noisy
    image, ``t`` (B,) timesteps (0..999), ``seg`` (B, num_classes, H, W) one-hot label map
    (zeros: no condition), ``view_phase`` (B,) long in 0..3 (4: none) when the spec asks for
    it. ``spade_cache``: one dict per sampling run (same ``seg`` at every step) lets the SPADE
    norms compute their map-only scale and shift once instead of at every step.
    """

    def __init__(self, spec: UNetSpec):
        super().__init__()
        self.spec = spec
        ch = spec.channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.view_phase = (
            nn.Embedding(spec.view_phase_classes + 1, emb_dim) if spec.view_phase_classes else None
        )
        self.inp = nn.Conv2d(1, ch, 3, padding=1)

        # encoder: noisy image + timestep only
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [ch]
        cur, res = ch, spec.image_size
        for level, mult in enumerate(spec.channel_mult):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(spec.num_res_blocks):
                blocks.append(ResBlock(cur, ch * mult, emb_dim, spec, spade=False))
                cur = ch * mult
                attns.append(self._attn(cur, res))
                skips.append(cur)
            self.down.append(_Level(blocks, attns))
            if level < len(spec.channel_mult) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                res //= 2
        # middle: SPADE
        self.mid1 = ResBlock(cur, cur, emb_dim, spec, spade=True)
        self.mid_attn = AttentionBlock(cur, spec.head_channels, spec.groups)
        self.mid2 = ResBlock(cur, cur, emb_dim, spec, spade=True)
        # decoder: SPADE, with the encoder's skips
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(spec.channel_mult))):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(spec.num_res_blocks + 1):
                blocks.append(ResBlock(cur + skips.pop(), ch * mult, emb_dim, spec, spade=True))
                cur = ch * mult
                attns.append(self._attn(cur, res))
            self.up.append(_Level(blocks, attns))
            if level > 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1))
                res *= 2
        self.out_norm = nn.GroupNorm(spec.groups, cur)
        self.out = _zero(nn.Conv2d(cur, 1, 3, padding=1))

    def _attn(self, channels: int, res: int) -> nn.Module:
        if res in self.spec.attention_resolutions:
            return AttentionBlock(channels, self.spec.head_channels, self.spec.groups)
        return nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        seg: torch.Tensor,
        view_phase: torch.Tensor | None = None,
        spade_cache: dict | None = None,
    ) -> torch.Tensor:
        spec = self.spec
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x: expected (B, 1, H, W), got {tuple(x.shape)}")
        factor = 2 ** (len(spec.channel_mult) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"x: {tuple(x.shape[-2:])} px is not divisible by {factor}; the {spec.name} "
                f"SDM is trained at {spec.image_size} px"
            )
        if seg.ndim != 4 or seg.shape[1] != spec.num_classes:
            raise ValueError(
                f"seg: expected a one-hot map (B, {spec.num_classes}, H, W), got {tuple(seg.shape)}"
            )
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, spec.channels).to(x.dtype))
        if self.view_phase is not None:
            if view_phase is None:
                view_phase = torch.full(
                    (x.shape[0],), spec.view_phase_classes, dtype=torch.long, device=x.device
                )
            emb = emb + self.view_phase(view_phase)
        seg = seg.to(x.dtype)
        segs: dict[tuple[int, ...], torch.Tensor] = {}

        def seg_at(h: torch.Tensor) -> torch.Tensor:  # one resize per resolution
            key = tuple(h.shape[-2:])
            if key not in segs:
                if seg.shape[-2:] == key:
                    segs[key] = seg
                else:
                    segs[key] = F.interpolate(seg, size=key, mode="nearest")
            return segs[key]

        h = self.inp(x)
        hs = [h]
        for level, lv in enumerate(cast(Iterable[_Level], self.down)):
            for block, attn in zip(lv.res, lv.attn):
                h = attn(block(h, emb, None))
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        s = seg_at(h)
        c = spade_cache
        h = self.mid2(self.mid_attn(self.mid1(h, emb, s, c)), emb, s, c)
        for i, lv in enumerate(cast(Iterable[_Level], self.up)):
            for block, attn in zip(lv.res, lv.attn):
                h = torch.cat([h, hs.pop()], dim=1)
                h = attn(block(h, emb, seg_at(h), spade_cache))
            if i < len(self.upsample):
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                h = self.upsample[i](h)
        return self.out(F.silu(self.out_norm(h)))


def build_unet(size: str | UNetSpec = "tiny", **overrides) -> SDMUNet:
    """The SDM UNet of a registered size (``paper`` or ``tiny``), fields overridable
    (e.g. ``view_phase_classes=4``)."""
    return SDMUNet(unet_spec(size, **overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def one_hot(maps: torch.Tensor, num_classes: int = 5) -> torch.Tensor:
    """(B, H, W) integer maps -> (B, num_classes, H, W) float one-hot."""
    if maps.ndim != 3:
        raise ValueError(f"expected (B, H, W) label maps, got {tuple(maps.shape)}")
    if maps.numel() and (int(maps.max()) >= num_classes or int(maps.min()) < 0):
        raise ValueError(f"label values outside 0..{num_classes - 1}")
    return F.one_hot(maps.long(), num_classes).permute(0, 3, 1, 2).float()
