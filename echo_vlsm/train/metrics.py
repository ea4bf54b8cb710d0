"""Per-sample segmentation metrics with MONAI: Dice, IoU (percent) and HD95 (pixels).

The study reports Dice at 512 x 512; predictions are resized there before thresholding.
Empty masks are scored by a fixed convention, so no sample is dropped and no mean is NaN:

===========================  ======  =====  =========================================
case                         dice    iou    hd95
===========================  ======  =====  =========================================
both empty                   100     100    0
one empty, the other not     0       0      the image diagonal, ``sqrt(H^2 + W^2)``
===========================  ======  =====  =========================================

The diagonal is the largest distance two pixels of the image can have: a missed (or
hallucinated) structure counts as the worst possible boundary error, which keeps HD95 means
finite and penalises misses instead of silently skipping them.

Examples::

    >>> import torch
    >>> pred = torch.zeros(1, 8, 8, dtype=torch.bool); pred[0, 2:6, 2:6] = True
    >>> segmentation_metrics(pred, pred.clone())["dice"].tolist()
    [100.0]
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


def _as_bool(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{name}: expected masks (H, W), (B, H, W) or (B, 1, H, W), "
                         f"got shape {tuple(x.shape)}")
    return x.bool() if x.dtype == torch.bool else x > (127 if x.dtype == torch.uint8 else 0.5)


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def hd95(pred: torch.Tensor, target: torch.Tensor, spacing=None,
         workers: int | None = None) -> torch.Tensor:
    """MONAI's ``compute_hausdorff_distance(percentile=95)`` of (B, 1, H, W) masks, per
    sample, spread over ``workers`` threads (default: every core this process may use): the
    distance transforms release the GIL, each sample is computed alone, so the numbers are
    those of one call on the whole batch."""
    from monai.metrics import compute_hausdorff_distance

    def run(index: torch.Tensor) -> torch.Tensor:
        return compute_hausdorff_distance(pred[index], target[index], include_background=True,
                                          percentile=95, spacing=spacing)[:, 0].double()

    n = len(pred)
    workers = min(n, default_workers() if workers is None else max(1, int(workers)))
    with warnings.catch_warnings():  # set here: catch_warnings is not thread-safe
        warnings.simplefilter("ignore")  # MONAI's deprecation notes for get_mask_edges
        if workers <= 1:
            return run(torch.arange(n))
        parts = torch.arange(n).tensor_split(workers)
        with ThreadPoolExecutor(workers, thread_name_prefix="echo-vlsm-hd95") as pool:
            return torch.cat(list(pool.map(run, parts)))


def segmentation_metrics(pred, target, spacing=None,
                         workers: int | None = None) -> dict[str, np.ndarray]:
    """Dice and IoU in percent and HD95 in pixels, per sample, for binary masks.

    ``pred`` and ``target``: (B, H, W) or (H, W) bool masks (uint8 0/255 and 0/1 floats are
    read as masks too). Uses MONAI's ``compute_dice``, ``compute_iou`` and
    ``compute_hausdorff_distance(percentile=95)`` (on ``workers`` threads, see :func:`hd95`);
    empty masks follow the table in the module docstring. Returns ``{"dice": (B,),
    "iou": (B,), "hd95": (B,)}`` float64 arrays.
    """
    from monai.metrics import compute_dice, compute_iou

    pred = _as_bool(pred, "pred").cpu()
    target = _as_bool(target, "target").cpu()
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in "
                         "shape; resize the prediction to the mask's size first")
    b, h, w = pred.shape
    p = pred[:, None].double()
    t = target[:, None].double()
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)[:, 0].double()
    iou = compute_iou(p, t, include_background=True, ignore_empty=False)[:, 0].double()
    pred_any = pred.flatten(1).any(1)
    target_any = target.flatten(1).any(1)
    hd = torch.full((b,), math.hypot(h, w), dtype=torch.float64)
    hd[~pred_any & ~target_any] = 0.0
    both = pred_any & target_any
    if both.any():
        hd[both] = hd95(p[both], t[both], spacing, workers)
    # MONAI scores one-empty cases 0 already and both-empty 1 with ignore_empty=False; make
    # the convention explicit so it does not depend on the MONAI version.
    dice[~pred_any & ~target_any] = 1.0
    iou[~pred_any & ~target_any] = 1.0
    dice[pred_any != target_any] = 0.0
    iou[pred_any != target_any] = 0.0
    return {"dice": 100 * dice.numpy(), "iou": 100 * iou.numpy(), "hd95": hd.numpy()}


def batch_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice in percent per sample for (B, ...) bool masks, on any device (both empty:
    100). Used for the validation Dice during training; the final scores use
    :func:`segmentation_metrics`."""
    pred = pred.flatten(1).float()
    target = target.flatten(1).float()
    inter = (pred * target).sum(1)
    total = pred.sum(1) + target.sum(1)
    return torch.where(total > 0, 200 * inter / total.clamp_min(1), torch.full_like(total, 100.0))
