"""CRIS: encoder gradients, checkpoint loading (CRIS DataParallel checkpoints, OpenAI's
TorchScript RN50 format), padding mask, BatchNorm of a batch of one, paper size. The contract
shared with CLIPSeg is tested in test_models_contract.py."""

from __future__ import annotations

import argparse
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from model_inputs import model_inputs as _inputs
from torch import nn

from echo_vlsm.models import build_model
from echo_vlsm.models.cris import CONFIGS, CRIS, SpatialAttentionPool, build_clip, sine_positions_2d
from echo_vlsm.models.weights import (
    StateDictMismatchError,
    UntrustedCheckpointError,
    WeightsNotFoundError,
    read_state_dict,
)
from echo_vlsm.rehearsal import save_openai_torchscript


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("cris", size="tiny")


def test_trained_encoders_get_gradients(tiny):
    tiny.train()
    tiny.zero_grad()
    pixels, ids, mask = _inputs(tiny, 2)
    tiny(pixels, ids, mask).square().mean().backward()
    clip = tiny.backbone
    assert clip.visual.conv1.weight.grad.abs().sum() > 0
    assert clip.visual.attnpool.q_proj.weight.grad.abs().sum() > 0
    assert clip.token_embedding.weight.grad.abs().sum() > 0
    assert clip.transformer.resblocks[0].attn.in_proj_weight.grad.abs().sum() > 0
    assert tiny.proj.txt.weight.grad.abs().sum() > 0


def test_padding_mask_follows_attention_mask(tiny):
    tiny.eval()
    pixels, ids, mask = _inputs(tiny, 3)
    hf_style = ids.masked_fill(mask == 0, 49407)  # Hugging Face pads with end-of-text
    with torch.no_grad():
        ref = tiny(pixels, ids, mask)
        same = tiny(pixels, hf_style, mask)
        unmasked = tiny(pixels, hf_style, torch.ones_like(mask))
        derived = tiny(pixels, ids, None)  # mask derived from the end-of-text position
    assert torch.allclose(ref, same, atol=1e-5)
    assert torch.allclose(ref, derived, atol=1e-5)
    assert not torch.allclose(ref, unmasked, atol=1e-3)  # the mask matters


def test_spatial_pool_equals_multi_head_attention_forward():
    torch.manual_seed(1)
    pool = SpatialAttentionPool(spacial_dim=3, embed_dim=32, num_heads=4, output_dim=16).eval()
    x = torch.randn(2, 32, 5, 4)
    b, c, h, w = x.shape
    # positional embedding resized bicubically from 3x3 to the 5x4 grid, class token dropped
    grid = pool.positional_embedding[1:].reshape(1, 3, 3, c).permute(0, 3, 1, 2)
    pos = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    tokens = (x.reshape(b, c, -1) + pos.reshape(1, c, -1)).permute(2, 0, 1)  # (HW, B, C)
    attn, _ = F.multi_head_attention_forward(
        tokens, tokens, tokens, c, 4, None,
        torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False,
        0.0, pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=False,
        use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight)
    expected = F.relu(attn.permute(1, 2, 0).reshape(b, -1, h, w) + pool.connect(x))
    with torch.no_grad():
        assert torch.allclose(pool(x), expected, atol=1e-5)


def test_sine_positions_2d_definition():
    d, h, w = 8, 3, 5
    pe = sine_positions_2d(d, h, w).reshape(h, w, d)
    half = d // 2
    for y in range(h):
        for x in range(w):
            for i in range(0, half, 2):
                freq = math.exp(-i * math.log(10000.0) / half)
                assert pe[y, x, i] == pytest.approx(math.sin(x * freq), abs=1e-6)
                assert pe[y, x, i + 1] == pytest.approx(math.cos(x * freq), abs=1e-6)
                assert pe[y, x, half + i] == pytest.approx(math.sin(y * freq), abs=1e-6)
                assert pe[y, x, half + i + 1] == pytest.approx(math.cos(y * freq), abs=1e-6)


