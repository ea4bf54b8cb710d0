"""The training loss of the study: Dice + 0.25 x binary cross-entropy, on logits; and the
loss its code computed (``recipe="as-run"``, :class:`DiceCEProbsLoss`).

MONAI's ``DiceCELoss`` changed its cross-entropy for a single channel in recent versions, and
feeding it sigmoid outputs applies the sigmoid twice (docs/known-defects.md). Here the sigmoid
is taken once, inside the loss: BCE uses ``binary_cross_entropy_with_logits`` (numerically
stable) and the soft Dice uses ``sigmoid(logits)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                   smooth: float = 1e-5) -> torch.Tensor:
    """1 - soft Dice per sample, averaged over the batch (MONAI's ``DiceLoss(sigmoid=True)``
    with ``smooth_nr = smooth_dr = 1e-5``)."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    intersection = (prob * target).sum(1)
    denominator = prob.sum(1) + target.sum(1)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return (1 - dice).mean()


class DiceBCELoss(nn.Module):
    """``dice_weight x (1 - soft Dice) + bce_weight x BCE`` on logits (Synthetic Boost, Sec. 3:
    Dice and cross-entropy, weights 1 and 0.25).

    Args:
        dice_weight: weight of the soft-Dice term (1).
        bce_weight: weight of the binary cross-entropy term (0.25; the public configuration
            says 0.2).

    Examples::

        >>> loss = DiceBCELoss()
        >>> target = torch.zeros(1, 1, 4, 4)
        >>> target[..., :2] = 1  # the left half is the structure
        >>> sure = torch.where(target > 0, 20.0, -20.0)  # confident logits, right everywhere
        >>> float(loss(sure, target)) < 1e-6
        True
        >>> round(float(loss(-sure, target)), 2)  # confidently wrong: Dice 1 + 0.25 x BCE 20
        6.0
        >>> round(float(loss(torch.zeros_like(target), target)), 3)  # p = 0.5: 0.5 + 0.25 ln 2
        0.673

        On an empty target the soft Dice is ``smooth / (sum of probabilities + smooth)``, so
        even confident background logits leave a small loss (16 x 2e-9 against 1e-5 here):

        >>> empty = torch.zeros(1, 1, 4, 4)
        >>> round(float(loss(torch.full_like(empty, -20.0), empty)), 4)
        0.0033
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 0.25):
        super().__init__()
        self.dice_weight = float(dice_weight)
        self.bce_weight = float(bce_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                             "must have the same shape (B, 1, H, W)")
        logits = logits.float()
        target = target.float()
        loss = logits.new_zeros(())
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target)
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits, target)
        return loss


class DiceCEProbsLoss(nn.Module):
    """The loss the study's code computed (``recipe="as-run"``): MONAI's ``DiceCELoss(
    lambda_dice=1, lambda_ce=0.2)`` called with ``sigmoid(logits)``, written out here.

    The Dice term is the soft Dice of those probabilities (the same as :class:`DiceBCELoss`'s,
    which takes the sigmoid inside). The cross-entropy term depends on MONAI's version:

    - ``monai="1.2"`` (the study's pinned ``monai==1.2.0``): one channel goes to
      ``torch.nn.CrossEntropyLoss``, whose softmax over a single channel is 1 everywhere, so
      the term is exactly 0 and carries no gradient: the study trained on Dice alone;
    - ``monai="1.4"`` (later versions): one channel goes to ``BCEWithLogitsLoss``, which
      applies a second sigmoid to the probabilities (``docs/known-defects.md``).

    Args:
        dice_weight: MONAI's ``lambda_dice`` (1).
        ce_weight: MONAI's ``lambda_ce`` (0.2 in the study's configuration).
        monai: ``"1.2"`` or ``"1.4"``, the behaviour reproduced.

    Examples::

        >>> target = torch.zeros(1, 1, 4, 4)
        >>> target[..., :2] = 1
        >>> logits = torch.zeros_like(target)  # p = 0.5 everywhere: soft Dice 0.5
        >>> round(float(DiceCEProbsLoss()(logits, target)), 4)  # the CE term is 0
        0.5
        >>> newer = DiceCEProbsLoss(monai="1.4")  # + 0.2 x BCE(sigmoid(0.5), target)
        >>> round(float(newer(logits, target)), 4)
        0.6448
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 0.2, monai: str = "1.2"):
        super().__init__()
        if monai not in ("1.2", "1.4"):
            raise ValueError(f"DiceCEProbsLoss(monai={monai!r}); expected '1.2' (the study's "
                             "pinned version: no cross-entropy on one channel) or '1.4'")
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.monai = monai

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                             "must have the same shape (B, 1, H, W)")
        logits, target = logits.float(), target.float()
        prob = torch.sigmoid(logits)
        loss = self.dice_weight * soft_dice_loss(logits, target)
        if self.ce_weight:
            if self.monai == "1.2":  # log_softmax over one channel: 0, whatever the input
                ce = -(target * torch.log_softmax(prob, dim=1)).sum(1).mean()
            else:
                ce = F.binary_cross_entropy_with_logits(prob, target)
            loss = loss + self.ce_weight * ce
        return loss


def make_loss(name: str, dice_weight: float, ce_weight: float) -> nn.Module:
    """The loss a :class:`~echo_vlsm.train.config.TrainConfig` names: ``dice-bce``
    (:class:`DiceBCELoss`) or ``dicece-probs`` (:class:`DiceCEProbsLoss`, MONAI 1.2)."""
    if name == "dice-bce":
        return DiceBCELoss(dice_weight, ce_weight)
    if name == "dicece-probs":
        return DiceCEProbsLoss(dice_weight, ce_weight, monai="1.2")
    raise ValueError(f"loss {name!r}: expected 'dice-bce' or 'dicece-probs'")
