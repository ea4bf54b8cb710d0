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
