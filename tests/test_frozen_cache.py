"""Frozen encoders computed once (``echo_vlsm.train.frozen_cache``): the same results as
without the cache on both models, rebuilt when the weights, images or prompts change, safe
under two writers, memory-mapped when asked, a full disk refused."""

import errno
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from echo_vlsm.io import DiskFullError
from echo_vlsm.models import build_model
from echo_vlsm.train import TrainConfig, fit, train_step
from echo_vlsm.train import frozen_cache as F
from echo_vlsm.train.data import load_training_data
from echo_vlsm.train.decoding import CacheWarning
from echo_vlsm.train.triplets import normalise

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(task_dataset):
    return task_dataset


def config(dataset, runs_root, **changes):
    values = dict(model="clipseg", size="tiny", prompt="p1", strategy="real", encoders="frozen",
                  epochs=2, batch_size=8, lr=1e-3, seed=0, device="cpu", real_dir=str(dataset),
                  synthetic_dir=str(dataset), runs_root=str(runs_root),
                  cache_dir=str(runs_root / "cache"))
    values.update(changes)
    return TrainConfig(**values)


# -- the split at the frozen encoders ---------------------------------------------------------
@pytest.mark.parametrize("name", ["clipseg", "cris"])
def test_the_rest_of_the_model_on_cached_values_equals_the_model(name, dataset, tmp_path,
                                                                  one_thread):
    """Logits and the trainable parameters' gradients, in training mode (CRIS's decoder
    dropout drawn from the same seed), from the cache held on the CPU and memory-mapped; in
    float64, where the two differ only by rounding."""
    cfg = config(dataset, tmp_path, model=name)
    torch.manual_seed(0)
    model = build_model(name, "tiny", encoders="frozen").double()
    data = load_training_data(cfg, model, "cpu", progress=False)
    idx = torch.tensor([0, 5, 7, 20, 33, 47])
    phrasing = data.train.draw_phrasings(torch.Generator().manual_seed(3))
    images, masks, ids, attn = data.train.batch(idx, phrasing)
    x = normalise(images, model.spec.mean, model.spec.std, channels_last=True,
                  dtype=torch.float64)

    def run(net, *inputs):
        model.zero_grad(set_to_none=True)
        model.train()
        torch.manual_seed(1)
        logits = net(*inputs, attn)
        logits.square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                 if p.requires_grad}

    ref_logits, ref_grads = run(model, x, ids)
    assert sum(bool(g.abs().sum() > 0) for g in ref_grads.values()) > len(ref_grads) // 2
    for resident in (True, False):
        features = F.split_features(model, data.train, precision="fp32", channels_last=True,
                                    batch_size=5, folder=tmp_path / f"f{resident}",
                                    resident=resident)
        assert features.image.resident is resident
        assert features.image.tensors[0].shape[0] == 16 and len(features.text_row) == 48
        assert features.image.path.stat().st_size >= features.image.nbytes
        logits, grads = run(F.CachedModel(model, features),
                            *features.rows(data.train, idx, phrasing))
        assert logits.shape == ref_logits.shape == (6, 1, 96, 96)
        assert features.image.tensors[0].dtype == torch.float64
        torch.testing.assert_close(logits, ref_logits, rtol=1e-9, atol=1e-10)
        assert grads.keys() == ref_grads.keys()
        for n in grads:  # rounding only (a key bias's gradient is zero up to rounding)
            error = float((grads[n] - ref_grads[n]).norm())
            assert error <= 1e-8 * float(ref_grads[n].norm()) + 1e-14, (n, error)
    if name == "cris":  # the pool's connect residual trains on the cached stage output
        assert any(n.startswith("backbone.visual.attnpool.connect.") for n in grads)
        assert not any(n.startswith("backbone.visual.attnpool.q_proj") for n in grads)


@pytest.mark.parametrize("name", ["clipseg", "cris"])
def test_a_cached_run_has_the_uncached_runs_history_and_test_metrics(name, dataset, tmp_path,
                                                                     one_thread):
    plain = fit(config(dataset, tmp_path / "plain", model=name, frozen_cache=False),
                progress=False)
    cached = fit(config(dataset, tmp_path / "cached", model=name), progress=False)
    assert plain.summary["frozen_cache"] == {"used": False,
                                             "reason": "switched off (frozen_cache: false)"}
    record = cached.summary["frozen_cache"]
    assert record["used"] is True
    assert record["train"]["image"]["rows"] == 16 and record["val"]["image"]["rows"] == 4
    assert record["train"]["image"]["held"] == "device" and record["train"]["image"]["built"]
    assert Path(record["train"]["text"]["file"]).is_file()
    for column in ("train_loss", "val_loss", "val_dice"):
        assert cached.history[column].tolist() == pytest.approx(
            plain.history[column].tolist(), rel=1e-4, abs=1e-4), column
    assert cached.metrics["dice"].tolist() == pytest.approx(plain.metrics["dice"].tolist(),
                                                            abs=0.05)
    assert cached.summary["test_dice"] == pytest.approx(plain.summary["test_dice"], abs=0.02)


