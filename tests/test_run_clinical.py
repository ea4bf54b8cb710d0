"""Every run measures (issue 21, sec. 3): ``clinical.csv`` beside ``metrics.csv``, one row per
test patient; a product of evaluation, so a finished run that lacks it gets it back from its
saved weights, never by training, and its record stays valid."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echo_vlsm import grid as G
from echo_vlsm.clinical import biplane_volumes
from echo_vlsm.clinical.shapes import half_ellipse_mask
from echo_vlsm.dataset import read_records, write_records
from echo_vlsm.imaging import read_raster
from echo_vlsm.train import TrainConfig, evaluate_clinical, fit, train_step
from echo_vlsm.train.clinical_eval import (
    CLINICAL_COLUMNS,
    CLINICAL_FILE,
    LVMasks,
    clinical_problem,
    clinical_table,
)

SHAPE, SPACING = (160, 120), (0.6, 0.5)  # rows x cols; mm per pixel (row, col)
# (long axis, half-width) in mm of each view and phase; ES shorter and narrower
AXES = {"2CH_ED": (70, 22), "2CH_ES": (58, 16), "4CH_ED": (72, 24), "4CH_ES": (60, 17)}


def _mask(name: str, shrink: float = 1.0) -> np.ndarray:
    long_mm, half = AXES[name]
    return half_ellipse_mask(SHAPE, SPACING, long_mm * shrink, half * shrink, tilt_deg=8)


def _record(patient: str, name: str, spacing: bool = True) -> dict:
    view, phase = name.split("_")
    rec = {"stem": f"{patient}_{name}", "patient": patient, "view": view, "phase": phase,
           "split": "test", "sex": "F", "age": 60, "quality": "good",
           "source_height": SHAPE[0] * 2, "source_width": SHAPE[1] * 2,
           "spacing_y": SPACING[0] / 2, "spacing_x": SPACING[1] / 2}
    if spacing:
        rec.update(export_spacing_y=SPACING[0], export_spacing_x=SPACING[1])
    return rec


def _dataset(root: Path, export_spacing: bool = True, patients_csv: bool = True) -> Path:
    """records.csv (and patients.csv) of three test patients: p1 complete, p2 without its
    4CH_ES image, p3 complete with a prediction that is empty at ES."""
    rows = [_record(p, n, export_spacing) for p in ("p1", "p3") for n in AXES]
    rows += [_record("p2", n, export_spacing) for n in AXES if n != "4CH_ES"]
    write_records(rows, root)
    if patients_csv:
        (root / "patients.csv").write_text(
            "patient,split,release,ref_edv_ml,ref_esv_ml,ref_ef_percent\n"
            "p1,test,2019,100.0,40.0,60.0\np2,test,2019,90.0,45.0,50.0\n"
            "p3,test,2023,,,55.0\n")
    return root


def _masks() -> LVMasks:
    masks = LVMasks(available={f"{p}_{n}" for p in ("p1", "p3") for n in AXES}
                    | {f"p2_{n}" for n in AXES if n != "4CH_ES"})
    for p in ("p1", "p2", "p3"):
        for n in AXES:
            if f"{p}_{n}" in masks.available:
                pred = _mask(n, 0.9)
                if p == "p3" and n.endswith("ES"):
                    pred = np.zeros(SHAPE, bool)
                masks.add(f"{p}_{n}", pred, _mask(n, 0.97 if p == "p3" else 1.0))
    return masks


CONFIG = TrainConfig(model="clipseg", size="tiny", prompt="p0", strategy="real",
                     encoders="frozen", seed=2, device="cpu")


@pytest.mark.parametrize("export_spacing", [True, False], ids=["export-spacing", "derived"])
def test_clinical_table_measures_lists_and_explains(tmp_path, export_spacing):
    root = _dataset(tmp_path, export_spacing=export_spacing)
    table = clinical_table(CONFIG, _masks(), root, size=SHAPE)
    assert list(table.columns) == list(CLINICAL_COLUMNS)
    assert table["patient"].tolist() == ["p1", "p2", "p3"]  # p2 listed, not dropped
    assert set(table["split"]) == {"test"} and set(table["seed"]) == {2}
    assert set(table["prompt"]) == {"p0"} and set(table["model"]) == {"clipseg"}
    p1, p2, p3 = (table.iloc[i] for i in range(3))
    want = biplane_volumes(*(_mask(n) for n in AXES), SPACING, SPACING)  # camus rule
    assert p1.gt_edv_ml == pytest.approx(want.edv_ml, rel=1e-9)
    assert p1.gt_esv_ml == pytest.approx(want.esv_ml, rel=1e-9)
    assert p1.gt_ef_percent == pytest.approx(want.ef_percent, rel=1e-9)
    assert p1.gt_reason == "" and p1.pred_reason == ""
    # the prediction is the same LV shrunk by 0.9 in both directions and in length:
    # volumes scale by 0.9^3, the EF stays
    assert p1.pred_edv_ml == pytest.approx(want.edv_ml * 0.729, rel=0.03)
    assert p1.pred_ef_percent == pytest.approx(want.ef_percent, abs=1.5)
    assert (p1.ref_edv_ml, p1.ref_esv_ml, p1.ref_ef_percent) == (100.0, 40.0, 60.0)
    assert math.isnan(p2.gt_edv_ml) and math.isnan(p2.pred_ef_percent)
    assert p2.gt_reason == p2.pred_reason == "missing 4CH_ES"
    assert p2.ref_ef_percent == 50.0
    assert math.isnan(p3.ref_edv_ml) and p3.ref_ef_percent == 55.0  # the 2023 release: EF
    assert p3.gt_reason == "" and math.isfinite(p3.gt_ef_percent)
    assert math.isnan(p3.pred_edv_ml) and p3.pred_reason.startswith("2CH_ES: empty")
    assert "4CH_ES: empty" in p3.pred_reason


def test_clinical_csv_is_what_the_analysis_reads(tmp_path):
    from echo_vlsm.analysis.clinical import CLINICAL_COLUMNS as READ_COLUMNS
    from echo_vlsm.analysis.clinical import read_clinical
    from echo_vlsm.train.clinical_eval import write_clinical

    assert CLINICAL_COLUMNS == READ_COLUMNS
    table = clinical_table(CONFIG, _masks(), _dataset(tmp_path / "data"), SHAPE)
    path = write_clinical(tmp_path / "run", table)
    back = read_clinical(path)
    assert back["patient"].tolist() == ["p1", "p2", "p3"]
    np.testing.assert_allclose(back["gt_edv_ml"], table["gt_edv_ml"], rtol=1e-12)
    assert clinical_problem(tmp_path / "run") is None


def test_no_reference_values_give_nan_refs(tmp_path):
    table = clinical_table(CONFIG, _masks(), _dataset(tmp_path, patients_csv=False))
    assert table[["ref_edv_ml", "ref_esv_ml", "ref_ef_percent"]].isna().all().all()
    assert table["gt_ef_percent"].notna().sum() == 2


def test_no_spacing_and_unknown_images_are_named(tmp_path):
    root = _dataset(tmp_path, export_spacing=False)
    table = clinical_table(CONFIG, _masks(), root)  # no mask size: no spacing derivable
    assert table.loc[0, "gt_reason"].startswith("no pixel spacing in records.csv for 2CH_ED")
    masks = _masks()
    masks.available.add("p9_2CH_ED")
    with pytest.raises(ValueError, match=r"records\.csv: lists no row for the test images "
                                         r"\['p9_2CH_ED'\]"):
        clinical_table(CONFIG, masks, root)


def test_ground_truth_is_measured_once_per_split(tmp_path, monkeypatch, capsys):
    import echo_vlsm.train.clinical_eval as CE

    calls = []
    real = CE.biplane_volumes
    monkeypatch.setattr(CE, "biplane_volumes",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    root, cache = _dataset(tmp_path / "data"), tmp_path / "cache"
    first = clinical_table(CONFIG, _masks(), root, SHAPE, cache_dir=cache)
    assert len(calls) == 4  # p1 and p3 (p2 lacks an image): ground truth and prediction
    second = clinical_table(CONFIG, _masks(), root, SHAPE, cache_dir=cache)
    assert len(calls) == 6  # the predictions only
    pd.testing.assert_frame_equal(first, second)
    changed = _masks()
    changed.truth["p1_2CH_ED"] = _mask("2CH_ED", 0.95)
    third = clinical_table(CONFIG, changed, root, SHAPE, cache_dir=cache)
    assert len(calls) == 9  # another ground truth of p1: measured again
    assert third.loc[0, "gt_edv_ml"] < first.loc[0, "gt_edv_ml"]
    (cache / CE.GT_CACHE_FILE).write_text("{")
    again = clinical_table(CONFIG, _masks(), root, SHAPE, cache_dir=cache)
    assert len(calls) == 13 and "not readable" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again, first)


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.unlink(), "clinical.csv missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:-7]), "cut short"),
    (lambda p: p.write_text("model,patient\nclipseg,p1\n"), "has not the header"),
    (lambda p: p.write_text(",".join(CLINICAL_COLUMNS) + "\n"), "has no rows"),
], ids=["missing", "truncated", "header", "no-rows"])
def test_clinical_problem_names_what_is_wrong(tmp_path, damage, problem):
    from echo_vlsm.train.clinical_eval import write_clinical

    table = clinical_table(CONFIG, _masks(), _dataset(tmp_path / "data"), SHAPE)
    path = write_clinical(tmp_path, table)
    damage(path)
    assert problem in clinical_problem(tmp_path)


# -- a real run --------------------------------------------------------------------------------
class Counting:
    """An optimisation step that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return train_step(*args, **kwargs)


