"""One image pass for its structures (``echo_vlsm.train.image_batching``): the same loss and
gradients as the plain forward on both models with trained encoders, epochs ordered by image
and deterministic per (seed, epoch), today's order untouched with the option off, the U-Net
refused."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as nnf

from echo_vlsm.models import build_model
from echo_vlsm.train import TrainConfig, fit, train_step
from echo_vlsm.train import distributed as D
from echo_vlsm.train.config import result_fields
from echo_vlsm.train.data import load_training_data
from echo_vlsm.train.engine import Engine, batches, epoch_seed
from echo_vlsm.train.fitting import prepare
from echo_vlsm.train.image_batching import ImageBatchedModel, image_batches, image_order
from echo_vlsm.train.triplets import normalise


@pytest.fixture(scope="module")
def dataset(task_dataset):
    return task_dataset


def config(dataset, runs_root, **changes):
    values = dict(model="clipseg", size="tiny", prompt="p1", strategy="real", encoders="trained",
                  epochs=1, batch_size=8, lr=1e-3, seed=0, device="cpu", real_dir=str(dataset),
                  synthetic_dir=str(dataset), runs_root=str(runs_root),
                  cache_dir=str(runs_root / "cache"))
    values.update(changes)
    return TrainConfig(**values)


# -- the forward and backward ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["clipseg", "cris"])
def test_one_image_pass_gives_the_plain_loss_and_gradients(name, dataset, tmp_path, one_thread):
    """Trained encoders, training mode (CRIS's ResNet batch norm on batch statistics, its
    decoder dropout drawn from the same seed), float64: the loss and every parameter's
    gradient equal the plain forward's on the same 12 triplets of 4 images up to rounding.
    The batch statistics of 4 unique images have the mean and biased variance of those of
    their 12 copies; only the running variance (unbiased, a buffer) moves differently."""
    cfg = config(dataset, tmp_path, model=name)
    torch.manual_seed(0)
    model = build_model(name, "tiny", encoders="trained").double()
    train = load_training_data(cfg, model, "cpu", progress=False).train
    idx = torch.nonzero(train.image_index < 4).view(-1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(1))]
    assert len(idx) == 12 and train.image_index[idx].unique().tolist() == [0, 1, 2, 3]
    phrasing = train.draw_phrasings(torch.Generator().manual_seed(3))
    images, masks, ids, attn = train.batch(idx, phrasing)
    x = normalise(images, model.spec.mean, model.spec.std, channels_last=True,
                  dtype=torch.float64)
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def run(net, first):
        model.load_state_dict(start)
        model.zero_grad(set_to_none=True)
        model.train()
        torch.manual_seed(1)
        logits = net(first, ids, attn)
        loss = nnf.binary_cross_entropy_with_logits(logits, masks[:, None].double())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
        return float(loss.detach()), grads, buffers

    ref_loss, ref_grads, ref_buffers = run(model, x)
    batched = ImageBatchedModel(model, train.images, channels_last=True)
    loss, grads, buffers = run(batched, train.image_index[idx])
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    vision = [n for n in ref_grads if n.startswith(("net.clip.vision_model.",
                                                     "backbone.visual."))]
    assert len(vision) > 10 and grads.keys() == ref_grads.keys()  # the encoders train
    for n in grads:
        error = float((grads[n] - ref_grads[n]).norm())
        assert error <= 1e-9 * float(ref_grads[n].norm()) + 1e-14, (n, error)
    for k in buffers:  # CRIS's batch norms: same means; variances by (n - 1) of other n's
        if k.endswith("running_mean"):
            torch.testing.assert_close(buffers[k], ref_buffers[k], rtol=1e-9, atol=1e-12)
    changed = [k for k in buffers if k.startswith("backbone.visual.")
               and k.endswith("running_var") and not torch.equal(buffers[k], ref_buffers[k])]
    assert bool(changed) == (name == "cris")


def test_the_unet_and_models_without_the_split_are_refused():
    with pytest.raises(ValueError, match="image_batching=True: model 'unet'"):
        TrainConfig(model="unet", prompt="none", image_batching=True)
    with pytest.raises(ValueError, match="UNet.*does not split"):
        ImageBatchedModel(build_model("unet", "tiny"), torch.zeros(2, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image_batching='yes'; expected true or false"):
        TrainConfig(image_batching="yes")


# -- the order ------------------------------------------------------------------------------
def test_an_epoch_keeps_each_images_triplets_in_one_batch_deterministically():
    """Images of 3 triplets (and one of 1, one of 5) in an interleaved storage order: each
    image's triplets are consecutive and in one batch of at most the batch size; the order is
    the same for the same seed and another for another."""
    index = torch.tensor([0, 1, 2, 3, 4, 5, 6] * 3 + [7] + [8] * 5)[
        torch.randperm(27, generator=torch.Generator().manual_seed(0))]
    a = image_order(index, torch.Generator().manual_seed(11))
    assert sorted(a.tolist()) == list(range(27))
    assert torch.equal(a, image_order(index, torch.Generator().manual_seed(11)))
    assert not torch.equal(a, image_order(index, torch.Generator().manual_seed(12)))
    for size in (1, 3, 4, 8, 16):
        chunks = image_batches(a, index, size)
        assert torch.equal(torch.cat(chunks), a)
        seen = [set(index[c].tolist()) for c in chunks]
        for image in range(9):  # every image in exactly one batch
            assert sum(image in s for s in seen) == 1
        assert all(len(c) <= max(size, 5) for c in chunks[:-1])
        assert len(chunks) == 1 or len(chunks[-1]) > 1  # a batch of one joins the previous


def test_the_option_off_keeps_todays_order_and_settings(dataset, tmp_path):
    """Off: the DistributedSampler's permutation of (seed, epoch) cut by ``batches``, as
    before the option existed; ``result_fields`` without the field (older runs' state and
    config match). On: whole images, by the epoch's seed; refused under torchrun."""
    for on in (False, True):
        cfg = config(dataset, tmp_path / str(on), seed=5, image_batching=on)
        assert ("image_batching" in result_fields(cfg)) is on
        setup = prepare(cfg, D.Dist(0, 1, 0, torch.device("cpu")))
        engine = Engine(setup)
        train = setup.data.train
        for epoch in (1, 2):
            got = engine.epoch_batches(epoch)
            if not on:
                perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(
                    5 + epoch))
                assert [c.tolist() for c in got] == [c.tolist() for c in batches(perm, 8)]
                continue
            order = image_order(train.image_index,
                                torch.Generator().manual_seed(epoch_seed(cfg, epoch)))
            assert [c.tolist() for c in got] == [
                c.tolist() for c in image_batches(order, train.image_index, 6)]
            rows = [train.image_index[c] for c in got]
            assert all(len(r) == 6 for r in rows)  # 8 triplets hold 2 whole images
            assert all(torch.bincount(r).max() == 3 for r in rows)
    with pytest.raises(ValueError, match="image_batching trains in one process"):
        Engine(dataclasses.replace(setup, dist=D.Dist(0, 2, 0, torch.device("cpu"))))


