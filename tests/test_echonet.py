"""EchoNet-Dynamic: the reader and ``validate`` on a phantom tree written in its layout, and
the phantom's format (videos really written and decoded with OpenCV)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from echo_vlsm.data.echonet import (
    FILELIST,
    FILELIST_COLUMNS,
    TRACINGS,
    EchoNetFormatError,
    EchoNetTrace,
    disc_volume,
    read_echonet,
    read_video,
    validate,
)
from echo_vlsm.data.echonet_export import check_prompt, export_echonet
from echo_vlsm.data.phantom import write_phantom
from echo_vlsm.data.phantom.echonet import echonet_splits, trace_lv, write_echonet_phantom
from echo_vlsm.dataset import read_records
from echo_vlsm.io import read_png

SPLITS = {"train": 1, "val": 1, "test": 1}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Three phantom videos (one per split), written through ``write_phantom``."""
    root = tmp_path_factory.mktemp("echonet") / "EchoNet-Dynamic"
    return write_phantom(root, 3, seed=3, layout="echonet", workers=0, splits=SPLITS)


@pytest.fixture()
def copy(tree, tmp_path) -> Path:
    return Path(shutil.copytree(tree, tmp_path / "tree"))


def _tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.read_csv(root / FILELIST, dtype=str, keep_default_na=False),
            pd.read_csv(root / TRACINGS, dtype=str, keep_default_na=False))


def _save(root: Path, files: pd.DataFrame | None = None, traces: pd.DataFrame | None = None):
    if files is not None:
        files.to_csv(root / FILELIST, index=False)
    if traces is not None:
        traces.to_csv(root / TRACINGS, index=False)


# --------------------------------------------------------------------------- the phantom


def test_phantom_has_echonet_format(tree):
    files, traces = _tables(tree)
    assert list(files.columns) == list(FILELIST_COLUMNS)
    assert sorted(files["Split"]) == ["TEST", "TRAIN", "VAL"]
    assert not files["FileName"].str.endswith(".avi").any()  # as the public FileList
    assert traces["FileName"].str.endswith(".avi").all()  # as the public VolumeTracings
    for _, row in files.iterrows():
        cap = cv2.VideoCapture(str(tree / "Videos" / f"{row['FileName']}.avi"))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(50.0)
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        video = np.stack(frames)
        assert video.shape[1:] == (112, 112, 3)
        assert (video[..., 0] == video[..., 1]).all() and (video[..., 1] == video[..., 2]).all()
        assert len(video) == int(row["NumberOfFrames"])
        assert 30 <= len(video) <= 60  # one cycle at 50 fps, 55-95 beats per minute
        mine = traces[traces["FileName"] == row["FileName"] + ".avi"]
        assert sorted(mine.groupby("Frame").size().tolist()) == [21, 21]  # axis + 20 chords
        edv, esv, ef = float(row["EDV"]), float(row["ESV"]), float(row["EF"])
        assert 20 <= ef <= 80 and esv < edv
        assert ef == pytest.approx(100 * (1 - esv / edv), abs=1e-3)
    manifest = json.loads((tree / "phantom.json").read_text())
    assert manifest["complete"] and manifest["layout"] == "echonet"


def test_phantom_speckle_decorrelates_and_the_heart_moves(tree):
    video = read_echonet(tree)[0]
    frames = video.frames().astype(np.float64)
    fan = frames.mean(0) > 5
    a, b = frames[video.ed.frame], frames[(video.ed.frame + 1) % len(frames)]
    r = np.corrcoef(a[fan], b[fan])[0, 1]
    assert 0.4 < r < 0.98, r  # neighbours alike, yet no frame repeats the last one
    assert np.abs(a - b)[fan].mean() > 3
    assert video.ed.area > 1.3 * video.es.area  # ED traced larger than ES


def test_tracings_lie_on_the_dark_cavity(tree):
    for video in read_echonet(tree):
        for phase in ("ED", "ES"):
            image = video.frame(phase).astype(float)
            mask = video.trace(phase).mask(112, 112)
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
            assert mask.sum() > 300
            assert image[mask].mean() < 0.6 * image[ring & ~mask].mean()


def test_trace_lv_of_an_ellipse_gives_its_area_and_volume():
    fine, a, b = 4, 40.0, 15.0  # semi-axes in (coarse) pixels: long axis vertical
    yy, xx = np.mgrid[0:112 * fine, 0:112 * fine]
    cy, cx = (60.0 + 0.5) * fine - 0.5, (56.0 + 0.5) * fine - 0.5
    mask = ((yy - cy) / (a * fine)) ** 2 + ((xx - cx) / (b * fine)) ** 2 <= 1
    mask &= yy <= cy  # the half above the "mitral plane"
    axis, chords = trace_lv(mask, fine)
    assert axis[:2] == pytest.approx([56.0, 60.0 - a], abs=0.6)  # apex first
    assert axis[2:] == pytest.approx([56.0, 60.0], abs=0.6)
    assert (chords[:, 0] < chords[:, 2]).all()  # first ends on the left
    trace = EchoNetTrace(0, axis, chords, 2)
    assert trace.area == pytest.approx(math.pi * a * b / 2, rel=0.04)
    # half a prolate spheroid: 2/3 pi a b^2
    assert disc_volume(axis, chords) == pytest.approx(2 / 3 * math.pi * a * b * b, rel=0.05)


