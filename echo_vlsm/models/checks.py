"""Checks of the models themselves, run by the notebooks: which parts learn.

transformers runs CLIPSeg's CLIP encoders under ``torch.no_grad()``, so the study's
"unfrozen" CLIPSeg never trained them (docs/known-defects.md). :func:`encoder_gradient_check` shows
it in one backward pass, next to this project's forward, which lets gradients reach them.
"""

from __future__ import annotations

import pandas as pd
import torch

from echo_vlsm.models.clipseg import build_clipseg

#: The three forwards compared, as named in the result's ``forward`` column.
FORWARDS = ("transformers forward (the study)", "echo_vlsm, encoders trained",
            "echo_vlsm, encoders frozen")
_PROMPTS = ["Left ventricular cavity of the heart.", "Myocardium in the cardiac ultrasound."]


def encoder_gradient_check(size: str = "tiny", seed: int = 0) -> pd.DataFrame:
    """Which CLIPSeg parameters receive a gradient after one backward pass: transformers'
    own forward (the study's code) with every ``requires_grad`` on, and this project's
    forward with trained and with frozen encoders.

    Args:
        size: the CLIPSeg size, ``"tiny"`` (seconds on a CPU) or ``"paper"``.
        seed: seeds torch once, before the three random models are built.

    Returns:
        One row per forward and part (``"vision encoder"``, ``"text encoder"``,
        ``"decoder"``): ``forward``, ``part``, ``tensors`` (parameter tensors of the part)
        and ``with_gradient`` (how many got a non-zero gradient).
    """
    torch.manual_seed(seed)
    rows = []
    for variant in FORWARDS:
        model = build_clipseg(size, encoders="frozen" if variant.endswith("frozen") else "trained")
        _backward_once(model, study=variant.startswith("transformers"))
        net = model.net
        for part, module in (("vision encoder", net.clip.vision_model),
                             ("text encoder", net.clip.text_model), ("decoder", net.decoder)):
            params = list(module.parameters())
            with_grad = sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
            rows.append({"forward": variant, "part": part, "tensors": len(params),
                         "with_gradient": int(with_grad)})
    return pd.DataFrame(rows)


def _backward_once(model, study: bool) -> None:
    """One backward pass of ``mean(logits**2)`` on a random batch of two: through
    transformers' forward with every parameter trainable (``study``), or through ours."""
    net = model.net
    side = model.spec.image_size
    ids, mask = model.tokenize(_PROMPTS)
    x = torch.randn(2, 3, side, side)
    if study:
        for p in net.parameters():
            p.requires_grad_(True)
        logits = net(input_ids=ids, pixel_values=x, attention_mask=mask).logits
    else:
        logits = model(x, ids, mask)
    logits.float().pow(2).mean().backward()
