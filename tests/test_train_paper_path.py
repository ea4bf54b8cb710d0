"""The paper path of training: fast_dev_run, the two recipes, trust for CRIS's TorchScript
weights, state.pt on completion, weights provenance, the threaded HD95."""

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from echo_vlsm.models import build_model
from echo_vlsm.train import (
    BestScore,
    EarlyStopping,
    TrainConfig,
    build,
    fit,
    is_complete,
    load_split,
    make_optimizer,
    train_step,
    validate,
)
from echo_vlsm.train import data as train_data
from echo_vlsm.train.config import result_fields
from echo_vlsm.train.engine import batches
from echo_vlsm.train.losses import DiceCEProbsLoss, make_loss, soft_dice_loss
from echo_vlsm.train.metrics import segmentation_metrics
from echo_vlsm.train.rundir import BEST_STATE_FILE


@pytest.fixture(scope="module")
def dataset(task_dataset):
    return task_dataset


def config(dataset, runs_root, **changes):
    values = dict(model="clipseg", size="tiny", prompt="p1", strategy="real", epochs=3,
                  batch_size=4, lr=1e-3, device="cpu", real_dir=str(dataset),
                  synthetic_dir=str(dataset), runs_root=str(runs_root))
    values.update(changes)
    return TrainConfig(**values)


def test_fast_dev_run_does_n_batches_and_leaves_a_complete_run(dataset, tmp_path, one_thread):
    steps = []

    def count_step(*args, **kwargs):
        steps.append(1)
        return train_step(*args, **kwargs)

    cfg = config(dataset, tmp_path, fast_dev_run=2, epochs=50)
    res = fit(cfg, progress=False, step=count_step)
    assert len(steps) == 2  # 2 batches of one epoch, not 12 x 50
    assert res.history["epoch"].tolist() == [1]
    assert is_complete(res.run_dir) and res.summary["fast_dev_run"] == 2
    assert res.summary["stopped_by"] == "fast_dev_run"
    assert json.loads((res.run_dir / "config.json").read_text())["fast_dev_run"] == 2
    assert res.metrics["sample"].nunique() == 2 and len(res.metrics) == 6  # 2 images x 3
    assert not (res.run_dir / "state.pt").exists()  # deleted on completion

    # a rehearsal never counts as the real run: the settings differ
    with pytest.raises(ValueError, match="fast_dev_run: 2 -> None"):
        fit(cfg.replace(fast_dev_run=None), progress=False)

    kept = fit(cfg.replace(runs_root=str(tmp_path / "kept"), keep_state=True), progress=False)
    assert (kept.run_dir / "state.pt").is_file()


def test_validation_is_capped_by_fast_dev_run(dataset, one_thread):
    cfg = TrainConfig(model="clipseg", size="tiny", batch_size=4, fast_dev_run=1, device="cpu",
                      real_dir=str(dataset))
    model = build_model("clipseg", size="tiny")
    data = load_split(cfg, model, dataset, "val", torch.device("cpu"), progress=False)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    validate(model, data, cfg, make_loss("dice-bce", 1, 0.25), "fp32")
    assert len(calls) == 1 and len(data) > 4


def test_recipes_set_their_fields_and_explicit_fields_win():
    pub = TrainConfig(model="cris", strategy="synth-pt-real-ft")
    run = pub.replace(recipe="as-run")
    assert pub.settings() == {"dropout": 0.1, "loss": "dice-bce", "bce_weight": 0.25,
                              "lr": 2e-5, "patience": None, "min_delta": 0.0,
                              "resume_pretraining": False}
    assert run.settings() == {"dropout": 0.2, "loss": "dicece-probs", "bce_weight": 0.2,
                              "lr": 2e-5, "patience": 20, "min_delta": 0.01,
                              "resume_pretraining": True}
    clip = TrainConfig(model="clipseg", strategy="synth-pt-real-ft", recipe="as-run")
    assert clip.learning_rate == 2e-4 and clip.replace(strategy="real").learning_rate == 2e-3
    assert run.replace(dropout=0.3, patience=0).settings()["dropout"] == 0.3
    assert run.replace(patience=0).early_stopping is None
    # a config.json written before recipes existed (bce_weight 0.25) matches as-published
    old = TrainConfig.from_dict({**pub.to_dict(), "bce_weight": 0.25})
    assert result_fields(old) == result_fields(pub) != result_fields(run)
    with pytest.raises(ValueError, match="recipe"):
        TrainConfig(recipe="as-written")
    with pytest.raises(ValueError, match="fast_dev_run"):
        TrainConfig(fast_dev_run=0)


