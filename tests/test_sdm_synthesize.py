"""The synthetic dataset: layout, records, labels, resume; fidelity; sampler timings."""

import numpy as np
import pytest
from sdm_data import write_echo_dataset

from echo_vlsm.data.export import read_records
from echo_vlsm.io import read_png, write_png
from echo_vlsm.sdm.diffusion import SDMConfig, load_sdm, train_sdm
from echo_vlsm.sdm.labels import sector_mask, to_camus_label, to_sdm_map
from echo_vlsm.sdm.synthesize import fidelity, synthesize, synthetic_dir_for, time_samplers
from echo_vlsm.structures import LABELS, STRUCTURES


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return write_echo_dataset(tmp_path_factory.mktemp("real") / "echo", n_patients=4, size=128)


@pytest.fixture(scope="module")
def run(real, tmp_path_factory):
    cfg = SDMConfig(train_steps=2, batch_size=2)
    return train_sdm(real, tmp_path_factory.mktemp("runs") / "sdm", cfg, progress=False)


def test_synthesize_writes_a_dataset_records_describe(real, run):
    out = synthesize(run, real, n_per_map=2, steps=2, max_maps=3, size=96, batch_size=4,
                     progress=False)
    assert out == synthetic_dir_for(real) == real.with_name("echo-synthetic")
    rec = read_records(out)
    src = read_records(real).set_index("stem")
    assert len(rec) == 6
    assert rec["stem"].str.fullmatch(r"patient\d{4}_(2CH|4CH)_(ED|ES)_s[01]").all()
    assert set(rec["split"]) <= {"train", "val"}
    assert (rec["quality"] == "").all()
    for row in rec.itertuples():
        s = src.loc[row.source_stem]
        assert row.stem.startswith(row.source_stem + "_s")
        assert (row.patient, row.view, row.phase, row.split, row.sex, row.age) == (
            s.patient, s.view, s.phase, s.split, s.sex, s.age)
        img = read_png(out / "images" / row.split / f"{row.stem}.png")
        lbl = read_png(out / "labels" / row.split / f"{row.stem}.png")
        sdm_map = read_png(out / "sdm_maps" / row.split / f"{row.stem}.png")
        assert img.shape == lbl.shape == sdm_map.shape == (96, 96)
        assert lbl.max() <= 3 and sdm_map.max() <= 4
        assert np.array_equal(lbl, to_camus_label(sdm_map))
        assert set(np.unique(lbl)) == {0, 1, 2, 3}
        for s_name in STRUCTURES:
            mask = read_png(out / "masks" / s_name / row.split / f"{row.stem}.png")
            assert np.array_equal(mask == 255, lbl == LABELS[s_name])
    # two perturbations of one map differ
    a, b = (read_png(out / "sdm_maps" / rec.split[i] / f"{rec.stem[i]}.png") for i in (0, 1))
    assert not np.array_equal(a, b)
    assert (out / "synthesis.json").is_file()


def test_synthesize_resumes_and_is_deterministic(real, run, tmp_path):
    out = tmp_path / "syn"
    kw = dict(n_per_map=2, steps=2, max_maps=2, size=64, batch_size=3, progress=False)
    synthesize(run, real, out, **kw)
    rec = read_records(out)
    first = {s: read_png(out / "images" / sp / f"{s}.png") for s, sp in zip(rec.stem, rec.split)}
    victim = out / "images" / rec.split[1] / f"{rec.stem[1]}.png"
    keep = out / "images" / rec.split[0] / f"{rec.stem[0]}.png"
    victim.unlink()
    (out / "records.csv").unlink()
    mtime = keep.stat().st_mtime_ns
    synthesize(run, real, out, **kw)
    assert keep.stat().st_mtime_ns == mtime  # done images are skipped
    again = read_png(victim)
    assert np.abs(again.astype(int) - first[rec.stem[1]]).max() <= 1  # same seed, same image
    assert len(read_records(out)) == 4


def test_other_settings_resample_and_what_is_no_longer_made_goes(real, run, tmp_path):
    import json

    out = tmp_path / "syn"
    kw = dict(steps=2, max_maps=2, size=64, batch_size=4, progress=False)
    synthesize(run, real, out, n_per_map=2, sampler="dpm++", **kw)
    rec = read_records(out)
    before = {s: read_png(out / "images" / sp / f"{s}.png") for s, sp in zip(rec.stem, rec.split)}
    # another sampler: every image is sampled again, and synthesis.json says how
    synthesize(run, real, out, n_per_map=2, sampler="ddim", **kw)
    assert json.loads((out / "synthesis.json").read_text())["sampler"] == "ddim"
    after = {s: read_png(out / "images" / sp / f"{s}.png") for s, sp in zip(rec.stem, rec.split)}
    assert set(after) == set(before) and any(
        not np.array_equal(before[s], after[s]) for s in before)
    # fewer images per map: the ones no longer made are removed, in every folder
    synthesize(run, real, out, n_per_map=1, sampler="ddim", **kw)
    assert len(read_records(out)) == 2
    for folder in ("images", "labels", "masks", "sdm_maps"):
        stems = {p.stem for p in (out / folder).rglob("*.png")}
        assert stems and all(s.endswith("_s0") for s in stems), folder


def test_synthesize_refuses_bad_arguments(real, run):
    with pytest.raises(ValueError, match="overwrite the real one"):
        synthesize(run, real, real)
    with pytest.raises(ValueError, match="splits"):
        synthesize(run, real, splits=("training",))
    with pytest.raises(ValueError, match="n_per_map"):
        synthesize(run, real, n_per_map=0)


def test_fidelity_on_real_and_broken_images(real, tmp_path):
    f = fidelity(real)
    assert f["n_images"] == 16
    assert f["lv_darker_than_myo"] == 1.0
    assert f["outside_bright_images"] == 0.0 and f["mean_outside"] == 0.0
    assert f["mean_lv"] < f["mean_tissue"] < f["mean_myo"]
    # a "synthetic" copy (maps in sdm_maps/) whose images are inverted (bright cavity,
    # bright outside) fails both checks
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(real, bad)
    for p in (bad / "images").rglob("*.png"):
        img = read_png(p)
        label = read_png(bad / "labels" / p.parent.name / p.name)
        write_png(bad / "sdm_maps" / p.parent.name / p.name, to_sdm_map(label, sector_mask(img)))
        write_png(p, 255 - img)
    f = fidelity(bad)
    assert f["lv_darker_than_myo"] == 0.0
    assert f["outside_bright_images"] == 1.0 and f["outside_bright_pixels"] > 0.9


def test_time_samplers_reports_speedups(run, real):
    sdm = load_sdm(run)
    maps = np.zeros((2, 64, 64), np.uint8)
    maps[:, 10:50, 10:50] = 2
    df = time_samplers(sdm, maps, samplers=(("ddim", 6), ("dpm++", 2)))
    assert list(df["sampler"]) == ["ddim", "dpm++"] and list(df["steps"]) == [6, 2]
    assert (df["images"] == 2).all() and (df["seconds"] > 0).all()
    # the speed-up is the first sampler's time over each one's (not asserted to exceed 1:
    # wall time on a shared machine is a benchmark's business, benchmarks/sdm.py)
    assert df["speedup"].iloc[0] == 1.0
    assert df["speedup"].iloc[1] == pytest.approx(
        df["images_per_s"].iloc[1] / df["images_per_s"].iloc[0])