def test_a_run_with_image_batching_encodes_each_image_once_per_batch(dataset, tmp_path,
                                                                     one_thread):
    """A CLIPSeg run with trained encoders: every step's image rows are whole images (each
    of a batch's images three times), config.json records the option, the run trains."""
    steps = []

    def record(net, x, *args, **kwargs):
        steps.append(x.clone())
        return train_step(net, x, *args, **kwargs)

    cfg = config(dataset, tmp_path, image_batching=True, batch_size=16)
    result = fit(cfg, progress=False, step=record)
    assert len(steps) == 4  # 16 images x 3 triplets in batches of 5 whole images
    assert [len(s) for s in steps] == [15, 15, 15, 3]
    assert all(torch.bincount(s)[s.unique()].eq(3).all() for s in steps)
    assert torch.cat(steps).unique().tolist() == list(range(16))
    assert json.loads((cfg.run_dir / "config.json").read_text())["image_batching"] is True
    assert result.history["train_loss"].notna().all() and len(result.history) == 1


# -- the plan -------------------------------------------------------------------------------
def test_the_plan_prints_the_batched_figure_from_a_measured_ratio_only(tmp_path, monkeypatch):
    """Trained-encoder runs' training steps divided by the measured ratio; frozen runs keep
    the cached figure; a model without a measured ratio: no figure, said so."""
    from pathlib import Path

    from echo_vlsm.pipeline import cost
    from echo_vlsm.pipeline import profiles as P

    prof = P.load_profile("demo", Path(__file__).resolve().parents[1])
    assume = cost.Assumptions(tflops=100.0, utilization=0.5, epochs_per_run=4)
    monkeypatch.setattr(cost, "IMAGE_BATCHING_SPEEDUP", {("clipseg", "tiny"): 2.0})
    table = cost.plan_cost(prof, tmp_path, assume)
    assert "no measured speed-up for cris at size tiny" in cost.format_plan(table, prof, assume)
    rows = table.set_index(["model", "strategy", "encoders", "real_fraction"])
    trained = rows.loc[("clipseg", "real", "trained", 1.0)]
    steps = 4 * 1600 * 3 * cost.step_flops("clipseg", "trained", "tiny")[0]
    assert trained["gpu_hours_batched"] == pytest.approx(
        trained["gpu_hours_cached"] - trained["runs"] * steps / 2 / (100e12 * 0.5) / 3600)
    for key in (("clipseg", "real", "frozen", 1.0), ("cris", "real", "trained", 1.0)):
        assert rows.loc[key, "gpu_hours_batched"] == rows.loc[key, "gpu_hours_cached"]
    monkeypatch.setattr(cost, "IMAGE_BATCHING_SPEEDUP",
                        {("clipseg", "tiny"): 2.0, ("cris", "tiny"): 1.5})
    text = cost.format_plan(cost.plan_cost(prof, tmp_path, assume), prof, assume)
    assert "with the frozen cache and image batching: " in text
    assert "clipseg 2.00x, cris 1.50x" in text


def test_with_the_frozen_cache_image_batching_changes_only_the_order(dataset, tmp_path,
                                                                     one_thread):
    """Frozen CLIPSeg, image batching on: the cached run (encoders once per image already)
    has the history of the uncached one (encoders once per image of a batch)."""
    cached = fit(config(dataset, tmp_path / "c", encoders="frozen", image_batching=True),
                 progress=False)
    plain = fit(config(dataset, tmp_path / "p", encoders="frozen", image_batching=True,
                       frozen_cache=False), progress=False)
    assert cached.summary["frozen_cache"]["used"] and not plain.summary["frozen_cache"]["used"]
    for column in ("train_loss", "val_loss", "val_dice"):
        assert cached.history[column].tolist() == pytest.approx(
            plain.history[column].tolist(), rel=1e-4, abs=1e-4), column