def test_as_run_loss_is_monai_dicece_on_probabilities():
    from monai.losses import DiceCELoss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 16, 16, generator=g) * 3
    target = (torch.rand(3, 1, 16, 16, generator=g) > 0.6).float()
    prob = torch.sigmoid(logits)
    # the MONAI installed here (>= 1.4) takes BCE with logits on one channel: a second sigmoid
    newer = DiceCELoss(lambda_dice=1.0, lambda_ce=0.2)(prob, target)
    assert float(DiceCEProbsLoss(monai="1.4")(logits, target)) == pytest.approx(float(newer),
                                                                                abs=1e-6)
    # MONAI 1.2 (the study's pin) took CrossEntropyLoss over the one channel: exactly 0
    ce12 = torch.nn.CrossEntropyLoss()(prob, target)
    assert float(ce12) == 0.0
    expected = soft_dice_loss(logits, target) + 0.2 * ce12
    assert float(DiceCEProbsLoss()(logits, target)) == pytest.approx(float(expected), abs=1e-7)


def test_threaded_hd95_gives_the_same_numbers():
    yy, xx = np.mgrid[:96, :96]
    rng = np.random.default_rng(0)
    pred, target = [], []
    for _ in range(9):
        cy, cx, r = rng.integers(30, 66, 3)
        pred.append((yy - cy) ** 2 + (xx - cx) ** 2 < (r % 20 + 5) ** 2)
        target.append((yy - cy - 3) ** 2 + (xx - cx) ** 2 < (r % 20 + 7) ** 2)
    pred[4][:] = False  # one empty prediction: the diagonal
    one = segmentation_metrics(np.stack(pred), np.stack(target), workers=1)
    many = segmentation_metrics(np.stack(pred), np.stack(target), workers=4)
    for k in one:
        assert np.array_equal(one[k], many[k]), k
    assert one["hd95"][4] == pytest.approx(math.hypot(96, 96)) and (one["hd95"] > 0).all()


def test_cris_from_a_torchscript_archive_needs_trust_and_records_provenance(
        dataset, tmp_path, one_thread):
    from echo_vlsm.models.weights import UntrustedCheckpointError

    state = build_model("cris", size="tiny").state_dict()
    plain = tmp_path / "cris.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, plain)
    cfg = config(dataset, tmp_path / "runs", model="cris", pretrained=str(plain), fast_dev_run=1)
    res = fit(cfg, progress=False)
    prov = res.summary["provenance"]["pretrained"]
    assert prov["kind"] == "local" and prov["path"] == str(plain)
    assert prov["files"] == {str(plain): hashlib.sha256(plain.read_bytes()).hexdigest()}

    class Holder(torch.nn.Module):  # a TorchScript archive of the same weights
        def __init__(self):
            super().__init__()
            for i, v in enumerate(state.values()):
                self.register_buffer(f"b{i}", v.clone())

        def forward(self, x):
            return x

    scripted = tmp_path / "cris_scripted.pt"
    torch.jit.save(torch.jit.script(Holder()), str(scripted))
    script_cfg = cfg.replace(pretrained=str(scripted), runs_root=str(tmp_path / "s"))
    with pytest.raises(UntrustedCheckpointError):
        fit(script_cfg, progress=False)


