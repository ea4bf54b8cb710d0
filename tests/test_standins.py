"""The rehearsal's stand-ins load through the same code as the real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_inputs import model_inputs

from echo_vlsm.data.camus import read_camus
from echo_vlsm.data.export import export_dataset, read_records
from echo_vlsm.data.phantom import simulate_patient
from echo_vlsm.models import build_model
from echo_vlsm.models.weights import UntrustedCheckpointError, read_state_dict
from echo_vlsm.rehearsal import STANDINS, build_standins, standin_env
from echo_vlsm.sdm.released import import_released, scan_released


@pytest.fixture(scope="module")
def data_standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins")
    return root, build_standins(root, parts=("released",), n_patients=4, released_size=64,
                                progress=False)


def test_camus_2019_tree_has_the_study_splits(data_standins):
    _, paths = data_standins
    tree = paths["camus"]
    assert (tree / "training").is_dir() and (tree / "testing" / "patient0001").is_dir()
    records = read_camus(tree)
    assert {r.release for r in records} == {"2019"}
    by_split = {s: sorted({r.patient for r in records if r.split == s})
                for s in ("train", "val", "test")}
    assert by_split == {"train": ["patient0051", "patient0052"], "val": ["patient0001"],
                        "test": ["patient0001"]}


def test_released_standin_imports_with_the_validation_patients_facts(data_standins, tmp_path):
    """Validation and test stems repeat (as in the real 2019 release): each synthetic
    validation image carries the validation patient's sex and age, not the test patient's."""
    root, paths = data_standins
    items = scan_released(paths["released"])
    assert {it["split"] for it in items} == {"train", "val"}  # testing/ is skipped
    assert len(items) == 3 * 4 * 2  # 3 train/val patients x 4 images x 2 per map
    real = export_dataset(read_camus(paths["camus"]), tmp_path / "real", size=64, workers=0)
    out = import_released(paths["released"], tmp_path / "synthetic", real_dir=real, size=64,
                          progress=False)
    rec = read_records(out)
    val = rec[rec["split"] == "val"]
    phantom_val, phantom_test = simulate_patient(0, 1), simulate_patient(0, 4)
    assert (phantom_val.sex, phantom_val.age) != (phantom_test.sex, phantom_test.age)
    assert set(val["sex"]) == {phantom_val.sex} and set(val["age"]) == {phantom_val.age}
    train = rec[rec["patient"] == "patient0051"]
    assert set(train["age"]) == {simulate_patient(0, 2).age}
    manifest = json.loads((root / "standins.json").read_text())
    assert set(manifest) == {"camus", "released"}
    # built once: a second call leaves the files as they are
    first = sorted(paths["released"].rglob("*.png"))[0]
    mtime = first.stat().st_mtime_ns
    build_standins(root, parts=("released",), n_patients=4, released_size=64, progress=False)
    assert first.stat().st_mtime_ns == mtime


def test_unknown_part_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown stand-in parts \['rn101'\]"):
        build_standins(tmp_path, parts=("rn101",))


@pytest.fixture(scope="module")
def weight_standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return build_standins(root, parts=("clipseg", "rn50", "cris"), progress=False)


@pytest.mark.slow
def test_clipseg_standin_loads_like_the_hub_checkpoint(weight_standins, monkeypatch):
    folder = weight_standins["clipseg"]
    assert (folder / "config.json").is_file()
    model = build_model("clipseg", "paper", pretrained=folder).eval()
    monkeypatch.setenv("ECHO_VLSM_CLIPSEG_WEIGHTS", standin_env(weight_standins)
                       ["ECHO_VLSM_CLIPSEG_WEIGHTS"])
    again = build_model("clipseg", "paper", pretrained=True).eval()
    pixels, ids, mask = model_inputs(model, 1)
    with torch.no_grad():
        out = model(pixels, ids, mask)
        assert out.shape == (1, 1, 352, 352)
        assert torch.equal(out, again(pixels, ids, mask))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_rn50_and_cris_standins_load_like_the_real_files(weight_standins, monkeypatch):
    rn50, cris = weight_standins["rn50"], weight_standins["cris"]
    with pytest.raises(UntrustedCheckpointError, match="TorchScript archive"):
        build_model("cris", "paper", pretrained=rn50)
    state = read_state_dict(rn50, trust=True)
    assert state["visual.conv1.weight"].dtype == torch.float16
    assert int(state["input_resolution"]) == 224 and int(state["vocab_size"]) == 49408
    model = build_model("cris", "paper", pretrained=rn50, trust=True)
    assert torch.equal(model.backbone.visual.conv1.weight, state["visual.conv1.weight"].float())
    raw = torch.load(cris, map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw["state_dict"])
    loaded = build_model("cris", "paper", pretrained=cris).eval()
    assert torch.equal(loaded.proj.txt.weight, raw["state_dict"]["module.proj.txt.weight"])
    # pretrained=True through the documented variables: the CRIS checkpoint first
    for name, value in standin_env(weight_standins).items():
        monkeypatch.setenv(name, value)
    again = build_model("cris", "paper", pretrained=True).eval()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in again.state_dict().items())
    monkeypatch.delenv("ECHO_VLSM_CRIS_WEIGHTS")
    with pytest.warns(UserWarning, match="loading CLIP RN50"):
        clip_only = build_model("cris", "paper", pretrained=True, trust=True)
    assert torch.equal(clip_only.backbone.visual.conv1.weight, model.backbone.visual.conv1.weight)
    assert set(STANDINS) >= set(weight_standins)
    assert np.isfinite(loaded.proj.txt.weight.detach().numpy()).all()
