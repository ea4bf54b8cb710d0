"""Cross-dataset transfer (issue 22, sec. 3): every run, trained on its own dataset (CAMUS, or
the phantom in CAMUS's layout), scored without retraining on another dataset's test split
(EchoNet-Dynamic, or the phantom in its layout), beside its in-dataset result.

A run's evaluation on dataset ``<name>`` writes into the run folder ``metrics_<name>.csv``
(``METRIC_COLUMNS``, LV rows: EchoNet traces the LV cavity alone) and ``clinical_<name>.csv``
(``CLINICAL_COLUMNS``: EF by single-plane discs against the dataset's EF and against the
traced masks; volumes may be empty, EchoNet giving no pixel spacing). This module reads them
with the run's own ``metrics.csv`` and ``clinical.csv`` and derives:

- ``load_transfer``: each run folder's status (evaluated on the dataset, lacking its file,
  unfinished, or trained with a prompt the dataset cannot make) and the scores of the runs
  evaluated on both test splits;
- ``run_table`` / ``transfer_table``: per run, then per cell (seeds averaged), the LV dice on
  the run's own test split and on the other dataset's, the drop (own minus other), and the
  EF mean absolute error (MAE) on both;
- ``drop_tests``: does synthetic pretraining change the drop? For synth-pt-real-ft (a)
  against real (b), same model, encoders and prompt: drop(a) - drop(b) = gain on the own
  test split - gain on the other, where gain = dice(a) - dice(b) per test sample (paired, as
  ``paired.paired_test``). The two test sets share no sample, so the two gains' per-sample
  differences are compared by a Wilcoxon rank-sum (Mann-Whitney) test on one run per cell,
  with a hierarchical bootstrap over seeds (each run keeps its own pair of scores) and test
  samples of both sets, as ``seeds.bootstrap_difference`` does for one set;
- ``drop_summary``: the plain-words verdict on that question.

``transfer_report`` turns them into notebook 09's tables, the report's block and its JSON.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.analysis.clinical import (
    ClinicalFormatError,
    _wilcoxon,
    read_clinical,
    read_clinical_frame,
)
from echo_vlsm.analysis.loading import (
    CELL_COLUMNS,
    RUN_COLUMNS,
    MetricsFormatError,
    _run_columns_checked,
    _run_dirs,
    read_metrics,
)
from echo_vlsm.analysis.seeds import _paired_matrices, cell_label
from echo_vlsm.analysis.tables import MODEL_LABELS, order_rows, prompt_label
from echo_vlsm.grid import (
    CLINICAL_COLUMNS,
    CLINICAL_FILE,
    CROSS_CLINICAL_FILE,
    CROSS_METRICS_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    NO_PROMPT,
    Run,
    parse_run_id,
)

DATASET_LABELS = {"echonet": "EchoNet-Dynamic"}
EVALUATED = "evaluated"
_EF = "ef_percent"


def cross_metrics_file(dataset: str) -> str:
    """``metrics_<dataset>.csv``: a run's LV scores on another dataset's test split."""
    return CROSS_METRICS_FILE.format(dataset=_dataset_name(dataset))


def cross_clinical_file(dataset: str) -> str:
    """``clinical_<dataset>.csv``: a run's EF measured on another dataset's test split."""
    return CROSS_CLINICAL_FILE.format(dataset=_dataset_name(dataset))


def _dataset_name(dataset: str) -> str:
    if not re.fullmatch(r"[a-z0-9-]+", str(dataset)):
        raise ValueError(f"dataset {dataset!r}: a dataset name is lower-case letters, digits "
                         "and '-', e.g. 'echonet'")
    return str(dataset)


def unmakeable(dataset: str, prompt: str) -> str | None:
    """Why a run with ``prompt`` cannot be evaluated on ``dataset`` (the prompt needs an
    attribute the dataset lacks), or None. A text-free model's prompt needs nothing.

    >>> unmakeable("echonet", "p3") is None, unmakeable("echonet", "p4").split(",")[0]
    (True, "prompt p4 needs the patient's sex")
    """
    if dataset != "echonet" or prompt == NO_PROMPT:
        return None
    # imported here: the EchoNet reader loads OpenCV, which the analysis does not need
    from echo_vlsm.data.echonet_export import check_prompt

    try:
        check_prompt(prompt)
    except ValueError as exc:
        return str(exc)
    return None


# -- reading ---------------------------------------------------------------------------------
def read_cross_clinical(path: str | os.PathLike) -> pd.DataFrame:
    """Read one run's ``clinical_<dataset>.csv``: ``read_clinical``'s rules for its columns,
    run and patients, but only EF must be measured (volumes may be empty: no pixel spacing);
    every EF is a number at most 100 %, or empty with a reason on its side.

    Raises:
        ClinicalFormatError: the file breaks one of those rules; the message names it.
    """
    path = Path(path)
    df = read_clinical_frame(path)
    try:
        df = _run_columns_checked(df, path)
    except MetricsFormatError as exc:
        raise ClinicalFormatError(path, exc.problem) from None
    if df["patient"].isna().any() or df["patient"].duplicated().any():
        raise ClinicalFormatError(path, "column 'patient' has empty or repeated values")
    for col in [c for c in CLINICAL_COLUMNS if c.endswith(("_ml", "_percent"))]:
        values = pd.to_numeric(df[col], errors="coerce")
        if (values.isna() & df[col].notna()).any():
            raise ClinicalFormatError(path, f"column {col!r} has values that are not numbers")
        if col.endswith(_EF) and (values > 100).any():
            raise ClinicalFormatError(path, f"column {col!r} has EF above 100 %")
        df[col] = values.astype(float)
    for side in ("gt", "pred"):
        reason = df[f"{side}_reason"].fillna("").astype(str).str.strip()
        df[f"{side}_reason"] = reason
        silent = df.loc[df[f"{side}_{_EF}"].isna() & (reason == ""), "patient"].tolist()
        if silent:
            raise ClinicalFormatError(path, f"patients {silent[:3]} have no {side} EF and no "
                                            f"{side}_reason saying why")
    return df[list(CLINICAL_COLUMNS)].reset_index(drop=True)


def _own_rows(df: pd.DataFrame, path: Path, run: Run, lv: bool = False) -> pd.DataFrame:
    """``df`` checked to hold only its folder's run (and, with ``lv``, its LV rows)."""
    rec = run.as_record()
    bad = [c for c in RUN_COLUMNS if (df[c] != rec[c]).any()]
    if bad:
        raise MetricsFormatError(path, f"its rows' {bad} are not those of its folder's run "
                                       f"{run.id}")
    if lv:
        df = df[df["structure"] == "lv"]
        if df.empty:
            raise MetricsFormatError(path, "holds no LV row (structure 'lv')")
    return df


