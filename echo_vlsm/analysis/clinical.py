"""Clinical indices of every run (issue 21): the LV volumes (EDV, ESV, mL) and ejection fraction
(EF, %) measured on each run's predicted masks (``echo_vlsm.clinical``), against the dataset's
reference values and against the same measurement on the ground-truth masks.

Each run's evaluation writes ``clinical.csv`` (``CLINICAL_COLUMNS``): the run's fields, then one
row per test patient with the reference (``ref_*``), ground-truth (``gt_*``) and predicted
(``pred_*``) EDV, ESV and EF; a value that could not be measured is empty and its row's
``*_reason`` says why. This module reads those files and derives:

- ``clinical_agreement``: per run, per index and per truth (``reference`` or ``masks``): the
  number of patients measured on both sides, Pearson's r, the Bland-Altman bias
  (measured - truth), its standard deviation and 95 % limits of agreement (bias +- 1.96 sd),
  the mean absolute error; for EF also the agreement on the clinical categories
  (``EF_CATEGORIES``: percent agreement and Cohen's kappa);
- ``nan_rates``: per run, the share of patients whose EF could not be measured, and why;
- ``cell_agreement``: per cell, the mean over seeds of each run's statistic (as
  ``seeds.seed_table`` does for dice) and the across-seed spread;
- ``floor_table``: the ground-truth masks against the reference (what measuring alone costs);
- ``camus_clinical``: CAMUS's published figures (``paper/camus_clinical.csv``), which
  ``clinical_report.headline_table`` sets beside each cell;
- ``clinical_tests``: paired comparisons of the per-patient absolute EF error, synthetic
  pretraining against real and richer prompts against poorer ones (``clinical_pairs``), by the
  hierarchical bootstrap of ``seeds`` beside a one-sided Wilcoxon signed-rank test.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.analysis.loading import (
    CELL_COLUMNS,
    RUN_COLUMNS,
    MetricsFormatError,
    _run_columns_checked,
)
from echo_vlsm.analysis.seeds import CELL_DEFAULTS, bootstrap_difference, cell_label, verdict
from echo_vlsm.analysis.tables import order_rows
from echo_vlsm.grid import (
    CLINICAL_COLUMNS,
    CLINICAL_FILE,
    ENCODERS,
    MODELS,
    PROMPT_KEYS,
    STRATEGIES,
)

INDICES: tuple[str, ...] = ("edv", "esv", "ef")
INDEX_LABELS = {"edv": "EDV (mL)", "esv": "ESV (mL)", "ef": "EF (%)"}
_UNIT = {"edv": "ml", "esv": "ml", "ef": "percent"}
#: What a measurement is compared with: the column prefix of each truth.
AGAINST: dict[str, str] = {"reference": "ref", "masks": "gt"}
#: The clinical EF categories: below 40 (reduced), 40 to under 50 (mildly reduced), 50 and
#: above (preserved); an EF of 49.6 is in "40-49".
EF_BOUNDS: tuple[float, float] = (40.0, 50.0)
EF_CATEGORIES: tuple[str, ...] = ("below 40", "40-49", "50 and above")
LOA_Z = 1.96  # 95 % limits of agreement
CAMUS_CLINICAL = Path(__file__).resolve().parents[2] / "paper" / "camus_clinical.csv"
STAT_COLUMNS = ["n", "pearson_r", "bias", "sd", "loa_low", "loa_high", "mae",
                "category_agreement", "kappa"]


class ClinicalFormatError(MetricsFormatError):
    """A ``clinical.csv`` (or the CAMUS reference file) without the expected format."""


def _column(source: str, index: str) -> str:
    return f"{source}_{index}_{_UNIT[index]}"


def _check_values(df: pd.DataFrame, path: Path) -> None:
    """Numbers where numbers belong, in range, and a reason beside every NaN measurement."""
    for src in ("ref", "gt", "pred"):
        for index in INDICES:
            col = _column(src, index)
            values = pd.to_numeric(df[col], errors="coerce")
            if (values.isna() & df[col].notna()).any():
                raise ClinicalFormatError(path, f"column {col!r} has values that are not numbers")
            df[col] = values.astype(float)
            if index != "ef" and (values <= 0).any():
                raise ClinicalFormatError(path, f"column {col!r} has volumes <= 0 mL")
            if index == "ef" and (values > 100).any():
                raise ClinicalFormatError(path, f"column {col!r} has EF above 100 %")
    for src in ("gt", "pred"):
        reason = df[f"{src}_reason"].fillna("").astype(str).str.strip()
        df[f"{src}_reason"] = reason
        nan = df[[_column(src, i) for i in INDICES]].isna().any(axis=1)
        silent = df.loc[nan & (reason == ""), "patient"].tolist()
        if silent:
            raise ClinicalFormatError(path, f"patients {silent[:3]} have an empty {src} value "
                                            f"and no {src}_reason saying why")


def read_clinical_frame(path: Path) -> pd.DataFrame:
    """A clinical file (``clinical.csv`` or ``clinical_<dataset>.csv``) as read, before its
    values are checked: a readable CSV with every one of ``CLINICAL_COLUMNS`` and a row.

    Raises:
        ClinicalFormatError: unreadable, a column missing, or no rows; naming the file.
    """
    text = {"patient": str, "split": str, "prompt": str, "gt_reason": str, "pred_reason": str}
    try:
        df = pd.read_csv(path, dtype=text)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ClinicalFormatError(path, f"not a readable CSV ({exc})") from exc
    missing = [c for c in CLINICAL_COLUMNS if c not in df.columns]
    if missing:
        raise ClinicalFormatError(path, f"missing columns {missing}; a clinical file has "
                                        f"{list(CLINICAL_COLUMNS)}")
    if df.empty:
        raise ClinicalFormatError(path, "has a header but no rows")
    return df


def read_clinical(path: str | os.PathLike) -> pd.DataFrame:
    """Read one run's ``clinical.csv`` and check it: its columns (every one of
    ``CLINICAL_COLUMNS``, ``seed``, ``real_fraction`` and ``provenance`` included), one run,
    one row per patient, numbers where numbers belong (volumes > 0 mL, EF at most 100 %),
    and a reason beside every value that is empty.

    Raises:
        ClinicalFormatError: the file breaks one of those rules; the message names it.
    """
    path = Path(path)
    df = read_clinical_frame(path)
    for col, allowed in {"model": MODELS, "encoders": ENCODERS, "strategy": STRATEGIES}.items():
        bad = sorted(set(df[col].astype(str)) - set(allowed))
        if bad:
            raise ClinicalFormatError(path, f"column {col!r} has values {bad}; accepted: "
                                            f"{list(allowed)}")
    for col in ("prompt", "patient"):
        if df[col].isna().any():
            raise ClinicalFormatError(path, f"column {col!r} has empty values")
    try:
        df = _run_columns_checked(df, path)
    except MetricsFormatError as exc:
        raise ClinicalFormatError(path, exc.problem) from None
    runs = df[list(RUN_COLUMNS)].drop_duplicates()
    if len(runs) > 1:
        raise ClinicalFormatError(path, f"holds rows of {len(runs)} runs; a clinical.csv "
                                        "holds one run's patients")
    dup = df.loc[df["patient"].duplicated(), "patient"].tolist()
    if dup:
        raise ClinicalFormatError(path, f"patients {dup[:3]} appear more than once")
    _check_values(df, path)
    return df[list(CLINICAL_COLUMNS)].reset_index(drop=True)


def clinical_files(root: str | os.PathLike) -> list[Path]:
    """Every ``clinical.csv`` under ``root``, sorted."""
    return sorted(Path(root).rglob(CLINICAL_FILE))


def load_clinical(root: str | os.PathLike) -> pd.DataFrame:
    """Every run's ``clinical.csv`` under ``root`` as one table (``CLINICAL_COLUMNS``); an
    empty table when no run has one yet. Errors name the offending file.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of runs")
    frames = [read_clinical(f) for f in clinical_files(root)]
    if not frames:
        return pd.DataFrame(columns=list(CLINICAL_COLUMNS))
    return pd.concat(frames, ignore_index=True)