def test_strict_load_of_dataparallel_checkpoint(tiny, tmp_path):
    tiny.eval()
    state = {f"module.{k}": v for k, v in tiny.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "cris_best.pth")
    torch.save(tiny.state_dict(), tmp_path / "bare.pth")
    pixels, ids, mask = _inputs(tiny, 2)
    with torch.no_grad():
        ref = tiny(pixels, ids, mask)
    for name in ("cris_best.pth", "bare.pth"):
        torch.manual_seed(123)
        loaded = build_model("cris", "tiny", pretrained=tmp_path / name).eval()
        with torch.no_grad():
            assert torch.equal(loaded(pixels, ids, mask), ref)
    # a wrong key: named as missing and unexpected
    bad = dict(state)
    bad["module.neck.aggr.0.weightt"] = bad.pop("module.neck.aggr.0.weight")
    torch.save({"state_dict": bad}, tmp_path / "bad.pth")
    with pytest.raises(StateDictMismatchError) as err:
        build_model("cris", "tiny", pretrained=tmp_path / "bad.pth")
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "bad.pth"))  # printed as is, no quotes
    assert "Missing keys (1): neck.aggr.0.weight." in message
    assert "Unexpected keys (1): neck.aggr.0.weightt." in message
    # the paper-size checkpoint into the tiny model: shapes named
    shapes = dict(tiny.state_dict())
    shapes["neck.aggr.0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(shapes, tmp_path / "shapes.pth")
    with pytest.raises(StateDictMismatchError, match=r"neck.aggr.0.weight: file \(1, 1, 1, 1\)"):
        build_model("cris", "tiny", pretrained=tmp_path / "shapes.pth")


def test_missing_checkpoint_points_to_docs(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match="docs/weights.md"):
        build_model("cris", "tiny", pretrained=tmp_path / "missing.pth")
    monkeypatch.setenv("ECHO_VLSM_CRIS_WEIGHTS", str(tmp_path / "also-missing.pth"))
    with pytest.raises(WeightsNotFoundError, match="ECHO_VLSM_CRIS_WEIGHTS"):
        build_model("cris", "tiny", pretrained=True)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_openai_rn50_torchscript_format(tmp_path):
    torch.manual_seed(5)
    clip = build_clip(CONFIGS["tiny"])  # a tiny CLIP with OpenAI's key layout
    state = {k: v for k, v in clip.state_dict().items() if ".connect." not in k}
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    path = tmp_path / "RN50.pt"
    save_openai_torchscript(state, path)  # the rehearsal's stand-in writer

    with pytest.raises(UntrustedCheckpointError, match="trust=True"):
        build_model("cris", "tiny", pretrained=path)
    model = build_model("cris", "tiny", pretrained=path, trust=True)
    own = model.backbone.state_dict()
    for key, value in state.items():
        if key in ("input_resolution", "context_length", "vocab_size"):
            continue
        expected = value.half().float() if value.is_floating_point() and value.ndim else value
        assert torch.equal(own[key], expected.to(own[key].dtype)), key
    assert read_state_dict(path, trust=True)["visual.conv1.weight"].dtype == torch.float16

    # the same weights as a plain state dict load without trust (weights_only=True)
    torch.save(state, tmp_path / "rn50_plain.pt")
    plain = build_model("cris", "tiny", pretrained=tmp_path / "rn50_plain.pt")
    assert torch.equal(plain.backbone.visual.attnpool.q_proj.weight,
                       state["visual.attnpool.q_proj.weight"])


def test_full_unpickling_needs_trust(tiny, tmp_path):
    """A checkpoint holding an argparse.Namespace next to the weights (as training scripts
    save them): refused with a clear error, loaded with trust=True."""
    path = tmp_path / "cris_args.pth"
    state = {f"module.{k}": v for k, v in tiny.state_dict().items()}
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=2e-5)}, path)
    with pytest.raises(UntrustedCheckpointError) as err:
        build_model("cris", "tiny", pretrained=path)
    message = str(err.value)
    assert str(path) in message and "trust=True" in message and "arbitrary code" in message
    assert "argparse.Namespace" in message and "docs/weights.md" in message
    assert "\x1b" not in message  # torch's terminal colour codes stripped
    loaded = build_model("cris", "tiny", pretrained=path, trust=True)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_unreadable_files_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    for trust in (False, True):
        with pytest.raises(ValueError, match="not a readable checkpoint") as err:
            read_state_dict(garbage, trust=trust)
        assert str(garbage) in str(err.value) and "\x1b" not in str(err.value)
        assert not isinstance(err.value, UntrustedCheckpointError)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    with pytest.raises(ValueError, match="not a readable safetensors file") as err:
        read_state_dict(broken)
    assert str(broken) in str(err.value)


