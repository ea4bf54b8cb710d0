"""SDM diffusion: schedule, loss, guidance, samplers, training with checkpoints and resume."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from sdm_data import write_echo_dataset

from echo_vlsm.sdm.diffusion import (
    EMA,
    EpsilonModel,
    SDMConfig,
    diffusion_loss,
    guided_eps,
    load_sdm,
    load_training_data,
    make_scheduler,
    sample,
    train_sdm,
    training_alphas_cumprod,
)
from echo_vlsm.sdm.unet import build_unet, one_hot


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_echo_dataset(tmp_path_factory.mktemp("sdm_ds"), n_patients=3, size=64)


@pytest.fixture(scope="module")
def data(dataset):
    return load_training_data(dataset, 64, ("train",), progress=False)


def _randomize(net):
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.05)
    return net


def test_samplers_share_the_training_schedule():
    alphas = training_alphas_cumprod()
    assert alphas.shape == (1000,)
    assert alphas[0] > 0.999 and alphas[-1] < 1e-6  # cosine: ~1 at t=0, ~0 at T
    f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    assert alphas[500].item() == pytest.approx(f(501) / f(0), rel=2e-2)
    for name, steps in (("ddpm", None), ("ddim", 50), ("dpm++", 20)):
        sched = make_scheduler(name, steps)
        assert torch.allclose(sched.alphas_cumprod.float(), alphas)
        assert sched.config.prediction_type == "epsilon"
        assert sched.config.beta_schedule == "squaredcos_cap_v2"
        assert len(sched.timesteps) == {"ddpm": 1000, "ddim": 50, "dpm++": 20}[name]
    with pytest.raises(ValueError, match="unknown sampler"):
        make_scheduler("euler")


def test_v_parameterisation_returns_epsilon():
    """With the net predicting v exactly, the wrapper's output is the true noise."""
    alphas = training_alphas_cumprod()
    x0, noise = torch.rand(2, 1, 8, 8) * 2 - 1, torch.randn(2, 1, 8, 8)
    t = torch.tensor([5, 990])
    a = alphas[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0

    class Oracle(torch.nn.Module):
        spec = build_unet("tiny").spec

        def forward(self, x, t, seg, vp=None, cache=None):
            return v

    eps = EpsilonModel(Oracle(), "v")(xt, t, None)
    assert torch.allclose(eps, noise, atol=1e-4)


@pytest.mark.parametrize("parameterization", ["v", "eps"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(data, parameterization):
    torch.manual_seed(0)
    net = build_unet("tiny")
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    alphas = training_alphas_cumprod()
    g = torch.Generator().manual_seed(0)
    x0 = data.images[:4].float().div(127.5).sub(1).unsqueeze(1)
    seg = one_hot(data.maps[:4])
    t = torch.randint(0, 1000, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    losses = []
    for _ in range(12):
        loss = diffusion_loss(net, x0, seg, t, noise, alphas, parameterization=parameterization)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    assert losses[-1] < losses[0]


def test_guidance_paths():
    torch.manual_seed(0)
    model = EpsilonModel(_randomize(build_unet("tiny")), "v").eval()
    calls = []
    model.net.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    x, t = torch.randn(2, 1, 64, 64), torch.tensor([400, 400])
    seg = one_hot(torch.randint(0, 5, (2, 64, 64)))
    with torch.no_grad():
        cond = model(x, t, seg)
        uncond = model(x, t, torch.zeros_like(seg))
        calls.clear()
        assert torch.allclose(guided_eps(model, x, t, seg, None, 1.0), cond)
        assert calls == [2]  # s = 1: one pass, batch unchanged
        calls.clear()
        assert torch.allclose(guided_eps(model, x, t, seg, None, 0.0), uncond, atol=1e-5)
        assert calls == [4]  # guided: conditional and unconditional in one batch
        s3 = guided_eps(model, x, t, seg, None, 3.0)
        assert torch.allclose(s3, uncond + 3 * (cond - uncond), atol=1e-4)
        assert not torch.allclose(s3, cond)
        # the SPADE cache of a sampling run (map-only scale/shift) changes nothing
        cache = {}
        for tt in (t, torch.tensor([50, 50])):
            assert torch.allclose(model(x, tt, seg, None, cache), model(x, tt, seg), atol=1e-5)
        assert len(cache) > 0


def test_sampling_is_seeded_per_image_and_samplers_run():
    torch.manual_seed(0)
    model = EpsilonModel(_randomize(build_unet("tiny")), "v").eval()
    maps = torch.randint(0, 5, (2, 64, 64))
    both = sample(model, maps, sampler="dpm++", steps=3, seeds=[11, 12])
    second = sample(model, maps[1:], sampler="dpm++", steps=3, seeds=[12])
    assert both.shape == (2, 1, 64, 64) and both.abs().max() <= 1
    assert torch.allclose(both[1], second[0], atol=2e-3)  # batch size changes float sums only
    assert not torch.allclose(both[0], both[1])
    for name in ("ddpm", "ddim"):
        out = sample(model, maps[:1], sampler=name, steps=3, seeds=[1], guidance_scale=2.0)
        assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="seeds"):
        sample(model, maps, steps=2, seeds=[1])


def test_ema_warms_up_and_tracks():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.999)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, step=0)  # warm-up: decay min(0.999, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], 0.1 * w0 + 0.9, atol=1e-6)
    w1 = ema.shadow["weight"].clone()
    ema.update(net, step=100_000)  # full decay 0.999
    assert torch.allclose(ema.shadow["weight"], 0.999 * w1 + 0.001, atol=1e-6)


@pytest.mark.slow
def test_train_checkpoint_resume_matches_uninterrupted(dataset, data, tmp_path):
    cfg = SDMConfig(train_steps=4, batch_size=2, checkpoint_every=2, seed=3)
    full = train_sdm(dataset, tmp_path / "full", cfg, data=data, progress=False)
    part = train_sdm(dataset, tmp_path / "part", SDMConfig(**{**cfg.__dict__, "train_steps": 2}),
                     data=data, progress=False)
    assert json.loads((part / "summary.json").read_text())["steps"] == 2
    train_sdm(dataset, part, cfg, data=data, progress=False)  # resume 2 -> 4
    for name in ("model.safetensors",):
        with safe_open(str(full / name), "pt") as a, safe_open(str(part / name), "pt") as b:
            assert a.metadata()["step"] == b.metadata()["step"] == "4"
            keys = sorted(a.keys())
            assert any(k.startswith("ema.") for k in keys)
            assert any(k.startswith("model.") for k in keys)
            for k in keys:
                assert torch.allclose(a.get_tensor(k), b.get_tensor(k), atol=1e-6), k
    hist = (part / "history.csv").read_text().strip().splitlines()
    assert hist[0] == "step,loss,lr,seconds" and len(hist) == 5
    summary = json.loads((part / "summary.json").read_text())
    assert summary["done"] is True and summary["steps"] == 4
    assert (part / "samples" / "step_000004.png").is_file()
    assert (part / "state.pt").is_file() and (part / "config.json").is_file()
    # a finished run is not trained again
    mtime = (part / "model.safetensors").stat().st_mtime_ns
    train_sdm(dataset, part, cfg, data=data, progress=False)
    assert (part / "model.safetensors").stat().st_mtime_ns == mtime
    # changing the architecture of a run is refused, naming the key
    with pytest.raises(ValueError, match="view_phase"):
        train_sdm(dataset, part, SDMConfig(**{**cfg.__dict__, "view_phase": True}), data=data,
                  progress=False)
    sdm = load_sdm(part)
    assert sdm.step == 4 and sdm.image_size == 64
    imgs = sdm.sample(data.maps[:2].numpy(), steps=2, seeds=[0, 1])
    assert imgs.shape == (2, 64, 64) and imgs.dtype == np.uint8


def test_view_phase_conditioning_trains_and_samples(dataset, data, tmp_path):
    cfg = SDMConfig(train_steps=2, batch_size=2, view_phase=True)
    run = train_sdm(dataset, tmp_path / "vp", cfg, data=data, progress=False)
    sdm = load_sdm(run)
    assert sdm.model.net.view_phase is not None
    maps = data.maps[:1].numpy().repeat(2, 0)
    a = sdm.sample(maps, steps=2, seeds=[0, 0], view_phase=[0, 3])
    assert a.shape == (2, 64, 64)
    assert set(data.view_phase.tolist()) <= {0, 1, 2, 3}


def test_load_sdm_and_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_sdm(tmp_path)
    with pytest.raises(ValueError, match="precision"):
        SDMConfig(precision="fp8")
    with pytest.raises(ValueError, match="unknown SDM size"):
        SDMConfig(size="huge")
    with pytest.raises(ValueError, match="unknown keys"):
        SDMConfig.from_dict({"size": "tiny", "colour": 1})
    cfg = SDMConfig.paper()
    assert (cfg.size, cfg.lr, cfg.batch_size, cfg.train_steps) == ("paper", 1e-4, 96, 50_000)
    assert SDMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_fast_dev_run_trains_n_steps_and_synthesizes_n_per_split(dataset, data, tmp_path):
    from echo_vlsm.dataset import read_records
    from echo_vlsm.sdm.synthesize import synthesize

    cfg = SDMConfig(train_steps=200, batch_size=2, seed=1, fast_dev_run=2)
    assert cfg.steps == 2 and SDMConfig.from_dict(cfg.to_dict()) == cfg
    run = train_sdm(dataset, tmp_path / "fdr", cfg, data=data, progress=False)
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert (run / "model.safetensors").is_file()
    five = write_echo_dataset(tmp_path / "five", n_patients=5, size=64)  # train, val, test
    out = synthesize(run, five, tmp_path / "synthetic", n_per_map=1, steps=2,
                     max_per_split=2, size=32, device="cpu", progress=False)
    rec = read_records(out)
    assert rec.groupby("split").size().to_dict() == {"train": 2, "val": 2}
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="fast_dev_run"):
            SDMConfig(fast_dev_run=bad)
