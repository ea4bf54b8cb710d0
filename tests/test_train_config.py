"""TrainConfig: the study's defaults, run ids, validation of every field, round trips."""

import dataclasses

import pytest

from echo_vlsm.train import TrainConfig, run_id
from echo_vlsm.train.config import result_fields


def test_run_id_and_defaults_of_the_study():
    assert run_id("cris", "synth-pt-real-ft", "frozen", "p3") == "cris_synth-pt-real-ft_frozen_p3"
    clip = TrainConfig(model="clipseg")
    cris = TrainConfig(model="cris", strategy="synthetic", encoders="frozen", prompt="p5")
    assert (clip.learning_rate, clip.global_batch_size) == (2e-3, 128)
    assert (cris.learning_rate, cris.global_batch_size) == (2e-5, 32)
    assert (clip.weight_decay, clip.dice_weight, clip.setting("bce_weight")) == (1e-3, 1.0, 0.25)
    assert (clip.plateau_factor, clip.plateau_patience, clip.grad_clip) == (0.1, 5, 0.5)
    assert cris.run_id == "cris_synthetic_frozen_p5"
    assert TrainConfig(lr=1e-4, batch_size=8).learning_rate == 1e-4


def test_notebook_parameters_are_fields():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    params = ("model size pretrained prompt strategy encoders epochs min_epochs batch_size lr "
              "patience real_dir synthetic_dir runs_root seed precision compile device").split()
    assert set(params) <= names


def test_paths_resolve_from_the_project_root_and_data_per_strategy(tmp_path):
    cfg = TrainConfig(strategy="synthetic", real_dir="data/r", synthetic_dir=str(tmp_path / "s"),
                      runs_root=str(tmp_path / "runs"))
    assert cfg.train_dir == tmp_path / "s"
    assert cfg.test_dir.is_absolute() and cfg.test_dir.parts[-2:] == ("data", "r")
    assert cfg.run_dir == tmp_path / "runs" / "clipseg_synthetic_trained_p1"
    assert TrainConfig(real_dir=str(tmp_path)).train_dir == tmp_path


def test_pretraining_run_uses_p6_for_p7(tmp_path):
    ft = TrainConfig(model="cris", strategy="synth-pt-real-ft", encoders="frozen", prompt="p7",
                     runs_root=str(tmp_path))
    assert ft.pretraining_run() == tmp_path / "cris_synthetic_frozen_p6"
    assert ft.replace(prompt="p2").pretraining_run().name == "cris_synthetic_frozen_p2"
    assert TrainConfig().pretraining_run() is None


@pytest.mark.parametrize("changes, match", [
    ({"model": "sam"}, "model"),
    ({"strategy": "mixup"}, "strategy"),
    ({"model": "unet"}, r"prompt='p1'.*model 'unet'.*\('none',\)"),
    ({"model": "unet", "prompt": "none", "encoders": "frozen"}, "encoders.*'trained'"),
    ({"model": "unet", "prompt": "none", "pretrained": True}, "pretrained.*scratch"),
    ({"model": "unet", "prompt": "none", "strategy": "zeroshot"}, "strategy.*'unet'"),
    ({"real_fraction": 0}, r"real_fraction=0.*0 < real_fraction <= 1"),
    ({"real_fraction": 1.5}, "real_fraction"),
    ({"real_fraction": 0.5, "strategy": "synthetic"}, "real_fraction.*'synthetic'"),
    ({"provenance": True}, "provenance.*'mixed'"),
    ({"provenance": "yes", "strategy": "mixed"}, "provenance"),
    ({"synthetic_ratio": 1.0}, "synthetic_ratio.*'mixed'"),
    ({"synthetic_ratio": 0, "strategy": "mixed"}, "synthetic_ratio.*> 0"),
    ({"subset_seed": -1}, "subset_seed"),
    ({"encoders": "half"}, "encoders"),
    ({"precision": "int8"}, "precision"),
    ({"prompt": "P 3"}, "prompt"),
    ({"prompt": "p8"}, "unknown prompt key"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 2, "min_epochs": 3}, "min_epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": -1.0}, "lr"),
    ({"plateau_factor": 1.5}, "plateau_factor"),
    ({"dice_weight": 0, "bce_weight": 0}, "both 0"),
    ({"init_from": "x.safetensors"}, "init_from"),
])
def test_bad_values_are_errors_naming_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**changes)


def test_zeroshot_needs_no_epochs_and_dict_round_trip():
    cfg = TrainConfig(strategy="zeroshot", epochs=0, encoders="frozen")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"model": "clipseg", "learning_rate": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_result_fields_ignore_where_and_how_fast():
    a = TrainConfig(device="cpu", compile=False, runs_root="a")
    b = TrainConfig(device="cuda", compile=True, runs_root="b")
    assert result_fields(a) == result_fields(b)
    assert result_fields(a) != result_fields(a.replace(seed=1))
