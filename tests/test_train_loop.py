"""fit/evaluate on a small exported phantom with real tiny models: learning, complete run
folders, exact resume, the strategies' data and starting weights, errors."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from echo_vlsm.train import (
    MissingRunError,
    TrainConfig,
    evaluate,
    fit,
    is_complete,
    load_run,
    train_step,
)

HISTORY = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds", "images_per_s"]
METRICS = ["model", "strategy", "encoders", "prompt", "seed", "real_fraction", "provenance",
           "sample", "structure", "view", "phase", "dice", "iou", "hd95"]


@pytest.fixture(scope="module")
def dataset(task_dataset):
    return task_dataset


def config(dataset, runs_root, **changes):
    values = dict(model="cris", size="tiny", prompt="p1", strategy="real", encoders="trained",
                  epochs=5, batch_size=4, lr=1e-3, seed=0, device="cpu", real_dir=str(dataset),
                  synthetic_dir=str(dataset), runs_root=str(runs_root))
    values.update(changes)
    return TrainConfig(**values)


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_fit_learns_writes_a_complete_run_and_resumes_exactly(dataset, tmp_path, one_thread):
    cfg = config(dataset, tmp_path / "a")
    ref = fit(cfg, progress=False)

    # learning: the validation Dice rises well above the untrained model's within 5 epochs
    h = ref.history
    assert list(h.columns) == HISTORY and h["epoch"].tolist() == [1, 2, 3, 4, 5]
    # (the tiny CRIS with the study's bicubic upsampling learns unevenly at this lr: 17.7 ->
    # 37.3 validation, 26.7 test in this test with AdamW's per-tensor loop, 24.2 test with its
    # fused kernel, which agrees with the loop to float rounding: five epochs' test dice moves
    # by points with the last bit; with the bilinear upsampling it reached 43.4)
    assert h["val_dice"].max() >= ref.summary["initial_val_dice"] + 15
    assert ref.summary["test_dice"] >= ref.summary["initial_val_dice"] + 5
    assert (h["lr"] == 1e-3).all() and (h["seconds"] > 0).all() and (h["images_per_s"] > 0).all()

    # the run folder: every file of the contract, summary consistent with the history
    run = cfg.run_dir
    assert run.name == "cris_real_trained_p1" and is_complete(run)
    for name in ("config.json", "history.csv", "model.safetensors", "metrics.csv",
                 "summary.json"):
        assert (run / name).is_file(), name
    assert not (run / "state.pt").exists()  # deleted on completion (keep_state=False)
    s = json.loads((run / "summary.json").read_text())
    best = int(h["val_dice"].idxmax())
    assert s["done"] is True and s["epochs_run"] == 5 and s["best_epoch"] == best + 1
    assert s["stopped_by"] == "epochs"  # no patience in the as-published recipe: the cap
    assert s["best_val_dice"] == pytest.approx(h["val_dice"].max())
    assert s["seconds_to_best"] == pytest.approx(h["seconds"].iloc[: best + 1].sum())
    assert s["seconds_total"] >= h["seconds"].sum()
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == cfg
    m = pd.read_csv(run / "metrics.csv", dtype={"sample": str, "prompt": str})
    assert list(m.columns) == METRICS and len(m) == 12  # 4 test images x 3 structures
    assert set(m["structure"]) == {"lv", "myo", "la"} and set(m["model"]) == {"cris"}
    assert set(m["strategy"]) == {"real"} and set(m["prompt"]) == {"p1"}
    assert m["dice"].between(0, 100).all() and m["iou"].between(0, 100).all()
    assert np.isfinite(m["hd95"]).all() and (m["iou"] <= m["dice"] + 1e-9).all()
    assert m["sample"].str.match(r"patient\d{4}_[24]CH_E[DS]$").all()

    # a complete run is not trained again
    def no_epochs(epoch, row):
        raise AssertionError("a complete run trained again")

    again = fit(cfg, on_epoch_end=no_epochs, progress=False)
    assert again.summary == s
    with pytest.raises(ValueError, match=r"config\.json.*epochs: 5 -> 7.*overwrite=True"):
        fit(cfg.replace(epochs=7), progress=False)

    # killed in the middle of epoch 2, continued and stopped after epoch 3, continued again:
    # the same weights, history and scores as without interruptions
    cfg_b = cfg.replace(runs_root=str(tmp_path / "b"))
    calls = []

    def dies_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 12 + 3:  # 48 triplets / batch 4 = 12 steps per epoch
            raise Interrupt
        return train_step(*args, **kwargs)

    with pytest.raises(Interrupt):
        fit(cfg_b, progress=False, step=dies_in_epoch_2)
    assert len(pd.read_csv(cfg_b.run_dir / "history.csv")) == 1

    def stop_after_3(epoch, row):
        if epoch == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(cfg_b, on_epoch_end=stop_after_3, progress=False)
    assert not is_complete(cfg_b.run_dir)
    assert len(pd.read_csv(cfg_b.run_dir / "history.csv")) == 3
    with pytest.raises(ValueError, match=r"state\.pt.*lr: 0\.001 -> 0\.002"):
        fit(cfg_b.replace(lr=2e-3), progress=False)
    resumed = fit(cfg_b, progress=False)
    cols = ["epoch", "train_loss", "val_loss", "val_dice", "lr"]
    pd.testing.assert_frame_equal(resumed.history[cols], ref.history[cols])
    a, b = load_file(run / "model.safetensors"), load_file(cfg_b.run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(resumed.metrics, ref.metrics)
    assert resumed.summary["best_epoch"] == ref.summary["best_epoch"]


def test_synth_pt_real_ft_starts_from_the_synthetic_run(dataset, tmp_path, one_thread):
    ft = config(dataset, tmp_path, model="clipseg", strategy="synth-pt-real-ft", prompt="p7",
                epochs=1, batch_size=8)
    with pytest.raises(MissingRunError, match="clipseg_synthetic_trained_p6.*strategy='synthetic'"):
        fit(ft, progress=False)

    syn = fit(config(dataset, tmp_path, model="clipseg", strategy="synthetic", prompt="p6",
                     epochs=1, batch_size=8), progress=False)
    assert syn.run_dir.name == "clipseg_synthetic_trained_p6"
    assert syn.summary["n_train"] == 48 and set(syn.metrics["strategy"]) == {"synthetic"}

    seen = {}

    def spy(net, *args, **kwargs):  # the weights the first optimisation step starts from
        seen.setdefault("start", {k: v.clone() for k, v in net.state_dict().items()})
        return train_step(net, *args, **kwargs)

    res = fit(ft, progress=False, step=spy)
    start = load_file(syn.run_dir / "model.safetensors")
    assert seen["start"].keys() == start.keys()
    assert all(torch.equal(seen["start"][k], start[k]) for k in start)
    assert res.summary["initialised_from"] == str(syn.run_dir / "model.safetensors")
    assert res.run_dir.name == "clipseg_synth-pt-real-ft_trained_p7"
    assert set(res.metrics["strategy"]) == {"synth-pt-real-ft"}


def test_zeroshot_scores_the_initial_model_and_evaluate_repeats_it(dataset, tmp_path, one_thread):
    cfg = config(dataset, tmp_path, model="clipseg", strategy="zeroshot", encoders="frozen",
                 epochs=0, prompt="p0")
    res = fit(cfg, progress=False)
    assert is_complete(res.run_dir) and res.summary["epochs_run"] == 0
    assert not (res.run_dir / "model.safetensors").exists() and res.history.empty
    assert list(pd.read_csv(res.run_dir / "history.csv").columns) == HISTORY
    assert len(res.metrics) == 12 and set(res.metrics["strategy"]) == {"zeroshot"}

    again = evaluate(cfg, write=False, save_predictions=True, progress=False)
    pd.testing.assert_frame_equal(again, res.metrics)
    assert not (res.run_dir / "predictions").exists()  # nothing is written with write=False
    evaluate(cfg, save_predictions=True, progress=False)
    pngs = sorted((res.run_dir / "predictions").rglob("*.png"))
    assert len(pngs) == 12 and {p.parent.name for p in pngs} == {"lv", "myo", "la"}
    assert load_run(res.run_dir).summary["done"] is True


def test_a_trailing_batch_of_one_joins_the_batch_before_it():
    from echo_vlsm.train.engine import batches

    order = torch.tensor([4, 0, 6, 5, 7, 2, 8, 3, 1])
    got = [b.tolist() for b in batches(order, 8)]
    assert got == [[4, 0, 6, 5, 7, 2, 8, 3, 1]]  # 8 + 1: one batch of nine
    got = [b.tolist() for b in batches(torch.arange(9), 4)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]  # every sample once, none twice
    assert [b.tolist() for b in batches(torch.arange(6), 4)] == [[0, 1, 2, 3], [4, 5]]
