"""Notebook 07 under papermill on two demo-size runs trained here: the static version."""

from __future__ import annotations

import pytest
from tiny_runs import train_tiny_run


@pytest.fixture(scope="module")
def runs(task_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train_tiny_run(task_dataset, root, prompt="p1", strategy="real", epochs=2)
    train_tiny_run(task_dataset, root, prompt="p1", strategy="synthetic", epochs=1)
    train_tiny_run(task_dataset, root, prompt="p1", strategy="synth-pt-real-ft", epochs=1)
    return root


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _text(outputs):
    return "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                   for o in outputs)


@pytest.mark.notebook
def test_notebook_07_static_version(run_notebook, task_dataset, runs):
    nb = run_notebook("07_explore.ipynb", {
        "runs_root": str(runs), "real_dir": str(task_dataset), "run": "clipseg_real_frozen_p1",
        "structure": "myo", "prompt": "p1", "compare_prompt": "p0", "n_disagree": 2,
        "device": "cpu", "interactive": False})
    outputs = _outputs(nb)
    text = _text(outputs)
    # run B defaults to the counterpart of A: the same cell under synth-pt-real-ft
    assert "run A: clipseg_real_frozen_p1 | run B: clipseg_synth-pt-real-ft_frozen_p1" in text
    assert "prompt 'Myocardium of the heart.', dice" in text
    assert "commit" in text and "torch" in text  # the environment record
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 + 1 + 2  # one image, side by side, two disagreeing images
    assert "agreement" in text


@pytest.mark.notebook
def test_notebook_07_builds_the_explorer_and_free_text(run_notebook, task_dataset, runs):
    nb = run_notebook("07_explore.ipynb", {
        "runs_root": str(runs), "real_dir": str(task_dataset), "structure": "la",
        "prompt": "Left atrium of the heart.", "compare_prompt": None, "n_disagree": 1,
        "device": "cpu", "interactive": True})
    outputs = _outputs(nb)
    widgets = [o for o in outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 1
    assert "prompt 'Left atrium of the heart.'" in _text(outputs)