# -- statistics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """Agreement of measured values with the truth over the patients with both: Pearson's r,
    Bland-Altman bias (mean of measured - truth), its sd (ddof=1) and 95 % limits of
    agreement, and the mean absolute error. NaN where too few patients (r and sd need 2)."""

    n: int
    pearson_r: float
    bias: float
    sd: float
    loa_low: float
    loa_high: float
    mae: float

    def as_dict(self) -> dict:
        return asdict(self)


def agreement(measured: Iterable[float], truth: Iterable[float]) -> Agreement:
    """``Agreement`` of ``measured`` with ``truth`` (paired arrays; pairs with a NaN are left
    out).

    >>> a = agreement([10.0, 20.0, 33.0], [11.0, 19.0, 30.0])
    >>> a.n, round(a.bias, 6), round(a.mae, 6)
    (3, 1.0, 1.666667)
    """
    x, y = np.asarray(list(measured), float), np.asarray(list(truth), float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n, nan = int(x.size), float("nan")
    if n == 0:
        return Agreement(0, nan, nan, nan, nan, nan, nan)
    d = x - y
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else nan
    r = float(np.corrcoef(x, y)[0, 1]) if n > 1 and x.std() > 0 and y.std() > 0 else nan
    return Agreement(n, r, bias, sd, bias - LOA_Z * sd, bias + LOA_Z * sd,
                     float(np.abs(d).mean()))


def ef_category(ef: Iterable[float]) -> np.ndarray:
    """The clinical category of each EF as 0 (below 40), 1 (40-49), 2 (50 and above), NaN
    for NaN (``EF_BOUNDS``).

    >>> ef_category([39.9, 40.0, 49.99, 50.0, float("nan")]).tolist()
    [0.0, 1.0, 1.0, 2.0, nan]
    """
    ef = np.asarray(list(ef), float)
    out = np.digitize(ef, EF_BOUNDS).astype(float)
    out[~np.isfinite(ef)] = np.nan
    return out


def cohen_kappa(a: Iterable[float], b: Iterable[float], k: int = len(EF_CATEGORIES)) -> float:
    """Cohen's kappa of two raters' categories ``0..k-1`` (pairs with a NaN left out):
    (p_o - p_e) / (1 - p_e), NaN when chance agreement is certain (p_e = 1, e.g. both put
    every patient in one category) or no pair is left.

    >>> round(cohen_kappa([0, 0, 1, 2], [0, 1, 1, 2]), 4)
    0.6364
    """
    x, y = np.asarray(list(a), float), np.asarray(list(b), float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep].astype(int), y[keep].astype(int)
    if x.size == 0:
        return float("nan")
    table = np.zeros((k, k))
    np.add.at(table, (x, y), 1)
    table /= table.sum()
    p_o = float(np.trace(table))
    p_e = float(table.sum(axis=1) @ table.sum(axis=0))
    return float("nan") if math.isclose(p_e, 1.0) else (p_o - p_e) / (1 - p_e)


def category_agreement(measured_ef: Iterable[float], truth_ef: Iterable[float]) \
        -> tuple[int, float, float]:
    """``(n, percent agreement, Cohen's kappa)`` of the EF categories (``ef_category``) over
    the patients with both EFs."""
    a, b = ef_category(measured_ef), ef_category(truth_ef)
    keep = np.isfinite(a) & np.isfinite(b)
    n = int(keep.sum())
    if n == 0:
        return 0, float("nan"), float("nan")
    return n, float(100.0 * (a[keep] == b[keep]).mean()), cohen_kappa(a[keep], b[keep])


def _stats(measured: pd.Series, truth: pd.Series, index: str) -> dict:
    out = {**agreement(measured, truth).as_dict(), "category_agreement": float("nan"),
           "kappa": float("nan")}
    if index == "ef":
        _, out["category_agreement"], out["kappa"] = category_agreement(measured, truth)
    return out


def clinical_agreement(df: pd.DataFrame,
                       against: Iterable[str] = ("reference", "masks")) -> pd.DataFrame:
    """Per run (``RUN_COLUMNS``), truth (``reference``: the dataset's values; ``masks``: the
    ground-truth masks measured the same way) and index (edv, esv, ef): ``STAT_COLUMNS``
    (``agreement``; for EF also ``category_agreement`` in percent and ``kappa``)."""
    rows = []
    for run, g in df.groupby(list(RUN_COLUMNS), sort=False):
        for truth in against:
            for index in INDICES:
                rows.append({**dict(zip(RUN_COLUMNS, run)), "against": truth, "index": index,
                             **_stats(g[_column("pred", index)],
                                      g[_column(AGAINST[truth], index)], index)})
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "against", "index", *STAT_COLUMNS])


def reason_code(reason: str) -> str:
    """A reason without its details in parentheses: ``"4CH_ES: empty (no foreground
    pixel)"`` -> ``"4CH_ES: empty"``."""
    return re.sub(r"\s*\([^)]*\)", "", reason).strip()


