"""The demo profile's promises: converged runs (early stopping under a cap no run reaches), at
least 4 validation and 20 test patients, the study's 2019 layout; and the phantom's per-split
patient counts that notebook 01 passes on (``splits``)."""

from __future__ import annotations

from collections import Counter

import pytest

from echo_vlsm.data import phantom as ph
from echo_vlsm.data.camus import read_camus
from echo_vlsm.pipeline import profiles as P
from echo_vlsm.train import TrainConfig


@pytest.fixture(scope="module")
def demo():
    return P.load_profile("demo")


def test_demo_data_has_the_patients_the_statistics_need(demo):
    step = demo.steps["01_data_preparation"]
    sizes = ph.check_sizes(step["splits"], step["n_patients"])
    assert sizes["val"] >= 4  # early stopping on 2 patients (24 samples) is noise
    assert sizes["test"] >= 20  # agreement statistics need patients
    assert sizes["train"] == 14  # the training set as it was
    assert step["layout"] == "2019"  # its Info_2CH.cfg carries LVedv, LVesv and LVef


def test_every_demo_run_stops_early_under_the_same_schedule(demo):
    train = demo.train
    assert train["patience"] >= 5 and train["min_delta"] > 0
    # the plateau cut comes before early stopping can end a run
    assert train["plateau_patience"] < train["patience"]
    # the cap is far beyond where runs stop (the slowest converged demo run: ~60 epochs)
    assert train["epochs"] >= 2 * 60
    for model, values in demo.models.items():
        # batch, schedule and patience are per profile, never per strategy
        assert set(values) <= {"batch_size", "lr"}, model
    fields = set(TrainConfig.__dataclass_fields__)
    schedules = set()
    for run in demo.runs:
        params = demo.run_parameters(run)
        config = TrainConfig(**{k: v for k, v in params.items() if k in fields})
        assert config.early_stopping == train["patience"], run
        schedules.add((config.plateau_patience, config.plateau_factor, config.batch_size,
                       config.epochs))
    assert len(schedules) == 1, schedules


def test_phantom_sizes_per_split_are_written_and_read_back(tmp_path):
    root = ph.write_phantom(tmp_path / "raw", 5, 0, "2019", workers=0,
                            splits={"train": 1, "val": 2, "test": 2})
    counts = Counter(r.split for r in read_camus(root))
    assert counts == {"train": 4, "val": 8, "test": 8}  # 4 images a patient
    plan = ph.patient_splits(5, "2019", {"train": 1, "val": 2, "test": 2})
    assert [f for _, _, f in plan] == ["training/patient0001", "training/patient0002",
                                       "training/patient0051", "testing/patient0001",
                                       "testing/patient0002"]


@pytest.mark.parametrize("sizes, n, message", [
    ({"train": 2, "val": 1}, 5, "add up to 3 patients, not n_patients=5"),
    ({"train": 0, "val": 1, "test": 1}, None, "at least one training patient"),
    ({"train": 2, "validation": 1}, None, "must map train/val/test"),
    ({"train": 2.5}, None, "whole number"),
    ([14, 4, 20], None, "must map train/val/test"),
])
def test_bad_phantom_splits_are_refused(sizes, n, message):
    with pytest.raises(ValueError, match=message):
        ph.check_sizes(sizes, n)
