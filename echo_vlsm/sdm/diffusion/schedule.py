"""The SDM's noise schedule, its training loss, and the v -> epsilon conversion.

The schedule is the cosine one (Nichol & Dhariwal 2021; ``squaredcos_cap_v2`` in
``diffusers``) with T = 1000 steps. Training reads ``alphas_cumprod`` from the same
``diffusers`` scheduler the samplers use, so the trained model and every sampler agree.
With ``a = alphas_cumprod[t]`` the noisy image is ``x_t = sqrt(a) x0 + sqrt(1 - a) noise``;
the network predicts the noise (``eps``) or ``v = sqrt(a) noise - sqrt(1 - a) x0``
(Salimans & Ho 2022), and the samplers always see the noise (``EpsilonModel``).

Examples::

    >>> a = training_alphas_cumprod()
    >>> (a.shape, bool(a[0] > 0.999), bool(a[-1] < 1e-6))
    (torch.Size([1000]), True, True)
"""

from __future__ import annotations

from typing import Any

import torch

from echo_vlsm.sdm.unet import SDMUNet

NUM_TRAIN_TIMESTEPS = 1000
SCHEDULE = "squaredcos_cap_v2"
PARAMETERIZATIONS = ("eps", "v")


def training_alphas_cumprod() -> torch.Tensor:
    """The cumulative alphas of the cosine schedule, as the samplers' scheduler holds them."""
    from diffusers import DDPMScheduler

    # Any: to a type checker diffusers' top-level names are its torch-less placeholder classes
    sched: Any = DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=SCHEDULE,
                               prediction_type="epsilon")
    return sched.alphas_cumprod.clone().float()


def _check_parameterization(parameterization: str) -> None:
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization {parameterization!r}: expected 'eps' or 'v'")


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
    """MSE between the network's output at ``x_t`` and its target.

    Args:
        net: the UNet, called as ``net(x_t, t, seg, view_phase)``.
        x0, seg, t, noise: clean images in [-1, 1] (B, 1, S, S), one-hot maps, timesteps (B,)
            and the noise added.
        alphas_cumprod: the schedule (``training_alphas_cumprod()``).
        parameterization: the target, the noise (``eps``) or ``v``.
        min_snr_gamma: optional Min-SNR-gamma weighting (Hang et al. 2023).

    Returns:
        The mean loss over the batch (a scalar tensor).
    """
    a = alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = net(xt, t, seg, view_phase).float()
    _check_parameterization(parameterization)
    target = noise if parameterization == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
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

    alphas_cumprod: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, net: SDMUNet, parameterization: str = "v"):
        super().__init__()
        _check_parameterization(parameterization)
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
