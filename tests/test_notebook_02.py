"""Notebook 02 under papermill with tiny parameters: train, synthesize, compare, time."""

import pytest
from sdm_data import write_echo_dataset, write_release_tree

from echo_vlsm.data.export import read_records


@pytest.mark.notebook
def test_notebook_02_trains_synthesizes_and_reports(run_notebook, tmp_path, monkeypatch):
    # one BLAS/OpenMP thread in the kernel (as `make test`): tiny convs on a busy machine
    # otherwise wait on thread barriers
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    real = write_echo_dataset(tmp_path / "echo", n_patients=3, size=64)
    out = tmp_path / "echo-synthetic"
    nb = run_notebook("02_sdm_synthesis.ipynb", {
        "real_dir": str(real), "out_dir": str(out), "sdm_dir": str(tmp_path / "sdm"),
        "size": "tiny", "train_steps": 3, "sampling_steps": 2, "n_per_map": 2, "max_maps": 2,
        "guidance_scale": 1.5, "timing_samplers": ["ddim", "dpm++"],
    })
    rec = read_records(out)
    assert len(rec) == 4 and rec["source_stem"].nunique() == 2
    assert (tmp_path / "sdm" / "model.safetensors").is_file()
    text = "\n".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "4 synthetic images" in text
    assert "lv_darker_than_myo" in text and "images_per_s" in text
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert figures >= 4  # perturbations, loss, real vs synthetic, examples


@pytest.mark.notebook
def test_notebook_02_imports_the_released_set(run_notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    real = write_echo_dataset(tmp_path / "echo", n_patients=3, size=64)
    src = write_release_tree(tmp_path / "release")
    out = tmp_path / "camus-synthetic"
    nb = run_notebook("02_sdm_synthesis.ipynb", {
        "real_dir": str(real), "out_dir": str(out), "sdm_dir": str(tmp_path / "sdm"),
        "released_dir": str(src),
    })
    assert len(read_records(out)) == 5
    assert not (tmp_path / "sdm").exists()  # nothing trained
    assert any("lv_darker_than_myo" in str(o.get("data", {}).get("text/plain", ""))
               for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.notebook
def test_notebook_02_fast_dev_run(run_notebook, tmp_path, monkeypatch):
    """fast_dev_run=2: the SDM trains 2 of its 200 steps and synthesizes 2 images per split."""
    import json

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    real = write_echo_dataset(tmp_path / "echo", n_patients=5, size=64)  # train, val, test
    out = tmp_path / "echo-synthetic"
    run_notebook("02_sdm_synthesis.ipynb", {
        "real_dir": str(real), "out_dir": str(out), "sdm_dir": str(tmp_path / "sdm"),
        "size": "tiny", "train_steps": 200, "sampling_steps": 2, "fast_dev_run": 2,
        "timing_samplers": ["ddim"],
    })
    assert json.loads((tmp_path / "sdm" / "summary.json").read_text())["steps"] == 2
    assert read_records(out).groupby("split").size().to_dict() == {"train": 2, "val": 2}