@dataclass(frozen=True)
class TransferData:
    """What ``load_transfer`` read: ``status`` (one row per run folder: ``run_id``, the run's
    fields, ``status`` and which of the four files it has), and, for the runs evaluated on
    ``dataset``, their LV rows of ``metrics.csv`` (``metrics_in``) and of the other dataset's
    metrics (``metrics_cross``), and their clinical rows where they have them."""

    dataset: str
    status: pd.DataFrame
    metrics_in: pd.DataFrame
    metrics_cross: pd.DataFrame
    clinical_in: pd.DataFrame
    clinical_cross: pd.DataFrame


def _status(run: Run, have: Mapping[str, bool], dataset: str) -> str:
    if not have["metrics_in"]:
        return f"unfinished (no {METRICS_FILE})"
    if have["metrics_cross"]:
        return EVALUATED
    reason = unmakeable(dataset, run.prompt)
    return f"not evaluable: {reason}" if reason else f"no {cross_metrics_file(dataset)}"


def load_transfer(root: str | os.PathLike, dataset: str = "echonet") -> TransferData:
    """Every run folder under ``root`` (named by run id) with its status on ``dataset``, and
    the scores of those evaluated on it. Errors name the offending file (a file of another
    run, a metrics file without LV rows, the formats' own rules).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of runs")
    names = {"metrics_in": METRICS_FILE, "metrics_cross": cross_metrics_file(dataset),
             "clinical_in": CLINICAL_FILE, "clinical_cross": cross_clinical_file(dataset)}
    readers = {"metrics_in": read_metrics, "metrics_cross": read_metrics,
               "clinical_in": read_clinical, "clinical_cross": read_cross_clinical}
    status: list[dict] = []
    frames: dict[str, list[pd.DataFrame]] = {k: [] for k in names}
    for d in _run_dirs(root):
        run = parse_run_id(d.name)
        have = {k: (d / name).is_file() for k, name in names.items()}
        state = _status(run, have, dataset)
        status.append({"run_id": d.name, **run.as_record(), "status": state, **have})
        if state != EVALUATED:
            continue
        for key, name in names.items():
            if have[key]:
                frames[key].append(_own_rows(readers[key](d / name), d / name, run,
                                             lv=key.startswith("metrics")))
    out = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame(
        columns=list(METRIC_COLUMNS if k.startswith("metrics") else CLINICAL_COLUMNS))
        for k, v in frames.items()}
    st = pd.DataFrame(status, columns=["run_id", *RUN_COLUMNS, "status", *names])
    return TransferData(dataset, st, **out)


# -- tables ----------------------------------------------------------------------------------
RUN_TABLE_COLUMNS = [*RUN_COLUMNS, "n_in", "n_cross", "dice_in", "dice_cross", "drop",
                     "ef_mae_in", "ef_mae_cross", "ef_mae_cross_masks", "ef_nan_cross"]


def _ef_errors(df: pd.DataFrame, truth: str) -> pd.Series:
    """Per run, the mean absolute EF error (points) of the prediction against ``truth``
    (``ref`` or ``gt``) over the patients measured on both sides."""
    if df.empty:
        return pd.Series(dtype=float)
    err = (df[f"pred_{_EF}"].astype(float) - df[f"{truth}_{_EF}"].astype(float)).abs()
    return df.assign(err=err).groupby(list(RUN_COLUMNS))["err"].mean()


def run_table(data: TransferData) -> pd.DataFrame:
    """Per run evaluated on both test splits (``RUN_TABLE_COLUMNS``): LV test samples and mean
    LV dice on its own split (``n_in``, ``dice_in``) and on the other dataset's
    (``n_cross``, ``dice_cross``), ``drop`` = ``dice_in - dice_cross`` (dice points), the
    mean absolute EF error against the reference on its own split (``ef_mae_in``) and on the
    other (``ef_mae_cross``; ``ef_mae_cross_masks``: against the traced masks), and how many
    of the other dataset's patients got no EF (``ef_nan_cross``). EF columns are NaN for a run
    without the clinical file."""
    keys = list(RUN_COLUMNS)
    if data.metrics_cross.empty:
        return pd.DataFrame(columns=RUN_TABLE_COLUMNS)
    din = data.metrics_in.groupby(keys)["dice"].agg(n_in="count", dice_in="mean")
    dcr = data.metrics_cross.groupby(keys)["dice"].agg(n_cross="count", dice_cross="mean")
    t = din.join(dcr, how="inner")
    t["drop"] = t["dice_in"] - t["dice_cross"]
    for col, frame, truth in (("ef_mae_in", data.clinical_in, "ref"),
                              ("ef_mae_cross", data.clinical_cross, "ref"),
                              ("ef_mae_cross_masks", data.clinical_cross, "gt")):
        t[col] = t.index.map(_ef_errors(frame, truth).to_dict()).astype(float) \
            if not frame.empty else np.nan
    nan = {} if data.clinical_cross.empty else data.clinical_cross.assign(
        nan=data.clinical_cross[f"pred_{_EF}"].isna()).groupby(keys)["nan"].sum().to_dict()
    t["ef_nan_cross"] = t.index.map(lambda k: nan.get(k, np.nan)).astype(float)
    return order_rows(t.reset_index())[RUN_TABLE_COLUMNS]


CELL_TABLE_COLUMNS = [*CELL_COLUMNS, "n_seeds", "n_in", "n_cross", "dice_in", "dice_cross",
                      "drop", "drop_seed_std", "ef_mae_in", "ef_mae_cross",
                      "ef_mae_cross_masks"]


def transfer_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell (``CELL_COLUMNS``) of ``run_table``: ``n_seeds``, the fewest test samples of
    its runs on each split, the mean over seeds of each run's dice, drop and EF MAE (over
    the seeds that have it), and the across-seed standard deviation of the drop (NaN with one
    seed)."""
    if runs.empty:
        return pd.DataFrame(columns=CELL_TABLE_COLUMNS)
    g = runs.groupby(list(CELL_COLUMNS), sort=False)
    means = ("dice_in", "dice_cross", "drop", "ef_mae_in", "ef_mae_cross", "ef_mae_cross_masks")
    out = g.agg(n_seeds=("seed", "nunique"), n_in=("n_in", "min"), n_cross=("n_cross", "min"),
                **{c: (c, "mean") for c in means})
    out["drop_seed_std"] = g["drop"].std(ddof=1)
    return order_rows(out.reset_index())[CELL_TABLE_COLUMNS]


