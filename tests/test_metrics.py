"""Per-sample Dice, IoU and HD95 on hand-made masks with known values, empty masks included."""

import math

import numpy as np
import pytest
import torch

from echo_vlsm.train.metrics import batch_dice, segmentation_metrics


def masks(shape=(3, 40, 40)):
    return torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)


@pytest.mark.slow
def test_overlapping_squares_known_dice_and_iou():
    pred, truth = masks((1, 40, 40))
    pred[0, 10:20, 10:20] = True  # 100 px
    truth[0, 12:22, 10:20] = True  # 100 px, 80 shared
    m = segmentation_metrics(pred, truth)
    assert m["dice"][0] == pytest.approx(80.0, abs=1e-4)  # 2 * 80 / 200
    assert m["iou"][0] == pytest.approx(100 * 80 / 120, abs=1e-4)
    assert m["hd95"][0] == pytest.approx(2.0)


def test_hd95_of_points_and_concentric_disks():
    pred, truth = masks((2, 64, 64))
    pred[0, 5, 5] = True
    truth[0, 8, 9] = True  # 3-4-5 triangle: distance 5
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    pred[1] = torch.from_numpy(r <= 10)
    truth[1] = torch.from_numpy(r <= 16)
    m = segmentation_metrics(pred, truth)
    assert m["hd95"][0] == pytest.approx(5.0)
    assert m["dice"][0] == 0 and m["iou"][0] == 0
    assert 5.0 <= m["hd95"][1] <= 7.0  # radii differ by 6 (pixel boundaries shift it by ~1)
    inner, outer = (r <= 10).sum(), (r <= 16).sum()
    assert m["dice"][1] == pytest.approx(200 * inner / (inner + outer), rel=1e-5)
    assert m["iou"][1] == pytest.approx(100 * inner / outer, rel=1e-5)


def test_empty_masks_follow_the_documented_convention():
    pred, truth = masks((4, 30, 40))
    pred[1, 3:9, 3:9] = True  # prediction only
    truth[2, 3:9, 3:9] = True  # ground truth only
    pred[3, 0:5, 0:5] = True  # a normal pair to check the batch is not disturbed
    truth[3, 0:5, 0:5] = True
    m = segmentation_metrics(pred, truth)
    diagonal = math.hypot(30, 40)
    np.testing.assert_allclose(m["dice"], [100, 0, 0, 100], atol=1e-4)
    np.testing.assert_allclose(m["iou"], [100, 0, 0, 100], atol=1e-4)
    np.testing.assert_allclose(m["hd95"], [0, diagonal, diagonal, 0], atol=1e-6)
    assert not np.isnan(m["hd95"]).any()


def test_accepts_uint8_masks_and_channel_dimension():
    pred = np.zeros((2, 1, 16, 16), np.uint8)
    truth = np.zeros((2, 1, 16, 16), np.uint8)
    pred[:, 0, 4:8, 4:8] = 255
    truth[:, 0, 4:8, 4:12] = 255
    m = segmentation_metrics(pred, truth)
    np.testing.assert_allclose(m["dice"], [200 * 16 / 48] * 2, rtol=1e-5)


def test_shape_mismatch_is_an_error_that_says_what_to_do():
    with pytest.raises(ValueError, match="resize the prediction"):
        segmentation_metrics(torch.zeros(1, 8, 8), torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="expected masks"):
        segmentation_metrics(torch.zeros(8), torch.zeros(8))


def test_batch_dice_matches_monai_dice_including_empty():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(6, 24, 24, generator=g) > 0.6
    truth = torch.rand(6, 24, 24, generator=g) > 0.5
    pred[4] = False
    truth[4] = False
    pred[5] = False
    expected = segmentation_metrics(pred, truth)["dice"]
    np.testing.assert_allclose(batch_dice(pred, truth).numpy(), expected, atol=1e-3)


