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
    """MONAI's ``compute_hausdorff_distance(percentile=95, include_background=True)`` of
    (B, 1, H, W) masks, per sample, float64 (B,), the same numbers bit for bit.

    Without ``spacing``, a sample whose masks are both non-empty is computed by
    :func:`hd95_exact` (MONAI's algorithm without its per-call overhead: 1.5-2.5 ms instead
    of 7-10 ms per 512 px sample with one torch thread, and MONAI's path takes 25-100 ms when
    torch's intra-op threads contend on a busy machine); the others (an empty mask, or a
    ``spacing``) go through MONAI itself. Samples are spread over ``workers`` threads
    (default 1: per sample the work is small and mostly holds the GIL, so neither threads nor
    processes gained on 2 cores; ``benchmarks/hd95.py`` measures them)."""
    n = len(pred)
    workers = 1 if workers is None else max(1, int(workers))
    if spacing is not None:
        return _hd95_monai(pred, target, spacing, workers)
    p_np, t_np = _foreground(pred).numpy(), _foreground(target).numpy()
    both = p_np.reshape(n, -1).any(1) & t_np.reshape(n, -1).any(1)
    out = torch.empty(n, dtype=torch.float64)
    if not both.all():
        rest = torch.from_numpy(np.flatnonzero(~both))
        out[rest] = _hd95_monai(pred[rest], target[rest], None, workers)
    index = np.flatnonzero(both).tolist()

    def one(i: int) -> float:
        return hd95_exact(p_np[i], t_np[i])

    if workers <= 1 or len(index) <= 1:
        values = [one(i) for i in index]
    else:
        with ThreadPoolExecutor(min(workers, len(index)),
                                thread_name_prefix="echo-vlsm-hd95") as pool:
            values = list(pool.map(one, index))
    if index:
        out[torch.tensor(index, dtype=torch.long)] = torch.tensor(values, dtype=torch.float64)
    return out


