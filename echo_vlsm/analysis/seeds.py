"""Seed variation (beyond the study): how much a cell's dice moves when only the training seed
changes, a hierarchical bootstrap for the difference of two cells, and which of the study's
claims survive it.

The study ran one training per cell and compared cells with a Wilcoxon signed-rank test over
test samples (Sec. 4), which sees the spread of the test samples but not that of training: two
runs of one cell that differ only by their seed also differ in dice. With several seeds per
cell:

- ``seed_table``: per cell, the mean over seeds of each run's mean test dice, the across-seed
  standard deviation, the number of seeds, and the study's published value where the cell is
  one of the study's;
- ``bootstrap_difference`` / ``hierarchical_bootstrap``: a confidence interval for the
  difference of two cells' mean dice that resamples seeds (each cell's, with replacement),
  then test samples (one resampled set for both cells: they share the real test split);
- ``seed_comparison``: that interval beside the study's Wilcoxon test of the same pair;
- ``claim_verdicts``: for each of the study's claims the grid can check, whether it survives.

Examples::

    >>> import numpy as np
    >>> xa = np.array([[80.0, 82.0, 84.0], [81.0, 83.0, 85.0]])  # 2 seeds x 3 samples
    >>> xb = xa - 5.0  # 5 points lower on every sample; its seeds 1 point apart, as a's
    >>> r = bootstrap_difference(xa, xb, n_boot=200, seed=0)
    >>> r.diff, r.ci_low, r.ci_high  # the seeds of a and b are drawn independently
    (5.0, 4.0, 6.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from echo_vlsm.analysis.loading import CELL_COLUMNS, paper_results, with_run_columns
from echo_vlsm.analysis.paired import paired_test, select
from echo_vlsm.analysis.tables import MODEL_LABELS, STRATEGY_LABELS, order_rows, prompt_label
from echo_vlsm.grid import NO_PROMPT, STUDY_STRATEGIES, VLSM_MODELS

#: A cell's defaults beyond the study's four fields (a selection may leave them out).
CELL_DEFAULTS: dict[str, object] = {"real_fraction": 1.0, "provenance": False}
_KEY = ["sample", "structure"]
_ALTERNATIVES = ("greater", "less", "two-sided")


def run_means(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run (cell and seed): ``n`` test scores and ``dice``, their mean."""
    df = with_run_columns(df)
    keys = [*CELL_COLUMNS, "seed"]
    out = df.groupby(keys, sort=False)["dice"].agg(n="count", dice="mean").reset_index()
    return out


def paper_lookup(paper: pd.DataFrame) -> dict[tuple, float]:
    """``{(encoders, strategy, model, prompt): paper_mean}`` of ``paper_results()``."""
    return {(r.encoders, r.strategy, r.model, r.prompt): r.paper_mean
            for r in paper.itertuples()}


def _is_study_cell(model, strategy, real_fraction, provenance) -> bool:
    return (model in VLSM_MODELS and strategy in STUDY_STRATEGIES
            and float(real_fraction) == 1.0 and not bool(provenance))


def study_value(paper: Mapping[tuple, float], model: str, strategy: str, encoders: str,
                prompt: str, real_fraction: float = 1.0, provenance: bool = False) -> float:
    """The study's published mean dice of a cell (Tables 1 and 2), NaN if it has none
    (a cell beyond the study, or one it did not run). Zero-shot is Table 1's."""
    if not _is_study_cell(model, strategy, real_fraction, provenance):
        return float("nan")
    enc = "trained" if strategy == "zeroshot" else encoders
    return float(paper.get((enc, strategy, model, prompt), float("nan")))


