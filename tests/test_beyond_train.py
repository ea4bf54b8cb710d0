"""Training beyond the study (issue 15) on the phantom: real-data fractions (nested patient
subsets, recorded), the mixed strategy with and without provenance prompts, the text-free
U-Net baseline, seeds in run ids, and run folders written before these fields existed."""

import json

import pandas as pd
import pytest
import torch

from echo_vlsm.grid import METRIC_COLUMNS, SUBSET_FILE, file_records, run_files
from echo_vlsm.models import build_model
from echo_vlsm.models.unet import structure_class
from echo_vlsm.prompts import PROVENANCE_PHRASES, prompt_candidates, with_provenance
from echo_vlsm.train import TrainConfig, fit, is_complete, load_split, load_training_data
from echo_vlsm.train.config import result_fields
from echo_vlsm.train.data import ImageCounts
from echo_vlsm.train.rundir import check_settings
from echo_vlsm.train.subsets import keep_count, subset_patients
from echo_vlsm.train.triplets import concat_triplets


@pytest.fixture(scope="module")
def dataset(task_dataset):
    return task_dataset  # 4 train, 1 val, 1 test patients; 4 images each, 3 structures


def config(dataset, runs_root, **changes):
    values = dict(model="clipseg", size="tiny", prompt="p1", strategy="real",
                  encoders="trained", epochs=1, batch_size=8, seed=0, device="cpu",
                  real_dir=str(dataset), synthetic_dir=str(dataset), runs_root=str(runs_root))
    values.update(changes)
    return TrainConfig(**values)


def _images(data) -> set[str]:
    return {s["img_name"] for s in data.samples}


def _patients(data) -> set[str]:
    return {s["sample"].split("_")[0] for s in data.samples}


# -- the subset rule ------------------------------------------------------------------------
def test_subsets_are_nested_seeded_and_of_the_stated_size():
    patients = [f"patient{i:04d}" for i in range(1, 51)]
    fractions = (0.05, 0.1, 0.25, 0.5, 1.0)
    subsets = [subset_patients(patients, f, subset_seed=3) for f in fractions]
    assert [len(s) for s in subsets] == [3, 5, 13, 25, 50]
    for small, large in zip(subsets, subsets[1:]):
        assert set(small) <= set(large)  # nested
    assert subset_patients(reversed(patients), 0.1, 3) == subsets[1]  # order-free, seeded
    assert subset_patients(patients, 0.1, 4) != subsets[1]
    assert keep_count(0.01, 3) == 1 and keep_count(0.07, 100) == 7


def test_real_fraction_subsets_train_and_val_by_patient_and_never_test(dataset, tmp_path):
    model = build_model("clipseg", "tiny")
    full = load_training_data(config(dataset, tmp_path), model, "cpu", progress=False)
    full_train, full_val = full.train, full.val
    small = config(dataset, tmp_path, real_fraction=0.25)
    rec25 = load_training_data(small, model, "cpu", progress=False)
    train25, val25 = rec25.train, rec25.val
    rec50 = load_training_data(small.replace(real_fraction=0.5), model, "cpu", progress=False)
    train50 = rec50.train
    assert len(_patients(full_train)) == 4 and len(_images(full_train)) == 16
    assert len(_patients(train25)) == 1 and len(_patients(train50)) == 2
    assert _patients(train25) <= _patients(train50)  # nested
    assert rec25.subset["train"]["patients"] == sorted(_patients(train25))
    assert rec25.images.real_train_images == rec25.images.train_images == 4 == len(
        _images(train25))
    assert len(train25) == 12 and rec50.images.train_images == 8
    # each kept image keeps all its structures; the masks are those of the full set
    for i, s in enumerate(train25.samples):
        j = next(k for k, t in enumerate(full_train.samples) if t == s)
        assert torch.equal(train25.batch(torch.tensor([i]))[1], full_train.batch(
            torch.tensor([j]))[1])
    assert _patients(val25) == _patients(full_val)  # one val patient: max(1, ...) keeps it
    # the test split is never subset
    test = load_split(small, model, small.test_dir, "test", "cpu", progress=False)
    assert len(test) == 12


# -- tiny trainings of each new kind --------------------------------------------------------
def test_real_fraction_run_records_its_patients_and_scores_all_test_images(
        dataset, tmp_path, one_thread):
    cfg = config(dataset, tmp_path, real_fraction=0.25, seed=1)
    result = fit(cfg, progress=False)
    run = cfg.run_dir
    assert run.name == "clipseg_real_trained_p1_seed1_real25" and is_complete(run)
    record = json.loads((run / SUBSET_FILE).read_text())
    assert record["real_fraction"] == 0.25 and record["subset_seed"] == 0
    assert record["splits"]["train"]["images"] == 4 and record["splits"]["train"][
        "of_patients"] == 4 and len(record["splits"]["train"]["patients"]) == 1
    assert "test" not in record["splits"]
    s = result.summary
    assert set(s["files"]) == set(run_files("real", subset=True))
    assert s["real_train_images"] == s["train_images"] == 4 and s["n_train"] == 12
    m = pd.read_csv(run / "metrics.csv", dtype={"sample": str, "prompt": str})
    assert list(m.columns) == list(METRIC_COLUMNS) and len(m) == 12  # the whole test split
    assert set(m["seed"]) == {1} and set(m["real_fraction"]) == {0.25}
    assert set(m["provenance"]) == {False}
    (run / SUBSET_FILE).write_text("{}")  # a damaged record: the run is not complete
    assert not is_complete(run)