def _reasons(reasons: pd.Series) -> str:
    counts = reasons[reasons != ""].map(reason_code).value_counts()
    return "; ".join(f"{r} ({n})" for r, n in counts.items())


def nan_rates(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: ``n_patients``, how many EFs could not be measured on the prediction
    (``pred_nan``, ``pred_nan_rate`` in percent) and on the ground-truth masks (``gt_nan``,
    ``gt_nan_rate``), and the reasons with their counts (``pred_reasons``, ``gt_reasons``)."""
    rows = []
    for run, g in df.groupby(list(RUN_COLUMNS), sort=False):
        rec = {**dict(zip(RUN_COLUMNS, run)), "n_patients": len(g)}
        for src in ("pred", "gt"):
            nan = int(g[_column(src, "ef")].isna().sum())
            rec |= {f"{src}_nan": nan, f"{src}_nan_rate": 100.0 * nan / len(g),
                    f"{src}_reasons": _reasons(g[f"{src}_reason"])}
        rows.append(rec)
    cols = [*RUN_COLUMNS, "n_patients", "pred_nan", "pred_nan_rate", "pred_reasons", "gt_nan",
            "gt_nan_rate", "gt_reasons"]
    return pd.DataFrame(rows, columns=cols)


def cell_agreement(agreement_table: pd.DataFrame, nans: pd.DataFrame | None = None) \
        -> pd.DataFrame:
    """Per cell (``CELL_COLUMNS``), truth and index: ``n_seeds``, the mean over seeds of each
    run's statistic (``STAT_COLUMNS``; ``n`` the smallest), the across-seed standard deviation
    of the MAE and of r (``mae_seed_std``, ``r_seed_std``; NaN with one seed) and, given
    ``nan_rates``, the mean over seeds of ``pred_nan_rate``."""
    keys = [*CELL_COLUMNS, "against", "index"]
    t = agreement_table
    if nans is not None:
        t = t.merge(nans[[*RUN_COLUMNS, "pred_nan_rate"]], on=list(RUN_COLUMNS), how="left")
    means = {c: "mean" for c in STAT_COLUMNS if c != "n"}
    if nans is not None:
        means["pred_nan_rate"] = "mean"
    g = t.groupby(keys, sort=False)
    out = g.agg(n_seeds=("seed", "nunique"), n=("n", "min"),
                **{c: (c, f) for c, f in means.items()})
    out["mae_seed_std"] = g["mae"].std(ddof=1)
    out["r_seed_std"] = g["pearson_r"].std(ddof=1)
    return order_rows(out.reset_index())


def floor_table(df: pd.DataFrame) -> pd.DataFrame:
    """The ground-truth masks measured against the reference values, once per (patient,
    split) whatever the number of runs: what measuring by the method of discs alone gives.
    One row per index: ``STAT_COLUMNS``."""
    patients = df.drop_duplicates(["patient", "split"])
    rows = [{"index": index, **_stats(patients[_column("gt", index)],
                                      patients[_column("ref", index)], index)}
            for index in INDICES]
    return pd.DataFrame(rows, columns=["index", *STAT_COLUMNS])


def camus_clinical(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """CAMUS's published clinical figures (``paper/camus_clinical.csv``): ``index`` (edv_esv:
    the mean of EDV and ESV; ef), ``correlation``, ``mae``, ``unit``, ``network``,
    ``evaluation`` and ``source``."""
    path = Path(path) if path is not None else CAMUS_CLINICAL
    df = pd.read_csv(path)
    need = ["index", "correlation", "mae", "unit", "network", "evaluation", "source"]
    if set(need) - set(df.columns):
        raise ClinicalFormatError(path, f"missing columns {sorted(set(need) - set(df.columns))}")
    if set(df["index"]) != {"edv_esv", "ef"}:
        raise ClinicalFormatError(path, "expected one row per index: edv_esv and ef")
    return df[need]


# -- paired tests of the EF error ------------------------------------------------------------
def error_matrix(df: pd.DataFrame, cell: Mapping, against: str = "reference") \
        -> tuple[list[int], list[str], np.ndarray]:
    """The absolute EF error (points) of every seed of ``cell`` on every patient:
    ``(seeds, patients, X)`` with ``X[i, j]`` the error of seed ``seeds[i]`` on
    ``patients[j]`` against ``against`` (NaN where a side could not be measured).

    Raises:
        ValueError: no run matches ``cell``, or its seeds were not scored on the same patients.
    """
    where = {**CELL_DEFAULTS, **dict(cell)}
    where.pop("seed", None)
    mask = pd.Series(True, index=df.index)
    for key, value in where.items():
        mask &= df[key] == value
    rows = df[mask]
    if rows.empty:
        raise ValueError(f"no clinical rows match {where}")
    err = (rows[_column("pred", "ef")] - rows[_column(AGAINST[against], "ef")]).abs()
    wide = rows.assign(err=err).pivot(index="seed", columns="patient", values="err")
    present = rows.groupby("seed")["patient"].apply(frozenset)
    if present.nunique() > 1:
        raise ValueError(f"cell {where}: its seeds were not measured on the same patients")
    wide = wide.sort_index().sort_index(axis=1)
    return [int(s) for s in wide.index], [str(p) for p in wide.columns], wide.to_numpy(float)


def _wilcoxon(x: np.ndarray, y: np.ndarray, alternative: str) -> float:
    """One-sided (or two-sided) Wilcoxon signed-rank p-value of x against y, scipy's default
    handling of zero differences, as ``paired.paired_test``; NaN when every difference is 0
    or no pair is left."""
    from scipy import stats

    if x.size == 0 or np.all(x == y):
        return float("nan")
    return float(stats.wilcoxon(x, y, alternative=alternative).pvalue)


def ef_error_comparison(df: pd.DataFrame, a: Mapping, b: Mapping, alternative: str = "less",
                        against: str = "reference", n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Cell ``a``'s absolute EF error against cell ``b``'s over the patients measured on both
    sides in every seed (``n``; ``n_unmeasured`` left out): mean over seeds of the mean error
    of each (``error_a``, ``error_b``), their difference with the hierarchical bootstrap
    interval (``seeds.bootstrap_difference``: seeds, then patients) and its ``verdict`` for
    ``alternative`` (``"less"``: a's error is smaller), and a Wilcoxon signed-rank test on one
    run per cell (seed 0 where both have it, else their lowest common seed)."""
    seeds_a, pat_a, xa = error_matrix(df, a, against)
    seeds_b, pat_b, xb = error_matrix(df, b, against)
    common = sorted(set(pat_a) & set(pat_b))
    xa = xa[:, [pat_a.index(p) for p in common]]
    xb = xb[:, [pat_b.index(p) for p in common]]
    keep = np.isfinite(xa).all(axis=0) & np.isfinite(xb).all(axis=0)
    xa, xb = xa[:, keep], xb[:, keep]
    nan = float("nan")
    out = {"a": cell_label({**CELL_DEFAULTS, **dict(a)}),
           "b": cell_label({**CELL_DEFAULTS, **dict(b)}), "alternative": alternative,
           "n_seeds_a": len(seeds_a), "n_seeds_b": len(seeds_b), "n": int(keep.sum()),
           "n_unmeasured": int((~keep).sum()) + len(set(pat_a) ^ set(pat_b)),
           "error_a": nan, "error_b": nan, "diff": nan, "ci_low": nan, "ci_high": nan,
           "wilcoxon_seed": nan, "wilcoxon_p": nan,
           "verdict": "no patient measured on both sides"}
    if not keep.any():
        return out
    res = bootstrap_difference(xa, xb, n_boot=n_boot, seed=seed, level=level)
    both = sorted(set(seeds_a) & set(seeds_b))
    s = both[0] if both else None
    out |= {"error_a": float(xa.mean()), "error_b": float(xb.mean()), "diff": res.diff,
            "ci_low": res.ci_low, "ci_high": res.ci_high, "verdict": verdict(res, alternative)}
    if s is not None:
        out |= {"wilcoxon_seed": s, "wilcoxon_p": _wilcoxon(
            xa[seeds_a.index(s)], xb[seeds_b.index(s)], alternative)}
    return out


