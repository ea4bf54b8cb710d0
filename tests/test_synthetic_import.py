"""Import of the study's released SDM-CAMUS set (Zenodo 7921055) into the exported layout."""

import numpy as np
import pandas as pd
import pytest
from sdm_data import write_echo_dataset, write_release_tree

from echo_vlsm.data.export import read_records
from echo_vlsm.io import read_png, write_png
from echo_vlsm.sdm.released import ReleasedFormatError, import_released, parse_name


def test_import_released_tree(tmp_path):
    src = write_release_tree(tmp_path / "release")
    real = write_echo_dataset(tmp_path / "real", n_patients=3, size=64)
    out = import_released(src, tmp_path / "camus-synthetic", real_dir=real, size=128,
                          progress=False)
    rec = read_records(out).set_index("stem")
    assert sorted(rec.index) == [
        "patient0001_2CH_ED_s0", "patient0001_2CH_ED_s1", "patient0002_4CH_ES_s2",
        "patient0003_2CH_ED_s4", "patient0099_4CH_ES_s7",
    ]
    assert rec.loc["patient0003_2CH_ED_s4", "split"] == "val"
    assert rec.loc["patient0001_2CH_ED_s1", "split"] == "train"
    assert rec.loc["patient0001_2CH_ED_s1", "source_stem"] == "patient0001_2CH_ED"
    assert (rec["quality"] == "").all()
    assert (rec["source_height"] == 64).all()
    # sex/age from the matching real image; unknown patient stays empty
    real_rec = read_records(real).set_index("stem")
    assert rec.loc["patient0001_2CH_ED_s0", "sex"] == real_rec.loc["patient0001_2CH_ED", "sex"]
    assert rec.loc["patient0002_4CH_ES_s2", "age"] == real_rec.loc["patient0002_4CH_ES", "age"]
    assert rec.loc["patient0099_4CH_ES_s7", "sex"] == ""
    assert pd.isna(rec.loc["patient0099_4CH_ES_s7", "age"])
    # label mapping 0,2 -> 0; 1 -> 1; 3 -> 2; 4 -> 3
    ann = read_png(src / "2CH_ED" / "annotations" / "training" / "patient0001_2CH_ED_training_0.png")
    lbl = read_png(out / "labels" / "train" / "patient0001_2CH_ED_s0.png")
    assert lbl.shape == (128, 128)
    big = np.repeat(np.repeat(ann, 2, 0), 2, 1)
    assert np.array_equal(lbl, np.array([0, 1, 0, 2, 3], np.uint8)[big])
    mask = read_png(out / "masks" / "myo" / "train" / "patient0001_2CH_ED_s0.png")
    assert np.array_equal(mask == 255, big == 3)
    assert read_png(out / "images" / "train" / "patient0001_2CH_ED_s0.png").shape == (128, 128)
    assert not list(out.rglob("*testing*")) and "test" not in set(rec["split"])
    # resumable: a second run keeps the files and rewrites records.csv
    mtime = (out / "images" / "train" / "patient0001_2CH_ED_s0.png").stat().st_mtime_ns
    import_released(src, out, size=128, progress=False)
    assert (out / "images" / "train" / "patient0001_2CH_ED_s0.png").stat().st_mtime_ns == mtime
    assert len(read_records(out)) == 5


def test_unexpected_label_values_are_refused_naming_the_file(tmp_path):
    src = write_release_tree(tmp_path / "release")
    bad = src / "2CH_ED" / "annotations" / "training" / "patient0001_2CH_ED_training_1.png"
    arr = read_png(bad)
    arr[0, 0] = 255
    write_png(bad, arr)
    with pytest.raises(ReleasedFormatError, match=r"patient0001_2CH_ED_training_1\.png.*\[255\]"):
        import_released(src, tmp_path / "out", progress=False)


def test_layout_errors(tmp_path):
    src = write_release_tree(tmp_path / "release")
    (src / "2CH_ED" / "annotations" / "validation" / "patient0003_2CH_ED_validation_4.png").unlink()
    with pytest.raises(ReleasedFormatError, match="missing: the annotation"):
        import_released(src, tmp_path / "out", progress=False)
    src2 = write_release_tree(tmp_path / "release2")
    (src2 / "2CH_ED" / "images" / "holdout").mkdir()
    with pytest.raises(ReleasedFormatError, match="unknown split folder"):
        import_released(src2, tmp_path / "out2", progress=False)
    with pytest.raises(FileNotFoundError, match="Zenodo"):
        import_released(tmp_path / "nowhere", tmp_path / "out3", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReleasedFormatError, match="no released samples"):
        import_released(empty, tmp_path / "out4", progress=False)


def test_parse_name():
    assert parse_name("patient0051_2CH_ED_training_3", "2CH_ED_augmented", "f") == {
        "patient": "patient0051", "view": "2CH", "phase": "ED", "k": 3}
    assert parse_name("patient0007", "4CH_ES", "f")["k"] == 0
    with pytest.raises(ReleasedFormatError, match="patient"):
        parse_name("img_3", "2CH_ED", "x.png")
    with pytest.raises(ReleasedFormatError, match="view and phase"):
        parse_name("patient0001_3", "all_views", "x.png")
