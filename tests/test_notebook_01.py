"""Notebook 01 runs headless on a tiny phantom and leaves the exported dataset behind."""

from __future__ import annotations

import pytest

from echo_vlsm.dataset import image_path, label_name, mask_path, read_records
from echo_vlsm.io import read_png
from echo_vlsm.structures import STRUCTURES


@pytest.mark.notebook
@pytest.mark.parametrize("layout", ["2023", "2019"])
def test_notebook_01_phantom(run_notebook, tmp_path, layout):
    raw, out = tmp_path / "raw", tmp_path / "dataset"
    nb = run_notebook(
        "01_data_preparation.ipynb",
        {"source": "phantom", "n_patients": 3, "seed": 0, "layout": layout,
         "raw_dir": str(raw), "out_dir": str(out), "size": 64, "workers": 0},
    )
    assert (raw / "phantom.json").is_file()
    table = read_records(out)
    assert len(table) == 3 * 4
    assert sorted(table["split"].value_counts().items()) == [("test", 4), ("train", 4), ("val", 4)]
    assert set(table["view"]) == {"2CH", "4CH"} and set(table["phase"]) == {"ED", "ES"}
    assert set(table["quality"]) <= {"Good", "Medium", "Poor"}
    for row in table.itertuples():
        image = read_png(image_path(out, row.split, row.stem))
        assert image.shape == (64, 64)
        for s in STRUCTURES:
            assert mask_path(out, s, row.split, row.stem).is_file()
    assert len(list(out.glob(label_name("*", "*")))) == 12
    # figures were drawn and the last cell says where things went
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 3
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert str(out) in last and str(raw) in last


@pytest.mark.notebook
def test_notebook_01_reads_a_camus_folder(run_notebook, tmp_path, phantom_root):
    """``source`` pointing at an existing CAMUS-layout folder: read, not written."""
    out = tmp_path / "dataset"
    run_notebook(
        "01_data_preparation.ipynb",
        {"source": str(phantom_root), "raw_dir": str(tmp_path / "unused"),
         "out_dir": str(out), "size": 32, "workers": 0},
    )
    assert not (tmp_path / "unused").exists()
    assert len(read_records(out)) == 6 * 4