def test_as_run_synth_pt_real_ft_continues_the_synthetic_runs_state(dataset, tmp_path,
                                                                     one_thread):
    syn = fit(config(dataset, tmp_path, strategy="synthetic", recipe="as-run", epochs=2,
                     patience=5), progress=False)
    best = syn.run_dir / BEST_STATE_FILE
    assert best.is_file() and not (syn.run_dir / "state.pt").exists()
    saved = torch.load(best, weights_only=True)
    assert saved["epoch"] == syn.summary["best_epoch"]

    ft = fit(config(dataset, tmp_path, strategy="synth-pt-real-ft", recipe="as-run", epochs=4,
                    lr=5e-2, patience=5), progress=False)
    first = saved["epoch"] + 1
    assert ft.history["epoch"].tolist()[0] == first and ft.history["epoch"].max() == 4
    # the optimiser state (and its learning rate) came from the synthetic run, not lr=5e-2
    assert ft.summary["learning_rate_used"] == pytest.approx(saved["optimizer"]["param_groups"][0]
                                                             ["lr"])
    assert ft.summary["provenance"]["continued_from"] == str(best)
    assert ft.summary["recipe"]["name"] == "as-run"

    fresh = fit(config(dataset, tmp_path / "pub", strategy="synthetic", epochs=1),
                progress=False)
    assert not (fresh.run_dir / BEST_STATE_FILE).exists()
    pub = fit(config(dataset, tmp_path / "pub", strategy="synth-pt-real-ft", epochs=1, lr=5e-2),
              progress=False)
    assert pub.history["epoch"].tolist() == [1] and pub.summary["learning_rate_used"] == 5e-2


def test_early_stopping_needs_more_than_min_delta(dataset, tmp_path, one_thread):
    res = fit(config(dataset, tmp_path, epochs=6, patience=1, min_delta=1000.0),
              progress=False)
    assert res.history["epoch"].tolist() == [1, 2]  # epoch 2 cannot beat epoch 1 by 1000
    assert res.summary["stopped_by"] == "patience"
    pd.testing.assert_series_equal(res.history["epoch"], pd.Series([1, 2], name="epoch"))


def test_min_steps_holds_early_stopping_until_enough_steps(dataset, tmp_path, one_thread):
    # patience 1 and an unreachable min_delta stop a run after epoch 2 ...
    quick = fit(config(dataset, tmp_path / "quick", epochs=8, patience=1, min_delta=1000.0),
                progress=False)
    steps = len(batches(torch.arange(quick.summary["n_train"]), 4))
    assert quick.summary["steps_per_epoch"] == steps
    assert quick.history["epoch"].tolist() == [1, 2]
    assert quick.summary["early_stopping_from"] == 1
    # ... unless min_steps asks for more optimisation steps: 3 epochs' and one more -> 4
    held = fit(config(dataset, tmp_path / "held", epochs=8, patience=1, min_delta=1000.0,
                      min_steps=3 * steps + 1), progress=False)
    assert held.history["epoch"].tolist() == [1, 2, 3, 4]
    assert held.summary["early_stopping_from"] == 4 and held.summary["stopped_by"] == "patience"
    # more steps than the cap allows: the cap ends the run, and says so
    capped = fit(config(dataset, tmp_path / "capped", epochs=3, patience=1, min_delta=1000.0,
                        min_steps=100 * steps), progress=False)
    assert capped.history["epoch"].tolist() == [1, 2, 3]
    assert capped.summary["stopped_by"] == "epochs"
    # a run's identity holds min_steps only when it is set (older runs stay comparable)
    assert "min_steps" not in result_fields(config(dataset, tmp_path))
    assert result_fields(config(dataset, tmp_path, min_steps=5))["min_steps"] == 5
    with pytest.raises(ValueError, match="min_steps"):
        config(dataset, tmp_path, min_steps=-1)