def seed_table(df: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per cell (model, strategy, encoders, prompt, real_fraction, provenance): the number of
    seeds, which ones, the test scores per run (``n``), the mean over seeds of each run's
    mean test dice (``dice_mean``), the across-seed standard deviation (``seed_std``, ddof=1;
    NaN with one seed), the lowest and highest run, and the study's value (``paper_mean``,
    NaN beyond the study)."""
    runs = run_means(df)
    lookup = paper_lookup(paper_results() if paper is None else paper)
    rows = []
    for cell, g in runs.groupby(list(CELL_COLUMNS), sort=False):
        rec = dict(zip(CELL_COLUMNS, cell))
        rows.append({
            **rec, "n_seeds": len(g), "seeds": ",".join(str(s) for s in sorted(g["seed"])),
            "n": int(g["n"].min()), "dice_mean": g["dice"].mean(),
            "seed_std": g["dice"].std(ddof=1) if len(g) > 1 else float("nan"),
            "dice_min": g["dice"].min(), "dice_max": g["dice"].max(),
            "paper_mean": study_value(lookup, **rec),
        })
    cols = [*CELL_COLUMNS, "n_seeds", "seeds", "n", "dice_mean", "seed_std", "dice_min",
            "dice_max", "paper_mean"]
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    return order_rows(out.sort_values(["real_fraction", "provenance"], ascending=[False, True],
                                      kind="stable"))[cols]


def cell_label(cell: Mapping) -> str:
    """``"CRIS synth-pt-real-ft P2"``, with ``frozen``, ``25 % real`` and ``+prov`` where
    they apply: a cell as the tables name it."""
    parts = [MODEL_LABELS.get(cell["model"], cell["model"]), cell["strategy"]]
    if cell.get("encoders", "trained") == "frozen":
        parts.append("frozen")
    parts.append(prompt_label(cell["prompt"]) if cell["prompt"] != NO_PROMPT else "(no prompt)")
    frac = float(cell.get("real_fraction", 1.0))
    if frac != 1.0:
        parts.append(f"{frac * 100:g} % real")
    if cell.get("provenance", False):
        parts.append("+prov")
    return " ".join(parts)


def cell_matrix(df: pd.DataFrame, cell: Mapping) -> tuple[list[int], pd.MultiIndex, np.ndarray]:
    """The dice of every seed of ``cell`` over the same test samples: ``(seeds, keys, X)``
    with ``X[i, j]`` the dice of seed ``seeds[i]`` on (sample, structure) ``keys[j]``.

    Raises:
        ValueError: no run matches ``cell``, a run scores a (sample, structure) twice, or its
            seeds were not scored on the same samples.
    """
    df = with_run_columns(df)
    where = {**CELL_DEFAULTS, **dict(cell)}
    where.pop("seed", None)
    rows = select(df, where)  # errors name the key, or the values that exist
    if rows.duplicated(["seed", *_KEY]).any():
        raise ValueError(f"cell {where}: a run scores a (sample, structure) more than once")
    wide = rows.pivot(index="seed", columns=_KEY, values="dice").sort_index()
    if wide.isna().any().any():
        bad = wide.index[wide.isna().any(axis=1)].tolist()
        raise ValueError(f"cell {where}: seeds {bad} were not scored on the same test samples "
                         "as the others; a bootstrap over seeds needs one test set")
    wide = wide.sort_index(axis=1)
    return [int(s) for s in wide.index], wide.columns, wide.to_numpy(float)


@dataclass(frozen=True)
class BootstrapResult:
    """A hierarchical bootstrap of mean dice(a) - mean dice(b) (dice points)."""

    diff: float       # observed: mean over a's seeds of its mean dice, minus b's
    ci_low: float
    ci_high: float
    level: float
    n_boot: int
    n_seeds_a: int
    n_seeds_b: int
    n_samples: int
    share_positive: float  # share of bootstrap differences above 0

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_replicates(xa: np.ndarray, xb: np.ndarray, n_boot: int = 2000, seed: int = 0,
                         chunk: int = 500) -> np.ndarray:
    """The ``n_boot`` replicates of ``bootstrap_difference`` (its definition there)."""
    xa, xb = np.atleast_2d(np.asarray(xa, float)), np.atleast_2d(np.asarray(xb, float))
    (ka, n), kb = xa.shape, xb.shape[0]
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    pa, pb, ps = np.full(ka, 1 / ka), np.full(kb, 1 / kb), np.full(n, 1 / n)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        ca = rng.multinomial(ka, pa, size=m) / ka      # (m, ka) weights of a's seeds
        cb = rng.multinomial(kb, pb, size=m) / kb
        w = rng.multinomial(n, ps, size=m) / n          # (m, n) weights of the samples
        per_sample = ca @ xa - cb @ xb                  # (m, n): seed-resampled difference
        boot[start:start + m] = np.einsum("ij,ij->i", per_sample, w)
    return boot


def bootstrap_difference(xa: np.ndarray, xb: np.ndarray, n_boot: int = 2000, seed: int = 0,
                         level: float = 0.95, chunk: int = 500) -> BootstrapResult:
    """Hierarchical bootstrap of the difference of two cells' mean dice.

    ``xa`` (seeds of a x samples) and ``xb`` (seeds of b x samples) hold the dice of each
    seed's run on the same test samples, in the same column order. Each of ``n_boot``
    replicates draws, with replacement, ``k_a`` of a's seeds and ``k_b`` of b's seeds
    (independently: the cells are separate trainings), then ``n`` test samples, one draw for
    both cells (they share the real test split: a paired resampling), and takes the mean
    over the drawn seeds and samples of a minus that of b. The interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the replicates; ``diff`` the
    observed difference. Deterministic under ``seed`` (numpy's default generator); done as
    matrix products on counts (a multinomial draw per replicate), ``chunk`` replicates at a
    time.

    With one seed on a side, its seed draw is that seed every time: the interval then
    reflects the test samples only (and, for the other side, its seeds).
    """
    xa, xb = np.atleast_2d(np.asarray(xa, float)), np.atleast_2d(np.asarray(xb, float))
    if xa.shape[1] != xb.shape[1] or xa.shape[1] == 0:
        raise ValueError(f"the cells must be scored on the same test samples: a has "
                         f"{xa.shape[1]}, b has {xb.shape[1]}")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; expected a number in (0, 1), e.g. 0.95")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r}; expected a positive number of replicates")
    boot = bootstrap_replicates(xa, xb, n_boot=n_boot, seed=seed, chunk=chunk)
    (ka, n), kb = xa.shape, xb.shape[0]
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return BootstrapResult(
        diff=float(xa.mean() - xb.mean()), ci_low=float(lo), ci_high=float(hi),
        level=float(level), n_boot=int(n_boot), n_seeds_a=int(ka), n_seeds_b=int(kb),
        n_samples=int(n), share_positive=float((boot > 0).mean()),
    )


def hierarchical_bootstrap(df: pd.DataFrame, a: Mapping, b: Mapping, n_boot: int = 2000,
                           seed: int = 0, level: float = 0.95) -> BootstrapResult:
    """``bootstrap_difference`` of cells ``a`` and ``b`` (selections of model, strategy,
    encoders, prompt and, if not the defaults, real_fraction and provenance) over their
    common test samples.

    Raises:
        ValueError: a cell has no runs, or the two were not scored on the same samples.
    """
    _, _, xa, xb = _paired_matrices(df, a, b)
    return bootstrap_difference(xa, xb, n_boot=n_boot, seed=seed, level=level)


def _paired_matrices(df: pd.DataFrame, a: Mapping, b: Mapping):
    """``cell_matrix`` of ``a`` and ``b``, checked to share their test samples:
    ``(seeds_a, seeds_b, xa, xb)``."""
    seeds_a, keys_a, xa = cell_matrix(df, a)
    seeds_b, keys_b, xb = cell_matrix(df, b)
    if not keys_a.equals(keys_b):
        only_a, only_b = keys_a.difference(keys_b), keys_b.difference(keys_a)
        raise ValueError(f"unmatched samples: {len(only_a)} only in a={dict(a)}, "
                         f"{len(only_b)} only in b={dict(b)}; the bootstrap pairs test samples")
    return seeds_a, seeds_b, xa, xb


def verdict(result: BootstrapResult, alternative: str = "greater") -> str:
    """Whether a claimed direction survives seed variation: ``survives`` (the interval
    excludes 0 on the claimed side), ``reversed`` (it excludes 0 on the other side),
    ``does not survive`` (it covers 0), or ``not testable`` (fewer than 2 seeds in a cell:
    no seed variation to resample). ``two-sided``: ``a above b`` / ``a below b`` /
    ``no difference resolved``."""
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r}; expected one of {_ALTERNATIVES}")
    if min(result.n_seeds_a, result.n_seeds_b) < 2:
        return (f"not testable (seeds: a {result.n_seeds_a}, b {result.n_seeds_b}; "
                "needs 2 or more in each)")
    above, below = result.ci_low > 0, result.ci_high < 0
    if alternative == "two-sided":
        return "a above b" if above else "a below b" if below else "no difference resolved"
    held, against = (above, below) if alternative == "greater" else (below, above)
    return "survives" if held else "reversed" if against else "does not survive (CI covers 0)"


def seed_comparison(df: pd.DataFrame, a: Mapping, b: Mapping, alternative: str = "greater",
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """The hierarchical bootstrap of ``a`` - ``b`` beside the study's test (one-sided
    Wilcoxon signed-rank over matched samples, ``paired.paired_test``) on one run per cell
    (seed 0 where both have it, else their lowest common seed; two-sided for a two-sided
    comparison), and at how many common seeds that test alone is significant (p < 0.05)."""
    df = with_run_columns(df)
    seeds_a, seeds_b, xa, xb = _paired_matrices(df, a, b)
    res = bootstrap_difference(xa, xb, n_boot=n_boot, seed=seed, level=level)
    common = sorted(set(seeds_a) & set(seeds_b))
    sel_a, sel_b = {**CELL_DEFAULTS, **dict(a)}, {**CELL_DEFAULTS, **dict(b)}
    p_first, significant = float("nan"), []
    for s in common:
        p = paired_test(df, {**sel_a, "seed": s}, {**sel_b, "seed": s},
                        alternative=alternative).pvalue
        if s == common[0]:
            p_first = p
        significant.append(bool(p < 0.05))
    return {
        "a": cell_label(sel_a), "b": cell_label(sel_b), "alternative": alternative,
        "n_seeds_a": res.n_seeds_a, "n_seeds_b": res.n_seeds_b, "n": res.n_samples,
        "diff": res.diff, "ci_low": res.ci_low, "ci_high": res.ci_high,
        "wilcoxon_seed": common[0] if common else np.nan, "wilcoxon_p": p_first,
        "wilcoxon_significant": f"{sum(significant)}/{len(significant)}",
        "verdict": verdict(res, alternative),
    }


COMPARISON_COLUMNS = ["comparison", "a", "b", "alternative", "study_diff", "n_seeds_a",
                      "n_seeds_b", "n", "diff", "ci_low", "ci_high", "wilcoxon_seed",
                      "wilcoxon_p", "wilcoxon_significant", "verdict"]


def seed_comparisons(df: pd.DataFrame,
                     pairs: Sequence[tuple[str, Mapping, Mapping, str, float]],
                     n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """``seed_comparison`` of each ``(name, a, b, alternative, study_diff)`` as a table
    (``COMPARISON_COLUMNS``); ``study_diff``: the study's value of a - b, NaN if none."""
    rows = [{"comparison": name, "study_diff": study_diff,
             **seed_comparison(df, a, b, alt, n_boot=n_boot, seed=seed, level=level)}
            for name, a, b, alt, study_diff in pairs]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _cells(table: pd.DataFrame, **where) -> pd.DataFrame:
    sel = table
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel


def claim_pairs(df: pd.DataFrame, paper: pd.DataFrame | None = None) -> list[tuple]:
    """The study's claims that the runs present can check, as ``seed_comparisons`` pairs:

    - synth-pt-real-ft beats real, for every VLSM, encoder setting and prompt run both ways
      (study: +0.34 at CRIS P2, Wilcoxon p = 8.3e-6);
    - frozen versus trained encoders, for every VLSM, strategy and prompt run both ways, in
      the direction of the study's own Table 2 - Table 1 for that cell;
    - the best synthetic cell below the best real cell (study: CRIS P5 vs CRIS P2, -5.19).

    Only cells at all the real data without provenance count (the study's kind of cell, any
    seeds).
    """
    table = seed_table(df, paper)
    lookup = paper_lookup(paper_results() if paper is None else paper)
    table = table[table["model"].isin(VLSM_MODELS) & (table["real_fraction"] == 1.0)
                  & ~table["provenance"].astype(bool)]
    pairs = []
    for r in _cells(table, strategy="synth-pt-real-ft").itertuples():
        a = {"model": r.model, "strategy": r.strategy, "encoders": r.encoders, "prompt": r.prompt}
        b = {**a, "strategy": "real"}
        if _cells(table, model=r.model, strategy="real", encoders=r.encoders,
                  prompt=r.prompt).empty:
            continue
        study = r.paper_mean - study_value(lookup, **b)
        pairs.append(("synth-pt-real-ft beats real", a, b, "greater", study))
    for r in _cells(table, encoders="frozen").itertuples():
        if r.strategy == "zeroshot":
            continue
        a = {"model": r.model, "strategy": r.strategy, "encoders": "frozen", "prompt": r.prompt}
        b = {**a, "encoders": "trained"}
        if _cells(table, model=r.model, strategy=r.strategy, encoders="trained",
                  prompt=r.prompt).empty:
            continue
        study = r.paper_mean - study_value(lookup, **b)
        if np.isnan(study) or study == 0:
            continue  # the study gives no direction to check
        pairs.append((f"frozen {'below' if study < 0 else 'above'} trained encoders", a, b,
                      "less" if study < 0 else "greater", study))
    trained = table[table["encoders"] == "trained"]
    best = {}
    for strategy in ("synthetic", "real"):
        rows = trained[trained["strategy"] == strategy]
        if not rows.empty:
            top = rows.loc[rows["dice_mean"].idxmax()]
            best[strategy] = {"model": top["model"], "strategy": strategy,
                              "encoders": "trained", "prompt": top["prompt"]}
    if len(best) == 2:
        pairs.append(("best synthetic below best real", best["synthetic"], best["real"],
                      "less", -5.19))
    return pairs