# -- the exact fast paths against MONAI itself ----------------------------------------------
def _random_pairs(rng, n):
    """Masks of many sizes and densities: noise, blobs, masks touching the image border,
    empty ones, identical ones."""
    yy, xx = np.mgrid[:64, :64]
    for k in range(n):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        if k % 3 == 0:
            a = rng.random((h, w)) < rng.random()
            b = rng.random((h, w)) < rng.random()
        else:
            cy, cx = rng.integers(-8, 72, 2)
            r1, r2 = rng.integers(1, 30, 2)
            a = ((yy - cy) ** 2 + (xx - cx) ** 2 < r1 ** 2)[:h, :w]
            b = ((yy - cy - k % 5) ** 2 + (xx - cx) ** 2 < r2 ** 2)[:h, :w]
        if k % 7 == 0:
            a = np.zeros_like(a)
        if k % 11 == 0:
            b = np.zeros_like(b)
        if k % 13 == 0:
            b = a.copy()
        yield a, b


def _phantom_pairs():
    """LV, myocardium and LA of one phantom patient at 512 x 512: ED against ES, against
    itself and against itself shifted (the structures the study scores)."""
    from echo_vlsm.data.phantom import simulate_patient
    from echo_vlsm.imaging import resize_label

    patient = simulate_patient(0, 1)
    for view in patient.views.values():
        ed = resize_label(view.labels["ED"], 512)
        es = resize_label(view.labels["ES"], 512)
        for label in (1, 2, 3):
            yield ed == label, es == label
            yield ed == label, np.roll(ed == label, 9, axis=1)


def _same(x: torch.Tensor, y: torch.Tensor) -> bool:
    return torch.equal(x, y) or (x.isnan() == y.isnan()).all() and torch.equal(
        x[~x.isnan()], y[~y.isnan()])


def test_hd95_equals_monai_bit_for_bit_on_random_and_phantom_masks():
    from echo_vlsm.train.metrics import _hd95_monai, hd95

    rng = np.random.default_rng(0)
    pairs = [*_random_pairs(rng, 150), *_phantom_pairs()]
    for k, (a, b) in enumerate(pairs):  # one by one: every size, empty masks included
        pa, pb = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
        if k % 4 == 0:  # float masks are read as MONAI reads them (== 1)
            pa, pb = pa.double(), pb.double()
        assert _same(hd95(pa, pb), _hd95_monai(pa, pb)), (a.sum(), b.sum())
    same_size = [(a, b) for a, b in pairs if a.shape == (512, 512)]
    p = torch.from_numpy(np.stack([a for a, _ in same_size]))[:, None]
    t = torch.from_numpy(np.stack([b for _, b in same_size]))[:, None]
    reference = _hd95_monai(p, t)
    assert torch.equal(hd95(p, t), reference)
    assert torch.equal(hd95(p, t, workers=3), reference)  # threads: the same numbers
    assert torch.equal(hd95(p, t, spacing=0.5), _hd95_monai(p, t, spacing=0.5))


def test_dice_and_iou_equal_monai_bit_for_bit():
    from echo_vlsm.train.metrics import monai_dice_iou

    rng = np.random.default_rng(1)
    groups: dict[tuple, list] = {}
    for a, b in [*_random_pairs(rng, 200), *_phantom_pairs()]:
        groups.setdefault(a.shape, []).append((a, b))
    for pairs in groups.values():
        pred = np.stack([a for a, _ in pairs])
        truth = np.stack([b for _, b in pairs])
        m = segmentation_metrics(pred, truth)
        dice, iou = monai_dice_iou(pred, truth)
        both = pred.reshape(len(pred), -1).any(1) & truth.reshape(len(pred), -1).any(1)
        # MONAI's own numbers wherever both masks hold a structure; the documented
        # convention (tested above) for the rest
        np.testing.assert_array_equal(m["dice"][both], dice[both])
        np.testing.assert_array_equal(m["iou"][both], iou[both])


def test_hd95_of_the_edge_cases_above_unchanged_by_the_exact_path():
    from echo_vlsm.train.metrics import _hd95_monai, hd95

    pred, truth = masks((3, 40, 40))
    pred[0, 10:20, 10:20] = True
    truth[0, 12:22, 10:20] = True
    pred[1, 0, 0] = True  # single pixels in the corners: the crop's margin outside the image
    truth[1, 39, 39] = True
    pred[2, :, :] = True  # the whole image against a bar along its border
    truth[2, :, 0:3] = True
    p, t = pred[:, None], truth[:, None]
    assert torch.equal(hd95(p, t), _hd95_monai(p, t))
    assert hd95(p, t)[0] == pytest.approx(2.0)
    assert hd95(p, t)[1] == pytest.approx(math.hypot(39, 39))
