"""Notebook 03 under papermill on copies of the exported phantom: task files of a real and a
synthetic set, token lengths, shape counts; then without a synthetic set, with the VQA backend."""

import json
import shutil

import pytest
from tiny_vqa import write_tiny_vilt

from echo_vlsm.data.export import read_records, write_records

NB = "03_prompt_generation.ipynb"


def _texts(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def _n_figures(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.notebook
def test_notebook_03_real_and_synthetic(run_notebook, exported_dataset, tmp_path):
    real = shutil.copytree(exported_dataset, tmp_path / "real")
    synthetic = shutil.copytree(exported_dataset, tmp_path / "synthetic")
    records = read_records(synthetic)
    records["source_stem"], records["quality"] = records["stem"], ""
    write_records(records, synthetic)

    nb = run_notebook(NB, {"real_dir": str(real), "synthetic_dir": str(synthetic)})
    text = _texts(nb)
    n_real = 3 * len(read_records(real))
    for root in (real, synthetic):
        assert sorted(p.stem for p in (root / "tasks").glob("*.json")) == ["test", "train", "val"]
    real_tasks = [t for p in (real / "tasks").glob("*.json") for t in json.loads(p.read_text())]
    synth_tasks = [
        t for p in (synthetic / "tasks").glob("*.json") for t in json.loads(p.read_text())
    ]
    assert len(real_tasks) == len(synth_tasks) == n_real
    assert all("p7" in t["prompts"] for t in real_tasks)
    assert not any("p7" in t["prompts"] for t in synth_tasks)
    # every phrasing counted: real 1 + 7 x 2 per task, synthetic 1 + 6 x 2
    n_prompts = n_real * 15 + n_real * 13
    assert f"0 of {n_prompts} prompts exceed 77 tokens" in text
    assert (
        "Left ventricular cavity of oval shape in two-chamber view of the heart at end of the "
        "diastole cycle of a seventy-three-year-old male with good image quality." in text
    )
    assert "synthetic: patient" in text and "camus: patient" in text
    assert _n_figures(nb) == 2  # token lengths, shapes


@pytest.mark.notebook
def test_notebook_03_without_synthetic_set_and_vqa(run_notebook, exported_dataset, tmp_path):
    real = shutil.copytree(exported_dataset, tmp_path / "real")
    labels = ["circle", "oval", "triangle", "square", "rectangle"]
    model = write_tiny_vilt(tmp_path / "tiny-vilt", labels)
    missing = tmp_path / "no-synthetic"
    nb = run_notebook(NB, {"real_dir": str(real), "synthetic_dir": str(missing),
                           "shape_backend": "vqa", "vqa_model": str(model)})
    text = _texts(nb)
    assert f"No synthetic dataset at {missing}" in text and "skipped" in text
    assert not missing.exists()
    tasks = json.loads((real / "tasks" / "train.json").read_text())
    assert {t["attributes"]["shape"] for t in tasks} <= set(labels)
    assert len(list((real / ".cache" / "vqa").rglob("*.json"))) == 3 * len(read_records(real))