def test_mixed_trains_on_real_and_synthetic_together_with_provenance(dataset, tmp_path,
                                                                    one_thread):
    model = build_model("clipseg", "tiny")
    cfg = config(dataset, tmp_path, strategy="mixed", real_fraction=0.5, provenance=True)
    rec = load_training_data(cfg, model, "cpu", progress=False)
    train, val = rec.train, rec.val
    assert rec.images == ImageCounts(train_images=8 + 16, real_train_images=8,
                                     synthetic_train_images=16)
    assert rec.images.summary() == {"train_images": 24, "real_train_images": 8,
                                    "synthetic_train_images": 16}
    assert len(train) == 3 * 24 and train.images.shape[0] == 24  # images stored once
    real_texts = [t for ts in train.texts[:24] for t in ts]
    syn_texts = [t for ts in train.texts[24:] for t in ts]
    assert all(t.endswith(PROVENANCE_PHRASES["real"] + ".") for t in real_texts)
    assert all(t.endswith(PROVENANCE_PHRASES["synthetic"] + ".") for t in syn_texts)
    assert all(t.endswith(PROVENANCE_PHRASES["real"] + ".") for ts in val.texts for t in ts)
    test = load_split(cfg, model, cfg.test_dir, "test", "cpu", progress=False)
    assert all("real echocardiogram" in t for ts in test.texts for t in ts)
    # tokens differ by provenance (the token cache keys on the texts)
    plain = load_split(cfg.replace(provenance=False), model, cfg.test_dir, "test", "cpu",
                       progress=False)
    assert not torch.equal(plain.input_ids, test.input_ids)
    # a batch across both parts: masks of the synthetic part are its own
    images, masks, ids, _ = train.batch(torch.tensor([0, len(train) - 1]))
    assert images.shape[0] == 2 and masks.any(dim=(1, 2)).all()

    ratio = cfg.replace(synthetic_ratio=0.5, provenance=False)
    rec_ratio = load_training_data(ratio, model, "cpu", progress=False).images
    assert rec_ratio.synthetic_train_images == 4 and rec_ratio.train_images == 12

    result = fit(cfg, progress=False)
    assert cfg.run_dir.name == "clipseg_mixed_trained_p1_real50_prov"
    assert result.summary["n_train"] == 72 and result.summary["real_train_images"] == 8
    assert result.summary["train_images"] == 24
    assert set(result.metrics["provenance"]) == {True} and len(result.metrics) == 12
    assert set(result.metrics["strategy"]) == {"mixed"}


def test_concat_pads_phrasings_and_keeps_masks():
    a = _toy(2, phrasings=1, value=1)
    b = _toy(1, phrasings=2, value=2)
    both = concat_triplets([a, b])
    assert len(both) == 3 and both.images.shape[0] == 3 and both.input_ids.shape[1] == 2
    assert both.n_phrasings.tolist() == [1, 1, 2]
    assert both.draw_phrasings(torch.Generator().manual_seed(0))[:2].tolist() == [0, 0]
    assert both.image_index.tolist() == [0, 1, 2] and int(both.images[2].max()) == 2


def _toy(n, phrasings, value):
    from echo_vlsm.train.triplets import Triplets

    return Triplets(images=torch.full((n, 4, 4), value, dtype=torch.uint8),
                    masks=torch.ones((n, 4, 4), dtype=torch.uint8),
                    image_index=torch.arange(n), mask_bit=torch.zeros(n, dtype=torch.long),
                    input_ids=torch.zeros((n, phrasings, 3), dtype=torch.long),
                    attention_mask=torch.ones((n, phrasings, 3), dtype=torch.uint8),
                    n_phrasings=torch.full((n,), phrasings), samples=[{}] * n,
                    texts=[["x"] * phrasings] * n)


def test_provenance_wording_is_defined_once():
    task = {"img_name": "i.png", "structure": "lv",
            "prompts": {"p0": "", "p1": ["Left ventricular cavity of the heart.", "b."]}}
    assert prompt_candidates(task, "p1", provenance="synthetic")[0] == (
        "Left ventricular cavity of the heart in a synthetic echocardiogram.")
    assert prompt_candidates(task, "p0", provenance="real") == ["In a real echocardiogram."]
    assert with_provenance("b.", "real") == "b in a real echocardiogram."
    with pytest.raises(ValueError, match="provenance source 'fake'"):
        with_provenance("b.", "fake")


