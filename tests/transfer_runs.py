"""Fabricated evaluations of runs on a second dataset (``metrics_<dataset>.csv``,
``clinical_<dataset>.csv``) with known answers, for the tests of ``analysis.transfer`` and of
notebook 09."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

N_VIDEOS = 10
#: The videos of the fabricated second test split (EchoNet's FileName form), two images each.
VIDEOS = [f"0X{i + 1:04d}EC40" for i in range(N_VIDEOS)]
#: Reference EF of those videos: 30..66 %.
REF_EF = 30.0 + 4.0 * np.arange(N_VIDEOS)
#: A per-sample effect on the second test split shared by every run (mean 0).
CROSS_EFFECT = np.tile([-4.0, -2.0, 2.0, 4.0], N_VIDEOS // 2)


def cross_samples() -> list[str]:
    """The LV test samples of the second dataset: each video's ED and ES image."""
    return [f"{v}_4CH_{phase}" for v in VIDEOS for phase in ("ED", "ES")]


def write_cross_run(root: Path, run_id: str, dice, dataset: str = "echonet",
                    clinical: bool = True, ef_bias: float = 4.0,
                    ef_spread: float = 2.0) -> Path:
    """The files a run's evaluation on ``dataset`` leaves in ``<root>/<run_id>/``:
    ``metrics_<dataset>.csv`` (LV rows, ``dice`` a number or one value per sample of
    ``cross_samples``) and, with ``clinical``, ``clinical_<dataset>.csv``: predicted EF =
    reference + ``ef_bias`` + ``ef_spread`` x (+1, -1, ...), the traced masks' EF one point
    above the reference, volumes empty (no pixel spacing) with an empty reason (EF measured).
    Returns the run folder."""
    from echo_vlsm.grid import parse_run_id

    rec = parse_run_id(run_id).as_record()
    samples = cross_samples()
    values = np.broadcast_to(np.asarray(dice, float), (len(samples),))
    d = Path(root) / run_id
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{**rec, "sample": s, "structure": "lv", "view": "4CH",
                   "phase": s.rsplit("_", 1)[1], "dice": float(np.clip(v, 0, 100)),
                   "iou": float(np.clip(v, 0, 100)) * 0.8, "hd95": 3.0}
                  for s, v in zip(samples, values)]).to_csv(d / f"metrics_{dataset}.csv",
                                                           index=False)
    if clinical:
        alt = np.where(np.arange(N_VIDEOS) % 2 == 0, 1.0, -1.0)
        nan = np.full(N_VIDEOS, np.nan)
        pd.DataFrame({
            **{k: [v] * N_VIDEOS for k, v in rec.items()}, "patient": VIDEOS, "split": "test",
            "ref_edv_ml": nan, "ref_esv_ml": nan, "ref_ef_percent": REF_EF,
            "gt_edv_ml": nan, "gt_esv_ml": nan, "gt_ef_percent": REF_EF + 1.0, "gt_reason": "",
            "pred_edv_ml": nan, "pred_esv_ml": nan,
            "pred_ef_percent": REF_EF + ef_bias + ef_spread * alt, "pred_reason": "",
        }).to_csv(d / f"clinical_{dataset}.csv", index=False)
    return d
