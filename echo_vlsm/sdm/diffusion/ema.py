"""The exponential moving average (EMA) of the SDM's weights, which sampling uses.

Not ``diffusers.training_utils.EMAModel``: that one averages the parameters only, as a list
(its ``state_dict`` has no names), and its warm-up starts one update later (decay 0 at the
first update, ours 0.1), so runs and ``state.pt`` files written so far, whose EMA is a named
state dict (``ema.<name>`` in ``model.safetensors``), would neither resume nor reproduce.

Examples::

    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(0.0)
    >>> ema = EMA(net, decay=0.999)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(1.0)
    >>> ema.update(net, step=0)                  # warm-up: decay min(0.999, 1 / 10)
    >>> round(ema.shadow["weight"].item(), 6)
    0.9
"""

from __future__ import annotations

import torch


class EMA:
    """Exponential moving average of a model's weights (its whole state dict) with warm-up:
    decay ``min(decay, (1 + n) / (10 + n))`` at update ``n``; integer buffers are copied."""

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