def test_adamw_is_fused_on_the_cpu():
    model = torch.nn.Linear(3, 2)
    cfg = TrainConfig(model="clipseg", lr=1e-3, device="cpu")
    _, optimizer, _, _ = make_optimizer(cfg, model, torch.device("cpu"), "fp32")
    assert optimizer.defaults["fused"] is True
    # and it steps as the loop does, to float rounding
    reference = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3,
                                  weight_decay=cfg.weight_decay)
    reference.param_groups[0]["params"][0].data.copy_(model.weight.data)
    reference.param_groups[0]["params"][1].data.copy_(model.bias.data)
    initial = [p.detach().clone() for p in model.parameters()]
    for opt in (optimizer, reference):
        params = opt.param_groups[0]["params"]
        for step in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.1 * (step + 1))
            opt.step()
    for fused_p, loop_p, start in zip(optimizer.param_groups[0]["params"],
                                      reference.param_groups[0]["params"], initial):
        torch.testing.assert_close(fused_p, loop_p, rtol=1e-6, atol=1e-7)
        assert (fused_p - start).abs().min() > 1e-4  # every weight moved


def test_early_stopping_says_why_a_run_stops():
    def run(dice, **fields):
        stop = EarlyStopping.of(TrainConfig(model="clipseg", **fields))
        stops = [stop.update(epoch, d) for epoch, d in enumerate(dice, 1)]
        return stops, stop

    # an improvement must beat the best by more than min_delta
    stops, stop = run([50.0, 50.5, 50.9], epochs=10, patience=2, min_delta=1.0)
    assert stops == [False, False, True] and stop.stopped_by == "patience"
    assert stop.state_dict() == {"best": 50.0, "wait": 2}
    # never before min_epochs
    stops, stop = run([50.0, 40.0, 40.0], epochs=10, patience=1, min_epochs=3)
    assert stops == [False, False, True] and stop.stopped_by == "patience"
    # never before min_steps either, counted in the run's steps per epoch
    stop = EarlyStopping.of(TrainConfig(model="clipseg", epochs=10, patience=1, min_steps=7),
                            steps_per_epoch=3)
    assert stop.min_epochs == 3
    assert [stop.update(e, d) for e, d in enumerate([50.0, 40.0, 40.0], 1)] == [False, False, True]
    # the cap, without patience; both at once: the patience
    assert run([1.0, 2.0], epochs=2)[1].stopped_by == "epochs"
    assert run([2.0, 1.0], epochs=2, patience=1)[1].stopped_by == "patience"
    assert run([1.0], epochs=5, fast_dev_run=1)[1].stopped_by == "fast_dev_run"
    # state.pt keeps best and wait; a stopped run's reason is found again from its epoch
    again = EarlyStopping.of(TrainConfig(model="clipseg", epochs=10, patience=2))
    again.load_state_dict({"best": 50.0, "wait": 2}, epoch=3)
    assert again.stopped_by == "patience" and again.wait == 2
    again.load_state_dict({"best": 50.0, "wait": 1})
    assert again.stopped_by is None and not again.update(4, 51.0) and again.wait == 0


def test_best_score_counts_strict_improvements_and_round_trips():
    best = BestScore(initial_val_dice=10.0, initial_val_loss=0.9)
    assert best.update(1, 20.0, 1.5) and not best.update(2, 20.0, 3.0)
    assert not best.update(3, float("nan"), 4.5) and best.update(4, 21.0, 6.0)
    assert (best.best_epoch, best.best_val_dice, best.seconds_to_best) == (4, 21.0, 6.0)
    record = best.as_dict()
    assert list(record) == ["best_epoch", "best_val_dice", "seconds_to_best",
                            "initial_val_dice", "initial_val_loss", "initialised_from"]
    assert BestScore.from_dict(record) == best
    best.first_epoch, best.continued_from = 3, "syn/best_state.pt"
    assert BestScore.from_dict(best.as_dict()) == best


def test_trust_weights_reaches_build_model_for_cris_only(monkeypatch):
    seen = {}

    def spy(name, **kwargs):
        seen[name] = kwargs
        return build_model(name, size="tiny")

    monkeypatch.setattr(train_data, "build_model", spy)
    build(TrainConfig(model="cris", trust_weights=True, recipe="as-run"), torch.device("cpu"))
    build(TrainConfig(model="clipseg", trust_weights=True), torch.device("cpu"))
    assert seen["cris"]["trust"] is True and seen["cris"]["dropout"] == 0.2
    assert "trust" not in seen["clipseg"] and "dropout" not in seen["clipseg"]
