"""Fabricated ``clinical.csv`` files with known answers, for the tests of the clinical analysis
(``echo_vlsm.analysis.clinical``) and of notebook 09."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

N_PATIENTS = 20
#: Reference values of the fabricated patients: EDV 100..195 mL, EF 30..68 % (every
#: category: 5 below 40, 5 in 40-49, 10 at 50 and above), ESV from them.
REF_EDV = 100.0 + 5.0 * np.arange(N_PATIENTS)
REF_EF = 30.0 + 2.0 * np.arange(N_PATIENTS)
REF_ESV = REF_EDV * (1 - REF_EF / 100)
PATIENTS = [f"patient{i + 1:04d}" for i in range(N_PATIENTS)]
#: The ground-truth masks measure EF one point above the reference, volumes 2 mL above.
GT_EF_BIAS, GT_VOLUME_BIAS = 1.0, 2.0


def alternating(n: int = N_PATIENTS) -> np.ndarray:
    """+1, -1, +1, ...: a zero-mean spread whose sd (ddof=1) is sqrt(n / (n - 1))."""
    return np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


def clinical_frame(run_id: str, ef_bias: float = 2.0, ef_spread: float = 3.0,
                   edv_scale: float = 1.1, missing: tuple[int, ...] = (),
                   seed_noise: float = 0.0, rng_seed: int = 0) -> pd.DataFrame:
    """One run's clinical table: predicted EF = reference + ``ef_bias`` + ``ef_spread`` x
    (+1, -1, ...) (+ normal noise of sd ``seed_noise``), predicted EDV = ``edv_scale`` x
    reference, ESV from them; the patients at ``missing`` indices lack 2CH_ES (NaN, reason)."""
    from echo_vlsm.grid import parse_run_id

    rec = parse_run_id(run_id).as_record()
    noise = np.random.default_rng(rng_seed).normal(0, seed_noise, N_PATIENTS) \
        if seed_noise else 0.0
    pred_ef = REF_EF + ef_bias + ef_spread * alternating() + noise
    pred_edv = REF_EDV * edv_scale
    df = pd.DataFrame({
        **{k: [v] * N_PATIENTS for k, v in rec.items()},
        "patient": PATIENTS, "split": "test",
        "ref_edv_ml": REF_EDV, "ref_esv_ml": REF_ESV, "ref_ef_percent": REF_EF,
        "gt_edv_ml": REF_EDV + GT_VOLUME_BIAS, "gt_esv_ml": REF_ESV + GT_VOLUME_BIAS,
        "gt_ef_percent": REF_EF + GT_EF_BIAS, "gt_reason": "",
        "pred_edv_ml": pred_edv, "pred_esv_ml": pred_edv * (1 - pred_ef / 100),
        "pred_ef_percent": pred_ef, "pred_reason": "",
    })
    for i in missing:
        for col in ("gt", "pred"):
            df.loc[i, [f"{col}_edv_ml", f"{col}_esv_ml", f"{col}_ef_percent"]] = np.nan
            df.loc[i, f"{col}_reason"] = "missing 2CH_ES"
    return df


def write_clinical_run(root: Path, run_id: str, **kwargs) -> Path:
    """``clinical_frame`` written as ``<root>/<run_id>/clinical.csv``; returns the file."""
    d = Path(root) / run_id
    d.mkdir(parents=True, exist_ok=True)
    path = d / "clinical.csv"
    clinical_frame(run_id, **kwargs).to_csv(path, index=False)
    return path