# -- the U-Net baseline ---------------------------------------------------------------------
def test_unet_logit_is_the_softmax_probability_and_masks_are_disjoint():
    torch.manual_seed(0)
    model = build_model("unet", "tiny").eval()
    assert model.spec.image_size == 96 and model.spec.threshold == 0.5
    x = torch.randn(2, 3, 96, 96)
    ids, attn = model.tokenize(["Left ventricular cavity", "Myocardium"])
    with torch.no_grad():
        logits = model(x, ids, attn)
        probs = model.class_logits(x).softmax(dim=1)
        assert torch.allclose(torch.sigmoid(logits[0, 0]), probs[0, 1], atol=1e-5)
        assert torch.allclose(torch.sigmoid(logits[1, 0]), probs[1, 2], atol=1e-5)
        per_class = torch.cat([model(x[:1], torch.tensor([[c]]), None) for c in (1, 2, 3)])
    masks = torch.sigmoid(per_class[:, 0]) > 0.5
    assert int(masks.sum(dim=0).max()) <= 1  # the three structures never overlap
    assert structure_class("la") == 3 and structure_class("Myocardium in the ultrasound.") == 2
    with pytest.raises(ValueError, match="reads the structure only"):
        model.tokenize(["the heart"])
    with pytest.raises(ValueError, match="no CLIP encoders to freeze"):
        model.set_encoders("frozen")
    with pytest.raises(ValueError, match="no CLIP encoders to freeze"):
        build_model("unet", "tiny", encoders="frozen")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("unet", "tiny", pretrained=True)
    with pytest.raises(ValueError, match="class indices"):
        model(x, torch.zeros(2, 1, dtype=torch.long), None)


def test_unet_trains_with_the_engine_and_scores_tidy_rows(dataset, tmp_path, one_thread):
    cfg = config(dataset, tmp_path, model="unet", prompt="none", epochs=2, lr=1e-2, seed=2)
    assert cfg.learning_rate == 1e-2 and TrainConfig(model="unet", prompt="none").setting(
        "lr") == 1e-3
    result = fit(cfg, progress=False)
    assert cfg.run_dir.name == "unet_real_trained_none_seed2" and is_complete(cfg.run_dir)
    m = result.metrics
    assert set(m["model"]) == {"unet"} and set(m["prompt"]) == {"none"} and len(m) == 12
    assert set(m["seed"]) == {2} and set(m["structure"]) == {"lv", "myo", "la"}
    assert result.summary["test_dice"] > 30  # a U-Net learns the phantom in two epochs
    assert result.summary["train_images"] == result.summary["real_train_images"] == 16

    # segment and export-model take the run like any other; its "prompt" is the structure
    from echo_vlsm.inference import export_model, segment

    image = dataset / result.metrics["sample"].map(lambda s: f"images/test/{s}.png").iloc[0]
    lv, myo = segment(cfg.run_dir, image, ["Left ventricular cavity", "myo"], device="cpu")
    assert lv.mask.shape == (128, 128) and not (lv.mask & myo.mask).any()
    out = export_model(cfg.run_dir, tmp_path / "exported")
    again = segment(out, image, "Left ventricular cavity", device="cpu")
    assert (again.mask == lv.mask).all()


# -- run folders written before the new fields ---------------------------------------------
def test_an_old_config_without_the_new_keys_compares_equal_and_is_reused(dataset, tmp_path,
                                                                         one_thread):
    cfg = config(dataset, tmp_path, model="unet", prompt="none", epochs=1)
    fit(cfg, progress=False)
    run = cfg.run_dir
    old = {k: v for k, v in json.loads((run / "config.json").read_text()).items()
           if k not in ("real_fraction", "subset_seed", "provenance", "synthetic_ratio")}
    (run / "config.json").write_text(json.dumps(old))
    summary = json.loads((run / "summary.json").read_text())
    summary["files"] = file_records(run, run_files("real"))
    (run / "summary.json").write_text(json.dumps(summary))
    assert result_fields(TrainConfig.from_dict(old)) == result_fields(cfg)
    # a state.pt that does not record a field was made with other settings
    with pytest.raises(ValueError, match=r"state.pt: .*real_fraction: \(not recorded\) -> 1.0"):
        check_settings(cfg, {k: v for k, v in result_fields(cfg).items()
                             if k != "real_fraction"}, run / "state.pt")

    def no_epochs(epoch, row):
        raise AssertionError("an old, complete run trained again")

    assert fit(cfg, on_epoch_end=no_epochs, progress=False).summary["done"] is True
    with pytest.raises(ValueError, match=r"real_fraction: 0.5 -> 1.0"):
        check_settings(cfg, {**result_fields(cfg), "real_fraction": 0.5}, run / "config.json")