def test_a_resumed_cached_run_ends_where_an_uninterrupted_one_does(dataset, tmp_path,
                                                                   one_thread):
    whole = fit(config(dataset, tmp_path / "a"), progress=False)
    cfg = config(dataset, tmp_path / "b")
    calls = []

    class Interrupt(Exception):
        pass

    def dies_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6 + 2:  # 48 triplets / batch 8 = 6 steps per epoch
            raise Interrupt
        return train_step(*args, **kwargs)

    with pytest.raises(Interrupt):
        fit(cfg, progress=False, step=dies_in_epoch_2)
    resumed = fit(cfg, progress=False)
    assert resumed.summary["frozen_cache"]["train"]["image"]["built"] is False  # read
    assert resumed.history["val_dice"].tolist() == whole.history["val_dice"].tolist()
    assert resumed.metrics["dice"].tolist() == whole.metrics["dice"].tolist()


def test_trained_encoders_and_zeroshot_train_without_the_cache(dataset, tmp_path):
    model = build_model("clipseg", "tiny", encoders="frozen")
    assert F.cache_unavailable(config(dataset, tmp_path), model) is None
    assert F.cache_unavailable(config(dataset, tmp_path, encoders="trained"), model) == \
        "encoders trained"
    assert F.cache_unavailable(config(dataset, tmp_path, strategy="zeroshot", epochs=0),
                               model) == "zeroshot trains nothing"
    assert F.cache_unavailable(config(dataset, tmp_path, frozen_cache=False), model) == \
        "switched off (frozen_cache: false)"
    with pytest.raises(ValueError, match="frozen_cache='yes'; expected true or false"):
        config(dataset, tmp_path, frozen_cache="yes")


# -- invalidation -----------------------------------------------------------------------------
def _built(model, data, folder):
    f = F.split_features(model, data, precision="fp32", channels_last=False, batch_size=8,
                         folder=folder)
    return f.image.built, f.text.built, f


def test_changed_weights_images_or_prompts_rebuild_the_cache(dataset, tmp_path, one_thread):
    torch.manual_seed(0)
    model = build_model("cris", "tiny", encoders="frozen")
    data = load_training_data(config(dataset, tmp_path, model="cris"), model, "cpu",
                              progress=False).val
    folder = tmp_path / "frozen"
    assert _built(model, data, folder)[:2] == (True, True)
    assert _built(model, data, folder)[:2] == (False, False)  # read back

    # the always-trained connect residual is not cached: changing it changes nothing
    with torch.no_grad():
        model.backbone.visual.attnpool.connect[0].weight.add_(1.0)
    assert _built(model, data, folder)[:2] == (False, False)
    with torch.no_grad():  # a frozen weight: both rebuilt, with other values
        model.backbone.visual.layer4[0].conv1.weight.mul_(1.5)
    image_built, text_built, f = _built(model, data, folder)
    assert (image_built, text_built) == (True, True)
    with torch.no_grad():
        model.backbone.ln_final.bias.add_(0.5)  # the text tower only
    assert _built(model, data, folder)[:2] == (True, True)

    data.images[2, 10, 10] ^= 1  # one pixel of one image: images rebuilt, texts read
    image_built, text_built, changed = _built(model, data, folder)
    assert (image_built, text_built) == (True, False)
    assert not torch.equal(changed.image.tensors[0][2], f.image.tensors[0][2])
    assert torch.equal(changed.image.tensors[0][1], f.image.tensors[0][1])

    other = data.input_ids.clone()
    other[0, 0, 1] += 1  # one token of one phrasing: texts rebuilt, images read
    data.input_ids = other
    assert _built(model, data, folder)[:2] == (False, True)
    assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["image"] * 4 + ["text"] * 4


