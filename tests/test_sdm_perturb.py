"""5-class SDM maps, the sector, and the study's label-map perturbations."""

import numpy as np
import pytest
from scipy import ndimage
from sdm_data import echo_pair

from echo_vlsm.sdm.labels import (
    NUM_CLASSES,
    resize_map,
    sector_mask,
    to_camus_label,
    to_sdm_map,
)
from echo_vlsm.sdm.perturb import PerturbConfig, clean_map, perturb_map, perturb_maps


@pytest.fixture(scope="module")
def pair():
    return echo_pair(128, np.random.default_rng(3))


def test_sector_counts_dark_cavities_inside_the_fan(pair):
    image, label = pair
    img = image.copy()
    img[label == 1] = 0  # a black cavity inside the fan
    img[5, 2] = 200  # a speck outside the fan
    sector = sector_mask(img)
    assert sector[label == 1].all()
    assert not sector[5, 2]
    assert not sector[0, 0] and not sector[-1, 0]
    fan = image > 0
    assert abs(int(sector.sum()) - int(fan.sum())) < 0.02 * fan.sum()


def test_sdm_map_classes_and_round_trip(pair):
    image, label = pair
    m = to_sdm_map(label, sector_mask(image))
    assert set(np.unique(m)) == {0, 1, 2, 3, 4}
    assert (m[label == 2] == 3).all() and (m[label == 3] == 4).all() and (m[label == 1] == 1).all()
    assert (m[image == 0] == 0).sum() > 0.2 * m.size
    assert np.array_equal(to_camus_label(m), label)
    with pytest.raises(ValueError, match="expected 0..3"):
        to_sdm_map(np.full((4, 4), 7, np.uint8), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="expected 0..4"):
        to_camus_label(np.full((4, 4), 5, np.uint8))


def test_resize_map_keeps_classes():
    m = np.zeros((128, 128), np.uint8)
    m[20:100, 30:90] = 2
    m[40:80, 52:72] = 1
    small = resize_map(m, 32)
    assert small.shape == (32, 32) and small.dtype == np.uint8
    assert set(np.unique(small)) == {0, 1, 2}
    assert (small == 1).sum() == (m == 1).sum() // 16
    assert resize_map(small, 64).shape == (64, 64)


def _check(new, original):
    sector = original != 0
    assert new.shape == original.shape and new.dtype == np.uint8
    assert new.max() < NUM_CLASSES
    assert (new[~sector] == 0).all(), "outside the sector must stay 0"
    assert (new[sector] != 0).all(), "the sector must stay filled"
    for cls in (1, 3, 4):
        mask = new == cls
        assert mask.any(), f"class {cls} vanished"
        n = ndimage.label(mask, structure=np.ones((3, 3)))[1]
        assert n == 1, f"class {cls} is in {n} pieces"


def test_perturbations_stay_valid_and_differ(pair):
    image, label = pair
    m = to_sdm_map(label, sector_mask(image))
    maps = perturb_maps(m, n=5, seed=0)
    assert len(maps) == 5
    for new in maps:
        _check(new, m)
        changed = (new != m).mean()
        assert 0.005 < changed < 0.5
    assert not np.array_equal(maps[0], maps[1])


def test_perturbation_is_deterministic_per_seed(pair):
    image, label = pair
    m = to_sdm_map(label, sector_mask(image))
    a = perturb_maps(m, n=2, seed=7)
    b = perturb_maps(m, n=2, seed=7)
    c = perturb_maps(m, n=2, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_strong_deformation_still_gives_one_piece_per_structure(pair):
    image, label = pair
    m = to_sdm_map(label, sector_mask(image))
    wild = PerturbConfig(degrees=30, max_displacement=0.25, scale=(0.6, 1.3))
    rng = np.random.default_rng(0)
    for _ in range(5):
        _check(perturb_map(m, rng, wild), m)


def test_clean_map_drops_stray_pieces_and_fills_holes():
    sector = np.zeros((40, 40), bool)
    sector[2:38, 2:38] = True
    warped = np.full((40, 40), 2, np.uint8)
    warped[10:30, 10:30] = 1
    warped[18:20, 18:20] = 2  # a hole in the cavity
    warped[33:35, 33:35] = 1  # a stray piece
    warped[0:5, 0:5] = 3  # partly outside the sector
    out = clean_map(warped, sector)
    assert (out[~sector] == 0).all()
    assert (out[18:20, 18:20] == 1).all()
    assert (out[33:35, 33:35] == 2).all()
    assert (out[2:5, 2:5] == 3).all()


def test_perturb_refuses_bad_maps():
    with pytest.raises(ValueError, match="0..4"):
        perturb_map(np.full((8, 8), 9, np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="2-D"):
        perturb_map(np.zeros((2, 8, 8), np.uint8), np.random.default_rng(0))
