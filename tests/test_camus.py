"""The CAMUS reader on tiny trees of both releases, including every kind of bad input."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import SimpleITK as sitk
from camus_trees import (
    make_image,
    make_label,
    spacing_of,
    write_2019,
    write_2023,
    write_image,
)

from echo_vlsm.data import headers
from echo_vlsm.data.camus import (
    CamusFormatError,
    detect_release,
    normalize_patient,
    parse_cfg,
    read_camus,
    read_header,
    validate,
)


@pytest.fixture
def tree23(tmp_path):
    return write_2023(tmp_path / "camus23", train=(1, 2), val=(3,), test=(4,))


@pytest.fixture
def tree19(tmp_path):
    return write_2019(tmp_path / "camus19", training=(1, 50, 51), testing=(1,))


def _pdir(root, n, group="database_nifti"):
    return root / group / f"patient{n:04d}"


# --------------------------------------------------------------------------- reading


def test_read_2023_records_metadata_and_pixels(tree23):
    records = read_camus(tree23)
    assert len(records) == 4 * 2 * 2
    keys = [(r.patient, r.view, r.phase) for r in records]
    assert keys == sorted(keys)
    assert {r.release for r in records} == {"2023"}
    assert {r.patient: r.split for r in records} == {
        "patient0001": "train", "patient0002": "train", "patient0003": "val",
        "patient0004": "test",
    }
    assert not any("sequence" in r.image_path.name for r in records)
    rec = next(r for r in records if r.stem == "patient0003_4CH_ES")
    assert rec.image_path.name == "patient0003_4CH_ES.nii.gz"
    assert rec.label_path.name == "patient0003_4CH_ES_gt.nii.gz"
    assert rec.spacing == pytest.approx(spacing_of(3))  # (row, col), not SimpleITK's (x, y)
    assert (rec.sex, rec.age, rec.quality) == ("F", 43, "Good")
    image, label = rec.load()
    assert image.dtype == np.uint8 and label.dtype == np.uint8
    assert image.shape == label.shape == (40, 30)
    np.testing.assert_array_equal(image, make_image(3, "4CH", "ES"))
    np.testing.assert_array_equal(label, make_label())
    assert validate(tree23) == []


def test_read_2019_study_split_and_repeated_test_numbers(tree19):
    records = read_camus(tree19)
    assert len(records) == 4 * 4
    assert detect_release(tree19) == "2019"
    splits = {(r.image_path.parent.parent.name, r.patient): r.split for r in records}
    assert splits == {
        ("training", "patient0001"): "val",
        ("training", "patient0050"): "val",
        ("training", "patient0051"): "train",
        ("testing", "patient0001"): "test",
    }
    assert [r.stem for r in records[:2]] == ["patient0001_2CH_ED"] * 2  # val before test
    assert [r.split for r in records[:2]] == ["val", "test"]
    rec = next(r for r in records if r.stem == "patient0051_2CH_ES")
    assert rec.image_path.suffix == ".mhd" and rec.release == "2019"
    assert rec.spacing == pytest.approx(spacing_of(51))
    assert (rec.sex, rec.age, rec.quality) == ("F", 91, "Good")
    image, label = rec.load()
    np.testing.assert_array_equal(image, make_image(51, "2CH", "ES"))
    np.testing.assert_array_equal(label, make_label())
    test_rec = next(r for r in records if r.split == "test" and r.stem == "patient0001_4CH_ED")
    np.testing.assert_array_equal(test_rec.load()[0], make_image(21, "4CH", "ED"))
    assert validate(tree19) == []


@pytest.mark.parametrize("release", ["2019", "2023-nii"])
def test_three_d_single_slice_files_are_squeezed(tmp_path, release):
    if release == "2019":
        root = write_2019(tmp_path / "t", training=(60,), testing=(), three_d=True)
    else:
        root = write_2023(tmp_path / "t", train=(5,), val=(), test=(), ext=".nii", three_d=True)
    records = read_camus(root)
    assert len(records) == 4
    assert records[0].image_path.suffix in (".mhd", ".nii")
    image, label = records[0].load()
    assert image.shape == label.shape == (40, 30)
    n = 60 if release == "2019" else 5
    assert records[0].spacing == pytest.approx(spacing_of(n))
    np.testing.assert_array_equal(image, make_image(n, "2CH", "ED"))


def test_wider_integer_images_in_range_are_accepted(tree23):
    folder = _pdir(tree23, 2)
    arr = make_image(2, "2CH", "ED").astype(np.uint16)
    write_image(folder / "patient0002_2CH_ED.nii.gz", arr, spacing_of(2))
    rec = next(r for r in read_camus(tree23) if r.stem == "patient0002_2CH_ED")
    image, _ = rec.load()
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, arr)


def test_cfg_tolerates_blank_lines_spaces_and_lower_case(tree23):
    cfg = _pdir(tree23, 1) / "Info_2CH.cfg"
    cfg.write_text("\r\n  ED :  1 \r\n\r\n   Sex:f\r\nAge:   57  \r\n\nImageQuality:   medium \r\n")
    assert parse_cfg(cfg) == {"ED": "1", "Sex": "f", "Age": "57", "ImageQuality": "medium"}
    rec = next(r for r in read_camus(tree23) if r.stem == "patient0001_2CH_ED")
    assert (rec.sex, rec.age, rec.quality) == ("F", 57, "Medium")


def _set_header_size(header, value: str) -> None:
    text = header.read_text()
    header.write_text(text.replace("ElementDataFile", f"HeaderSize = {value}\nElementDataFile"))


def test_2019_header_size_is_checked(tree19):
    header = _mhd(tree19, 51, "patient0051_4CH_ED.mhd")
    raw = header.with_suffix(".raw")
    pixels = raw.read_bytes()
    raw.write_bytes(b"H" * 16 + pixels)  # 16 bytes before the pixels
    _set_header_size(header, "16")
    rec = next(r for r in read_camus(tree19) if r.stem == "patient0051_4CH_ED")
    np.testing.assert_array_equal(rec.load()[0], make_image(51, "4CH", "ED"))
    header.write_text(header.read_text().replace("HeaderSize = 16", "HeaderSize = -1"))
    assert read_header(header)[0] == (40, 30)  # -1: the pixels end the file
    raw.write_bytes(b"H" * 15 + pixels[:-1])
    header.write_text(header.read_text().replace("HeaderSize = -1", "HeaderSize = 16"))
    with pytest.raises(CamusFormatError, match=r"patient0051_4CH_ED\.raw: truncated"):
        read_camus(tree19)
    for bad in ("sixteen", "1.5", "-2"):
        header.write_text(header.read_text().replace("HeaderSize = 16", f"HeaderSize = {bad}"))
        with pytest.raises(CamusFormatError) as info:
            read_camus(tree19)
        assert info.value.path == header and f"HeaderSize is '{bad}'" in str(info.value)
        assert any("patient0051_4CH_ED.mhd: HeaderSize" in p for p in validate(tree19))
        header.write_text(header.read_text().replace(f"HeaderSize = {bad}", "HeaderSize = 16"))


# --------------------------------------------------------------------------- splits


def test_user_splits_choose_and_drop_patients(tree23):
    records = read_camus(tree23, splits={"train": [1, "patient0002"], "test": ["0004"]})
    assert {r.patient: r.split for r in records} == {
        "patient0001": "train", "patient0002": "train", "patient0004": "test",
    }
    assert len(records) == 12


def test_user_splits_work_without_split_files(tree23):
    for f in (tree23 / "database_split").iterdir():
        f.unlink()
    with pytest.raises(CamusFormatError, match="subgroup_training.txt"):
        read_camus(tree23)
    records = read_camus(tree23, splits={"val": [3]})
    assert {r.patient for r in records} == {"patient0003"}


def test_user_splits_in_2019_need_a_group_for_repeated_numbers(tree19):
    with pytest.raises(ValueError, match="testing/patient0001"):
        read_camus(tree19, splits={"test": ["patient0001"]})
    records = read_camus(tree19, splits={"test": ["testing/patient0001"], "train": [50, 51]})
    assert {(r.image_path.parent.parent.name, r.patient, r.split) for r in records} == {
        ("testing", "patient0001", "test"),
        ("training", "patient0050", "train"),
        ("training", "patient0051", "train"),
    }


@pytest.mark.parametrize(
    "splits, message",
    [
        ({"train": [9]}, "not in the tree"),
        ({"training": [1]}, "unknown split"),
        ({"train": [1], "val": [1]}, "both"),
        ({"train": ["p1"]}, "not understood"),
        ({"train": "patient0001"}, "list of patients"),
    ],
)
def test_bad_user_splits_raise(tree23, splits, message):
    with pytest.raises((ValueError, TypeError), match=message):
        read_camus(tree23, splits=splits)


def test_2023_split_file_problems(tree23):
    split_dir = tree23 / "database_split"
    (split_dir / "subgroup_validation.txt").write_text("patient0003\npatient0009\n")
    with pytest.raises(CamusFormatError, match=r"subgroup_validation\.txt.*patient0009"):
        read_camus(tree23)
    (split_dir / "subgroup_validation.txt").write_text("\n")
    with pytest.raises(CamusFormatError, match=r"patient0003.*none of the split files"):
        read_camus(tree23)
    (split_dir / "subgroup_validation.txt").write_text("patient0003\npatient0004\n")
    with pytest.raises(CamusFormatError, match=r"patient0004 is also listed"):
        read_camus(tree23)


def test_normalize_patient():
    assert normalize_patient(7) == normalize_patient("7") == "patient0007"
    assert normalize_patient("0007") == normalize_patient("patient0007") == "patient0007"
    with pytest.raises(ValueError):
        normalize_patient("seven")


# --------------------------------------------------------------------------- bad input


def _rewrite_label(path, array, spacing):
    write_image(path, array, spacing)


BAD_METADATA = {
    "missing image": (lambda d: (d / "patient0002_4CH_ES.nii.gz").unlink(),
                      "patient0002_4CH_ES.nii.gz", "missing image"),
    "missing label": (lambda d: (d / "patient0002_2CH_ED_gt.nii.gz").unlink(),
                      "patient0002_2CH_ED_gt.nii.gz", "missing label"),
    "missing cfg": (lambda d: (d / "Info_4CH.cfg").unlink(), "Info_4CH.cfg", "missing"),
    "cfg without Age": (
        lambda d: (d / "Info_2CH.cfg").write_text("ED: 1\nSex: M\n\nImageQuality: Good\n"),
        "Info_2CH.cfg", "'Age'"),
    "cfg without ImageQuality": (
        lambda d: (d / "Info_4CH.cfg").write_text("Sex: M\nAge: 50\n"),
        "Info_4CH.cfg", "'ImageQuality'"),
    "cfg bad sex": (lambda d: (d / "Info_2CH.cfg").write_text("Sex: X\nAge: 5\nImageQuality: Good"),
                    "Info_2CH.cfg", "Sex is 'X'"),
    "cfg bad age": (
        lambda d: (d / "Info_2CH.cfg").write_text("Sex: M\nAge: old\nImageQuality: Good"),
        "Info_2CH.cfg", "Age is 'old'"),
    "cfg bad quality": (
        lambda d: (d / "Info_2CH.cfg").write_text("Sex: M\nAge: 5\nImageQuality: Great"),
        "Info_2CH.cfg", "ImageQuality is 'Great'"),
    "cfg garbage line": (
        lambda d: (d / "Info_2CH.cfg").write_text("Sex: M\nAge 5\nImageQuality: Good"),
        "Info_2CH.cfg", "line 2"),
    "garbage gz": (lambda d: (d / "patient0002_2CH_ES.nii.gz").write_bytes(b"\x1f\x8bnot gzip"),
                   "patient0002_2CH_ES.nii.gz", "unreadable"),
    "gz of garbage": (lambda d: (d / "patient0002_2CH_ES_gt.nii.gz").write_bytes(
        gzip.compress(b"this is no nifti header" * 30)), "patient0002_2CH_ES_gt.nii.gz",
        "unreadable"),
    "shape mismatch": (lambda d: _rewrite_label(d / "patient0002_4CH_ED_gt.nii.gz",
                                                make_label((40, 31)), spacing_of(2)),
                       "patient0002_4CH_ED_gt.nii.gz", "label shape (40, 31) differs"),
    "spacing mismatch": (lambda d: _rewrite_label(d / "patient0002_4CH_ED_gt.nii.gz",
                                                  make_label(), (0.5, 0.5)),
                         "patient0002_4CH_ED_gt.nii.gz", "label spacing (0.5, 0.5) differs"),
    "several slices": (lambda d: sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((3, 40, 30), np.uint8)),
        str(d / "patient0002_2CH_ED.nii.gz")), "patient0002_2CH_ED.nii.gz", "3-D with one slice"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata_raises_naming_the_file(tree23, case):
    damage, fname, problem = BAD_METADATA[case]
    damage(_pdir(tree23, 2))
    with pytest.raises(CamusFormatError) as info:
        read_camus(tree23)
    message = str(info.value)
    assert fname in message and problem in message, message
    assert info.value.path.name == fname
    assert any(fname in p and problem in p for p in validate(tree23))


def _mhd(tree, n, base):
    return tree / "training" / f"patient{n:04d}" / f"{base}"


def test_2019_damaged_header_and_truncated_raw(tree19):
    header = _mhd(tree19, 51, "patient0051_2CH_ED.mhd")
    header.write_text(header.read_text().replace("DimSize = 30 40", "DimSize = thirty"))
    with pytest.raises(CamusFormatError, match=r"patient0051_2CH_ED\.mhd: unreadable"):
        read_camus(tree19)
    header.write_text("this is not a MetaImage header\n")
    with pytest.raises(CamusFormatError, match=r"patient0051_2CH_ED\.mhd.*ElementDataFile"):
        read_camus(tree19)


def test_2019_truncated_and_missing_raw(tree19):
    raw = _mhd(tree19, 50, "patient0050_4CH_ES_gt.raw")
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(CamusFormatError, match=r"patient0050_4CH_ES_gt\.raw: truncated"):
        read_camus(tree19)
    raw.unlink()
    with pytest.raises(CamusFormatError, match=r"patient0050_4CH_ES_gt\.raw: missing data file"):
        read_camus(tree19)


def test_2019_missing_test_labels_hint(tree19):
    (tree19 / "testing" / "patient0001" / "patient0001_2CH_ED_gt.mhd").unlink()
    with pytest.raises(CamusFormatError, match="no labels"):
        read_camus(tree19)


def test_label_values_outside_range_raise_on_load(tree23):
    label = make_label()
    label[0, 0], label[1, 1] = 5, 7
    path = _pdir(tree23, 3) / "patient0003_2CH_ES_gt.nii.gz"
    write_image(path, label, spacing_of(3))
    rec = next(r for r in read_camus(tree23) if r.stem == "patient0003_2CH_ES")  # lazy pixels
    with pytest.raises(CamusFormatError) as info:
        rec.load()
    assert "patient0003_2CH_ES_gt.nii.gz" in str(info.value)
    assert "outside 0..3: 5, 7" in str(info.value)


def test_image_values_beyond_8_bit_raise_on_load(tree23):
    arr = make_image(3, "4CH", "ED").astype(np.int16)
    arr[5, 5] = 300
    write_image(_pdir(tree23, 3) / "patient0003_4CH_ED.nii.gz", arr, spacing_of(3))
    rec = next(r for r in read_camus(tree23) if r.stem == "patient0003_4CH_ED")
    with pytest.raises(
        CamusFormatError,
        match=r"patient0003_4CH_ED\.nii\.gz: pixel values "
        r"outside 0\.\.255: 300",
    ):
        rec.load()


def test_truncated_gz_raises_on_load(tree23):
    path = _pdir(tree23, 1) / "patient0001_4CH_ED.nii.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) - 200]))  # header intact, pixels cut
    rec = next(r for r in read_camus(tree23) if r.stem == "patient0001_4CH_ED")
    with pytest.raises(CamusFormatError, match=r"patient0001_4CH_ED\.nii\.gz: unreadable"):
        rec.load()


def test_not_a_camus_tree(tmp_path):
    with pytest.raises(CamusFormatError, match="not a CAMUS tree"):
        read_camus(tmp_path)
    with pytest.raises(CamusFormatError, match="does not exist"):
        read_camus(tmp_path / "nowhere")
    (tmp_path / "database_nifti").mkdir()
    with pytest.raises(CamusFormatError, match="no patientXXXX folders"):
        read_camus(tmp_path)
    assert any("does not exist" in p for p in validate(tmp_path / "nowhere2"))


def test_validate_lists_every_problem_at_once(tree23):
    (_pdir(tree23, 1) / "patient0001_2CH_ES_gt.nii.gz").unlink()
    (_pdir(tree23, 2) / "Info_4CH.cfg").write_text("Sex: M\n\nAge: 50\n")
    label = make_label()
    label[3, 3] = 9
    write_image(_pdir(tree23, 3) / "patient0003_4CH_ED_gt.nii.gz", label, spacing_of(3))
    write_image(
        _pdir(tree23, 4) / "patient0004_2CH_ED_gt.nii.gz", make_label((40, 31)), spacing_of(4)
    )
    problems = validate(tree23)
    assert len(problems) == 4, problems
    expected = [
        ("patient0001_2CH_ES_gt.nii.gz", "missing label"),
        ("Info_4CH.cfg", "'ImageQuality'"),
        ("patient0003_4CH_ED_gt.nii.gz", "outside 0..3: 9"),
        ("patient0004_2CH_ED_gt.nii.gz", "label shape"),
    ]
    for fname, problem in expected:
        assert sum(fname in p and problem in p for p in problems) == 1, (fname, problems)
    with pytest.raises(CamusFormatError, match="patient0001_2CH_ES_gt"):  # first one raises
        read_camus(tree23)


def test_error_survives_pickling():
    err = CamusFormatError("/a/b.mhd", "broken")
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, CamusFormatError)
    assert str(copy) == str(err) and copy.path.name == "b.mhd" and copy.problem == "broken"


def test_truncated_nii_raises_when_read(tmp_path):
    root = write_2023(tmp_path / "t", train=(5,), val=(), test=(), ext=".nii")
    path = _pdir(root, 5) / "patient0005_2CH_ES_gt.nii"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CamusFormatError, match=r"patient0005_2CH_ES_gt\.nii: unreadable.*trunc"):
        read_camus(root)


def test_cut_gzip_stream_raises_on_load(tree23):
    path = _pdir(tree23, 4) / "patient0004_2CH_ED_gt.nii.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 30])  # header still decompresses, stream ends early
    rec = next(r for r in read_camus(tree23) if r.stem == "patient0004_2CH_ED")
    with pytest.raises(CamusFormatError, match=r"patient0004_2CH_ED_gt\.nii\.gz: unreadable"):
        rec.load()


def _as_nifti2(nifti1: bytes) -> bytes:
    """The same image with a NIfTI-2 header (540 bytes + 4 extension bytes, little-endian)."""
    import struct

    def get(fmt, offset):
        return struct.unpack_from("<" + fmt, nifti1, offset)

    head = bytearray(544)
    struct.pack_into("<i", head, 0, 540)
    head[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into("<hh", head, 12, *get("hh", 70))  # datatype, bitpix
    struct.pack_into("<8q", head, 16, *get("8h", 40))  # dim
    struct.pack_into("<8d", head, 104, *get("8f", 76))  # pixdim
    struct.pack_into("<q", head, 168, 544)  # vox_offset
    struct.pack_into("<i", head, 500, nifti1[123])  # xyzt_units
    return bytes(head) + nifti1[int(get("f", 108)[0]) :]


def test_nifti1_and_nifti2_headers_read_alike(tmp_path):
    one = tmp_path / "one.nii"
    write_image(one, make_image(3, "2CH", "ES"), spacing_of(3))
    two = tmp_path / "two.nii"
    two.write_bytes(_as_nifti2(one.read_bytes()))
    h1, h2 = (headers._parse_nifti(p.read_bytes()[:540]) for p in (one, two))
    assert h1.magic_ok and h2.magic_ok and h1.size == h2.size == (30, 40)
    assert (h1.data_end(), h2.data_end()) == (one.stat().st_size, two.stat().st_size)
    assert read_header(two) == read_header(one)
    assert read_header(two) == ((40, 30), pytest.approx(spacing_of(3)))
    two.write_bytes(two.read_bytes()[:-7])
    with pytest.raises(CamusFormatError, match=r"two\.nii: unreadable image: truncated"):
        headers._check_nifti_data(two, decompress=True)
    assert headers._parse_nifti(b"\0" * 540) is None


@pytest.mark.parametrize("kind", ["2019", "2019-3d", "2023", "2023-nii-3d"])
def test_fast_header_reading_agrees_with_simpleitk(tmp_path, kind):
    if kind.startswith("2019"):
        root = write_2019(tmp_path / "t", training=(7,), testing=(), three_d="3d" in kind)
    else:
        ext = ".nii" if "nii-3d" in kind else ".nii.gz"
        root = write_2023(tmp_path / "t", train=(8,), val=(), test=(), ext=ext,
                          three_d="3d" in kind)
    files = [p for p in root.rglob("*") if p.name.endswith((".mhd", ".nii", ".nii.gz"))]
    files = [p for p in files if "sequence" not in p.name]
    assert len(files) == 8
    for path in files:
        img = sitk.ReadImage(str(path))
        shape, spacing = read_header(path)
        assert shape == (img.GetSize()[1], img.GetSize()[0])
        assert spacing == pytest.approx((img.GetSpacing()[1], img.GetSpacing()[0]), rel=1e-6)


def test_root_may_hold_the_tree_one_level_down(tmp_path):
    write_2023(tmp_path / "download" / "CAMUS_public", train=(1,), val=(), test=())
    records = read_camus(tmp_path / "download")
    assert len(records) == 4 and records[0].image_path.is_file()
    write_2019(tmp_path / "download" / "CAMUS_2019", training=(60,), testing=())
    with pytest.raises(CamusFormatError, match="several candidates"):
        read_camus(tmp_path / "download")


def test_cfg_sex_words_and_integral_float_age(tree23):
    (_pdir(tree23, 4) / "Info_4CH.cfg").write_text("Sex: female\nAge: 63.0\nImageQuality: POOR\n")
    rec = next(r for r in read_camus(tree23) if r.stem == "patient0004_4CH_ED")
    assert (rec.sex, rec.age, rec.quality) == ("F", 63, "Poor")


@pytest.mark.parametrize("layout", ["2019", "2023"])
def test_reads_the_built_in_phantom(tmp_path, layout):
    phantom = pytest.importorskip("echo_vlsm.data.phantom")
    root = phantom.write_phantom(tmp_path / "phantom", n_patients=3, seed=0, layout=layout)
    assert validate(root) == []
    records = read_camus(root)
    assert len(records) == 3 * 2 * 2
    assert {r.release for r in records} == {layout}
    image, label = records[0].load()
    assert image.dtype == label.dtype == np.uint8 and image.shape == label.shape
    assert set(np.unique(label)) <= {0, 1, 2, 3} and {1, 2, 3} <= set(np.unique(label))


def test_records_carry_the_reference_values_of_their_cfg(tree19, tree23):
    """2019: LVedv, LVesv (mL) and LVef (%); 2023: EF only (the stand-ins write 100/50/50)."""
    for rec in read_camus(tree19):
        assert (rec.ref_edv_ml, rec.ref_esv_ml, rec.ref_ef_percent) == (100.0, 50.0, 50.0)
    for rec in read_camus(tree23):
        assert (rec.ref_edv_ml, rec.ref_esv_ml, rec.ref_ef_percent) == (None, None, 50.0)


@pytest.mark.parametrize("key, value", [("LVedv", "abc"), ("LVesv", "-3"), ("LVef", "140")])
def test_bad_reference_value_raises_naming_file_and_key(tree19, key, value):
    cfg = tree19 / "training" / "patient0051" / "Info_2CH.cfg"
    text = cfg.read_text()
    cfg.write_text("".join(f"{key}: {value}\n" if line.startswith(f"{key}:") else line + "\n"
                           for line in text.splitlines()))
    with pytest.raises(CamusFormatError, match=rf"Info_2CH.cfg: {key} is '{value}'; expected"):
        read_camus(tree19)
    assert any(f"{key} is '{value}'" in p for p in validate(tree19))


def test_cfg_reference_reads_either_release():
    from echo_vlsm.data.camus import cfg_reference

    assert cfg_reference("x.cfg", {"lvedv": "88.5", "LVESV": "40", "LVef": "54.8"}) == {
        "edv_ml": 88.5, "esv_ml": 40.0, "ef_percent": 54.8}
    assert cfg_reference("x.cfg", {"Sex": "M"}) == {
        "edv_ml": None, "esv_ml": None, "ef_percent": None}
