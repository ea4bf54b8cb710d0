"""The built-in echo phantom: determinism, anatomy, physics knobs, threshold check, layouts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from echo_vlsm.data import phantom as ph
from echo_vlsm.data.camus import read_camus, read_image, validate
from echo_vlsm.data.phantom import acoustics as ph_acoustics
from echo_vlsm.data.phantom import anatomy as ph_anatomy
from echo_vlsm.data.phantom import patients as ph_patients
from echo_vlsm.data.phantom import tree as ph_tree

SEED = 0
PATIENTS = (1, 2, 3, 4)  # several qualities, both sexes, EF from 33 % to 68 %


@pytest.fixture(scope="module")
def patients():
    return [ph.simulate_patient(SEED, k) for k in PATIENTS]


def _frames(patients):
    for p in patients:
        for view, pv in p.views.items():
            for phase in ("ED", "ES"):
                yield p, view, phase, pv


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def _otsu(values: np.ndarray) -> float:
    t, _ = cv2.threshold(values.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return t


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_arrays_and_patient_independent_of_count(tmp_path):
    a = ph.simulate_patient(SEED, 2)
    b = ph.simulate_patient(SEED, 2)
    for view in ("2CH", "4CH"):
        for phase in ("ED", "ES"):
            assert a.views[view].images[phase].tobytes() == b.views[view].images[phase].tobytes()
            assert a.views[view].labels[phase].tobytes() == b.views[view].labels[phase].tobytes()
    c = ph.simulate_patient(SEED + 1, 2)
    assert a.views["2CH"].images["ED"].shape != c.views["2CH"].images["ED"].shape or not (
        np.array_equal(a.views["2CH"].images["ED"], c.views["2CH"].images["ED"])
    )
    # on disk: patient 1 of a 1-patient tree equals patient 1 of a 3-patient tree
    one = ph.write_phantom(tmp_path / "one", n_patients=1, seed=SEED, workers=0)
    three = ph.write_phantom(tmp_path / "three", n_patients=3, seed=SEED, workers=2)  # pool
    for name in ("patient0001_4CH_ES.nii.gz", "patient0001_4CH_ES_gt.nii.gz"):
        x, sx = read_image(one / "database_nifti" / "patient0001" / name)
        y, sy = read_image(three / "database_nifti" / "patient0001" / name)
        assert np.array_equal(x, y) and sx == sy
    mem = ph.simulate_patient(SEED, 1).views["4CH"]
    assert np.array_equal(x, mem.labels["ES"]) and sx == (mem.spacing, mem.spacing)


# --------------------------------------------------------------------------- anatomy


def test_labels_and_sector(patients):
    for p, view, phase, pv in _frames(patients):
        image, label, sector = pv.images[phase], pv.labels[phase], pv.sector
        where = f"{p.name} {view} {phase}"
        assert image.dtype == label.dtype == np.uint8 and image.shape == label.shape, where
        assert set(np.unique(label)) == {0, 1, 2, 3}, where
        assert not image[~sector].any(), f"{where}: echo outside the fan"
        assert not label[~sector].any(), f"{where}: labels outside the fan"
        assert (image[sector] > 0).mean() > 0.9, where
        # the fan: apex at the top, widening with depth
        rows = np.nonzero(sector.any(1))[0]
        assert rows[0] <= 3, where
        widths = sector.sum(1)
        assert widths[rows[0] + 20] < widths[rows[0] + 200], where


def test_myocardium_surrounds_cavity_la_below(patients):
    for p, view, phase, pv in _frames(patients):
        label = pv.labels[phase]
        where = f"{p.name} {view} {phase}"
        lv = label == 1
        ring = ndi.binary_dilation(lv, iterations=3) & ~lv
        # the wall encloses the cavity but for the mitral opening, where the LA begins
        assert np.isin(label[ring], (2, 3)).mean() > 0.97, where
        assert (label[ring] == 2).mean() > 0.65, where
        assert (label[ring] == 3).mean() > 0.05, where
        rows = {k: np.nonzero(label == k)[0].mean() for k in (1, 2, 3)}
        assert rows[3] > rows[1] + 20, f"{where}: LA centroid not below the LV's"
        # apex (top of the LV) is in the upper part of the fan
        assert np.nonzero(lv)[0].min() < 0.35 * label.shape[0], where
        assert ndi.label(lv)[1] == 1 and ndi.label(label == 3)[1] == 1, where


def test_systole_smaller_lv_larger_la_and_ef(patients):
    for p in patients:
        for view, pv in p.views.items():
            area = {ph_: np.bincount(pv.labels[ph_].ravel(), minlength=4) for ph_ in ("ED", "ES")}
            assert area["ES"][1] < 0.85 * area["ED"][1], f"{p.name} {view}"
            assert area["ES"][3] > area["ED"][3], f"{p.name} {view}"
        assert 25.0 <= p.ef <= 75.0
        assert p.lv_edv > p.lv_esv > 0
        assert p.ef == pytest.approx(100 * (1 - p.lv_esv / p.lv_edv), abs=0.2)
    efs = [p.ef for p in patients]
    assert max(efs) - min(efs) > 15  # drawn per patient


def test_attributes_and_sizes_are_camus_like():
    draws = [ph_patients._draw_patient(ph_patients._rng(SEED, k, 0)) for k in range(1, 401)]
    male = np.mean([d["sex"] == "M" for d in draws])
    ages = np.array([d["age"] for d in draws])
    assert 0.58 < male < 0.74
    assert ages.min() >= 20 and ages.max() <= 95 and 60 < ages.mean() < 70
    qualities = [d["quality"][v] for d in draws for v in ("2CH", "4CH")]
    assert {q: qualities.count(q) > 50 for q in ("Good", "Medium", "Poor")} == dict.fromkeys(
        ("Good", "Medium", "Poor"), True
    )
    assert all(0.30 <= d["ef"] <= 0.70 for d in draws)
    views = [ph_patients._draw_view(ph_patients._rng(SEED, k, 1, 0), "2CH", d)
             for k, d in enumerate(draws[:100])]
    h = np.array([g["height"] for g in views])
    ratio = np.array([g["width"] / g["height"] for g in views])
    sp = np.array([g["spacing"] for g in views])
    assert h.min() >= 400 and h.max() <= 800 and h.std() > 50
    assert ratio.min() >= 0.69 and ratio.max() <= 1.01
    assert sp.min() >= 0.15 and sp.max() <= 0.30


# --------------------------------------------------------------------------- image physics


def _contrast(image, label):
    myo, lv = image[label == 2].astype(float), image[label == 1].astype(float)
    return (myo.mean() - lv.mean()) / np.sqrt(0.5 * (myo.var() + lv.var()))


def test_quality_degrades_contrast():
    """Same anatomy and random stream, three qualities: clutter, dropout and noise lower
    the blood-wall contrast from Good to Poor."""
    p = ph_patients._draw_patient(ph_patients._rng(5, 1, 0))
    g = ph_patients._draw_view(ph_patients._rng(5, 1, 1, 0), "2CH", p)
    f = ph_anatomy._frame_geometry(g, "ED", p["ef"], ph_patients._rng(5, 1, 2, 0, 0))
    contrast = {}
    for q in ("Good", "Medium", "Poor"):
        image, label, _ = ph_acoustics._simulate_frame(g, f, "2CH", q, ph_patients._rng(5, 9))
        contrast[q] = _contrast(image, label)
    assert contrast["Good"] > contrast["Medium"] > contrast["Poor"] > 0.2


def test_speckle_and_depth_physics(patients):
    """Fully developed speckle in tissue (envelope SNR near Rayleigh's 1.91 before log
    compression, so a wide spread of gray levels), blood darker than myocardium."""
    for p, view, phase, pv in _frames(patients):
        image, label = pv.images[phase], pv.labels[phase]
        where = f"{p.name} {view} {phase}"
        assert image[label == 2].mean() > image[label == 1].mean() + 20, where
        tissue = image[(label == 0) & pv.sector]
        assert tissue.std() > 15, where  # texture, not a flat fill
    # speckle is elongated across the beam (lateral PSF wider than axial): correlation
    img = patients[0].views["2CH"].images["ED"].astype(float)
    win = img[img.shape[0] // 2 : img.shape[0] // 2 + 60, img.shape[1] // 2 - 30 :][:, :60]
    win = win - win.mean()
    ax = (win[1:, :] * win[:-1, :]).mean() / win.var()
    lat = (win[:, 1:] * win[:, :-1]).mean() / win.var()
    assert lat > ax


def test_global_threshold_does_not_segment_the_lv(patients):
    """Issue 2: a global intensity threshold (Otsu) must score LV dice below 0.8. Checked
    three ways: over the whole image, inside the fan, and inside the fan keeping only the
    dark component that overlaps the LV most (an oracle pick)."""
    whole, fan, picked = [], [], []
    for _p, _view, phase, pv in _frames(patients):
        image, lv, sector = pv.images[phase], pv.labels[phase] == 1, pv.sector
        whole.append(_dice(image <= _otsu(image), lv))
        dark = (image <= _otsu(image[sector])) & sector
        fan.append(_dice(dark, lv))
        comp, n = ndi.label(ndi.binary_opening(dark, iterations=2))
        overlap = np.bincount(comp[lv], minlength=n + 1)
        overlap[0] = 0
        picked.append(_dice(comp == overlap.argmax(), lv) if n else 0.0)
    print(f"Otsu LV dice: whole {np.mean(whole):.3f}, fan {np.mean(fan):.3f}, "
          f"fan + best component {np.mean(picked):.3f} (max {np.max(picked):.3f})")
    assert max(whole) < 0.8 and max(fan) < 0.8
    assert np.mean(picked) < 0.8


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "n, layout, expected",
    [
        (1, "2023", (1, 0, 0)),
        (2, "2023", (1, 0, 1)),
        (3, "2023", (1, 1, 1)),
        (6, "2023", (4, 1, 1)),
        (20, "2023", (14, 2, 4)),
        (6, "2019", (4, 1, 1)),
        (500, "2019", (400, 50, 50)),
        (1000, "2019", (850, 50, 100)),
    ],
)
def test_split_sizes(n, layout, expected):
    sizes = ph.split_sizes(n, layout)
    assert (sizes["train"], sizes["val"], sizes["test"]) == expected


def test_2019_numbering_follows_the_study_rule():
    plan = ph.patient_splits(500, "2019")
    folders = {split: [f for _, s, f in plan if s == split] for split in ("train", "val", "test")}
    assert folders["val"][0] == "training/patient0001" and folders["val"][-1].endswith("0050")
    assert folders["train"][0] == "training/patient0051" and folders["train"][-1].endswith("0450")
    # the real release numbers its testing patients 0001-0050 again
    assert folders["test"][0] == "testing/patient0001" and folders["test"][-1].endswith("0050")
    small = ph.patient_splits(6, "2019")
    assert [f for _, _, f in small] == [
        "training/patient0001", "training/patient0051", "training/patient0052",
        "training/patient0053", "training/patient0054", "testing/patient0001",
    ]


def test_2023_tree_reads_with_splits(phantom_root):
    assert validate(phantom_root) == []
    records = read_camus(phantom_root)
    assert len(records) == 6 * 4
    splits = {r.patient: r.split for r in records}
    assert splits == {
        "patient0001": "val", "patient0002": "train", "patient0003": "train",
        "patient0004": "train", "patient0005": "train", "patient0006": "test",
    }
    lines = (phantom_root / "database_split" / "subgroup_training.txt").read_text().split()
    assert lines == ["patient0002", "patient0003", "patient0004", "patient0005"]
    cfg = (phantom_root / "database_nifti" / "patient0003" / "Info_2CH.cfg").read_text()
    keys = [line.split(":")[0] for line in cfg.splitlines()]
    assert keys == ["ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "EF", "FrameRate"]
    p3 = ph.simulate_patient(SEED, 3)
    assert f"EF: {p3.ef}\n" in cfg and f"Age: {p3.age}\n" in cfg
    rec = next(r for r in records if r.stem == "patient0003_4CH_ES")
    assert (rec.sex, rec.age, rec.quality) == (p3.sex, p3.age, p3.views["4CH"].quality)
    image, label = rec.load()
    assert np.array_equal(image, p3.views["4CH"].images["ES"])
    assert np.array_equal(label, p3.views["4CH"].labels["ES"])


def test_2019_tree_reads_with_the_study_split(tmp_path):
    root = ph.write_phantom(tmp_path / "p19", n_patients=4, seed=SEED, layout="2019", workers=0)
    assert validate(root) == []
    records = read_camus(root)
    assert {(r.patient, r.split, r.release) for r in records} == {
        ("patient0001", "val", "2019"), ("patient0051", "train", "2019"),
        ("patient0052", "train", "2019"), ("patient0001", "test", "2019"),
    }
    # the same stem in validation and test, two different patients (phantom 1 and 4)
    by_key = {(r.split, r.stem): r for r in records}
    val, test = by_key[("val", "patient0001_4CH_ES")], by_key[("test", "patient0001_4CH_ES")]
    assert np.array_equal(val.load()[0], ph.simulate_patient(SEED, 1).views["4CH"].images["ES"])
    assert np.array_equal(test.load()[0], ph.simulate_patient(SEED, 4).views["4CH"].images["ES"])
    folder = root / "training" / "patient0051"
    assert (folder / "patient0051_2CH_ED.raw").is_file()
    cfg = (folder / "Info_4CH.cfg").read_text()
    keys = [line.split(":")[0] for line in cfg.splitlines()]
    assert keys == ["ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "LVedv", "LVesv", "LVef"]
    p2 = ph.simulate_patient(SEED, 2)  # phantom patient 2 is the first training patient
    assert f"LVef: {p2.ef}\n" in cfg and f"LVedv: {p2.lv_edv}\n" in cfg


def test_rewrite_resume_and_refusal(tmp_path, monkeypatch):
    # an interrupted call (patient 2 fails) leaves patient 1 complete and resumes from there
    real_write_one = ph_tree._write_one

    def failing(seed, number, folder, layout):
        if number == 2:
            raise KeyboardInterrupt
        return real_write_one(seed, number, folder, layout)

    monkeypatch.setattr(ph_tree, "_write_one", failing)
    with pytest.raises(KeyboardInterrupt):
        ph.write_phantom(tmp_path / "p", n_patients=2, seed=SEED, workers=0)
    monkeypatch.setattr(ph_tree, "_write_one", real_write_one)
    assert not (tmp_path / "p" / "phantom.json").exists()
    f1 = tmp_path / "p" / "database_nifti" / "patient0001" / "patient0001_2CH_ED.nii.gz"
    mtime = f1.stat().st_mtime_ns
    root = ph.write_phantom(tmp_path / "p", n_patients=2, seed=SEED, workers=0)
    assert f1.stat().st_mtime_ns == mtime
    manifest = json.loads((root / "phantom.json").read_text())
    assert manifest == {"version": ph.PHANTOM_VERSION, "seed": SEED, "layout": "2023",
                        "n_patients": 2, "splits": {"train": 1, "test": 1}}
    assert validate(root) == []
    ph.write_phantom(root, n_patients=2, seed=SEED)  # nothing to do
    assert f1.stat().st_mtime_ns == mtime
    ph.write_phantom(root, n_patients=1, seed=SEED)  # fewer patients: extra ones go
    assert not (root / "database_nifti" / "patient0002").exists()
    assert (root / "database_split" / "subgroup_testing.txt").read_text() == ""
    before = read_image(f1)[0]
    ph.write_phantom(root, n_patients=1, seed=SEED + 1, workers=0)  # another seed: rewritten
    assert not np.array_equal(before, read_image(f1)[0])
    assert json.loads((root / "phantom.json").read_text())["seed"] == SEED + 1
    assert not list(root.rglob(".*.tmp")) and not (root / ph.PARTIAL).exists()

    real = tmp_path / "camus"
    (real / "database_nifti").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="phantom.json"):
        ph.write_phantom(real, n_patients=1)


def _tree(root):
    """Every file of a phantom tree: bytes, except pixels and spacing for ``.nii.gz`` files
    (their gzip stream need not be byte-identical)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name.endswith(".nii.gz"):
            array, spacing = read_image(path)
            out[rel] = (array.shape, array.tobytes(), spacing)
        else:
            out[rel] = path.read_bytes()
    return out