CLAIMS = ("synth-pt-real-ft beats real", "frozen vs trained encoders",
          "best synthetic below best real")


def claim_verdicts(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                   paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each of the study's claims the grid can check (``claim_pairs``), from the runs
    present: the seed-aware bootstrap interval, the study's Wilcoxon test on one run per
    cell, and the verdict (``verdict``: survives, does not survive, reversed, not testable).
    A claim with no pair of runs to check gets one row, verdict ``not run``."""
    out = seed_comparisons(df, claim_pairs(df, paper), n_boot=n_boot, seed=seed, level=level)
    for claim in CLAIMS:
        stem = claim.split(" vs ")[0]
        if not out["comparison"].str.startswith(stem).any():
            out.loc[len(out)] = {c: np.nan for c in COMPARISON_COLUMNS} | {
                "comparison": claim, "a": "–", "b": "–", "verdict": "not run"}
    return out


def beyond_pairs(df: pd.DataFrame, seeds: pd.DataFrame | None = None) -> list[tuple]:
    """Comparisons of the cells beyond the study, at all the real data (two-sided): mixed
    against real, mixed with provenance against mixed without, for every model, encoder
    setting and prompt run both ways; and the U-Net against the best VLSM, per strategy.
    ``seeds``: a ``seed_table`` of ``df`` already made."""
    table = seed_table(df) if seeds is None else seeds
    table = table[table["real_fraction"] == 1.0]
    pairs = []
    for r in _cells(table, strategy="mixed").itertuples():
        a = {"model": r.model, "strategy": "mixed", "encoders": r.encoders, "prompt": r.prompt,
             "provenance": bool(r.provenance)}
        if r.provenance:
            if not _cells(table, model=r.model, strategy="mixed", encoders=r.encoders,
                          prompt=r.prompt, provenance=False).empty:
                pairs.append(("provenance in the prompt", a, {**a, "provenance": False},
                              "two-sided", np.nan))
            continue
        if not _cells(table, model=r.model, strategy="real", encoders=r.encoders,
                      prompt=r.prompt, provenance=False).empty:
            pairs.append(("mixed vs real", a, {**a, "strategy": "real"}, "two-sided", np.nan))
    vlsm = table[table["model"].isin(VLSM_MODELS) & ~table["provenance"].astype(bool)]
    for r in _cells(table, model="unet").itertuples():
        rows = vlsm[vlsm["strategy"] == r.strategy]
        if rows.empty:
            continue
        top = rows.loc[rows["dice_mean"].idxmax()]
        a = {"model": "unet", "strategy": r.strategy, "encoders": "trained", "prompt": "none"}
        b = {"model": top["model"], "strategy": r.strategy, "encoders": top["encoders"],
             "prompt": top["prompt"]}
        pairs.append(("U-Net vs best VLSM", a, b, "two-sided", np.nan))
    return pairs


def seed_table_display(table: pd.DataFrame) -> pd.DataFrame:
    """The seed table for a reader: one row per cell, ``mean ± seed std (k seeds)``."""
    rows = []
    for r in table.itertuples():
        spread = f" ± {r.seed_std:.2f}" if not np.isnan(r.seed_std) else ""
        rows.append({
            "model": MODEL_LABELS.get(r.model, r.model),
            "strategy": STRATEGY_LABELS.get(r.strategy, r.strategy)
            + (" + provenance" if r.provenance else ""),
            "encoders": r.encoders, "prompt": prompt_label(r.prompt),
            "real data": f"{r.real_fraction * 100:g} %",
            "seeds": r.n_seeds, "dice (mean over seeds)": f"{r.dice_mean:.2f}{spread}",
            "range": f"{r.dice_min:.2f}–{r.dice_max:.2f}" if r.n_seeds > 1 else "–",
            "study": r.paper_mean,
        })
    return pd.DataFrame(rows, columns=["model", "strategy", "encoders", "prompt", "real data",
                                       "seeds", "dice (mean over seeds)", "range", "study"])


def comparison_display(table: pd.DataFrame) -> pd.DataFrame:
    """A comparisons table (``seed_comparisons``, ``claim_verdicts``) for a reader: the
    interval as ``[low, high]``, seeds as ``a/b``, the Wilcoxon p-value in scientific
    notation."""
    def num(v, fmt="+.2f"):
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)

    rows = []
    for r in table.itertuples():
        tested = isinstance(r.n_seeds_a, (int, np.integer)) or not np.isnan(r.n_seeds_a)
        rows.append({
            "comparison": r.comparison, "a": r.a, "b": r.b,
            "study": num(r.study_diff),
            "seeds a/b": f"{int(r.n_seeds_a)}/{int(r.n_seeds_b)}" if tested else "–",
            "diff": num(r.diff), "CI": f"[{num(r.ci_low)}, {num(r.ci_high)}]" if tested else "–",
            "Wilcoxon p (one run each)": num(r.wilcoxon_p, ".2e"),
            "Wilcoxon p < 0.05 (seeds)": r.wilcoxon_significant
            if isinstance(r.wilcoxon_significant, str) else "–",
            "verdict": r.verdict,
        })
    return pd.DataFrame(rows, columns=["comparison", "a", "b", "study", "seeds a/b", "diff",
                                       "CI", "Wilcoxon p (one run each)",
                                       "Wilcoxon p < 0.05 (seeds)", "verdict"])


def claims_summary(claims: pd.DataFrame, level: float = 0.95, n_boot: int = 2000) -> str:
    """One paragraph on the study's claims: how many survive seed variation, and the
    synth-pt-real-ft gain per cell (the study's headline: +0.34 at CRIS P2)."""
    if claims.empty:
        return "No claim of the study could be checked with these runs."
    counts = claims["verdict"].map(lambda v: v.split(" (")[0]).value_counts()
    parts = [f"{n} {v}" for v, n in counts.items()]
    text = (f"Seed-aware verdicts on the study's claims (hierarchical bootstrap over seeds and "
            f"test samples, {level * 100:g} % interval, {n_boot} replicates): "
            + ", ".join(parts) + ".")
    gain = claims[claims["comparison"] == "synth-pt-real-ft beats real"].dropna(subset=["diff"])
    if not gain.empty:
        cells = [f"{r.b.replace(' real', '')}: {r.diff:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
                 f", {r.verdict}" for r in gain.itertuples()]
        text += (" The gain of synthetic pretraining (synth-pt-real-ft minus real; study: "
                 "+0.34 at CRIS P2, Wilcoxon p = 8.3e-6 on one run per cell): "
                 + "; ".join(cells) + ".")
    return text