@pytest.fixture(scope="module")
def finished_run(task_dataset, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    config = TrainConfig(model="clipseg", size="tiny", prompt="p0", strategy="real",
                         encoders="frozen", epochs=2, batch_size=8, device="cpu",
                         real_dir=str(task_dataset), synthetic_dir=str(task_dataset),
                         runs_root=str(root))
    result = fit(config, progress=False)
    return config, result


def _exported_lv(dataset: Path, stem: str) -> np.ndarray:
    return read_raster(dataset / "masks" / "lv" / "test" / f"{stem}.png") > 0


def test_a_run_writes_clinical_csv_from_its_test_split(finished_run, task_dataset):
    from echo_vlsm.analysis.clinical import read_clinical
    from echo_vlsm.data.export import read_patients

    config, result = finished_run
    table = read_clinical(result.run_dir / CLINICAL_FILE)
    records = read_records(task_dataset)
    test = records[records["split"] == "test"]
    assert table["patient"].tolist() == sorted(set(test["patient"]))
    assert set(table["model"]) == {"clipseg"} and set(table["prompt"]) == {"p0"}
    row = table.iloc[0]
    refs = read_patients(task_dataset).set_index("patient").loc[row.patient]
    assert row.ref_ef_percent == pytest.approx(refs.ref_ef_percent)
    # gt_*: the exported LV masks measured with the exported pixel size
    rec = test[test["patient"] == row.patient].set_index(test["view"] + "_" + test["phase"])
    masks = [_exported_lv(task_dataset, rec.loc[n, "stem"]) for n in AXES]
    sp = {v: (rec.loc[f"{v}_ED", "export_spacing_y"], rec.loc[f"{v}_ED", "export_spacing_x"])
          for v in ("2CH", "4CH")}
    want = biplane_volumes(*masks, sp["2CH"], sp["4CH"])
    assert want.reason is None
    assert row.gt_edv_ml == pytest.approx(want.edv_ml, rel=1e-9)
    assert row.gt_ef_percent == pytest.approx(want.ef_percent, rel=1e-9)
    # the prediction: a number, or NaN with its reason
    assert math.isfinite(row.pred_ef_percent) or row.pred_reason
    # clinical.csv is no file the run's record vouches for
    assert CLINICAL_FILE not in result.summary[G.FILES_KEY]


def test_a_finished_run_gets_clinical_csv_back_without_training(finished_run, tmp_path):
    config, result = finished_run
    run_dir = tmp_path / result.run_dir.name
    shutil.copytree(result.run_dir, run_dir)  # copytree keeps the modification times
    config = config.replace(runs_root=str(tmp_path))
    first = (run_dir / CLINICAL_FILE).read_bytes()
    weights = run_dir / G.WEIGHTS_FILE
    before = {n: ((run_dir / n).read_bytes(), (run_dir / n).stat().st_mtime_ns)
              for n in (G.WEIGHTS_FILE, G.METRICS_FILE, G.SUMMARY_FILE, G.HISTORY_FILE)}
    (run_dir / CLINICAL_FILE).unlink()
    assert G.run_problem(run_dir, deep=True) is None  # complete without it

    step, epochs = Counting(), []
    again = fit(config, progress=False, step=step, on_epoch_end=lambda e, r: epochs.append(e))
    assert step.calls == 0 and epochs == []
    assert (run_dir / CLINICAL_FILE).read_bytes() == first  # the same values, bit for bit
    for name, (data, mtime) in before.items():
        assert (run_dir / name).read_bytes() == data, name
        assert (run_dir / name).stat().st_mtime_ns == mtime, name
    assert weights.stat().st_mtime_ns == before[G.WEIGHTS_FILE][1]
    assert not (run_dir / G.STATE_FILE).exists()
    assert G.run_problem(run_dir, deep=True) is None
    assert again.summary == json.loads(before[G.SUMMARY_FILE][0])

    # a damaged clinical.csv is measured again; evaluate_clinical alone gives the same table
    (run_dir / CLINICAL_FILE).write_bytes(first[:-5])
    fit(config, progress=False, step=step)
    assert step.calls == 0 and (run_dir / CLINICAL_FILE).read_bytes() == first
    table = evaluate_clinical(config, write=False, progress=False)
    assert table.to_csv(index=False).encode() == first


def test_every_complete_run_of_a_folder_gets_clinical_csv(finished_run, tmp_path):
    """The clinical step's first act (notebook 09): every complete run under a runs root
    that lacks clinical.csv is measured from its weights; incomplete folders are left alone."""
    from echo_vlsm.train import ensure_runs_clinical

    _, result = finished_run
    run_dir = tmp_path / result.run_dir.name
    shutil.copytree(result.run_dir, run_dir)
    first = (run_dir / CLINICAL_FILE).read_bytes()
    weights = (run_dir / G.WEIGHTS_FILE).stat().st_mtime_ns
    (run_dir / CLINICAL_FILE).unlink()
    (tmp_path / "clipseg_real_trained_p1").mkdir()  # an unfinished run: its job's business
    sdm = tmp_path / "sdm"  # a complete folder that is no run (the SDM's): left alone
    shutil.copytree(run_dir, sdm)
    assert ensure_runs_clinical(tmp_path, progress=False) == [run_dir.name]
    assert (run_dir / CLINICAL_FILE).read_bytes() == first
    assert (run_dir / G.WEIGHTS_FILE).stat().st_mtime_ns == weights
    assert not (tmp_path / "clipseg_real_trained_p1" / CLINICAL_FILE).exists()
    assert not (sdm / CLINICAL_FILE).exists()
    assert ensure_runs_clinical(tmp_path, progress=False) == []  # nothing left to measure
