"""The contract both vision-language models keep (``echo_vlsm.models.base.SegmentationModel``):
spec and build errors, logits at the input resolution, tokenize, frozen encoders (no gradient,
eval mode under ``model.train()``), and input errors that say what would be accepted."""

from __future__ import annotations

import pytest
import torch
from model_inputs import model_inputs
from torch import nn

from echo_vlsm.grid import VLSM_MODELS
from echo_vlsm.models import ModelSpec, SegmentationModel, build_model, model_spec
from echo_vlsm.models.tokenizer import ClipTokenizer

SPECS = {
    "clipseg": ModelSpec("clipseg", "paper", 352, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                         0.5, 77),
    "cris": ModelSpec("cris", "paper", 416, (0.48145466, 0.4578275, 0.40821073),
                      (0.26862954, 0.26130258, 0.27577711), 0.35, 77, "bicubic-corners"),
}
_TINY: dict[str, SegmentationModel] = {}


@pytest.fixture(params=VLSM_MODELS)  # the U-Net baseline: tests/test_beyond_train.py
def name(request) -> str:
    return request.param


@pytest.fixture
def tiny(name) -> SegmentationModel:
    """The tiny model of ``name`` with random weights, built once per session."""
    if name not in _TINY:
        torch.manual_seed(0)
        _TINY[name] = build_model(name, size="tiny")
    return _TINY[name]


def _frozen_copy(tiny, name):
    model = build_model(name, size="tiny", encoders="frozen")
    model.load_state_dict(tiny.state_dict())
    return model


def _split_encoder_parameters(model):
    """(frozen, always trained) parameters of the encoders."""
    always = {id(p) for m in model.always_trained_modules() for p in m.parameters()}
    params = [p for m in model.encoder_modules() for p in m.parameters()]
    return ([p for p in params if id(p) not in always],
            [p for p in params if id(p) in always])


def test_spec(name):
    assert model_spec(name, "paper") == SPECS[name]
    assert model_spec(name, "tiny").image_size == 96
    assert build_model(name, "tiny", encoders="frozen").spec == model_spec(name, "tiny")


def test_build_errors(name):
    with pytest.raises(ValueError, match="unknown model 'sam'"):
        build_model("sam")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        model_spec(name, "huge")
    with pytest.raises(ValueError, match="encoders must be one of"):
        build_model(name, "tiny", encoders="half")


@pytest.mark.parametrize("batch", [1, 4])
def test_logits_at_input_resolution(tiny, batch):
    tiny.eval()
    for side in (96, 128):
        pixels, ids, mask = model_inputs(tiny, batch, side=side)
        with torch.no_grad():
            out = tiny(pixels, ids, mask)
            alone = tiny(pixels[-1:], ids[-1:], mask[-1:])
        assert out.shape == (batch, 1, side, side) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.std() > 0
        assert torch.allclose(out[-1:], alone, atol=1e-5)  # each sample depends on itself only


def test_tokenize(tiny):
    ids, mask = tiny.tokenize(["Left ventricular cavity of the heart.", ""])
    ref_ids, ref_mask = ClipTokenizer(tiny.spec.context_length)(
        ["Left ventricular cavity of the heart.", ""])
    assert ids.shape == mask.shape == (2, tiny.spec.context_length) and ids.dtype == torch.long
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    assert tiny.tokenizer is tiny.tokenizer  # built once


def test_frozen_encoders_get_no_gradient_and_stay_in_eval_mode(tiny, name):
    model = _frozen_copy(tiny, name).eval().train()
    frozen, always = _split_encoder_parameters(model)
    encoder_ids = {id(p) for m in model.encoder_modules() for p in m.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in always + rest)
    always_modules = {id(m) for a in model.always_trained_modules() for m in a.modules()}
    for encoder in model.encoder_modules():
        assert all(not m.training for m in encoder.modules() if id(m) not in always_modules)
    assert all(m.training for a in model.always_trained_modules() for m in a.modules())
    norms = [m for e in model.encoder_modules() for m in e.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in always_modules]
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]

    pixels, ids, mask = model_inputs(model, 2)
    model(pixels, ids, mask).square().mean().backward()
    assert all(p.grad is None for p in frozen)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in always)
    assert sum(float(p.grad.abs().sum()) for p in rest if p.grad is not None) > 0
    for m, (mean, var) in zip(norms, stats):  # frozen BatchNorm statistics stay fixed
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)

    model.set_encoders("trained")
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_trained_encoders_get_gradients(tiny):
    tiny.train()
    tiny.zero_grad()
    pixels, ids, mask = model_inputs(tiny, 1)  # a batch of one works in training mode too
    out = tiny(pixels, ids, mask)
    assert out.shape == (1, 1, 96, 96) and torch.isfinite(out).all()
    out.square().mean().backward()
    for encoder in tiny.encoder_modules():
        assert sum(float(p.grad.abs().sum()) for p in encoder.parameters()
                   if p.grad is not None) > 0


def test_bad_inputs_say_what_is_accepted(tiny, name):
    pixels, ids, mask = model_inputs(tiny, 2)
    label = type(tiny).__name__
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, 3, H, W\)"):
        tiny(pixels[:, :1], ids, mask)
    with pytest.raises(ValueError, match=rf"{label} needs .* got 96x88; resize to 96x96"):
        tiny(pixels[..., :88], ids, mask)
    with pytest.raises(ValueError, match="B = 2"):
        tiny(pixels, ids[:1], mask[:1])
    long_ids = torch.cat([ids, ids[:, :1]], dim=1)
    with pytest.raises(ValueError, match=r"longer than the text context \(77\)"):
        tiny(pixels, long_ids, None)
    with pytest.raises(ValueError, match="attention_mask .* must match"):
        tiny(pixels, ids, mask[:, :10])