def transfer_display(table: pd.DataFrame, dataset: str = "echonet") -> pd.DataFrame:
    """``transfer_table`` for a reader: one row per cell, dice and EF MAE on the run's own
    test split beside the other dataset's."""
    other = DATASET_LABELS.get(dataset, dataset)
    rows = [{"model": MODEL_LABELS.get(r.model, r.model), "strategy": r.strategy,
             "encoders": r.encoders, "prompt": prompt_label(r.prompt), "seeds": r.n_seeds,
             "LV dice, own test": r.dice_in, f"LV dice, {other}": r.dice_cross,
             "drop": r.drop, "drop seed sd": r.drop_seed_std,
             "EF MAE, own test": r.ef_mae_in, f"EF MAE, {other}": r.ef_mae_cross,
             f"EF MAE vs traced masks, {other}": r.ef_mae_cross_masks}
            for r in table.itertuples()]
    return pd.DataFrame(rows)


# -- does synthetic pretraining change the drop? ---------------------------------------------
def drop_pairs(table: pd.DataFrame) -> list[tuple[dict, dict]]:
    """``(a, b)``: every synth-pt-real-ft cell of ``transfer_table`` (a) with its real cell
    (b: same model, encoders, prompt, real fraction and provenance)."""
    cells = {tuple(r) for r in table[list(CELL_COLUMNS)].itertuples(index=False)}
    pos = CELL_COLUMNS.index("strategy")
    pairs = []
    for cell in table[list(CELL_COLUMNS)].itertuples(index=False):
        if cell[pos] != "synth-pt-real-ft":
            continue
        real = (*cell[:pos], "real", *cell[pos + 1:])
        if real in cells:
            pairs.append((dict(zip(CELL_COLUMNS, cell)), dict(zip(CELL_COLUMNS, real))))
    return pairs