def test_an_unwritable_folder_computes_in_memory_only_what_fits(dataset, tmp_path, monkeypatch,
                                                                one_thread):
    torch.manual_seed(0)
    model = build_model("clipseg", "tiny", encoders="frozen")
    data = load_training_data(config(dataset, tmp_path), model, "cpu", progress=False).val
    in_memory = F.split_features(model, data, precision="fp32", channels_last=False,
                                 batch_size=8, folder=None)
    assert in_memory.image.path is None and in_memory.image.resident
    assert in_memory.image.tensors[0].shape[0] == data.images.shape[0]
    monkeypatch.setattr(F, "DEVICE_SHARE", 1e-15)  # no room in memory for any of it
    with pytest.raises(MemoryError, match=r"GiB \(\d+ rows\) do not fit in cpu's memory .*"
                                          r"set cache_dir to a writable folder"):
        F.split_features(model, data, precision="fp32", channels_last=False, batch_size=8,
                         folder=None)


def test_a_rehearsal_caches_only_what_its_batches_reach(dataset, tmp_path, one_thread):
    from echo_vlsm.train.data import rehearsal_share

    full = load_training_data(config(dataset, tmp_path), build_model("clipseg", "tiny"), "cpu",
                              progress=False)
    assert full.train is not None
    share = rehearsal_share(full.train, 8)  # 8 triplets: the first images that hold 8
    per_image = torch.bincount(share.image_index)
    assert len(share) >= 8 and len(share) - int(per_image[-1]) < 8
    assert torch.equal(share.images, full.train.images[:share.images.shape[0]])
    assert rehearsal_share(full.train, 10**6) is full.train
    result = fit(config(dataset, tmp_path, fast_dev_run=1), progress=False)
    rows = result.summary["frozen_cache"]["train"]["image"]["rows"]
    assert rows == int(rehearsal_share(full.train, 8).images.shape[0]) < full.train.images.shape[0]


def test_a_damaged_cache_file_is_computed_again(dataset, tmp_path, one_thread):
    torch.manual_seed(0)
    model = build_model("clipseg", "tiny", encoders="frozen")
    data = load_training_data(config(dataset, tmp_path), model, "cpu", progress=False).val
    first = _built(model, data, tmp_path / "frozen")[2]
    path = first.image.path
    path.write_bytes(path.read_bytes()[:-100])  # cut short
    with pytest.warns(CacheWarning, match=rf"{path.name}.*bytes, its header says"):
        image_built, _, again = _built(model, data, tmp_path / "frozen")
    assert image_built and path.stat().st_size == first.image.path.stat().st_size
    assert all(torch.equal(a, b) for a, b in zip(again.image.tensors, first.image.tensors))


def test_a_full_disk_is_an_error_naming_the_file(dataset, tmp_path, monkeypatch, one_thread):
    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    model = build_model("clipseg", "tiny", encoders="frozen")
    data = load_training_data(config(dataset, tmp_path), model, "cpu", progress=False).val
    with pytest.raises(DiskFullError, match=r"image-clipseg-tiny-.*\.feat: no space left"):
        _built(model, data, tmp_path / "frozen")
    assert list((tmp_path / "frozen").iterdir()) == []  # no temporary file left behind


# -- two processes building one cache at once -------------------------------------------------
WRITER = '''
import sys, time
from pathlib import Path
import torch
from torch import nn
from echo_vlsm.models.base import ModelSpec, SegmentationModel
from echo_vlsm.train import frozen_cache as F
from echo_vlsm.train.triplets import Triplets


class Small(SegmentationModel):
    """A model small enough to start fast: a convolution as its image encoder, an
    embedding as its text encoder (both frozen), a 1x1 convolution as the rest."""

    splits_frozen = True

    def __init__(self):
        super().__init__(ModelSpec("small", "tiny", 96, (0.5,) * 3, (0.25,) * 3, 0.5))
        self.conv, self.words = nn.Conv2d(3, 4, 8, 8), nn.Embedding(99, 4)
        self.head = nn.Conv2d(4, 1, 1)
        self.set_encoders("frozen")

    def encoder_modules(self):
        return [self.conv, self.words]

    def encode_frozen_image(self, x):
        return [self.conv(x)]

    def encode_frozen_text(self, ids, attn):
        return [self.words(ids).mean(1)]


def make():
    """The model (seed 0) and a split of 5 images x 3 triplets, 2 phrasings each."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    return Small(), Triplets(
        images=torch.randint(0, 256, (5, 96, 96), generator=g, dtype=torch.uint8),
        masks=torch.zeros(5, 96, 96, dtype=torch.uint8),
        image_index=torch.arange(15) // 3, mask_bit=torch.arange(15) % 3,
        input_ids=torch.randint(0, 99, (15, 2, 8), generator=g),
        attention_mask=torch.ones(15, 2, 8, dtype=torch.uint8),
        n_phrasings=torch.full((15,), 2), samples=[{}] * 15, texts=[["a", "b"]] * 15)


if __name__ == "__main__":
    folder, sync, me, other = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    allocate = F._preallocate

    def meet(fd, size):  # both writers hold a preallocated temporary file before either renames
        allocate(fd, size)
        (sync / me).touch()
        deadline = time.time() + 120
        while not (sync / other).exists():
            if time.time() > deadline:
                raise SystemExit("the other writer never came")
            time.sleep(0.02)

    F._preallocate = meet
    model, data = make()
    f = F.split_features(model, data, precision="fp32", channels_last=False, batch_size=2,
                         folder=folder)
    print(f.image.built, f.text.built)
'''