def _tiny_patient(seed, number):
    """A stand-in for ``simulate_patient`` (6 x 5 pixels) whose content depends on
    ``(seed, number)``: cheap enough to write trees of 15 patients in a test."""
    rng = np.random.default_rng([seed, number])
    views = {}
    for view in ("2CH", "4CH"):
        images = {f: rng.integers(0, 256, (6, 5), dtype=np.uint8) for f in ("ED", "ES")}
        labels = {f: rng.integers(0, 4, (6, 5), dtype=np.uint8) for f in ("ED", "ES")}
        views[view] = ph.PhantomView(view, "Good", 0.25 + 0.01 * number, images, labels)
    return ph.PhantomPatient(number, "MF"[number % 2], 30 + number, 50.0, 20, views,
                             100.0 + number, 50.0, 50.0 - number / 10)


def test_another_number_of_patients_gives_the_fresh_tree_2019(tmp_path):
    # 2 -> 3 patients: the validation split appears, so every 2019 folder name moves
    grown = ph.write_phantom(tmp_path / "grown", n_patients=2, seed=SEED, layout="2019",
                             workers=0)
    assert (grown / "training" / "patient0051" / "patient0051_2CH_ED.mhd").is_file()
    ph.write_phantom(grown, n_patients=3, seed=SEED, layout="2019", workers=0)
    fresh = ph.write_phantom(tmp_path / "fresh", n_patients=3, seed=SEED, layout="2019",
                             workers=0)
    assert _tree(grown) == _tree(fresh)
    marker = json.loads((grown / "training" / "patient0051" / ph.PATIENT_MARKER).read_text())
    assert marker["number"] == 2  # patient 1 moved to training/patient0001 (validation)
    rec = next(r for r in read_camus(grown) if r.stem == "patient0051_4CH_ED")
    p2 = ph.simulate_patient(SEED, 2)
    assert np.array_equal(rec.load()[0], p2.views["4CH"].images["ED"])
    assert rec.age == p2.age and rec.split == "train"


