"""HD95 per sample at 512 x 512 on phantom masks: MONAI against the exact path, one thread
against several, and the whole ``segmentation_metrics`` before and after.

Masks: LV, myocardium and LA of ``--patients`` phantom patients (both views) at 512 px, the
ground truth at end-diastole; three kinds of "prediction" for it:

* ``es``:     the same structure at end-systole (a realistic boundary disagreement);
* ``coarse``: the ground truth through a 1/4-resolution round trip (area-averaged to 128 px,
              bilinearly back to 512, thresholded at 0.5, shifted by 2 px): a low-resolution
              model's output;
* ``noisy``:  ``coarse`` with ~30 spurious blobs inside the fan: many more edge pixels.

Methods (each on every sample of a kind, in batches of 64 as ``evaluate`` scores them):

* ``monai-1``:   MONAI's ``compute_hausdorff_distance(percentile=95)``, one thread (the
                 implementation before: ``_hd95_monai(workers=1)``);
* ``monai-T``:   the same over ``default_workers()`` threads (its previous default);
* ``exact-1``:   ``hd95`` (``hd95_exact``: MONAI's algorithm without its per-call overhead,
                 bit for bit the same numbers), one thread;
* ``exact-T``:   the same over ``default_workers()`` threads;
* ``exact-P``:   the same over a pool of ``default_workers()`` processes (made once, outside
                 the timing; chunks of the batch sent to it).

Every method's numbers are checked equal. Methods are interleaved in a shuffled order within
each of ``--repeats`` rounds, and the median per sample is reported (the machine is shared).
The whole ``segmentation_metrics`` (Dice, IoU, HD95) is timed as before (MONAI's Dice / IoU on
float64 masks, MONAI's HD95 threaded) and now. Writes the ``hd95`` section of RESULTS.md.

    python benchmarks/hd95.py                # 5 patients (30 masks per kind), 5 rounds
    python benchmarks/hd95.py --patients 4 --repeats 3 --no-write
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from echo_vlsm.train.metrics import (  # noqa: E402
    _hd95_monai,
    default_workers,
    hd95,
    monai_dice_iou,
    segmentation_metrics,
)

STRUCTURES = {1: "LV", 2: "myocardium", 3: "LA"}
BATCH = 64


def phantom_masks(patients: int) -> dict:
    """Per kind, (target, pred, structure) at 512 px."""
    from echo_vlsm.data.phantom import simulate_patient
    from echo_vlsm.imaging import resize_label

    rng = np.random.default_rng(0)
    out = {"es": [], "coarse": [], "noisy": []}
    for number in range(1, patients + 1):
        patient = simulate_patient(0, number)
        for view in patient.views.values():
            ed = resize_label(view.labels["ED"], 512)
            es = resize_label(view.labels["ES"], 512)
            fan = resize_label(view.sector.astype(np.uint8), 512) > 0 if view.sector is not None \
                else np.ones_like(ed, bool)
            for label, name in STRUCTURES.items():
                target = ed == label
                out["es"].append((target, es == label, name))
                small = cv2.resize(target.astype(np.float32), (128, 128),
                                   interpolation=cv2.INTER_AREA)
                coarse = cv2.resize(small, (512, 512), interpolation=cv2.INTER_LINEAR) > 0.5
                coarse = np.roll(coarse, 2, axis=1)
                out["coarse"].append((target, coarse, name))
                noisy = coarse.copy()
                ys, xs = np.nonzero(fan)
                for k in rng.integers(0, len(ys), 30):
                    r = int(rng.integers(1, 6))
                    cv2.circle(noisy.view(np.uint8), (int(xs[k]), int(ys[k])), r, 1, -1)
                out["noisy"].append((target, noisy, name))
    return out


def _edges(mask: np.ndarray) -> int:
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1]
    return int((inner & ~(inner & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])).sum())


def _chunk_hd95(args):
    p, t = args
    return hd95(torch.from_numpy(p)[:, None], torch.from_numpy(t)[:, None], workers=1)


def _pool_hd95(pool, p: torch.Tensor, t: torch.Tensor, workers: int) -> torch.Tensor:
    parts = [(a[:, 0].numpy(), b[:, 0].numpy())
             for a, b in zip(p.tensor_split(workers), t.tensor_split(workers))]
    return torch.cat(list(pool.map(_chunk_hd95, parts)))


def _batches(pairs):
    p = torch.from_numpy(np.stack([b for _, b, _ in pairs]))[:, None]
    t = torch.from_numpy(np.stack([a for a, _, _ in pairs]))[:, None]
    return list(zip(p.split(BATCH), t.split(BATCH)))


def _old_segmentation_metrics(pred: torch.Tensor, target: torch.Tensor, workers: int):
    """``segmentation_metrics`` as it was: MONAI's Dice and IoU on float64 masks, MONAI's HD95
    over threads (the conventions for empty masks left out: no mask is empty here)."""
    dice, iou = monai_dice_iou(pred, target)
    hd = _hd95_monai(pred[:, None].double(), target[:, None].double(), None, workers)
    return {"dice": dice, "iou": iou, "hd95": hd.numpy()}


def import_seconds() -> float:
    """Seconds to import MONAI's metrics in a fresh interpreter (paid once per process, on
    the first HD95 of a run)."""
    code = ("import time, torch; t=time.perf_counter(); import monai.metrics; "
            "print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = ap.parse_args()
    workers = default_workers()
    t_import = import_seconds()
    kinds = phantom_masks(args.patients)
    sizes = {}
    for kind, pairs in kinds.items():
        for name in STRUCTURES.values():
            sel = [(a, b) for a, b, s in pairs if s == name]
            sizes[(kind, name)] = (np.mean([a.sum() for a, _ in sel]),
                                   np.mean([_edges(a) + _edges(b) for a, b in sel]))
    pool = ProcessPoolExecutor(workers)
    list(pool.map(_chunk_hd95, [(np.ones((1, 4, 4), bool), np.ones((1, 4, 4), bool))] * workers))
    methods = {
        "monai-1": lambda p, t: _hd95_monai(p, t, None, 1),
        "monai-T": lambda p, t: _hd95_monai(p, t, None, workers),
        "exact-1": lambda p, t: hd95(p, t, workers=1),
        "exact-T": lambda p, t: hd95(p, t, workers=workers),
        "exact-P": lambda p, t: _pool_hd95(pool, p, t, workers),
    }
    whole = {
        "segmentation_metrics before (MONAI Dice/IoU/HD95, threads)":
            lambda p, t: _old_segmentation_metrics(p[:, 0], t[:, 0], workers),
        "segmentation_metrics now": lambda p, t: segmentation_metrics(p[:, 0], t[:, 0]),
    }
    batches = {kind: _batches(pairs) for kind, pairs in kinds.items()}
    # warm-up and the check: every method gives the same numbers
    for kind, bl in batches.items():
        for p, t in bl:
            ref = methods["monai-1"](p, t)
            for name, fn in methods.items():
                assert torch.equal(fn(p, t), ref), (kind, name)
            old, new = (fn(p, t) for fn in whole.values())
            for key in ("dice", "iou", "hd95"):
                assert np.array_equal(np.asarray(old[key]), new[key]), (kind, key)
    times: dict[tuple, list] = {}
    rng = random.Random(0)
    load0 = os.getloadavg()[0]
    default_threads = torch.get_num_threads()
    thread_settings = sorted({1, default_threads})
    for _ in range(args.repeats):
        for kind, bl in batches.items():
            order = [(th, *m) for th in thread_settings for m in [*methods.items(),
                                                                  *whole.items()]]
            rng.shuffle(order)
            n = sum(len(p) for p, _ in bl)
            for th, name, fn in order:
                torch.set_num_threads(th)
                t0 = time.perf_counter()
                for p, t in bl:
                    fn(p, t)
                times.setdefault((kind, name, th), []).append(
                    (time.perf_counter() - t0) / n * 1e3)
    torch.set_num_threads(default_threads)
    pool.shutdown()
    load1 = os.getloadavg()[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    lo = {k: min(v) for k, v in times.items()}

    n_per_kind = len(kinds["es"])
    hi = thread_settings[-1]
    rows = []
    for kind in kinds:
        base = med[(kind, "monai-1", 1)]
        for name in methods:
            cells = " | ".join(f"{med[(kind, name, th)]:.2f} ({lo[(kind, name, th)]:.2f})"
                               for th in thread_settings)
            rows.append(f"| {kind} | `{name}` | {cells} | "
                        f"{base / med[(kind, name, 1)]:.1f}x |")
    size_rows = [f"| {kind} | {name} | {fg:,.0f} | {edges:,.0f} |"
                 for (kind, name), (fg, edges) in sizes.items()]
    whole_rows = []
    for kind in kinds:
        names = list(whole)
        cells = []
        for th in thread_settings:
            b, a = med[(kind, names[0], th)], med[(kind, names[1], th)]
            cells.append(f"{b:.2f} | {a:.2f} | {b / a:.1f}x")
        whole_rows.append(f"| {kind} | {' | '.join(cells)} |")
    th_head = " | ".join(f"torch {th} thread{'s' * (th > 1)}: median (fastest)"
                         for th in thread_settings)
    th_line = "|".join(["---"] * len(thread_settings))
    whole_head = " | ".join(f"before, torch {th} | now, torch {th} | speed-up"
                            for th in thread_settings)
    whole_line = "|".join(["---"] * (3 * len(thread_settings)))
    grid_samples = 108 * 600
    grid_monai_1 = grid_samples * med[('es', 'monai-1', 1)] / 6e4
    grid_exact_hi = grid_samples * med[('es', 'exact-1', hi)] / 6e4
    md = f"""## HD95 per sample at 512 x 512 (`benchmarks/hd95.py`)

