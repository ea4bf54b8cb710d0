"""Paired tests over matched test samples: the study's one-sided Wilcoxon signed-rank tests
(Sec. 4) and a paired t-test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from echo_vlsm.analysis.loading import study_rows
from echo_vlsm.analysis.tables import MODEL_LABELS, summary_table
from echo_vlsm.grid import MODELS, PROMPT_KEYS

# The study's reported tests (Synthetic Boost, Sec. 4).
STUDY_TESTS = (
    {"comparison": "best synthetic vs best real", "a": "CRIS synthetic P5", "b": "CRIS real P2",
     "alternative": "less", "n": 600, "diff": -5.19, "pvalue": 8.8e-73},
    {"comparison": "synth-pt-real-ft vs real", "a": "CRIS synth-pt-real-ft P2",
     "b": "CRIS real P2", "alternative": "greater", "n": 600, "diff": 0.34, "pvalue": 8.3e-6},
)


@dataclass(frozen=True)
class PairedTest:
    """Result of a paired test of ``a`` against ``b`` over matched (sample, structure)."""

    diff: float  # mean of a - b (dice points)
    pvalue: float
    n: int
    statistic: float
    median_diff: float
    test: str
    alternative: str
    a: dict
    b: dict

    def as_dict(self) -> dict:
        return asdict(self)


def select(df: pd.DataFrame, where: Mapping[str, str]) -> pd.DataFrame:
    """Rows of ``df`` whose columns equal every value of ``where``; errors say what exists."""
    mask = pd.Series(True, index=df.index)
    for key, value in where.items():
        if key not in df.columns:
            raise KeyError(f"selection key {key!r} is not a metrics column; use {list(df.columns)}")
        mask &= df[key] == value
    out = df[mask]
    if out.empty:
        avail = {k: sorted(df[k].astype(str).unique().tolist()) for k in where}
        raise ValueError(f"no metrics rows match {dict(where)}; available values: {avail}")
    return out


def paired_test(
    df: pd.DataFrame,
    a: Mapping[str, str],
    b: Mapping[str, str],
    alternative: str = "greater",
    test: str = "wilcoxon",
) -> PairedTest:
    """Paired test of dice(a) against dice(b) over samples matched by ``sample`` and
    ``structure``: one-sided Wilcoxon signed-rank test (the study's test, scipy's default
    handling of zero differences) or paired t-test. ``alternative="greater"`` tests a > b.
    Unmatched or duplicated samples are an error."""
    from scipy import stats

    if test not in ("wilcoxon", "ttest"):
        raise ValueError(f"test={test!r}; expected 'wilcoxon' or 'ttest'")
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative={alternative!r}; expected greater, less or two-sided")
    key = ["sample", "structure"]
    sides = {}
    for name, where in (("a", a), ("b", b)):
        rows = select(df, where)
        dup = rows[rows.duplicated(key, keep=False)]
        if not dup.empty:
            ex = dup[key].drop_duplicates().head(3).values.tolist()
            raise ValueError(
                f"selection {name}={dict(where)} has {len(dup)} rows sharing a (sample, "
                f"structure), e.g. {ex}; narrow it (model, strategy, encoders, prompt, and seed, "
                "real_fraction, provenance where the runs have several) so each sample appears "
                "once"
            )
        sides[name] = rows.set_index(key)["dice"]
    only_a = sides["a"].index.difference(sides["b"].index)
    only_b = sides["b"].index.difference(sides["a"].index)
    if len(only_a) or len(only_b):
        raise ValueError(
            f"unmatched samples: {len(only_a)} only in a={dict(a)} (e.g. {list(only_a[:3])}), "
            f"{len(only_b)} only in b={dict(b)} (e.g. {list(only_b[:3])}); a paired test "
            "needs the same test samples on both sides"
        )
    xa = sides["a"].sort_index()
    xb = sides["b"].reindex(xa.index)
    d = (xa - xb).to_numpy(dtype=float)
    if test == "wilcoxon":
        if np.all(d == 0):
            stat, p = float("nan"), float("nan")
        else:
            res = stats.wilcoxon(xa.to_numpy(float), xb.to_numpy(float), alternative=alternative)
            stat, p = float(res.statistic), float(res.pvalue)
    else:
        res = stats.ttest_rel(xa.to_numpy(float), xb.to_numpy(float), alternative=alternative)
        stat, p = float(res.statistic), float(res.pvalue)
    return PairedTest(
        diff=float(d.mean()), pvalue=p, n=int(d.size), statistic=stat,
        median_diff=float(np.median(d)), test=test, alternative=alternative,
        a=dict(a), b=dict(b),
    )


def best_cell(summary: pd.DataFrame, strategy: str) -> dict | None:
    """The model and prompt with the highest mean dice for ``strategy`` (None if absent)."""
    rows = summary[(summary["strategy"] == strategy) & (summary["n"] > 0)]
    if rows.empty:
        return None
    top = rows.loc[rows["dice_mean"].idxmax()]
    return {"model": top["model"], "strategy": strategy, "prompt": top["prompt"]}


def study_tests(df: pd.DataFrame, encoders: str = "trained") -> pd.DataFrame:
    """The study's tests (Sec. 4): best synthetic vs best real (one-sided, synthetic < real;
    study: CRIS P5 vs CRIS P2, -5.19, p = 8.8e-73), and synth-pt-real-ft vs real for every
    model and prompt run with both (one-sided, greater; study: CRIS P2, p = 8.3e-6). Only
    the study's own cells are tested (``study_rows``); ``seeds.claim_verdicts`` is the
    seed-aware version."""
    df = study_rows(df)
    summary = summary_table(df, encoders)
    rows = []
    best_syn, best_real = best_cell(summary, "synthetic"), best_cell(summary, "real")
    if best_syn and best_real:
        a = {**best_syn, "encoders": encoders}
        b = {**best_real, "encoders": encoders}
        rows.append(("best synthetic vs best real", paired_test(df, a, b, alternative="less")))
    pairs = summary[summary["n"] > 0]
    for model in MODELS:
        for prompt in PROMPT_KEYS:
            have = set(pairs[(pairs["model"] == model) & (pairs["prompt"] == prompt)]["strategy"])
            if {"real", "synth-pt-real-ft"} <= have:
                a = {"model": model, "strategy": "synth-pt-real-ft", "encoders": encoders,
                     "prompt": prompt}
                b = {**a, "strategy": "real"}
                rows.append(("synth-pt-real-ft vs real", paired_test(df, a, b)))
    records = []
    for name, r in rows:
        records.append({
            "comparison": name,
            "a": f"{MODEL_LABELS[r.a['model']]} {r.a['strategy']} {r.a['prompt'].upper()}",
            "b": f"{MODEL_LABELS[r.b['model']]} {r.b['strategy']} {r.b['prompt'].upper()}",
            "alternative": r.alternative, "n": r.n, "diff": r.diff,
            "median_diff": r.median_diff, "pvalue": r.pvalue,
        })
    cols = ["comparison", "a", "b", "alternative", "n", "diff", "median_diff", "pvalue"]
    return pd.DataFrame(records, columns=cols)
