"""The same training code under torchrun: 2 CPU processes on the gloo backend, one writer."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from echo_vlsm.train import is_complete


@pytest.fixture(scope="module")
def dataset(task_dataset):
    return task_dataset


@pytest.mark.ddp
def test_two_processes_write_one_complete_run(dataset, tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "echo_vlsm.train", "model=clipseg", "size=tiny", "prompt=p2", "epochs=2",
           "batch_size=8", "device=cpu", f"real_dir={dataset}", f"runs_root={runs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs / "clipseg_real_trained_p2"
    assert is_complete(run)
    assert sorted(p.name for p in run.iterdir()) == [
        "clinical.csv", "config.json", "history.csv", "metrics.csv", "model.safetensors",
        "summary.json"]  # one writer: no second copy, no temporary files left behind
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2 and summary["done"]
    assert summary["n_train"] == 48 and summary["batch_size"] == 8
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and history["val_dice"].between(0, 100).all()
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 12 and set(metrics["prompt"]) == {"p2"}
    assert proc.stdout.count("clipseg_real_trained_p2: best val dice") == 2  # both ranks ended
