"""Export of CAMUS records to square PNGs, masks and records.csv; skipping; records round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from camus_trees import make_label, spacing_of, write_2019, write_2023, write_image

from echo_vlsm.data.camus import CamusFormatError, read_camus
from echo_vlsm.data.export import (
    MANIFEST_FILE,
    RECORD_COLUMNS,
    export_dataset,
    read_records,
    resize_image,
    resize_label,
    write_records,
)
from echo_vlsm.dataset import image_name, image_path, label_name, label_path, mask_name, mask_path
from echo_vlsm.io import read_png
from echo_vlsm.structures import LABELS, STRUCTURES


@pytest.fixture
def tree23(tmp_path):
    return write_2023(tmp_path / "camus23", train=(1, 2), val=(3,), test=(4,))


def _mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")}


def test_export_layout_counts_sizes_and_values(tree23, tmp_path):
    records = read_camus(tree23)
    out = export_dataset(records, tmp_path / "ds", size=64, workers=0)
    assert out == tmp_path / "ds"
    counts = {"train": 8, "val": 4, "test": 4}
    for split, n in counts.items():
        assert len(list(out.glob(image_name(split, "*")))) == n
        assert len(list(out.glob(label_name(split, "*")))) == n
        for s in STRUCTURES:
            assert len(list(out.glob(mask_name(s, split, "*")))) == n
    assert len(list(out.rglob("*.png"))) == 16 * 5
    for rec in records:
        image = read_png(image_path(out, rec.split, rec.stem))
        label = read_png(label_path(out, rec.split, rec.stem))
        assert image.shape == label.shape == (64, 64) and image.dtype == np.uint8
        assert set(np.unique(label)) == {0, 1, 2, 3}  # nearest keeps the label set
        src_image, src_label = rec.load()
        np.testing.assert_array_equal(image, resize_image(src_image, 64))
        for s in STRUCTURES:
            mask = read_png(mask_path(out, s, rec.split, rec.stem))
            assert set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask == 255, label == LABELS[s])
        # the label bands of the source (rows 10-19 LV, ...) land at the scaled rows
        assert label[int(15 * 64 / 40), 40] == 1 and label[int(35 * 64 / 40), 40] == 3

    table = read_records(out)
    # the exported pixel size follows the contract's columns (echo_vlsm.data.export)
    assert list(table.columns) == list(RECORD_COLUMNS) + ["export_spacing_x", "export_spacing_y"]
    assert table["export_spacing_x"].dtype == "float64"  # read back as numbers
    assert len(table) == 16
    row = table.set_index("stem").loc["patient0003_4CH_ES"]
    assert (row.patient, row.view, row.phase, row.split) == ("patient0003", "4CH", "ES", "val")
    assert (row.sex, row.age, row.quality) == ("F", 43, "Good")
    assert (row.source_height, row.source_width) == (40, 30)
    assert (row.spacing_y, row.spacing_x) == pytest.approx(spacing_of(3))


def test_export_2019_keeps_repeated_stems_apart(tmp_path):
    root = write_2019(tmp_path / "c19", training=(1, 51), testing=(1,))
    out = export_dataset(read_camus(root), tmp_path / "ds", size=32, workers=0)
    table = read_records(out)
    assert len(table) == 12
    both = table[table.stem == "patient0001_2CH_ED"]
    assert sorted(both.split) == ["test", "val"]
    val = read_png(image_path(out, "val", "patient0001_2CH_ED"))
    test = read_png(image_path(out, "test", "patient0001_2CH_ED"))
    assert not np.array_equal(val, test)


def test_resize_area_when_shrinking_linear_when_growing():
    checker = (np.indices((40, 40)).sum(axis=0) % 2 * 200).astype(np.uint8)
    assert set(np.unique(resize_image(checker, 20))) == {100}  # area averages 2x2 blocks
    ramp = np.tile(np.arange(0, 100, 10, dtype=np.uint8), (10, 1))
    grown = resize_image(ramp, 20)
    assert grown.shape == (20, 20)
    assert len(np.unique(grown[0])) > 10  # bilinear makes in-between values
    assert grown[0].min() == 0 and grown[0].max() == 90
    # mixed: shrink rows, grow columns
    assert resize_image(np.full((50, 10), 77, np.uint8), 25).tolist() == [[77] * 25] * 25
    label = make_label()
    assert set(np.unique(resize_label(label, 13))) == {0, 1, 2, 3}
    assert resize_label(label, 200).dtype == np.uint8


def test_second_run_skips_and_changed_sources_are_redone(tree23, tmp_path):
    records = read_camus(tree23)
    out = export_dataset(records, tmp_path / "ds", size=32, workers=0)
    first = _mtimes(out)
    csv_text = (out / "records.csv").read_text()
    export_dataset(records, out, size=32, workers=0)
    assert _mtimes(out) == first  # nothing rewritten
    assert (out / "records.csv").read_text() == csv_text

    # change one source label: only that record's five files are written again
    label = make_label()
    label[:, :] = 0
    label[5:15, 5:25] = 2
    write_image(tree23 / "database_nifti/patient0002/patient0002_4CH_ED_gt.nii.gz", label,
                spacing_of(2))
    export_dataset(read_camus(tree23), out, size=32, workers=0)
    now = _mtimes(out)
    changed = sorted(p.relative_to(out).as_posix() for p in now if now[p] != first[p])
    assert changed == sorted(  # the layout spelled out: the contract of a dataset folder
        ["images/train/patient0002_4CH_ED.png", "labels/train/patient0002_4CH_ED.png"]
        + [f"masks/{s}/train/patient0002_4CH_ED.png" for s in STRUCTURES]
    )
    assert set(np.unique(read_png(mask_path(out, "lv", "train", "patient0002_4CH_ED")))) == {0}

    # another size redoes everything
    export_dataset(records, out, size=48, workers=0)
    assert read_png(image_path(out, "test", "patient0004_2CH_ED")).shape == (48, 48)
    assert all(now[p] != t for p, t in _mtimes(out).items())


def test_outputs_of_dropped_records_are_removed(tree23, tmp_path):
    records = read_camus(tree23)
    out = export_dataset(records, tmp_path / "ds", size=32, workers=0)
    unrelated = out / "images" / "notes.png"
    unrelated.write_bytes(b"kept")
    keep = [r for r in records if r.patient != "patient0004"]
    export_dataset(keep, out, size=32, workers=0)
    assert not list(out.rglob("patient0004*"))
    assert unrelated.exists()
    assert set(read_records(out).patient) == {"patient0001", "patient0002", "patient0003"}
    assert len(list(out.rglob("*.png"))) == 12 * 5 + 1


def test_a_failed_export_keeps_finished_work_and_resumes(tree23, tmp_path):
    bad = make_label()
    bad[0, 0] = 8
    bad_path = tree23 / "database_nifti/patient0003/patient0003_2CH_ED_gt.nii.gz"
    write_image(bad_path, bad, spacing_of(3))
    records = read_camus(tree23)
    out = tmp_path / "ds"
    with pytest.raises(CamusFormatError, match="patient0003_2CH_ED_gt.nii.gz"):
        export_dataset(records, out, size=32, workers=0)
    assert not (out / "records.csv").exists()  # an incomplete dataset has no records.csv
    manifest = json.loads((out / MANIFEST_FILE).read_text())["entries"]
    assert len(manifest) == 8  # patients 1 and 2 finished before patient 3 failed
    before = _mtimes(out)
    write_image(bad_path, make_label(), spacing_of(3))
    export_dataset(read_camus(tree23), out, size=32, workers=0)
    after = _mtimes(out)
    assert all(after[p] == t for p, t in before.items())  # finished files not redone
    assert len(after) == 16 * 5 and len(read_records(out)) == 16


def test_process_pool_matches_serial_and_reports_errors(tree23, tmp_path):
    records = read_camus(tree23)
    a = export_dataset(records, tmp_path / "serial", size=40, workers=0)
    b = export_dataset(records, tmp_path / "pool", size=40, workers=2)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    for rel in files_a:
        np.testing.assert_array_equal(read_png(a / rel), read_png(b / rel))
    assert (a / "records.csv").read_text() == (b / "records.csv").read_text()

    bad = make_label()
    bad[1, 1] = 4
    write_image(tree23 / "database_nifti/patient0001/patient0001_4CH_ES_gt.nii.gz", bad,
                spacing_of(1))
    with pytest.raises(CamusFormatError, match=r"patient0001_4CH_ES_gt\.nii\.gz.*outside 0\.\.3"):
        export_dataset(read_camus(tree23), tmp_path / "pool2", size=40, workers=2)


def test_bad_arguments(tree23, tmp_path):
    records = read_camus(tree23)
    with pytest.raises(ValueError, match="size"):
        export_dataset(records, tmp_path / "x", size=0)
    with pytest.raises(ValueError, match="twice"):
        export_dataset(records[:2] + records[:1], tmp_path / "x", size=8, workers=0)


def test_records_round_trip_with_unknowns(tmp_path):
    rows = [
        {"stem": "patient0001_2CH_ED", "patient": "patient0001", "view": "2CH", "phase": "ED",
         "split": "train", "sex": "M", "age": 61, "quality": "Poor", "source_height": 700,
         "source_width": 500, "spacing_y": 0.154, "spacing_x": 0.308},
        {"stem": "patient0001_2CH_ED_s3", "patient": "patient0001", "view": "2CH",
         "phase": "ED", "split": "train", "sex": "M", "age": None, "quality": None,
         "source_height": 512, "source_width": 512, "spacing_y": None, "spacing_x": None,
         "source_stem": "patient0001_2CH_ED"},
    ]
    path = write_records(rows, tmp_path)
    assert path == tmp_path / "records.csv"
    table = read_records(tmp_path)
    assert list(table.columns) == list(RECORD_COLUMNS) + ["source_stem"]
    assert str(table.age.dtype) == "Int64" and table.age.iloc[0] == 61
    assert pd.isna(table.age.iloc[1])
    assert table.quality.tolist() == ["Poor", ""]
    assert table.sex.tolist() == ["M", "M"]
    assert table.source_stem.tolist() == ["", "patient0001_2CH_ED"]
    assert table.spacing_y.iloc[0] == pytest.approx(0.154) and np.isnan(table.spacing_x.iloc[1])
    assert table.source_height.tolist() == [700, 512]
    # a DataFrame round trips to the same table
    write_records(table, tmp_path / "again")
    pd.testing.assert_frame_equal(read_records(tmp_path / "again"), table)
    assert read_records(tmp_path / "again" / "records.csv").shape == (2, 13)


def test_records_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"records\.csv.*export"):
        read_records(tmp_path)
    (tmp_path / "records.csv").write_text("stem,patient,view\nx,y,z\n")
    with pytest.raises(ValueError, match=r"records\.csv: lacks the columns \['phase'"):
        read_records(tmp_path)
    header = ",".join(RECORD_COLUMNS)
    (tmp_path / "records.csv").write_text(header + "\na,p,2CH,ED,train,M,sixty,Good,1,1,1,1\n")
    with pytest.raises(ValueError, match=r"records\.csv: column 'age' row 1 holds 'sixty'"):
        read_records(tmp_path)
    with pytest.raises(ValueError, match="lack the columns"):
        write_records([{"stem": "a"}], tmp_path / "w")


def test_patients_table_and_exported_spacing(tmp_path):
    from echo_vlsm.data.export import PATIENT_COLUMNS, PATIENTS_FILE, read_patients

    root19 = write_2019(tmp_path / "c19", training=(49, 51), testing=(1,))
    out = export_dataset(read_camus(root19), tmp_path / "o19", size=64, workers=0)
    text = (out / PATIENTS_FILE).read_text().splitlines()
    assert text[0] == ",".join(PATIENT_COLUMNS)
    patients = read_patients(out)
    assert sorted(zip(patients["patient"], patients["split"], strict=True)) == [
        ("patient0001", "test"), ("patient0049", "val"), ("patient0051", "train")]
    assert (patients["release"] == "2019").all()
    assert patients[["ref_edv_ml", "ref_esv_ml", "ref_ef_percent"]].to_numpy().tolist() == [
        [100.0, 50.0, 50.0]] * 3
    records = read_records(out)
    for _, row in records.iterrows():  # 40 x 30 source pixels onto 64 x 64
        assert row["export_spacing_y"] == pytest.approx(row["spacing_y"] * 40 / 64)
        assert row["export_spacing_x"] == pytest.approx(row["spacing_x"] * 30 / 64)

    root23 = write_2023(tmp_path / "c23", train=(1,), val=(2,), test=(3,))
    p23 = read_patients(export_dataset(read_camus(root23), tmp_path / "o23", size=32, workers=0))
    assert p23["ref_edv_ml"].isna().all() and p23["ref_esv_ml"].isna().all()
    assert (p23["ref_ef_percent"] == 50.0).all()
    assert ",," in (tmp_path / "o23" / PATIENTS_FILE).read_text()  # unknown: empty fields

    (out / PATIENTS_FILE).write_text("patient,split\np,train\n")
    with pytest.raises(ValueError, match=r"patients.csv: lacks the columns"):
        read_patients(out)


def _half_ellipse_label(shape, spacing, long_mm, half_mm, tilt):
    from echo_vlsm.clinical.shapes import half_ellipse_mask

    label = np.zeros(shape, np.uint8)
    label[half_ellipse_mask(shape, spacing, long_mm, half_mm, tilt_deg=tilt)] = 1
    return label


def test_volumes_of_exported_masks_equal_the_native_ones(tmp_path):
    """A CAMUS-layout stand-in with LV label maps of CAMUS's native size and spacing
    (843 x 449 px of 0.154 x 0.308 mm): exported at 512 x 512, the masks measured with
    ``export_spacing_*`` give the native volumes within 3 %."""
    from echo_vlsm.clinical import biplane_volumes

    root = write_2019(tmp_path / "c19", training=(51,), testing=())
    folder = root / "training" / "patient0051"
    shape, spacing = (843, 449), (0.154, 0.308)
    axes = {"ED": (88.0, 25.0, 27.0), "ES": (76.0, 18.0, 20.0)}
    for view, tilt, half in (("2CH", 12.0, 1), ("4CH", -16.0, 2)):
        for phase, dims in axes.items():
            stem = f"patient0051_{view}_{phase}"
            write_image(folder / f"{stem}.mhd", np.zeros(shape, np.uint8), spacing)
            label = _half_ellipse_label(shape, spacing, dims[0], dims[half], tilt)
            write_image(folder / f"{stem}_gt.mhd", label, spacing)
    records = read_camus(root)
    out = export_dataset(records, tmp_path / "out", size=512, workers=0)
    table = read_records(out).set_index("stem")

    def masks(source):
        got = {}
        for rec in records:
            if source == "native":
                got[rec.stem] = (rec.load()[1] == 1, rec.spacing)
            else:
                row = table.loc[rec.stem]
                got[rec.stem] = (read_png(mask_path(out, "lv", rec.split, rec.stem)) > 0,
                                 (float(row["export_spacing_y"]), float(row["export_spacing_x"])))
        return [got[f"patient0051_{v}_{p}"] for v in ("2CH", "4CH") for p in ("ED", "ES")]

    for rule in ("camus", "textbook"):
        results = []
        for source in ("native", "exported"):
            (e2, s2), (x2, _), (e4, s4), (x4, _) = masks(source)
            results.append(biplane_volumes(e2, x2, e4, x4, s2, s4, disc_height=rule))
        native, exported = results
        assert native.reason is None and exported.reason is None
        assert exported.edv_ml == pytest.approx(native.edv_ml, rel=0.03)
        assert exported.esv_ml == pytest.approx(native.esv_ml, rel=0.03)
        assert abs(exported.ef_percent - native.ef_percent) < 1.5