def drop_replicates(ia: np.ndarray, ib: np.ndarray, ca: np.ndarray, cb: np.ndarray,
                    n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Hierarchical bootstrap of drop(a) - drop(b) = [mean(ia) - mean(ib)] - [mean(ca) -
    mean(cb)]: ``ia``/``ca`` (a's seeds x own / other test samples, rows in the same seed
    order), ``ib``/``cb`` the same for b. Each replicate draws a's seeds and b's seeds with
    replacement (one draw per cell for both test sets: a run keeps its two scores), then the
    own test samples and the other's (independently: two test sets), as
    ``seeds.bootstrap_difference`` on one set. Deterministic under ``seed``.

    >>> ia, ib = np.array([[80.0, 82.0]]), np.array([[78.0, 80.0]])
    >>> ca, cb = np.array([[60.0, 64.0, 62.0]]), np.array([[60.0, 64.0, 62.0]])
    >>> drop_replicates(ia, ib, ca, cb, n_boot=3).tolist()  # gain 2 at home, 0 away
    [2.0, 2.0, 2.0]
    """
    rng = np.random.default_rng(seed)
    (ka, n_in), kb, n_cr = ia.shape, ib.shape[0], ca.shape[1]

    def weights(k: int) -> np.ndarray:
        return rng.multinomial(k, np.full(k, 1 / k), size=n_boot) / k

    wa, wb, w_in, w_cr = weights(ka), weights(kb), weights(n_in), weights(n_cr)
    gain_in = np.einsum("ij,ij->i", wa @ ia - wb @ ib, w_in)
    gain_cr = np.einsum("ij,ij->i", wa @ ca - wb @ cb, w_cr)
    return gain_in - gain_cr


def _rank_sum(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon rank-sum (Mann-Whitney U) p-value of ``x`` against ``y`` and the
    rank-biserial correlation 2 U_x / (n_x n_y) - 1 (+1: every x above every y); NaN when a
    side is empty or every value is the same."""
    from scipy import stats

    if x.size == 0 or y.size == 0 or np.unique(np.concatenate([x, y])).size == 1:
        return float("nan"), float("nan")
    res = stats.mannwhitneyu(x, y, alternative="two-sided")
    return float(res.pvalue), float(2 * res.statistic / (x.size * y.size) - 1)


def drop_verdict(change: float, p: float, ci: tuple[float, float], seeds: tuple[int, int]) \
        -> str:
    """Plain words on drop(a) - drop(b): with 2 or more seeds per cell, from the bootstrap
    interval (does it exclude 0?); else from the rank-sum test on one run per cell, and only
    where the interval (then over samples alone) excludes 0 on the same side: the rank-sum
    test compares the two gains' distributions, the interval their means, and a verdict
    claims no more than both show."""
    if min(seeds) >= 2:
        if ci[1] < 0:
            return "smaller drop (survives seed variation)"
        if ci[0] > 0:
            return "larger drop (survives seed variation)"
        return "no change resolved (interval covers 0)"
    if not np.isfinite(p):
        return "no test (no difference to rank)"
    if p >= 0.05:
        return "no change shown (p >= 0.05; one run per cell)"
    side = "smaller" if change < 0 else "larger"
    if not (ci[1] < 0 if side == "smaller" else ci[0] > 0):
        return "no change shown (p < 0.05 but the interval covers 0; one run per cell)"
    return f"{side} drop (p < 0.05; one run per cell, seed variation not measured)"


def drop_comparison(data: TransferData, a: Mapping, b: Mapping, n_boot: int = 2000,
                    seed: int = 0, level: float = 0.95) -> dict:
    """Does cell ``a`` (synth-pt-real-ft) lose more or less than cell ``b`` (real) from its
    own test split to ``data.dataset``'s? ``gain_in``, ``gain_cross``: mean LV dice of a
    minus b on each split (over seeds and samples); ``change`` = drop(a) - drop(b) =
    ``gain_in - gain_cross`` (negative: a drops less), its bootstrap interval
    (``drop_replicates``); on one run per cell (seed 0 where both have it, else their lowest
    common seed): the two-sided Wilcoxon signed-rank p-value of each gain over its paired
    samples (``p_gain_in``, ``p_gain_cross``) and the rank-sum test of the two gains'
    per-sample differences (``p_change``, effect size ``rank_biserial``: +1 every own-split
    difference above every other-split one); ``verdict`` (``drop_verdict``).

    Raises:
        ValueError: a cell has no runs, or the two cells were not scored on the same samples.
    """
    sa, sb, ia, ib = _paired_matrices(data.metrics_in, a, b)
    sa2, sb2, ca, cb = _paired_matrices(data.metrics_cross, a, b)
    if (sa, sb) != (sa2, sb2):
        raise ValueError(f"cells {dict(a)} and {dict(b)}: their seeds differ between the two "
                         f"test splits ({sa}/{sb} against {sa2}/{sb2})")
    boot = drop_replicates(ia, ib, ca, cb, n_boot=n_boot, seed=seed)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    gain_in, gain_cross = float(ia.mean() - ib.mean()), float(ca.mean() - cb.mean())
    common = sorted(set(sa) & set(sb))
    s = common[0] if common else None
    nan = float("nan")
    p_in = p_cross = p_change = r = nan
    if s is not None:
        d_in = ia[sa.index(s)] - ib[sb.index(s)]
        d_cr = ca[sa.index(s)] - cb[sb.index(s)]
        p_in = _wilcoxon(d_in, np.zeros_like(d_in), "two-sided")
        p_cross = _wilcoxon(d_cr, np.zeros_like(d_cr), "two-sided")
        p_change, r = _rank_sum(d_in, d_cr)
    change = gain_in - gain_cross
    return {"a": cell_label(a), "b": cell_label(b), "n_seeds_a": len(sa), "n_seeds_b": len(sb),
            "n_in": ia.shape[1], "n_cross": ca.shape[1],
            "drop_a": float(ia.mean() - ca.mean()), "drop_b": float(ib.mean() - cb.mean()),
            "gain_in": gain_in, "gain_cross": gain_cross, "change": change,
            "ci_low": float(lo), "ci_high": float(hi), "test_seed": nan if s is None else s,
            "p_gain_in": p_in, "p_gain_cross": p_cross, "p_change": p_change,
            "rank_biserial": r,
            "verdict": drop_verdict(change, p_change, (float(lo), float(hi)),
                                    (len(sa), len(sb)))}


DROP_TEST_COLUMNS = ["a", "b", "n_seeds_a", "n_seeds_b", "n_in", "n_cross", "drop_a", "drop_b",
                     "gain_in", "gain_cross", "change", "ci_low", "ci_high", "test_seed",
                     "p_gain_in", "p_gain_cross", "p_change", "rank_biserial", "verdict"]


def drop_tests(data: TransferData, table: pd.DataFrame | None = None, n_boot: int = 2000,
               seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """``drop_comparison`` of every pair of ``drop_pairs`` (``DROP_TEST_COLUMNS``). A pair
    whose cells were not scored on the same samples keeps its row, numbers empty and the
    reason as its verdict (``not comparable: ...``)."""
    table = transfer_table(run_table(data)) if table is None else table
    rows = []
    for a, b in drop_pairs(table):
        try:
            rows.append(drop_comparison(data, a, b, n_boot=n_boot, seed=seed, level=level))
        except ValueError as exc:
            rows.append({"a": cell_label(a), "b": cell_label(b),
                         "verdict": f"not comparable: {exc}"})
    return pd.DataFrame(rows, columns=DROP_TEST_COLUMNS)


def drop_summary(tests: pd.DataFrame, dataset: str = "echonet") -> str:
    """The plain-words verdict on the paired question, no more than ``tests`` show."""
    other = DATASET_LABELS.get(dataset, dataset)
    if tests.empty:
        return ("No pair of cells to compare: no synth-pt-real-ft cell was evaluated on "
                f"{other} beside its real cell (same model, encoders and prompt).")
    apart = tests[tests["change"].isna()]
    note = "".join(f" {r.b.replace(' real', '')}: {r.verdict}." for r in apart.itertuples())
    tests = tests.dropna(subset=["change"])
    if tests.empty:
        return "No pair of cells could be compared." + note
    k = len(tests)
    smaller = int((tests["change"] < 0).sum())
    resolved = tests[tests["verdict"].str.startswith(("smaller", "larger"))]
    text = (f"Synthetic pretraining (synth-pt-real-ft against real) in {k} pair(s) of cells: "
            f"its drop from the own test split to {other} was smaller in {smaller} and "
            f"larger in {k - smaller} (mean change {tests['change'].mean():+.2f} dice points). ")
    if resolved.empty:
        text += ("No change in the drop is resolved in any pair: these runs do not show that "
                 "synthetic pretraining changes how much is lost on the other dataset, nor "
                 "that it leaves it unchanged.")
    else:
        sides = set(resolved["verdict"].str.split(" ").str[0])
        cells = "; ".join(f"{r.b.replace(' real', '')} ({r.change:+.2f})"
                          for r in resolved.itertuples())
        text += (f"A change is resolved in {len(resolved)} of {k}: {cells}. "
                 + (f"Where resolved, synthetic pretraining gives the {sides.pop()} drop."
                    if len(sides) == 1 else "The resolved changes point both ways: no "
                    "general statement follows."))
    single = int((tests[["n_seeds_a", "n_seeds_b"]].min(axis=1) < 2).sum())
    if single:
        text += (f" {single} of the {k} pair(s) rest on one run per cell: how far a cell "
                 "moves with its training seed is not part of their verdict.")
    return text + note