@pytest.mark.parametrize("layout", ["2019", "2023"])
def test_resizing_a_tree_rewrites_moved_patients_and_split_files(tmp_path, monkeypatch, layout):
    """14 -> 15 -> 14 patients (validation 1 -> 2 -> 1): each result equals a fresh tree;
    no patient sits in two folders, unchanged folders are not rewritten."""
    monkeypatch.setattr(ph_tree, "simulate_patient", _tiny_patient)
    root = ph.write_phantom(tmp_path / "t", n_patients=14, seed=SEED, layout=layout, workers=0)
    if layout == "2023":
        stable = root / "database_nifti" / "patient0005" / "patient0005_2CH_ED.nii.gz"
    else:  # patient 1 is the first validation patient in both trees
        stable = root / "training" / "patient0001" / "patient0001_2CH_ED.raw"
    mtime = stable.stat().st_mtime_ns
    for n in (15, 14):
        ph.write_phantom(root, n_patients=n, seed=SEED, layout=layout, workers=0)
        fresh = ph.write_phantom(tmp_path / f"fresh{n}", n_patients=n, seed=SEED,
                                 layout=layout, workers=0)
        assert _tree(root) == _tree(fresh), n
        markers = [json.loads(m.read_text()) for m in root.rglob(ph.PATIENT_MARKER)]
        assert sorted(m["number"] for m in markers) == list(range(1, n + 1))
        assert {r.split for r in read_camus(root)} == {"train", "val", "test"}
    assert stable.stat().st_mtime_ns == mtime
    if layout == "2019":  # patient 2: validation in the 15-patient tree, training in 14
        marker = json.loads((root / "training" / "patient0051" / ph.PATIENT_MARKER).read_text())
        assert marker["number"] == 2 and not (root / "training" / "patient0002").exists()


