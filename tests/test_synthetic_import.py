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
    ann_dir = src / "2CH_ED" / "annotations" / "training"
    ann = read_png(ann_dir / "patient0001_2CH_ED_training_0.png")
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


def _rows_of(root, stems_splits):
    """records.csv rows for (patient number, split, sex, age): all four view/phase images."""
    from echo_vlsm.dataset import write_records
    rows = []
    for p, split, sex, age in stems_splits:
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                rows.append({"stem": f"patient{p:04d}_{view}_{phase}", "patient": f"patient{p:04d}",
                             "view": view, "phase": phase, "split": split, "sex": sex, "age": age,
                             "quality": "Good", "source_height": 64, "source_width": 64,
                             "spacing_y": 0.3, "spacing_x": 0.3})
    write_records(rows, root)
    return root


def test_facts_joined_by_split_and_stem(tmp_path):
    """The 2019 release repeats stems between validation and test (testing/ starts at 0001
    again): a validation sample takes the validation patient's sex and age."""
    src = write_release_tree(tmp_path / "release")  # patient0003 in validation, 0001 training
    real = _rows_of(tmp_path / "real", [(1, "train", "F", 41), (3, "val", "M", 30),
                                        (3, "test", "F", 80), (2, "val", "M", 50),
                                        (2, "test", "F", 60)])
    out = import_released(src, tmp_path / "out", real_dir=real, size=64, progress=False)
    rec = read_records(out).set_index("stem")
    assert (rec.loc["patient0003_2CH_ED_s4", "sex"], rec.loc["patient0003_2CH_ED_s4", "age"]) \
        == ("M", 30)
    assert rec.loc["patient0001_2CH_ED_s0", "age"] == 41
    # a training sample whose stem is in val and test only: ambiguous, so left empty
    assert rec.loc["patient0002_4CH_ES_s2", "sex"] == ""


def test_camus_coded_annotation_is_told_apart(tmp_path):
    """An annotation in CAMUS's 0..3 coding is read as such (not myocardium -> background,
    LA -> myocardium); its 5-class map is rebuilt from the image's sector."""
    from echo_vlsm.sdm.labels import sector_mask, to_sdm_map
    src = write_release_tree(tmp_path / "release")
    name = "2CH_ED/{}/training/patient0001_2CH_ED_training_1.png"
    image = read_png(src / name.format("images"))
    sdm = read_png(src / name.format("annotations"))
    camus = np.array([0, 1, 0, 2, 3], np.uint8)[sdm]
    write_png(src / name.format("annotations"), camus)
    out = import_released(src, tmp_path / "out", size=64, progress=False)
    assert np.array_equal(read_png(out / "labels/train/patient0001_2CH_ED_s1.png"), camus)
    assert np.array_equal(read_png(out / "sdm_maps/train/patient0001_2CH_ED_s1.png"),
                          to_sdm_map(camus, sector_mask(image)))
    # no 4; class 2 covers 56 % of the labels, which cover 80 % of the sector: neither coding
    labelled = sector_mask(image)
    labelled[52:] = False
    where = np.flatnonzero(labelled)
    values = np.full(where.size, 3, np.uint8)
    values[: int(0.56 * where.size)] = 2
    values[int(0.56 * where.size): int(0.96 * where.size)] = 1
    ambiguous = np.zeros(image.shape, np.uint8)
    ambiguous.flat[where] = values
    write_png(src / name.format("annotations"), ambiguous)
    with pytest.raises(ReleasedFormatError,
                       match=r"patient0001_2CH_ED_training_1\.png.*label "
                             r"coding ambiguous.*56%.*80% of the image's sector"):
        import_released(src, tmp_path / "out2", size=64, progress=False)
    assert not (tmp_path / "out2" / "records.csv").exists()


def test_import_n_per_split(tmp_path):
    src = write_release_tree(tmp_path / "release")
    out = import_released(src, tmp_path / "out", size=64, max_per_split=1, progress=False)
    assert read_records(out).groupby("split").size().to_dict() == {"train": 1, "val": 1}
    with pytest.raises(ValueError, match="max_per_split must be >= 1"):
        import_released(src, tmp_path / "out2", max_per_split=0, progress=False)
