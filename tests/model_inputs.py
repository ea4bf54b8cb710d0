"""Inputs for the model tests: a random batch at a model's input size with CLIP-tokenized
prompts (one empty, one longer than most)."""

from __future__ import annotations

import torch

PROMPTS = ["Left ventricular cavity of the heart.", "Myocardium in two-chamber view.",
           "Left atrium cavity of a seventy-three-year-old male with good image quality.", ""]


def model_inputs(model, batch: int, side: int | None = None, seed: int = 0):
    """``(pixel_values, input_ids, attention_mask)``: ``batch`` random square images of
    ``side`` pixels (default: the model's input size) and the prompts in turn."""
    side = side or model.spec.image_size
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, side, side, generator=g)
    ids, mask = model.tokenize([PROMPTS[i % len(PROMPTS)] for i in range(batch)])
    return pixels, ids, mask
