"""Dice + 0.25 x BCE on logits: one sigmoid, the study's weights, MONAI's soft Dice."""

import pytest
import torch
import torch.nn.functional as F

from echo_vlsm.train.losses import DiceBCELoss


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 1, 16, 16, generator=g) * 3
    target = (torch.rand(4, 1, 16, 16, generator=g) > 0.5).float()
    return logits, target


def test_matches_the_formula_with_a_single_sigmoid():
    logits, target = data()
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    dice = (2 * inter + 1e-5) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1e-5)
    expected = (1 - dice).mean() + 0.25 * F.binary_cross_entropy(p, target)
    assert float(DiceBCELoss()(logits, target)) == pytest.approx(float(expected), rel=1e-5)


def test_equals_monai_dice_loss_plus_weighted_bce():
    from monai.losses import DiceLoss

    logits, target = data(1)
    monai = DiceLoss(sigmoid=True)(logits, target) + 0.25 * F.binary_cross_entropy_with_logits(
        logits, target)
    assert float(DiceBCELoss(1.0, 0.25)(logits, target)) == pytest.approx(float(monai), rel=1e-5)


def test_perfect_logits_give_zero_and_weights_select_terms():
    _, target = data(2)
    perfect = (target * 2 - 1) * 30
    assert float(DiceBCELoss()(perfect, target)) < 1e-6
    logits, target = data(3)
    dice_only = float(DiceBCELoss(1, 0)(logits, target))
    bce_only = float(DiceBCELoss(0, 1)(logits, target))
    assert float(DiceBCELoss(1, 0.25)(logits, target)) == pytest.approx(dice_only + 0.25 * bce_only,
                                                                        rel=1e-6)
    assert bce_only == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, target)))


def test_gradient_and_half_precision_logits():
    logits, target = data(4)
    logits = logits.half().requires_grad_()
    loss = DiceBCELoss()(logits, target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\).*\(2, 4, 4\)"):
        DiceBCELoss()(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))
