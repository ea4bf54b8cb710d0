"""``echo-vlsm export-model``: a run as a Hugging Face hub folder, loaded back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import train_tiny_run

from echo_vlsm import inference
from echo_vlsm.cli import main
from echo_vlsm.models import build_model
from echo_vlsm.structures import STRUCTURE_NAMES


@pytest.fixture(scope="module")
def run(task_dataset, tmp_path_factory):
    return train_tiny_run(task_dataset, tmp_path_factory.mktemp("runs"), model="cris",
                          prompt="p2")


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "cris-p2"
    assert main(["export-model", str(run.run_dir), str(out)]) == 0
    return out


def test_folder_layout_and_config(run, exported):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["README.md", "bpe_simple_vocab_16e6.txt.gz", "config.json",
                     "model.safetensors"]
    config = json.loads((exported / "config.json").read_text())
    assert config["format"] == "echo-vlsm-model"
    assert (config["model"], config["size"], config["prompt"], config["strategy"],
            config["encoders"]) == ("cris", "tiny", "p2", "real", "frozen")
    assert config["spec"]["image_size"] == build_model("cris", "tiny").spec.image_size
    assert config["training_config"] == run.config.to_dict()
    dice = run.metrics.groupby("structure").dice.mean()
    by = {m["structure"]: m for m in config["test_metrics"]}
    assert set(by) == set(dice.index)
    for structure, value in dice.items():
        assert by[structure]["dice"] == pytest.approx(value)


def test_model_card(run, exported):
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-4.0\n")
    assert "Not for clinical use" in card and "Synthetic Boost" in card
    assert "@inproceedings" in card and "synth" in card.lower()
    metrics = pd.read_csv(run.run_dir / "metrics.csv")
    for structure, group in metrics.groupby("structure"):
        row = next(line for line in card.splitlines()
                   if line.startswith(f"| {STRUCTURE_NAMES[structure]} |"))
        assert f"| {len(group)} | {group.dice.mean():.1f} ± " in row


def test_build_model_and_segment_load_the_export(run, exported, task_dataset):
    model = build_model("cris", size="tiny", pretrained=exported, encoders="frozen")
    saved = load_file(str(run.run_dir / "model.safetensors"))
    own = model.state_dict()
    for key, tensor in saved.items():
        assert torch.equal(own[key], tensor), key
    image = sorted((task_dataset / "images" / "test").glob("*.png"))[0]
    text = "Left ventricular cavity of the heart."
    a = inference.segment(run.run_dir, image, text, device="cpu")
    b = inference.segment(exported, image, text, device="cpu")
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.probability, b.probability, atol=1e-6)
    assert inference.load_model(exported, device="cpu").prompt == "p2"
    with pytest.raises(ValueError, match="an exported 'cris' of size 'tiny', not 'clipseg'"):
        build_model("clipseg", size="tiny", pretrained=exported)


def test_export_never_overwrites_other_files(run, exported, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    assert main(["export-model", str(run.run_dir), str(busy)]) == 2
    assert "busy: exists, is not empty and is not an exported model folder" in \
        capsys.readouterr().err
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    assert (busy / "notes.txt").read_text() == "keep me"
    # an earlier export is replaced in place
    before = (exported / "config.json").read_text()
    inference.export_model(run.run_dir, exported)
    assert json.loads((exported / "config.json").read_text()) == json.loads(before)
    # a run that is not complete is refused, naming it
    with pytest.raises(inference.ModelFolderError, match="missing config.json"):
        inference.export_model(tmp_path, tmp_path / "x")
    with pytest.raises(inference.ExportError, match="not an exported model folder"):
        inference.push_model(busy, "someone/model")


def test_missing_weights_in_an_export_name_the_file(exported, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="broken/model.safetensors: missing"):
        build_model("cris", size="tiny", pretrained=broken)