def _fake_project(tmp_path, monkeypatch):
    """A project root (pyproject.toml named echo-vlsm) and cwd in its notebooks/ folder."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "echo-vlsm"\n')
    monkeypatch.chdir(root / "notebooks")
    for name in ("ECHO_VLSM_CRIS_WEIGHTS", "ECHO_VLSM_CLIP_RN50"):
        monkeypatch.delenv(name, raising=False)
    return root


def test_relative_paths_from_the_project_root(tiny, tmp_path, monkeypatch):
    root = _fake_project(tmp_path, monkeypatch)
    (root / "weights" / "cris").mkdir(parents=True)
    torch.save(tiny.state_dict(), root / "weights" / "cris" / "mine.pth")
    for value in ("weights/cris/mine.pth", "./weights/cris/mine.pth"):
        loaded = build_model("cris", "tiny", pretrained=value)  # cwd is notebooks/
        assert torch.equal(loaded.neck.aggr[0].weight, tiny.neck.aggr[0].weight)
    monkeypatch.setenv("ECHO_VLSM_CRIS_WEIGHTS", "weights/cris/mine.pth")
    loaded = build_model("cris", "tiny", pretrained=True)
    assert torch.equal(loaded.proj.txt.weight, tiny.proj.txt.weight)
    with pytest.raises(WeightsNotFoundError, match="project root") as err:
        build_model("cris", "tiny", pretrained="weights/cris/other.pth")
    assert str(root / "weights" / "cris" / "other.pth") in str(err.value)


def test_pretrained_true_falls_back_to_clip_rn50(tmp_path, monkeypatch):
    root = _fake_project(tmp_path, monkeypatch)
    with pytest.raises(WeightsNotFoundError) as err:
        build_model("cris", "tiny", pretrained=True)
    assert "cris_best.pth" in str(err.value) and "RN50.pt" in str(err.value)
    torch.manual_seed(7)
    clip = build_clip(CONFIGS["tiny"])
    state = {k: v for k, v in clip.state_dict().items() if ".connect." not in k}
    (root / "weights" / "clip").mkdir(parents=True)
    torch.save(state, root / "weights" / "clip" / "RN50.pt")  # a plain state dict: no trust
    with pytest.warns(UserWarning, match="CLIP RN50 .* encoders only"):
        model = build_model("cris", "tiny", pretrained=True)
    assert torch.equal(model.backbone.visual.conv1.weight, state["visual.conv1.weight"])
    # $ECHO_VLSM_CLIP_RN50 chooses another file; a missing one is an error naming it
    monkeypatch.setenv("ECHO_VLSM_CLIP_RN50", "elsewhere/RN50.pt")
    with pytest.raises(WeightsNotFoundError, match="ECHO_VLSM_CLIP_RN50"):
        build_model("cris", "tiny", pretrained=True)
    # a CRIS checkpoint at the default place wins, without a warning
    monkeypatch.delenv("ECHO_VLSM_CLIP_RN50")
    torch.manual_seed(8)
    cris = build_model("cris", "tiny")
    (root / "weights" / "cris").mkdir(parents=True)
    torch.save({"state_dict": cris.state_dict()}, root / "weights" / "cris" / "cris_best.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model("cris", "tiny", pretrained=True)
    assert torch.equal(model.neck.aggr[0].weight, cris.neck.aggr[0].weight)


def test_train_mode_batch_of_one(tiny):
    """B = 1 in training mode: the text projection's BatchNorm1d uses its running statistics
    for that call (a batch of one has no variance) and leaves them unchanged."""
    model = build_model("cris", "tiny")
    model.load_state_dict(tiny.state_dict())
    model.train()
    bn = model.neck.txt_proj[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    stats = bn.running_mean.clone(), bn.running_var.clone()
    pixels, ids, mask = _inputs(model, 1)
    out = model(pixels, ids, mask)
    assert out.shape == (1, 1, 96, 96) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert bn.weight.grad.abs().sum() > 0 and model.backbone.visual.conv1.weight.grad is not None
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    x = torch.randn(1, bn.num_features)
    expected = (x - stats[0]) / torch.sqrt(stats[1] + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(bn(x), expected, atol=1e-5)
    # B >= 2: exactly torch's BatchNorm1d (batch statistics, running statistics updated)
    ref = nn.BatchNorm1d(bn.num_features).train()
    ref.load_state_dict(bn.state_dict())
    x = torch.randn(3, bn.num_features)
    assert torch.allclose(bn(x), ref(x), atol=1e-6)
    assert torch.allclose(bn.running_mean, ref.running_mean)


def test_paper_parameter_count():
    with torch.device("meta"):
        model = CRIS("paper")
    assert sum(p.numel() for p in model.parameters()) == 146_849_122
    connect = sum(p.numel() for p in model.backbone.visual.attnpool.connect.parameters())
    assert connect == 2048 * 1024 + 2 * 1024
    assert model.spec.image_size == 416


# -- the study's upsampling ------------------------------------------------------------------
def _reference_forward(model, pixels, ids, mask):
    """The study's CRIS forward from its description: the 1/4-resolution logits from the
    model's parts (image and text encoders, FPN neck, decoder, projector), then
    ``F.interpolate(pred, side, mode="bicubic", align_corners=True)`` to the input side."""
    features = model.encode_image(pixels)
    words, state = model.encode_text(ids)
    fq = model.decoder(model.neck(features, state), words, mask == 0)
    quarter = model.proj(fq, state)
    assert quarter.shape[-1] * 4 == pixels.shape[-1]
    return F.interpolate(quarter, pixels.shape[-1], mode="bicubic", align_corners=True), quarter


def _check_study_upsampling(size, tmp_path, batch):
    torch.manual_seed(11)
    source = build_model("cris", size).eval()
    path = tmp_path / f"cris_{size}.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = build_model("cris", size, pretrained=path).eval()
    assert model.spec.upsample == "bicubic-corners"
    bilinear = build_model("cris", size, pretrained=path, upsample="bilinear").eval()
    assert bilinear.spec.upsample == "bilinear"
    pixels, ids, mask = _inputs(model, batch)
    with torch.no_grad():
        out = model(pixels, ids, mask)
        ref, quarter = _reference_forward(model, pixels, ids, mask)
        other = bilinear(pixels, ids, mask)
    side = model.spec.image_size
    assert out.shape == (batch, 1, side, side)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # the corners of align_corners=True are the 1/4-resolution corners
    torch.testing.assert_close(out[..., ::side - 1, ::side - 1], quarter[..., ::side // 4 - 1,
                                                                         ::side // 4 - 1])
    # bilinear (align_corners=False) is a different output from the same weights
    assert float((other - out).abs().max()) > 1e-3 * float(out.abs().max())
    torch.testing.assert_close(F.avg_pool2d(other, 4), F.avg_pool2d(out, 4),
                               rtol=0.0, atol=float(out.abs().max()))  # same scale


def test_cris_upsamples_as_the_study_tiny(tmp_path):
    _check_study_upsampling("tiny", tmp_path, batch=2)


@pytest.mark.slow
def test_cris_upsamples_as_the_study_paper(tmp_path):
    _check_study_upsampling("paper", tmp_path, batch=1)


def test_cris_upsample_and_dropout_are_checked():
    with pytest.raises(ValueError, match=r"upsample must be one of \('bilinear', "
                                         r"'bicubic-corners'\), got 'nearest'"):
        build_model("cris", "tiny", upsample="nearest")
    with pytest.raises(ValueError, match="CRIS dropout must be in"):
        build_model("cris", "tiny", dropout=1.5)
    model = build_model("cris", "tiny", dropout=0.2)
    drops = [m.p for m in model.decoder.modules() if isinstance(m, nn.Dropout)]
    attn = [m.dropout for m in model.decoder.modules() if isinstance(m, nn.MultiheadAttention)]
    assert drops and set(drops) == {0.2} and set(attn) == {0.2}
    default = build_model("cris", "tiny")
    assert {m.p for m in default.decoder.modules() if isinstance(m, nn.Dropout)} == {0.1}
    assert build_model("clipseg", "tiny").spec.upsample == "bilinear"  # CLIPSeg unchanged