def test_a_folder_with_a_foreign_or_missing_marker_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.setattr(ph_tree, "simulate_patient", _tiny_patient)
    root = ph.write_phantom(tmp_path / "t", n_patients=3, seed=SEED, layout="2019", workers=0)
    before = _tree(root)
    (root / "training" / "patient0051" / ph.PATIENT_MARKER).unlink()
    (root / "testing" / "patient0001" / ph.PATIENT_MARKER).write_text('{"number": 7}')
    raw = root / "testing" / "patient0001" / "patient0001_2CH_ED.raw"
    raw.write_bytes(b"\0" * raw.stat().st_size)
    ph.write_phantom(root, n_patients=3, seed=SEED, layout="2019", workers=0)
    assert _tree(root) == before


@pytest.mark.parametrize(
    "kwargs, match",
    [({"layout": "2020"}, "layout"), ({"n_patients": 0}, "n_patients"),
     ({"n_patients": 2.5}, "n_patients")],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ph.write_phantom(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_four_chamber_view_has_right_heart():
    """The 4CH view adds the right ventricle and atrium (blood, unlabelled) on the left of
    the image, beside the septum; the 2CH view has none."""
    p = ph_patients._draw_patient(ph_patients._rng(SEED, 1, 0))
    for vi, view in enumerate(("2CH", "4CH")):
        g = ph_patients._draw_view(ph_patients._rng(SEED, 1, 1, vi), view, p)
        f = ph_anatomy._frame_geometry(g, "ED", p["ef"], ph_patients._rng(SEED, 1, 2, vi, 0))
        z, x = np.mgrid[0 : g["depth"] : 0.5, -g["depth"] : g["depth"] : 0.5]
        cls = ph_anatomy._anatomy(x, z, f, view, echo=True)
        right = cls == ph_anatomy._RBLOOD
        assert np.isin([ph_anatomy._VALVE], cls).all()
        if view == "2CH":
            assert not right.any()
        else:
            assert right.sum() > 0.3 * (cls == ph_anatomy._LV).sum()
            assert x[right].mean() < x[cls == ph_anatomy._LV].mean() - 20


def test_end_diastole_and_end_systole_share_the_acquisition(patients):
    """ED and ES frames of a view come from one acquisition: away from the heart the tissue
    looks alike (shared heterogeneity, clutter, window), although the speckle is redrawn."""
    for p in patients:
        pv = p.views["2CH"]
        a, b = (ndi.gaussian_filter(pv.images[f].astype(float), 6) for f in ("ED", "ES"))
        heart = (pv.labels["ED"] > 0) | (pv.labels["ES"] > 0)
        away = pv.sector & ~ndi.binary_dilation(heart, iterations=40)
        away &= ndi.binary_erosion(pv.sector, iterations=10)
        assert np.corrcoef(a[away], b[away])[0, 1] > 0.6, p.name
        assert not np.array_equal(pv.images["ED"][away], pv.images["ES"][away])


# --------------------------------------------------------------------------- reference values


def test_reference_values_are_the_method_of_discs_on_the_native_labels(patients):
    from echo_vlsm.clinical import biplane_volumes

    for p in patients:
        v2, v4 = p.views["2CH"], p.views["4CH"]
        v = biplane_volumes(v2.labels["ED"] == 1, v2.labels["ES"] == 1, v4.labels["ED"] == 1,
                            v4.labels["ES"] == 1, (v2.spacing,) * 2, (v4.spacing,) * 2)
        assert v.reason is None, p.name
        assert (p.lv_edv, p.lv_esv, p.ef) == (round(v.edv_ml, 1), round(v.esv_ml, 1),
                                              round(v.ef_percent, 1)), p.name
        assert 30.0 < p.lv_esv < p.lv_edv < 250.0, p.name  # adult LV volumes, mL


def test_unmeasurable_label_maps_fail_loudly(patients):
    p = ph.simulate_patient(SEED, 1)
    p.views["4CH"].labels["ES"][:] = 0
    with pytest.raises(RuntimeError, match=r"patient0001.*4CH_ES: empty"):
        ph_patients._biplane_volumes(p)


def test_exported_phantom_keeps_its_reference_volumes(tmp_path):
    """A 2019-layout phantom exported at 512 x 512: patients.csv carries the Info_2CH.cfg
    values, and the exported LV masks, measured with records.csv's export spacing, give
    them within 3 % (EF within 2 points): the floor of ground-truth masks at 512 px."""
    from echo_vlsm.clinical import biplane_volumes
    from echo_vlsm.data.export import export_dataset, read_patients, read_records
    from echo_vlsm.dataset import mask_path
    from echo_vlsm.io import read_png

    root = ph.write_phantom(tmp_path / "p19", n_patients=2, seed=SEED, layout="2019",
                            workers=0)
    records = read_camus(root)
    out = export_dataset(records, tmp_path / "out", size=512, workers=0)
    refs = read_patients(out).set_index(["patient", "split"])
    table = read_records(out).set_index(["stem", "split"])
    for (patient, split), ref in refs.iterrows():
        masks, spacings = [], []
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                row = table.loc[(f"{patient}_{view}_{phase}", split)]
                masks.append(read_png(mask_path(out, "lv", split, row.name[0])) > 0)
            spacings.append((float(row["export_spacing_y"]), float(row["export_spacing_x"])))
        cfg = (root / ("training" if split != "test" else "testing") / patient
               / "Info_2CH.cfg").read_text()
        assert f"LVedv: {ref['ref_edv_ml']}\n" in cfg and f"LVef: {ref['ref_ef_percent']}\n" in cfg
        v = biplane_volumes(*masks, *spacings)
        assert v.reason is None
        assert v.edv_ml == pytest.approx(ref["ref_edv_ml"], rel=0.03), patient
        assert v.esv_ml == pytest.approx(ref["ref_esv_ml"], rel=0.03), patient
        assert abs(v.ef_percent - ref["ref_ef_percent"]) < 2.0, patient