def _foreground(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool on the CPU of (B, 1, H, W) masks, read as MONAI reads them (bool as
    is, other types: ``== 1``)."""
    x = torch.as_tensor(x).cpu()[:, 0]
    return x if x.dtype == torch.bool else x == 1


def hd95_exact(pred: np.ndarray, target: np.ndarray) -> float:
    """HD95 (pixels) of two non-empty (H, W) bool masks, as MONAI computes it, without its
    per-call overhead: the masks cropped to their union's bounding box plus a 1-pixel
    margin (MONAI's ``get_mask_edges(crop=True)``; surface distances are between points of
    the two masks, so the crop changes no distance), edges = mask XOR its erosion by the
    4-neighbour cross (scipy's default ``binary_erosion``, written with slices), nearest-edge
    distances by a KD-tree over the edge pixels' coordinates both ways (MONAI's CPU path),
    in float32, and the larger of the two ``torch.quantile(d, 0.95)``."""
    from scipy.spatial import KDTree

    union = pred | target
    rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    coords = []
    for mask in (pred, target):
        m = np.pad(mask[box], 1)  # the margin: zeros, inside the image or not
        inner = m[1:-1, 1:-1]
        eroded = inner & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        coords.append((np.argwhere(inner & ~eroded) + 1).astype(np.float64))
    d_pred = KDTree(coords[1], leafsize=32).query(coords[0], k=1)[0]
    d_target = KDTree(coords[0], leafsize=32).query(coords[1], k=1)[0]
    q = [torch.quantile(torch.as_tensor(d, dtype=torch.float32), 0.95)
         for d in (d_pred, d_target)]
    return float(torch.max(torch.stack(q)))


def _hd95_monai(pred: torch.Tensor, target: torch.Tensor, spacing=None,
                workers: int = 1) -> torch.Tensor:
    """MONAI's ``compute_hausdorff_distance(percentile=95)`` itself, per sample, spread over
    ``workers`` threads; each sample is computed alone, so the numbers are those of one call
    on the whole batch. The reference :func:`hd95_exact` is tested against."""
    from monai.metrics import compute_hausdorff_distance

    def run(index: torch.Tensor) -> torch.Tensor:
        return compute_hausdorff_distance(pred[index], target[index], include_background=True,
                                          percentile=95, spacing=spacing)[:, 0].double()

    n = len(pred)
    workers = max(1, min(n, int(workers)))
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
    read as masks too). The numbers of MONAI's ``compute_dice``, ``compute_iou`` (computed
    from exact pixel counts with MONAI's arithmetic, float32 for Dice and float64 for IoU, so
    bit for bit the same; :func:`monai_dice_iou` is the reference tested against) and
    ``compute_hausdorff_distance(percentile=95)`` (:func:`hd95`); empty masks follow the
    table in the module docstring. Returns ``{"dice": (B,), "iou": (B,), "hd95": (B,)}``
    float64 arrays.
    """
    pred = _as_bool(pred, "pred").cpu()
    target = _as_bool(target, "target").cpu()
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in "
                         "shape; resize the prediction to the mask's size first")
    b, h, w = pred.shape
    # counted by numpy, single-threaded: torch's intra-op threads slow these reductions down
    # on a busy machine (benchmarks/hd95.py)
    p2, t2 = pred.reshape(b, -1).numpy(), target.reshape(b, -1).numpy()
    n_pred = torch.from_numpy(np.count_nonzero(p2, axis=1).astype(np.int64))
    n_target = torch.from_numpy(np.count_nonzero(t2, axis=1).astype(np.int64))
    inter = torch.from_numpy(np.count_nonzero(p2 & t2, axis=1).astype(np.int64))
    total = n_pred + n_target
    # MONAI's arithmetic: dice from integer counts in float32 (its one-channel path compares
    # the masks to 1, so it sums bools), IoU from float64 sums
    dice = torch.where(total > 0, (2.0 * inter) / total.clamp_min(1), 1.0).double()
    union = total.double() - inter.double()
    iou = torch.where(union > 0, inter.double() / union.clamp_min(1), 1.0)
    pred_any, target_any = n_pred > 0, n_target > 0
    hd = torch.full((b,), math.hypot(h, w), dtype=torch.float64)
    hd[~pred_any & ~target_any] = 0.0
    both = pred_any & target_any
    if both.any():
        hd[both] = hd95(pred[both][:, None], target[both][:, None], spacing, workers)
    # MONAI scores one-empty cases 0 and both-empty 1 with ignore_empty=False; the
    # convention, explicit:
    dice[~pred_any & ~target_any] = 1.0
    iou[~pred_any & ~target_any] = 1.0
    dice[pred_any != target_any] = 0.0
    iou[pred_any != target_any] = 0.0
    return {"dice": 100 * dice.numpy(), "iou": 100 * iou.numpy(), "hd95": hd.numpy()}


def monai_dice_iou(pred, target) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU in percent by MONAI's ``compute_dice`` / ``compute_iou``
    (``include_background=True, ignore_empty=False``) on float64 masks, per sample: what
    :func:`segmentation_metrics` computes from pixel counts, kept as its reference."""
    from monai.metrics import compute_dice, compute_iou

    p = _as_bool(pred, "pred").cpu()[:, None].double()
    t = _as_bool(target, "target").cpu()[:, None].double()
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)[:, 0].double()
    iou = compute_iou(p, t, include_background=True, ignore_empty=False)[:, 0].double()
    return 100 * dice.numpy(), 100 * iou.numpy()


def batch_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice in percent per sample for (B, ...) bool masks, on any device (both empty:
    100). Used for the validation Dice during training; the final scores use
    :func:`segmentation_metrics`."""
    pred = pred.flatten(1).float()
    target = target.flatten(1).float()
    inter = (pred * target).sum(1)
    total = pred.sum(1) + target.sum(1)
    return torch.where(total > 0, 200 * inter / total.clamp_min(1), torch.full_like(total, 100.0))