def _prompt_rank(prompt: str) -> int:
    return PROMPT_KEYS.index(prompt) if prompt in PROMPT_KEYS else -1


def clinical_pairs(df: pd.DataFrame) -> list[tuple[str, dict, dict, str]]:
    """The comparisons of the absolute EF error the runs present allow, as ``(name, a, b,
    alternative)``, each one-sided with a the cell expected to err less:

    - ``synth-pt-real-ft vs real``: synthetic pretraining against real training, same model,
      encoders, prompt, real fraction and provenance;
    - ``Pk vs P1`` (k > 1) and ``P1 vs P0``: a richer prompt against P1 (the structure's name,
      the study's plain prompt), same model, strategy, encoders, fraction and provenance; the
      richer prompt is a.
    """
    cells = df[list(CELL_COLUMNS)].drop_duplicates()
    have = {tuple(r) for r in cells.itertuples(index=False)}
    pos = {c: i for i, c in enumerate(CELL_COLUMNS)}
    pairs = []
    for cell in sorted(have, key=lambda c: (MODELS.index(c[0]), STRATEGIES.index(c[1]),
                                            c[2], _prompt_rank(c[3]), c[3], -c[4], c[5])):
        rec = dict(zip(CELL_COLUMNS, cell))
        if rec["strategy"] == "synth-pt-real-ft":
            real = list(cell)
            real[pos["strategy"]] = "real"
            if tuple(real) in have:
                pairs.append(("synth-pt-real-ft vs real", rec,
                              dict(zip(CELL_COLUMNS, real)), "less"))
        rank = _prompt_rank(rec["prompt"])
        if rank >= 0 and rank != 1:
            p1 = list(cell)
            p1[pos["prompt"]] = "p1"
            if tuple(p1) in have:
                other = dict(zip(CELL_COLUMNS, p1))
                richer, poorer = (rec, other) if rank > 1 else (other, rec)
                name = f"{richer['prompt'].upper()} vs {poorer['prompt'].upper()}"
                pairs.append((name, richer, poorer, "less"))
    return pairs


TEST_COLUMNS = ["comparison", "a", "b", "alternative", "n_seeds_a", "n_seeds_b", "n",
                "n_unmeasured", "error_a", "error_b", "diff", "ci_low", "ci_high",
                "wilcoxon_seed", "wilcoxon_p", "verdict"]


def clinical_tests(df: pd.DataFrame, against: str = "reference", n_boot: int = 2000,
                   seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """``ef_error_comparison`` of every pair of ``clinical_pairs`` as a table
    (``TEST_COLUMNS``; ``diff``: mean absolute EF error of a minus b, in EF points)."""
    rows = [{"comparison": name, **ef_error_comparison(df, a, b, alt, against=against,
                                                       n_boot=n_boot, seed=seed, level=level)}
            for name, a, b, alt in clinical_pairs(df)]
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
