"""Shape words of masks: geometry on drawn shapes (sizes, rotations), the VQA backend on a tiny
randomly initialised ViLT written to tmp_path, its cache, and every error."""

import json
import math
import os

import cv2
import numpy as np
import pytest
from tiny_vqa import write_tiny_vilt

from echo_vlsm.prompts import SHAPES, shape_measures, shape_of
from echo_vlsm.prompts import vqa as vqa_mod

ANGLES = (0, 10, 25, 45, 60, 80, 90, 120, 155)
SIZES = (24, 48, 120)  # long side in pixels


def draw(kind: str, size: int, angle: float, canvas: int = 256, center=(110, 140)) -> np.ndarray:
    """A filled shape of long side ``size`` rotated by ``angle`` degrees, 0/255 uint8."""
    img = np.zeros((canvas, canvas), np.uint8)
    cx, cy = center
    if kind == "circle":
        return cv2.circle(img, (cx, cy), size // 2, 255, -1)
    if kind == "oval":  # 2:1 ellipse
        return cv2.ellipse(img, (cx, cy), (size // 2, size // 4), angle, 0, 360, 255, -1)
    if kind in ("square", "rectangle"):
        w, h = (size, size) if kind == "square" else (size, size / 2)
        pts = cv2.boxPoints(((cx, cy), (w, h), angle))
    elif kind == "triangle":  # equilateral, circumradius size / 2
        r = size / 2
        pts = [
            (cx + r * math.cos(math.radians(angle + 90 + 120 * k)),
             cy + r * math.sin(math.radians(angle + 90 + 120 * k)))
            for k in range(3)
        ]
    else:
        raise ValueError(kind)
    return cv2.fillPoly(img, [np.round(np.asarray(pts)).astype(np.int32)], 255)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", SHAPES)
def test_drawn_shapes_at_every_rotation(kind, size):
    got = {angle: shape_of(draw(kind, size, angle)) for angle in ANGLES}
    assert got == {angle: kind for angle in ANGLES}


def test_a_right_triangle_and_a_long_rectangle():
    img = cv2.fillPoly(
        np.zeros((128, 128), np.uint8), [np.array([[10, 10], [100, 10], [10, 60]])], 255
    )
    assert shape_of(img) == "triangle"
    assert shape_of(draw("rectangle", 100, 33).astype(bool)) == "rectangle"
    long = cv2.fillPoly(
        np.zeros((128, 128), np.uint8),
        [cv2.boxPoints(((64, 64), (100, 20), 20)).astype(np.int32)],
        1,
    )
    assert shape_of(long) == "rectangle"


def test_measures_of_ideal_shapes():
    sq = shape_measures(draw("square", 120, 0))
    assert sq["rect_fill"] == pytest.approx(1.0, abs=0.02)
    assert sq["triangle_fill"] == pytest.approx(0.5, abs=0.02)
    assert sq["rect_aspect"] == pytest.approx(1.0, abs=0.03)
    disk = shape_measures(draw("circle", 120, 0))
    assert disk["rect_fill"] == pytest.approx(math.pi / 4, abs=0.02)
    assert disk["ellipse_fill"] == pytest.approx(1.0, abs=0.02)
    assert disk["circularity"] > 0.7 and disk["solidity"] > 0.97
    tri = shape_measures(draw("triangle", 120, 30))
    assert tri["triangle_fill"] == pytest.approx(1.0, abs=0.04)
    assert tri["rect_fill"] == pytest.approx(0.5, abs=0.02)
    oval = shape_measures(draw("oval", 120, 45))
    assert oval["ellipse_aspect"] == pytest.approx(2.0, abs=0.1)
    assert disk["area_px"] == float((draw("circle", 120, 0) > 0).sum())


def open_wall(kind: str, size: int, angle: float, canvas: int = 256, center=(128, 128)):
    """A myocardium-like wall: a ring (circle, 2:1 ellipse or square frame) of thickness
    ~9 % of ``size``, open at one end of its long axis like the wall at the mitral plane."""
    img = np.zeros((canvas, canvas), np.uint8)
    a = size / 2
    b = a if kind in ("circle", "square") else a / 2
    t = 0.09 * size
    if kind == "square":
        cv2.fillPoly(img, [cv2.boxPoints((center, (2 * a, 2 * b), angle)).astype(np.int32)], 255)
        inner = cv2.boxPoints((center, (2 * (a - t), 2 * (b - t)), angle)).astype(np.int32)
        cv2.fillPoly(img, [inner], 0)
    else:
        cv2.ellipse(img, center, (int(a), int(b)), angle, 0, 360, 255, -1)
        cv2.ellipse(img, center, (int(a - t), int(b - t)), angle, 0, 360, 0, -1)
    d = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
    n, c, w = np.array([-d[1], d[0]]), np.array(center, float), 0.35 * b
    gap = [c + n * w, c + n * w + d * (a + 5), c - n * w + d * (a + 5), c - n * w]
    return cv2.fillPoly(img, [np.round(np.asarray(gap)).astype(np.int32)], 0)


@pytest.mark.parametrize("kind", ["circle", "oval", "square"])
def test_myocardium_is_measured_by_its_outer_outline(kind):
    for size in (48, 160):
        for angle in (0, 25, 90, 155):
            wall = open_wall(kind, size, angle)
            assert shape_of(wall, structure="myo") == kind, (size, angle)
            ring = shape_measures(wall)  # the U itself: low fill ratios for every family
            assert max(ring["rect_fill"], ring["triangle_fill"], ring["ellipse_fill"]) < 0.6
    assert shape_measures(wall, "myo")["area_px"] == ring["area_px"]  # the mask's pixels
    with pytest.raises(ValueError, match="unknown structure 'rv'"):
        shape_of(wall, structure="rv")


def test_phantom_myocardium_gets_the_word_of_its_outer_shape():
    from echo_vlsm.data.phantom import simulate_patient

    label = simulate_patient(0, 1).views["2CH"].labels["ED"]
    myo = label == 2
    ring, outline = shape_measures(myo), shape_measures(myo, "myo")
    assert max(ring[k] for k in ("rect_fill", "triangle_fill", "ellipse_fill")) < 0.4
    assert min(outline[k] for k in ("rect_fill", "triangle_fill", "ellipse_fill")) > 0.65
    heart = (label == 1) | myo  # cavity and wall: the region the wall's outline encloses
    assert shape_of(myo, structure="myo") == shape_of(heart) == "oval"
    assert shape_of(myo) == "triangle"  # the U measured as it is: the arbitrary old word
    for structure in ("lv", "la", None):  # solid structures are measured as they are
        assert shape_measures(label == 1, structure) == shape_measures(label == 1)


def test_largest_component_decides_and_input_types_agree():
    img = draw("square", 100, 20)
    img = np.maximum(img, draw("circle", 20, 0, center=(220, 30)))  # a small disk elsewhere
    assert shape_of(img) == "square"
    as01 = (img > 0).astype(np.uint8)
    assert shape_of(as01) == shape_of(img > 0) == shape_of(as01.astype(np.float32)) == "square"


def test_deterministic():
    img = draw("oval", 77, 33)
    assert {shape_of(img) for _ in range(3)} == {"oval"}
    assert shape_measures(img) == shape_measures(img.copy())


def test_tiny_masks_still_get_a_word():
    one = np.zeros((9, 9), np.uint8)
    one[4, 4] = 255
    assert shape_of(one) in SHAPES
    line = np.zeros((9, 9), np.uint8)
    line[4, 2:7] = 255
    assert shape_of(line) == "rectangle"


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        shape_of(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        shape_of(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        shape_of(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"unknown shape backend 'ofa'.*\['geometry', 'vqa'\]"):
        shape_of(draw("circle", 40, 0), backend="ofa")


# --------------------------------------------------------------------------- VQA


def test_match_shape_and_question():
    assert vqa_mod.match_shape("oval") == "oval"
    assert vqa_mod.match_shape("It is Round.") == "circle"
    assert vqa_mod.match_shape("an elliptical shape") == "oval"
    assert vqa_mod.match_shape("triangular") == "triangle"
    assert vqa_mod.match_shape("heart") is None
    assert vqa_mod.question_for("lv") == (
        "What is the shape of the left ventricular cavity enclosed in the green box?"
    )
    assert vqa_mod.question_for("la").startswith("What is the shape of the left atrium cavity")


def test_draw_box_is_green_outside_the_structure():
    image = np.full((64, 80), 100, np.uint8)
    mask = np.zeros((64, 80), np.uint8)
    mask[20:30, 30:50] = 255
    boxed = vqa_mod.draw_box(image, mask)
    assert boxed.shape == (64, 80, 3) and boxed.dtype == np.uint8
    green = np.all(boxed == (0, 255, 0), axis=2)
    ys, xs = np.nonzero(green)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (19, 30, 29, 50)
    assert not green[mask > 0].any()  # the structure itself is not painted over
    assert (boxed[0, 0] == 100).all()
    with pytest.raises(ValueError, match="must match"):
        vqa_mod.draw_box(image, mask[:10])
    with pytest.raises(ValueError, match="empty"):
        vqa_mod.draw_box(image, np.zeros_like(mask))
    with pytest.raises(ValueError, match="uint8"):
        vqa_mod.draw_box(image.astype(np.float32), mask)


LABELS = ["circle", "oval", "triangle", "square", "rectangle", "heart", "yes"]


@pytest.fixture(scope="module")
def tiny_vilt(tmp_path_factory):
    return write_tiny_vilt(tmp_path_factory.mktemp("vqa") / "tiny-vilt", LABELS)


@pytest.fixture
def echo():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 96), dtype=np.uint8)
    return image, draw("oval", 50, 30, canvas=96, center=(48, 48))


def test_vqa_answers_with_a_label_and_caches(tiny_vilt, echo, tmp_path, monkeypatch):
    image, mask = echo
    cache = tmp_path / "cache"
    vqa_mod.load_vqa.cache_clear()
    first = shape_of(
        mask, "vqa", model=str(tiny_vilt), structure="myo", image=image, cache_dir=cache
    )
    assert first in LABELS
    files = list(cache.rglob("*.json"))
    assert len(files) == 1
    entry = json.loads(files[0].read_text())
    assert entry["question"] == "What is the shape of the myocardium enclosed in the green box?"
    assert entry["answer"] in LABELS

    def no_model(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(vqa_mod, "load_vqa", no_model)
    again = shape_of(mask, "vqa", model=tiny_vilt, structure="myo", image=image, cache_dir=cache)
    assert again == first
    # another structure asks another question: not in the cache
    with pytest.raises(AssertionError, match="cache"):
        shape_of(mask, "vqa", model=tiny_vilt, structure="lv", image=image, cache_dir=cache)


def test_vqa_resolves_once_per_mask_and_caches_the_fingerprint(
    tiny_vilt, echo, tmp_path, monkeypatch
):
    image, mask = echo
    calls = []
    real_resolve = vqa_mod.resolve_model

    def counting(model):
        calls.append(model)
        return real_resolve(model)

    monkeypatch.setattr(vqa_mod, "resolve_model", counting)
    kw = dict(model=tiny_vilt, structure="la", image=image, cache_dir=tmp_path / "c")
    first = shape_of(mask, "vqa", **kw)
    calls.clear()
    before = vqa_mod._local_fingerprint.cache_info()
    for _ in range(3):
        assert shape_of(mask, "vqa", **kw) == first
    after = vqa_mod._local_fingerprint.cache_info()
    assert len(calls) == 3  # once per mask
    assert after.misses == before.misses and after.hits == before.hits + 3
    fp = vqa_mod.model_fingerprint(tiny_vilt)
    config = tiny_vilt / "config.json"
    st = config.stat()
    try:  # the model saved again: a new fingerprint, so the cached answers no longer apply
        os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert vqa_mod.model_fingerprint(tiny_vilt) != fp
    finally:
        os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert vqa_mod.model_fingerprint(tiny_vilt) == fp


def test_vqa_answer_mapping_and_unmatched_policies(tmp_path, echo):
    image, mask = echo
    vqa_mod.load_vqa.cache_clear()
    round_model = write_tiny_vilt(tmp_path / "round", ["round"])  # can only say "round"
    kw = dict(structure="lv", image=image, cache_dir=False)
    assert shape_of(mask, "vqa", model=round_model, **kw) == "circle"
    heart = write_tiny_vilt(tmp_path / "heart", ["heart"])
    assert shape_of(mask, "vqa", model=heart, **kw) == "heart"  # kept, as the study did
    assert shape_of(mask, "vqa", model=heart, unmatched="geometry", **kw) == "oval"
    with pytest.raises(ValueError, match=r"answered 'heart'.*names none of"):
        shape_of(mask, "vqa", model=heart, unmatched="error", **kw)
    with pytest.raises(ValueError, match="unmatched='maybe'"):
        shape_of(mask, "vqa", model=heart, unmatched="maybe", **kw)


def test_vqa_errors(tmp_path, echo, tiny_vilt):
    image, mask = echo
    with pytest.raises(ValueError, match="needs model="):
        shape_of(mask, "vqa", structure="lv", image=image)
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model does not exist"):
        shape_of(mask, "vqa", model=missing, structure="lv", image=image)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shape_of(mask, "vqa", model=str(missing), structure="lv", image=image)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        shape_of(mask, "vqa", model=tmp_path / "empty", structure="lv", image=image)
    with pytest.raises(ValueError, match="needs image="):
        shape_of(mask, "vqa", model=tiny_vilt, structure="lv")
    with pytest.raises(ValueError, match="needs structure="):
        shape_of(mask, "vqa", model=tiny_vilt, image=image)
    with pytest.raises(ValueError, match="unknown structure 'rv'"):
        shape_of(mask, "vqa", model=tiny_vilt, structure="rv", image=image)
    # a hub id that is not in the (offline) cache: a clear error naming it
    vqa_mod.load_vqa.cache_clear()
    with pytest.raises(OSError, match="hub id 'nobody/no-such-vqa-model'"):
        shape_of(mask, "vqa", model="nobody/no-such-vqa-model", structure="lv", image=image,
                 cache_dir=False)
