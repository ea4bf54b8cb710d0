"""CLIPSeg: equality with transformers' forward when frozen, gradients that really reach the
encoders when trained (the study's defect), the paper architecture's size, pretrained loading.
The contract shared with CRIS is tested in test_models_contract.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_inputs import model_inputs as _inputs

from echo_vlsm.models import build_model, encoder_gradient_check
from echo_vlsm.models.weights import WeightsNotFoundError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("clipseg", size="tiny")


def test_frozen_equals_transformers_forward(tiny):
    frozen = build_model("clipseg", size="tiny", encoders="frozen")
    frozen.load_state_dict(tiny.state_dict())
    frozen.eval()
    for side in (96, 128):  # 128: position embeddings interpolated (config says 96)
        pixels, ids, mask = _inputs(frozen, 3, side=side, seed=side)
        with torch.no_grad():
            ours = frozen(pixels, ids, mask)
            ref = frozen.net(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        # transformers returns (B, H/2, W/2) for patch 8 (2 transposed convs of stride 2);
        # ours upsamples to the input resolution
        ref = F.interpolate(ref[:, None], size=(side, side), mode="bilinear", align_corners=False)
        assert ours.shape == (3, 1, side, side)
        assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)
        assert ours.std() > 0


def test_trained_encoders_get_gradients(tiny):
    tiny.train()
    tiny.zero_grad()
    pixels, ids, mask = _inputs(tiny, 2)
    tiny(pixels, ids, mask).square().mean().backward()
    clip = tiny.net.clip
    for name, module in [("vision", clip.vision_model), ("text", clip.text_model)]:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads, f"no gradient reached the {name} encoder"
        assert sum(float(g.abs().sum()) for g in grads) > 0
    patch = clip.vision_model.embeddings.patch_embedding.weight.grad
    token = clip.text_model.embeddings.token_embedding.weight.grad
    assert patch.abs().sum() > 0 and token.abs().sum() > 0
    assert tiny.net.decoder.film_mul.weight.grad.abs().sum() > 0
    # transformers' own forward lets no gradient reach the encoders (the study's defect)
    tiny.zero_grad()
    tiny.net(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits.mean().backward()
    assert all(p.grad is None for p in clip.parameters())


def test_paper_parameter_count():
    with torch.device("meta"):
        model = build_model("clipseg", size="paper")
    assert sum(p.numel() for p in model.parameters()) == 150_747_746
    cfg = model.net.config
    assert cfg.vision_config.patch_size == 16 and cfg.reduce_dim == 64
    assert tuple(cfg.extract_layers) == (3, 6, 9) and cfg.use_complex_transposed_convolution
    assert model.spec.image_size == 352


def test_pretrained_from_local_directory(tiny, tmp_path):
    tiny.net.save_pretrained(tmp_path / "clipseg")
    loaded = build_model("clipseg", size="tiny", pretrained=tmp_path / "clipseg",
                         encoders="frozen")
    ours, theirs = loaded.state_dict(), tiny.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not any(p.requires_grad for p in loaded.net.clip.parameters())


def test_missing_weights_point_to_docs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="docs/weights.md"):
        build_model("clipseg", "tiny", pretrained=tmp_path / "nowhere")
    with pytest.raises(WeightsNotFoundError, match="docs/weights.md"):
        build_model("clipseg", "tiny", pretrained="echo-vlsm-test/no-such-model")


def test_pretrained_of_another_size_is_refused(tiny, tmp_path):
    from transformers import CLIPSegForImageSegmentation

    from echo_vlsm.models.clipseg import clipseg_config

    config = clipseg_config("tiny")
    config.reduce_dim = 16
    CLIPSegForImageSegmentation(config).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="reduce_dim 16"):
        build_model("clipseg", "tiny", pretrained=tmp_path / "other")


def _fake_project(tmp_path, monkeypatch):
    """A project root (pyproject.toml named echo-vlsm) and cwd in its notebooks/ folder."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "echo-vlsm"\n')
    monkeypatch.chdir(root / "notebooks")
    monkeypatch.delenv("ECHO_VLSM_CLIPSEG_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_relative_paths_from_the_project_root(tiny, tmp_path, monkeypatch):
    """docs/weights.md: relative paths are taken from the project root, not the cwd, and a
    local-looking value ("weights/...") is never sent to the hub."""
    root = _fake_project(tmp_path, monkeypatch)
    tiny.net.save_pretrained(root / "weights" / "clipseg-tiny")
    expected = tiny.net.decoder.film_mul.weight
    for value in ("weights/clipseg-tiny", "./weights/clipseg-tiny"):
        loaded = build_model("clipseg", "tiny", pretrained=value)  # cwd is notebooks/
        assert torch.equal(loaded.net.decoder.film_mul.weight, expected)
    monkeypatch.setenv("ECHO_VLSM_CLIPSEG_WEIGHTS", "weights/clipseg-tiny")
    loaded = build_model("clipseg", "tiny", pretrained=True)
    assert torch.equal(loaded.net.decoder.film_mul.weight, expected)
    # a missing local folder: the resolved path and the docs, not a hub connection error
    monkeypatch.setenv("ECHO_VLSM_CLIPSEG_WEIGHTS", "weights/clipseg-rd64-refined")
    for value in (True, "weights/clipseg-rd64-refined"):
        with pytest.raises(WeightsNotFoundError, match="docs/weights.md") as err:
            build_model("clipseg", "tiny", pretrained=value)
        message = str(err.value)
        assert str(root / "weights" / "clipseg-rd64-refined") in message
        assert "does not exist" in message and "huggingface" not in message.lower()
    assert "ECHO_VLSM_CLIPSEG_WEIGHTS" in str(
        pytest.raises(WeightsNotFoundError, build_model, "clipseg", "tiny", True).value)


def test_local_path_or_hub_id(tmp_path, monkeypatch):
    from echo_vlsm.models.weights import local_path

    root = _fake_project(tmp_path, monkeypatch)
    assert local_path("CIDAS/clipseg-rd64-refined") is None
    assert local_path("weights/x") == root / "weights" / "x"
    assert local_path("../weights/x") == root / ".." / "weights" / "x"
    assert local_path("a/b/c") == root / "a" / "b" / "c"
    assert local_path(tmp_path / "abs") == tmp_path / "abs"
    (root / "org" / "name").mkdir(parents=True)  # an existing folder wins over a hub id
    assert local_path("org/name") == root / "org" / "name"


def test_encoder_gradient_check_shows_the_study_defect():
    g = encoder_gradient_check("tiny").set_index(["forward", "part"])["with_gradient"]
    for part in ("vision encoder", "text encoder"):
        assert g[("transformers forward (the study)", part)] == 0
        assert g[("echo_vlsm, encoders frozen", part)] == 0
        assert g[("echo_vlsm, encoders trained", part)] > 0
    assert g[("transformers forward (the study)", "decoder")] > 0