Machine: {machine()}; {os.cpu_count()} cores, `default_workers()` = {workers}; load average
{load0:.1f} before the timed rounds, {load1:.1f} after (a shared machine: the other jobs'
load is in every number). Masks: LV, myocardium and LA of {args.patients} phantom patients
(both views, end-diastole) at 512 px, {n_per_kind} per kind, scored in batches of {BATCH} as
`evaluate` does. Per sample, in ms: the median of {args.repeats} rounds (methods interleaved
in a shuffled order within each round, each under torch's intra-op threads set to 1 and to
the default {default_threads}) and the fastest round; the speed-up is against `monai-1` with
one torch thread, measured in the same rounds. Every method gave the same numbers, bit for bit
(checked in the run; `tests/test_metrics.py` checks it on random and phantom masks).

Mask sizes (mean foreground pixels of the ground truth; mean edge pixels of both masks,
what the KD-trees hold):

| kind | structure | foreground px | edge px (both) |
|---|---|---|---|
{chr(10).join(size_rows)}

| kind | method | {th_head} | speed-up vs `monai-1`, torch 1 thread |
|---|---|{th_line}|---|
{chr(10).join(rows)}

`monai-*`: MONAI's `compute_hausdorff_distance` (the implementation before this change, on 1
or {workers} threads); `exact-*`: `hd95` now (`hd95_exact`) on 1 thread, {workers} threads
(`-T`) or a pool of {workers} processes (`-P`, made once, outside the timing).
Import of `monai.metrics` in a fresh interpreter: {t_import:.1f} s, paid once per process on
its first HD95 (not in the table).

The whole `segmentation_metrics` (Dice, IoU, HD95) per sample, ms (median); before: MONAI's
Dice / IoU on float64 masks and MONAI's HD95 on {workers} threads (the previous code):

| kind | {whole_head} |
|---|{whole_line}|
{chr(10).join(whole_rows)}

Over the paper grid (108 runs x 600 test samples = {grid_samples:,} samples): HD95 alone
{grid_samples * med[('es', 'monai-1', hi)] / 6e4:.0f} min with `monai-1` under torch's {hi} threads,
{grid_monai_1:.0f} min under 1, {grid_exact_hi:.1f} min with `exact-1` (the `es` masks).
"""
    print(md)
    if not args.no_write:
        update_section("hd95", md)


if __name__ == "__main__":
    main()
