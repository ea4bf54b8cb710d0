"""Notebook 04 under papermill with tiny parameters: a complete run folder and its figures."""

import json

import pytest


@pytest.fixture(scope="module")
def dataset(task_dataset):
    return task_dataset


@pytest.mark.notebook
def test_notebook_04_trains_and_leaves_a_complete_run(run_notebook, dataset, tmp_path):
    runs = tmp_path / "runs"
    nb = run_notebook("04_train_vlsm.ipynb", {
        "model": "clipseg", "size": "tiny", "prompt": "p3", "strategy": "real",
        "encoders": "frozen", "epochs": 2, "batch_size": 8, "real_dir": str(dataset),
        "synthetic_dir": str(dataset), "runs_root": str(runs), "device": "cpu"})
    run = runs / "clipseg_real_frozen_p3"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["done"] is True and summary["epochs_run"] == 2
    assert (run / "metrics.csv").is_file() and (run / "model.safetensors").is_file()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # learning curves and predictions
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                   for o in outputs)
    assert "clipseg_real_frozen_p3" in text and "best_val_dice" in text