def test_splits_and_resume(tmp_path, tree):
    assert echonet_splits(24, {"train": 2, "val": 2, "test": 20}).count("test") == 20
    with pytest.raises(ValueError, match="add up to 5 videos, not 4"):
        echonet_splits(4, {"train": 3, "val": 1, "test": 1})
    root = tmp_path / "again"
    shutil.copytree(tree, root)
    before = {p.name: p.stat().st_mtime_ns for p in (root / "Videos").iterdir()}
    write_echonet_phantom(root, 3, seed=3, workers=0, splits=SPLITS)  # nothing to simulate
    assert {p.name: p.stat().st_mtime_ns for p in (root / "Videos").iterdir()} == before
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("data")
    with pytest.raises(FileExistsError, match="not empty"):
        write_echonet_phantom(tmp_path / "foreign", 1)


# --------------------------------------------------------------------------- the reader


def test_read_echonet_reads_the_tree(tree):
    videos = read_echonet(tree)
    assert [v.split for v in videos] == ["train", "val", "test"]
    files, _ = _tables(tree)
    for v in videos:
        row = files[files["FileName"] == v.name].iloc[0]
        assert v.ef == pytest.approx(float(row["EF"]))
        assert v.ed.area > v.es.area and v.ed.chords.shape == (20, 4)
        assert v.frame("ES").shape == (112, 112) and v.frame("ES").dtype == np.uint8
        assert np.array_equal(v.frame("ED"), v.frames()[v.ed.frame])
    assert validate(tree) == []


def test_ed_is_the_larger_area_whatever_the_row_order(copy):
    expected = {v.name: (v.ed.frame, v.es.frame) for v in read_echonet(copy)}
    files, traces = _tables(copy)
    order = traces["Frame"].astype(int) * -1  # the later frame's rows first in the file
    _save(copy, traces=traces.iloc[np.argsort(order.to_numpy(), kind="stable")])
    assert {v.name: (v.ed.frame, v.es.frame) for v in read_echonet(copy)} == expected


def test_both_filename_forms(copy):
    expected = {v.name: (v.ef, v.ed.frame) for v in read_echonet(copy)}
    files, traces = _tables(copy)
    files["FileName"] = files["FileName"] + ".avi"
    traces["FileName"] = traces["FileName"].str.replace(".avi", "", regex=False)
    _save(copy, files, traces)
    assert {v.name: (v.ef, v.ed.frame) for v in read_echonet(copy)} == expected
    assert validate(copy) == []


def test_splits_override(tree):
    names = [v.name for v in read_echonet(tree)]
    videos = read_echonet(tree, splits={"test": [names[0] + ".avi"], "train": [names[2]]})
    assert [(v.name, v.split) for v in videos] == [(names[2], "train"), (names[0], "test")]
    with pytest.raises(ValueError, match="not in FileList.csv"):
        read_echonet(tree, splits={"test": ["0XNOSUCHVIDEO"]})
    with pytest.raises(ValueError, match="unknown split"):
        read_echonet(tree, splits={"holdout": [names[0]]})


# --------------------------------------------------------------------------- validate


def _first(root: Path) -> str:
    return _tables(root)[0]["FileName"].iloc[0]


def _missing_video(root):
    (root / "Videos" / f"{_first(root)}.avi").unlink()


def _broken_video(root):
    (root / "Videos" / f"{_first(root)}.avi").write_bytes(b"RIFF not a video at all")


def _frame_beyond(root):
    files, traces = _tables(root)
    rows = traces["FileName"] == _first(root) + ".avi"
    last = traces.loc[rows, "Frame"].astype(int).max()
    traces.loc[rows & (traces["Frame"].astype(int) == last), "Frame"] = "999"
    _save(root, traces=traces)


def _few_chords(root):
    files, traces = _tables(root)
    rows = traces.index[traces["FileName"] == _first(root) + ".avi"]
    _save(root, traces=traces.drop(rows[3:21]))  # the first frame keeps its axis + 2 chords


def _one_frame(root):
    files, traces = _tables(root)
    rows = traces.index[traces["FileName"] == _first(root) + ".avi"]
    _save(root, traces=traces.drop(rows[21:]))


def _outside(root):
    files, traces = _tables(root)
    traces.loc[traces.index[traces["FileName"] == _first(root) + ".avi"][5], "X2"] = "140.0"
    _save(root, traces=traces)