@pytest.mark.slow
def test_two_processes_building_one_cache_at_once(tmp_path, monkeypatch, one_thread):
    script, folder, sync = tmp_path / "writer.py", tmp_path / "frozen", tmp_path / "sync"
    script.write_text(WRITER)
    sync.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(script), str(folder), str(sync), a, b],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for a, b in (("a", "b"), ("b", "a"))]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.split()[0] == "True"  # each computed the images (neither file existed)
    assert "True" in {out.split()[1] for out, _ in outs}  # the texts: one, or both again
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and names[0].startswith("image-") and names[1].startswith("text-")
    spec = importlib.util.spec_from_file_location("writer", script)  # the writers' own code
    writer = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "writer", writer)  # where inspect finds its source
    spec.loader.exec_module(writer)
    model, data = writer.make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file is whole: read without a warning
        read = F.split_features(model, data, precision="fp32", channels_last=False,
                                batch_size=2, folder=folder)
    assert not read.image.built and not read.text.built
    fresh = F.split_features(model, data, precision="fp32", channels_last=False, batch_size=2,
                             folder=None)
    for a, b in zip(read.image.tensors + read.text.tensors,
                    fresh.image.tensors + fresh.text.tensors):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert json.loads(json.dumps(read.record()))["image"]["rows"] == 5
    assert read.record()["text"]["rows"] == 30  # every phrasing's tokens differ


# -- the plan counts it -----------------------------------------------------------------------
def test_plan_counts_the_cache_for_frozen_runs_only(tmp_path):
    from echo_vlsm.pipeline import profiles as P
    from echo_vlsm.pipeline.cost import (
        Assumptions,
        cached_flops,
        format_plan,
        plan_cost,
        step_flops,
    )

    prof = P.load_profile("demo", ROOT)
    assume = Assumptions(tflops=100.0, utilization=0.5, epochs_per_run=4)
    table = plan_cost(prof, tmp_path, assume).set_index(
        ["model", "strategy", "encoders", "real_fraction"])
    trained = table.loc[("cris", "real", "trained", 1.0)]
    assert trained["gpu_hours_cached"] == pytest.approx(trained["gpu_hours"])
    for model in ("clipseg", "cris"):
        row = table.loc[(model, "real", "frozen", 1.0)]
        f = cached_flops(model, "tiny")
        assert 0 < f["infer"] < f["train"] < step_flops(model, "frozen", "tiny")[0]
        infer = step_flops(model, "frozen", "tiny")[1]
        expect = (4 * 3 * (1600 * f["train"] + 400 * f["infer"]) + 2000 * f["image"]
                  + 2 * 3 * 2000 * f["text"] + 200 * 3 * infer)
        assert row["gpu_hours_cached"] == pytest.approx(
            row["runs"] * expect / (100e12 * 0.5) / 3600)
        assert row["gpu_hours_cached"] < row["gpu_hours"]
    text = format_plan(plan_cost(prof, tmp_path, assume), prof, assume)
    assert "with the frozen cache" in text
    # and how much of a frozen step that is at most, per model
    shares = [1 - cached_flops(m, "tiny")["train"] / step_flops(m, "frozen", "tiny")[0]
              for m in ("clipseg", "cris")]
    assert all(0 < s < 1 for s in shares)
    assert (f"of a frozen training step it skips clipseg {shares[0]:.0%}, "
            f"cris {shares[1]:.0%})") in text


@pytest.mark.ddp
def test_two_torchrun_processes_train_from_one_cache(dataset, tmp_path):
    """Rank 0 builds the cache, rank 1 reads it; DDP wraps the model on cached values."""
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "echo_vlsm.train", "model=cris", "size=tiny", "prompt=p2", "epochs=1",
           "batch_size=8", "device=cpu", "encoders=frozen", f"real_dir={dataset}",
           f"runs_root={runs}", f"cache_dir={cache}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((runs / "cris_real_frozen_p2" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["frozen_cache"]["used"] is True
    assert summary["frozen_cache"]["train"]["image"]["built"] is True  # by rank 0
    assert len(list((cache / "frozen").glob("image-cris-tiny-*.feat"))) == 2  # train, val