def _ef(value):
    def damage(root):
        files, _ = _tables(root)
        files.loc[0, "EF"] = value
        _save(root, files)
    return damage


def _no_tracings(root):
    files, traces = _tables(root)
    _save(root, traces=traces[traces["FileName"] != _first(root) + ".avi"])


def _no_filelist_row(root):
    files, _ = _tables(root)
    _save(root, files.iloc[1:])


def _bad_split(root):
    files, _ = _tables(root)
    files.loc[0, "Split"] = "HOLDOUT"
    _save(root, files)


def _bad_number(root):
    files, traces = _tables(root)
    traces.loc[4, "Y1"] = "n/a"
    _save(root, traces=traces)


DAMAGES = [  # (damage, file named by the problem, words of the problem)
    (_missing_video, ".avi", "missing video (listed at line 2 of FileList.csv)"),
    (_broken_video, ".avi", "not a decodable video"),
    (_frame_beyond, TRACINGS, "is traced at frame 999, beyond the video's"),
    (_few_chords, TRACINGS, "has 2 chords after its long axis; at least 3 are needed"),
    (_one_frame, TRACINGS, "has 1 usable traced frames"),
    (_outside, TRACINGS, "is traced outside the 112 x 112 frame"),
    (_ef(""), FILELIST, "line 2: 0XPHANTOM000000001: EF is ''; expected a percentage"),
    (_ef("130"), FILELIST, "EF is '130'; expected a percentage in 0..100"),
    (_no_tracings, FILELIST, "line 2: 0XPHANTOM000000001 has no tracings in VolumeTracings"),
    (_no_filelist_row, TRACINGS, "line 2: 0XPHANTOM000000001 has tracings but no row in"),
    (_bad_split, FILELIST, "Split is 'HOLDOUT'; expected one of ['TRAIN', 'VAL', 'TEST']"),
    (_bad_number, TRACINGS, "line 6: 0XPHANTOM000000001: X1, Y1, X2, Y2 must be numbers"),
]


@pytest.mark.parametrize("damage, file, words", DAMAGES, ids=[d[0].__name__ for d in DAMAGES])
def test_validate_names_file_line_and_problem(copy, damage, file, words):
    damage(copy)
    problems = validate(copy)
    hits = [p for p in problems if words in p]
    assert len(hits) == 1, problems
    assert hits[0].startswith(str(copy)) and file in hits[0].split(": ")[0]
    if damage is _broken_video:  # read_echonet decodes nothing: loading the frame raises
        with pytest.raises(EchoNetFormatError, match="not a decodable video"):
            [v.frame("ED") for v in read_echonet(copy)]
        return
    with pytest.raises(EchoNetFormatError):
        read_echonet(copy)


def test_validate_lists_every_problem_at_once(copy):
    for damage in (_missing_video, _bad_split, _outside):
        damage(copy)
    problems = validate(copy)
    assert len(problems) == 3, problems
    with pytest.raises(EchoNetFormatError, match="Split is 'HOLDOUT'"):  # the first met
        read_echonet(copy)


def test_validate_on_a_folder_that_is_no_tree(tmp_path):
    (problem,) = validate(tmp_path)
    assert problem.startswith(str(tmp_path)) and "not an EchoNet-Dynamic tree" in problem
    with pytest.raises(EchoNetFormatError, match="missing video"):
        read_video(tmp_path / "none.avi")


# --------------------------------------------------------------------------- export


def test_export_into_the_dataset_format(tree, tmp_path):
    videos = read_echonet(tree)
    out = export_echonet(videos, tmp_path / "echonet", size=128, workers=0)
    table = read_records(out)
    assert len(table) == 6 and set(table["view"]) == {"4CH"}
    assert set(table["structures"]) == {"lv"} and (table["sex"] == "").all()
    assert table["spacing_y"].isna().all() and table["age"].isna().all()
    v = videos[0]
    row = table[table["stem"] == f"{v.name}_4CH_ES"].iloc[0]
    assert (row["phase"], row["split"], int(row["frame"])) == ("ES", v.split, v.es.frame)
    assert float(row["ef"]) == pytest.approx(v.ef)
    lv = read_png(out / "masks" / "lv" / v.split / f"{v.name}_4CH_ES.png")
    traced = cv2.resize(v.es.mask(112, 112).astype(np.uint8) * 255, (128, 128),
                        interpolation=cv2.INTER_NEAREST)
    assert lv.shape == (128, 128) and (lv == traced).mean() > 0.98
    assert not read_png(out / "masks" / "myo" / v.split / f"{v.name}_4CH_ES.png").any()


@pytest.mark.parametrize("key, words", [("p4", "sex"), ("p5", "age"), ("p6", "image quality")])
def test_prompts_echonet_cannot_make(key, words):
    assert [check_prompt(k) for k in ("p0", "P3")] == ["p0", "p3"]
    with pytest.raises(ValueError, match=f"prompt {key} needs .*{words}.*does not publish"):
        check_prompt(key)
