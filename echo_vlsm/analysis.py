"""Tidy metrics -> the study's tables, paired tests and figures (Synthetic Boost, Sec. 4).

Every run of notebook 04 writes a tidy ``metrics.csv`` (one row per test sample and structure,
dice and IoU in percent, HD95 in pixels at 512x512). This module reads them back as one table
and derives what the study reports:

- ``summary_table``: mean +- std dice per strategy x model x prompt, next to the study's
  Table 1 (encoders trained, "unfrozen") or Table 2 (encoders frozen);
- ``format_table`` / ``write_table``: the study's wide layout, as Markdown and LaTeX;
- ``paired_test``: one-sided Wilcoxon signed-rank (or paired t) test over matched samples;
- figures: strategy differences against ``real`` (the study's main figure), frozen minus
  trained encoders, learning curves and convergence speed-ups, per-structure breakdown.

Examples::

    df = load_metrics("runs/demo")
    t1 = summary_table(df, "trained")
    write_table(t1, "paper/demo", "table1", caption="Dice (%), encoders trained")
    paired_test(df, {"model": "cris", "strategy": "synth-pt-real-ft", "prompt": "p2"},
                {"model": "cris", "strategy": "real", "prompt": "p2"})
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.io import atomic_path, write_text_atomic
from echo_vlsm.structures import STRUCTURES

METRIC_COLUMNS: tuple[str, ...] = (
    "model", "strategy", "encoders", "prompt", "sample", "structure", "view", "phase",
    "dice", "iou", "hd95",
)
MODELS: tuple[str, ...] = ("clipseg", "cris")
ENCODERS: tuple[str, ...] = ("trained", "frozen")
# The study's row order in Tables 1 and 2.
STRATEGIES: tuple[str, ...] = ("zeroshot", "synthetic", "real", "synth-pt-real-ft")
PROMPTS: tuple[str, ...] = tuple(f"p{i}" for i in range(8))
MODEL_LABELS = {"clipseg": "CLIPSeg", "cris": "CRIS"}
STRATEGY_LABELS = {
    "zeroshot": "Zero-shot",
    "synthetic": "Synthetic",
    "real": "Real",
    "synth-pt-real-ft": "Synth-PT:Real-FT",
}
# The study's reported tests and convergence speed-ups (Synthetic Boost, Sec. 4).
STUDY_TESTS = (
    {"comparison": "best synthetic vs best real", "a": "CRIS synthetic P5", "b": "CRIS real P2",
     "alternative": "less", "n": 600, "diff": -5.19, "pvalue": 8.8e-73},
    {"comparison": "synth-pt-real-ft vs real", "a": "CRIS synth-pt-real-ft P2",
     "b": "CRIS real P2", "alternative": "greater", "n": 600, "diff": 0.34, "pvalue": 8.3e-6},
)
STUDY_SPEEDUPS = {"clipseg": 1.71, "cris": 4.55}
# paper_results.csv names the encoders of Table 1 "unfrozen".
_PAPER_ENCODERS = {"unfrozen": "trained", "frozen": "frozen"}
PAPER_RESULTS = Path(__file__).resolve().parent.parent / "paper" / "paper_results.csv"


class MetricsFormatError(ValueError):
    """A metrics or history file that does not have the tidy format."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """Read one tidy ``metrics.csv`` and check its columns and values."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"sample": str, "prompt": str, "view": str, "phase": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MetricsFormatError(path, f"not a readable CSV ({exc})") from exc
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise MetricsFormatError(
            path, f"missing columns {missing}; a tidy metrics file has {list(METRIC_COLUMNS)}"
        )
    if df.empty:
        raise MetricsFormatError(path, "has a header but no rows")
    vocab = {"model": MODELS, "encoders": ENCODERS, "strategy": STRATEGIES,
             "structure": STRUCTURES}
    for col, allowed in vocab.items():
        bad = sorted(set(df[col].astype(str)) - set(allowed))
        if bad:
            raise MetricsFormatError(
                path, f"column {col!r} has values {bad}; accepted: {list(allowed)}"
            )
    for col in ("dice", "iou", "hd95"):
        values = pd.to_numeric(df[col], errors="coerce")
        if col != "hd95" and values.isna().any():
            raise MetricsFormatError(path, f"column {col!r} has non-numeric or empty values")
        df[col] = values.astype(float)
    for col in ("dice", "iou"):
        if ((df[col] < 0) | (df[col] > 100)).any():
            raise MetricsFormatError(
                path, f"column {col!r} has values outside 0..100 (it is in percent)"
            )
    return df[list(METRIC_COLUMNS)]


def metrics_files(root: str | os.PathLike) -> list[Path]:
    """Every ``metrics.csv`` under ``root``, sorted."""
    return sorted(Path(root).rglob("metrics.csv"))


def load_metrics(root: str | os.PathLike) -> pd.DataFrame:
    """All ``metrics.csv`` files under ``root`` as one tidy table (one row per test sample
    and structure). Errors name the offending file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of runs")
    files = metrics_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: holds no metrics.csv (run notebook 04 first)")
    return pd.concat([read_metrics(f) for f in files], ignore_index=True)


def paper_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The study's Tables 1 and 2 with this project's names: columns ``table, encoders,
    strategy, model, prompt, paper_mean, paper_std`` (``encoders`` trained | frozen,
    ``model`` clipseg | cris)."""
    path = Path(path) if path is not None else PAPER_RESULTS
    df = pd.read_csv(path)
    need = {"table", "encoders", "strategy", "model", "prompt", "dice_mean", "dice_std"}
    if need - set(df.columns):
        raise MetricsFormatError(path, f"missing columns {sorted(need - set(df.columns))}")
    df = df.assign(
        encoders=df["encoders"].map(_PAPER_ENCODERS),
        model=df["model"].str.lower(),
        prompt=df["prompt"].str.lower(),
    ).rename(columns={"dice_mean": "paper_mean", "dice_std": "paper_std"})
    if df["encoders"].isna().any():
        raise MetricsFormatError(path, f"encoders must be one of {list(_PAPER_ENCODERS)}")
    return df[["table", "encoders", "strategy", "model", "prompt", "paper_mean", "paper_std"]]


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def _order(df: pd.DataFrame) -> pd.DataFrame:
    keys = {
        "strategy": {s: i for i, s in enumerate(STRATEGIES)},
        "model": {m: i for i, m in enumerate(MODELS)},
        "prompt": {p: i for i, p in enumerate(PROMPTS)},
    }
    sort_cols = [c for c in keys if c in df.columns]
    return df.sort_values(
        sort_cols, key=lambda s: s.map(keys[s.name]).fillna(len(keys[s.name]))
    ).reset_index(drop=True)


def summary_table(
    df: pd.DataFrame,
    encoders: str = "trained",
    paper: pd.DataFrame | None = None,
    all_paper_cells: bool = False,
) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1) of dice per strategy x model x prompt, next to
    the study's Table 1 (``encoders="trained"``) or Table 2 (``"frozen"``).

    Zero-shot rows (no training, so no encoder setting) belong to Table 1, as in the study,
    whatever their ``encoders`` label; Table 2 has none. With ``all_paper_cells`` every cell
    of the study's table is listed, with ``n = 0`` where it was not reproduced.
    """
    if encoders not in ENCODERS:
        raise ValueError(f"encoders={encoders!r}; expected one of {list(ENCODERS)}")
    if encoders == "trained":
        sel = df[(df["encoders"] == "trained") | (df["strategy"] == "zeroshot")]
    else:
        sel = df[(df["encoders"] == "frozen") & (df["strategy"] != "zeroshot")]
    keys = ["strategy", "model", "prompt"]
    ours = (
        sel.groupby(keys, sort=False)["dice"]
        .agg(n="count", dice_mean="mean", dice_std="std")
        .reset_index()
    )
    paper = paper_results() if paper is None else paper
    ref = paper[paper["encoders"] == encoders][keys + ["paper_mean", "paper_std"]]
    out = ours.merge(ref, on=keys, how="outer" if all_paper_cells else "left")
    out["n"] = out["n"].fillna(0).astype(int)
    return _order(out)[keys + ["n", "dice_mean", "dice_std", "paper_mean", "paper_std"]]


def _cell(mean: float, std: float, decimals: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def format_table(summary: pd.DataFrame, with_paper: bool = True, decimals: int = 2) -> pd.DataFrame:
    """The study's wide layout: rows strategy x model (and, with ``with_paper``, a row of
    the study's value under each of ours), columns P0..P7, cells "mean ± std" (percent)."""
    rows = []
    prompts = [p for p in PROMPTS if p in set(summary["prompt"])]
    for (strategy, model), group in _order(summary).groupby(["strategy", "model"], sort=False):
        by_prompt = group.set_index("prompt")
        sources = [("this work", "dice_mean", "dice_std")]
        if with_paper:
            sources.append(("study", "paper_mean", "paper_std"))
        for source, mcol, scol in sources:
            row = {
                "strategy": STRATEGY_LABELS.get(strategy, strategy),
                "model": MODEL_LABELS.get(model, model),
            }
            if with_paper:
                row["source"] = source
            for p in prompts:
                if p in by_prompt.index:
                    row[p.upper()] = _cell(by_prompt.at[p, mcol], by_prompt.at[p, scol], decimals)
                else:
                    row[p.upper()] = "–"
            rows.append(row)
    index = ["strategy", "model"] + (["source"] if with_paper else [])
    if not rows:
        return pd.DataFrame(columns=index).set_index(index)
    return pd.DataFrame(rows).set_index(index)


def to_markdown(wide: pd.DataFrame) -> str:
    """A wide table (``format_table``) as a GitHub Markdown table."""
    flat = wide.reset_index()
    header = [str(c) for c in flat.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in flat.iterrows():
        lines.append("| " + " | ".join(str(v) for v in row.tolist()) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "±": r"$\pm$", "–": "--"}


def _latex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(wide: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A wide table (``format_table``) as a booktabs LaTeX table."""
    flat = wide.reset_index()
    n_index = wide.index.nlevels
    spec = "l" * n_index + "c" * (flat.shape[1] - n_index)
    lines = [r"\begin{table}", r"\centering", r"\scriptsize"]
    if caption:
        lines.append(rf"\caption{{{_latex(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(_latex(c) for c in flat.columns) + r" \\")
    lines.append(r"\midrule")
    for _, row in flat.iterrows():
        lines.append(" & ".join(_latex(v) for v in row.tolist()) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    summary: pd.DataFrame,
    out_dir: str | os.PathLike,
    name: str,
    caption: str = "",
    with_paper: bool = True,
) -> dict[str, Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` (the long table) into
    ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    wide = format_table(summary, with_paper=with_paper)
    paths = {"md": out_dir / f"{name}.md", "tex": out_dir / f"{name}.tex",
             "csv": out_dir / f"{name}.csv"}
    md = (f"**{caption}**\n\n" if caption else "") + to_markdown(wide)
    write_text_atomic(paths["md"], md)
    write_text_atomic(paths["tex"], to_latex(wide, caption=caption, label=f"tab:{name}"))
    write_text_atomic(paths["csv"], summary.to_csv(index=False))
    return paths


# --------------------------------------------------------------------------------------
# Paired tests
# --------------------------------------------------------------------------------------


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
                f"structure), e.g. {ex}; narrow it (model, strategy, encoders, prompt) so each "
                "sample appears once"
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
    model and prompt run with both (one-sided, greater; study: CRIS P2, p = 8.3e-6)."""
    summary = summary_table(df, encoders)
    rows = []
    best_syn, best_real = best_cell(summary, "synthetic"), best_cell(summary, "real")
    if best_syn and best_real:
        a = {**best_syn, "encoders": encoders}
        b = {**best_real, "encoders": encoders}
        rows.append(("best synthetic vs best real", paired_test(df, a, b, alternative="less")))
    pairs = summary[summary["n"] > 0]
    for model in MODELS:
        for prompt in PROMPTS:
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


# --------------------------------------------------------------------------------------
# Differences and prompt gap
# --------------------------------------------------------------------------------------


def strategy_differences(summary: pd.DataFrame, reference: str = "real") -> pd.DataFrame:
    """Mean dice of each strategy minus that of ``reference``, per model and prompt, for this
    work (``diff``) and the study (``paper_diff``): the study's main figure."""
    ref = summary[summary["strategy"] == reference].set_index(["model", "prompt"])
    rows = []
    for _, r in summary[summary["strategy"] != reference].iterrows():
        k = (r["model"], r["prompt"])
        if k not in ref.index:
            continue
        rows.append({
            "strategy": r["strategy"], "model": r["model"], "prompt": r["prompt"],
            "diff": r["dice_mean"] - ref.at[k, "dice_mean"],
            "paper_diff": r["paper_mean"] - ref.at[k, "paper_mean"],
        })
    cols = ["strategy", "model", "prompt", "diff", "paper_diff"]
    return _order(pd.DataFrame(rows, columns=cols))


def freeze_differences(df: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean dice with frozen minus with trained encoders, per strategy, model and prompt
    run both ways, with the study's Table 2 minus Table 1 (``paper_diff``)."""
    t_trained = summary_table(df, "trained", paper).set_index(["strategy", "model", "prompt"])
    t_frozen = summary_table(df, "frozen", paper).set_index(["strategy", "model", "prompt"])
    both = t_frozen.index.intersection(t_trained.index)
    rows = []
    for k in both:
        if t_frozen.at[k, "n"] == 0 or t_trained.at[k, "n"] == 0:
            continue
        rows.append({
            "strategy": k[0], "model": k[1], "prompt": k[2],
            "diff": t_frozen.at[k, "dice_mean"] - t_trained.at[k, "dice_mean"],
            "paper_diff": t_frozen.at[k, "paper_mean"] - t_trained.at[k, "paper_mean"],
        })
    cols = ["strategy", "model", "prompt", "diff", "paper_diff"]
    return _order(pd.DataFrame(rows, columns=cols))


def paper_freeze_effect(paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """The study's own Table 2 minus Table 1 per model: mean and largest absolute change.
    If CLIPSeg's encoders never trained (see README), its two tables differ only by noise."""
    paper = paper_results() if paper is None else paper
    keys = ["strategy", "model", "prompt"]
    t1 = paper[paper["encoders"] == "trained"].set_index(keys)["paper_mean"]
    t2 = paper[paper["encoders"] == "frozen"].set_index(keys)["paper_mean"]
    d = (t2 - t1).dropna().rename("diff").reset_index()
    out = d.groupby("model")["diff"].agg(
        cells="count", mean_diff="mean", mean_abs_diff=lambda x: x.abs().mean(),
        max_abs_diff=lambda x: x.abs().max(),
    )
    return out.reset_index()


def prompt_gap(summary: pd.DataFrame, strategies: Iterable[str] = ("real",),
               low: str = "p0", high: str = "p1") -> pd.DataFrame:
    """Dice at ``high`` minus dice at ``low`` (default P1 - P0: naming the structure versus
    the empty prompt) per strategy and model, ours and the study's."""
    rows = []
    for strategy in strategies:
        for model in MODELS:
            sel = summary[(summary["strategy"] == strategy) & (summary["model"] == model)]
            sel = sel.set_index("prompt")
            if low in sel.index and high in sel.index and sel.at[low, "n"] and sel.at[high, "n"]:
                rows.append({
                    "strategy": strategy, "model": model,
                    f"dice_{low}": sel.at[low, "dice_mean"], f"dice_{high}": sel.at[high, "dice_mean"],
                    "gap": sel.at[high, "dice_mean"] - sel.at[low, "dice_mean"],
                    "paper_gap": sel.at[high, "paper_mean"] - sel.at[low, "paper_mean"],
                })
    cols = ["strategy", "model", f"dice_{low}", f"dice_{high}", "gap", "paper_gap"]
    return pd.DataFrame(rows, columns=cols)


def prompt_gap_verdict(gap: pd.DataFrame, far: float = 10.0) -> str:
    """An honest sentence on the study's pattern "P0 (empty prompt) far below P1": holds
    where P1 - P0 is at least ``far`` dice points."""
    if gap.empty:
        return "P0 and P1 were not both run for any strategy and model: the pattern is untested."
    cells = [f"{STRATEGY_LABELS.get(r.strategy, r.strategy)} {MODEL_LABELS[r.model]}: "
             f"{r.gap:+.1f} (study {r.paper_gap:+.1f})" for r in gap.itertuples()]
    held = int((gap["gap"] >= far).sum())
    if held == len(gap):
        verdict = "holds in every cell run"
    elif held == 0:
        verdict = "does not hold in any cell run"
    else:
        verdict = f"holds in {held} of {len(gap)} cells run"
    return (f"The study's pattern, P0 (the empty prompt) far below P1 (at least {far:g} dice "
            f"points), {verdict}. P1 - P0 in dice points: " + "; ".join(cells) + ".")


def encoder_gradient_check(size: str = "tiny", seed: int = 0) -> pd.DataFrame:
    """Which CLIPSeg parameters receive a gradient after one backward pass: transformers'
    own forward (the study's code) with every ``requires_grad`` on, and this project's
    forward with trained and with frozen encoders. transformers runs the CLIP encoders under
    ``torch.no_grad()``, so the study's "unfrozen" CLIPSeg never trained them."""
    import torch

    from echo_vlsm.models import build_model

    torch.manual_seed(seed)
    rows = []
    for variant in ("transformers forward (the study)", "echo_vlsm, encoders trained",
                    "echo_vlsm, encoders frozen"):
        encoders = "frozen" if variant.endswith("frozen") else "trained"
        model = build_model("clipseg", size=size, encoders=encoders)
        net = model.net
        side = model.spec.image_size
        ids, mask = model.tokenize(["Left ventricular cavity of the heart.",
                                    "Myocardium in the cardiac ultrasound."])
        x = torch.randn(2, 3, side, side)
        if variant.startswith("transformers"):
            for p in net.parameters():
                p.requires_grad_(True)
            logits = net(input_ids=ids, pixel_values=x, attention_mask=mask).logits
        else:
            logits = model(x, ids, mask)
        logits.float().pow(2).mean().backward()
        for part, module in (("vision encoder", net.clip.vision_model),
                             ("text encoder", net.clip.text_model), ("decoder", net.decoder)):
            params = list(module.parameters())
            with_grad = sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
            rows.append({"forward": variant, "part": part, "tensors": len(params),
                         "with_gradient": int(with_grad)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Histories and convergence
# --------------------------------------------------------------------------------------


def parse_run_id(run_id: str) -> dict[str, str]:
    """``"cris_synth-pt-real-ft_frozen_p3"`` -> model, strategy, encoders, prompt."""
    parts = run_id.split("_")
    if len(parts) != 4 or parts[0] not in MODELS or parts[1] not in STRATEGIES \
            or parts[2] not in ENCODERS:
        raise ValueError(
            f"{run_id!r} is not a run id <model>_<strategy>_<encoders>_<prompt> with model in "
            f"{list(MODELS)}, strategy in {list(STRATEGIES)}, encoders in {list(ENCODERS)}"
        )
    return dict(zip(("model", "strategy", "encoders", "prompt"), parts))


def _run_dirs(root: Path) -> list[Path]:
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            parse_run_id(d.name)
        except ValueError:
            continue
        out.append(d)
    return out


def load_summaries(root: str | os.PathLike) -> pd.DataFrame:
    """``summary.json`` of every run folder under ``root`` (named by run id) as one table:
    model, strategy, encoders, prompt, best_epoch, best_val_dice, seconds_to_best,
    epochs_run, seconds_total, done."""
    rows = []
    for d in _run_dirs(Path(root)):
        f = d / "summary.json"
        if not f.is_file():
            continue
        try:
            s = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise MetricsFormatError(f, f"not valid JSON ({exc})") from exc
        missing = [k for k in ("best_epoch", "seconds_to_best") if k not in s]
        if missing:
            raise MetricsFormatError(f, f"missing keys {missing}")
        rows.append({**parse_run_id(d.name), "run_id": d.name, **s})
    cols = ["run_id", "model", "strategy", "encoders", "prompt", "best_epoch", "best_val_dice",
            "seconds_to_best", "epochs_run", "seconds_total", "done"]
    out = pd.DataFrame(rows)
    for c in cols:
        if c not in out.columns:
            out[c] = np.nan
    return out[cols]


def load_histories(root: str | os.PathLike) -> pd.DataFrame:
    """``history.csv`` of every run folder under ``root`` as one long table, with the run's
    model, strategy, encoders and prompt, and ``epoch`` (1-based if absent)."""
    frames = []
    for d in _run_dirs(Path(root)):
        f = d / "history.csv"
        if not f.is_file():
            continue
        h = pd.read_csv(f)
        if h.empty:
            continue
        if "epoch" not in h.columns:
            h.insert(0, "epoch", np.arange(1, len(h) + 1))
        for k, v in parse_run_id(d.name).items():
            h[k] = v
        h["run_id"] = d.name
        frames.append(h)
    if not frames:
        return pd.DataFrame(columns=["run_id", "model", "strategy", "encoders", "prompt", "epoch"])
    return pd.concat(frames, ignore_index=True)


def convergence_speedups(summaries: pd.DataFrame, histories: pd.DataFrame | None = None,
                         base: str = "real", boosted: str = "synth-pt-real-ft") -> pd.DataFrame:
    """Convergence speed-up of ``boosted`` over ``base`` per model, encoders and prompt run
    both ways (the study: 4.55x for CRIS, 1.71x for CLIPSeg; pretraining on synthetic images
    not counted, as in the study):

    - ``epoch_speedup``: epochs to the best validation dice, base / boosted;
    - ``time_speedup``: seconds to it (wall clock: noisy on a shared machine);
    - ``match_speedup`` (with ``histories``): base's epochs to its best validation dice over
      the first epoch at which ``boosted`` reaches that dice (NaN if it never does). Unlike
      the ratio of best epochs it stays meaningful when a run is stopped by its epoch cap;
    - ``base_at_cap``: the base run was still improving at its last epoch, so its best epoch
      (and ``epoch_speedup``) is censored by the cap.
    """
    keys = ["model", "encoders", "prompt"]
    a = summaries[summaries["strategy"] == base].set_index(keys)
    b = summaries[summaries["strategy"] == boosted].set_index(keys)
    rows = []
    for k in a.index.intersection(b.index):
        ea, eb = float(a.at[k, "best_epoch"]), float(b.at[k, "best_epoch"])
        sa, sb = float(a.at[k, "seconds_to_best"]), float(b.at[k, "seconds_to_best"])
        match = np.nan
        if histories is not None and "val_dice" in histories.columns:
            hb = histories[histories["run_id"] == "_".join((k[0], boosted, k[1], k[2]))]
            target = a.at[k, "best_val_dice"]
            reached = hb[hb["val_dice"] >= target]["epoch"] if pd.notna(target) else []
            if len(reached):
                match = float(min(reached))
        rows.append({
            **dict(zip(keys, k)),
            f"best_epoch_{base}": ea, f"best_epoch_{boosted}": eb,
            "epoch_speedup": ea / eb if eb > 0 else np.nan,
            f"epochs_{boosted}_to_match": match,
            "match_speedup": ea / match if match and match > 0 else np.nan,
            f"seconds_{base}": sa, f"seconds_{boosted}": sb,
            "time_speedup": sa / sb if sb > 0 else np.nan,
            f"{base}_at_cap": bool(ea >= float(a.at[k, "epochs_run"]))
            if pd.notna(a.at[k, "epochs_run"]) else False,
        })
    cols = keys + [f"best_epoch_{base}", f"best_epoch_{boosted}", "epoch_speedup",
                   f"epochs_{boosted}_to_match", "match_speedup", f"seconds_{base}",
                   f"seconds_{boosted}", "time_speedup", f"{base}_at_cap"]
    return _order(pd.DataFrame(rows, columns=cols))


def speedup_summary(speedups: pd.DataFrame) -> pd.DataFrame:
    """Mean convergence speed-ups per model (over encoders and prompts) next to the study's."""
    rows = []
    for model in MODELS:
        sel = speedups[speedups["model"] == model]
        if sel.empty:
            continue
        rows.append({"model": model, "pairs": len(sel),
                     "epoch_speedup": sel["epoch_speedup"].mean(),
                     "match_speedup": sel["match_speedup"].mean(),
                     "time_speedup": sel["time_speedup"].mean(),
                     "real_at_cap": int(sel.filter(like="_at_cap").iloc[:, 0].sum()),
                     "study": STUDY_SPEEDUPS[model]})
    return pd.DataFrame(rows, columns=["model", "pairs", "epoch_speedup", "match_speedup",
                                       "time_speedup", "real_at_cap", "study"])


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def save_figure(fig, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` (150 dpi) and ``<name>.pdf`` in ``out_dir``, atomically."""
    out = []
    for ext in ("png", "pdf"):
        path = Path(out_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        out.append(path)
    return out


def _prompt_axis(ax, prompts):
    ax.set_xticks(range(len(prompts)))
    ax.set_xticklabels([p.upper() for p in prompts])
    ax.axhline(0, color="0.3", lw=0.8)


def _difference_panels(diffs: pd.DataFrame, hue: str, hue_order, title: str, ylabel: str,
                       facet: str = "model", facet_order=MODELS):
    import matplotlib.pyplot as plt
    import seaborn as sns

    facets = [f for f in facet_order if f in set(diffs[facet])] or [None]
    fig, axes = plt.subplots(1, len(facets), figsize=(4.2 * len(facets), 3.4), squeeze=False,
                             sharey=True)
    hues = [h for h in hue_order if h in set(diffs[hue])]
    palette = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    prompts = [p for p in PROMPTS if p in set(diffs["prompt"])]
    width = 0.8 / max(len(hues), 1)
    for ax, f in zip(axes[0], facets):
        sub = diffs if f is None else diffs[diffs[facet] == f]
        for j, h in enumerate(hues):
            s = sub[sub[hue] == h].set_index("prompt").reindex(prompts)
            x = np.arange(len(prompts)) + (j - (len(hues) - 1) / 2) * width
            label = STRATEGY_LABELS.get(h, MODEL_LABELS.get(h, h))
            ax.bar(x, s["diff"], width=width, color=palette[h], label=label)
            ax.scatter(x, s["paper_diff"], marker="_", s=140, color="black", zorder=3,
                       label="study" if j == 0 else None)
        _prompt_axis(ax, prompts)
        ax.set_title(MODEL_LABELS.get(f, STRATEGY_LABELS.get(f, f)) if f else "")
        ax.set_xlabel("prompt")
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1.08))
    fig.suptitle(title, y=1.14)
    fig.tight_layout()
    return fig


def strategy_difference_figure(summary: pd.DataFrame, out_dir: str | os.PathLike,
                               name: str = "strategy_difference") -> list[Path]:
    """The study's main figure: mean dice of each strategy minus ``real`` per prompt and
    model (bars: this work; black ticks: the study)."""
    import matplotlib.pyplot as plt

    diffs = strategy_differences(summary)
    if diffs.empty:
        raise ValueError("no strategy run next to 'real' for the same model and prompt")
    fig = _difference_panels(diffs, "strategy", STRATEGIES, "Strategy minus real",
                             "Δ dice vs real (points)")
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def freeze_difference_figure(df: pd.DataFrame, out_dir: str | os.PathLike,
                             name: str = "freeze_difference") -> list[Path]:
    """Frozen minus trained encoders, mean dice per prompt and model, one panel per strategy
    (bars: this work; black ticks: the study's Table 2 minus Table 1)."""
    import matplotlib.pyplot as plt

    diffs = freeze_differences(df)
    if diffs.empty:
        raise ValueError("no run exists with both frozen and trained encoders")
    fig = _difference_panels(diffs, "model", MODELS, "Frozen minus trained encoders",
                             "Δ dice frozen − trained (points)", facet="strategy",
                             facet_order=STRATEGIES)
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def learning_curve_figure(histories: pd.DataFrame, out_dir: str | os.PathLike,
                          name: str = "learning_curves", y: str | None = None,
                          strategies: Iterable[str] = ("real", "synth-pt-real-ft"),
                          encoders: str = "trained") -> list[Path]:
    """Validation curves per epoch of ``strategies`` (default real vs synth-pt-real-ft),
    one panel per model, one line per prompt."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if y is None:
        y = next((c for c in ("val_dice", "val_loss", "train_loss") if c in histories.columns),
                 None)
    if y is None or y not in histories.columns:
        raise ValueError(f"history has no column {y!r}; columns: {list(histories.columns)}")
    h = histories[histories["strategy"].isin(list(strategies))
                  & (histories["encoders"] == encoders)]
    if h.empty:
        raise ValueError(f"no history of strategies {list(strategies)} with {encoders} encoders")
    models = [m for m in MODELS if m in set(h["model"])]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False)
    for ax, m in zip(axes[0], models):
        sns.lineplot(data=h[h["model"] == m], x="epoch", y=y, hue="strategy", style="prompt",
                     ax=ax, errorbar=None)
        ax.set_title(MODEL_LABELS[m])
        ax.legend(fontsize=6)
    fig.tight_layout()
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def per_structure_figure(df: pd.DataFrame, out_dir: str | os.PathLike,
                         name: str = "per_structure", encoders: str = "trained") -> list[Path]:
    """Mean dice per structure (LV cavity, myocardium, LA) for each strategy and model,
    averaged over prompts P1..P7 (P0 names no structure)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sel = df[((df["encoders"] == encoders) | (df["strategy"] == "zeroshot"))
             & (df["prompt"] != "p0")]
    if sel.empty:
        raise ValueError(f"no metrics with {encoders} encoders and a prompt other than P0")
    models = [m for m in MODELS if m in set(sel["model"])]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False,
                             sharey=True)
    order = [s for s in STRATEGIES if s in set(sel["strategy"])]
    for ax, m in zip(axes[0], models):
        sns.barplot(data=sel[sel["model"] == m], x="strategy", y="dice", hue="structure",
                    order=order, hue_order=[s for s in STRUCTURES if s in set(sel["structure"])],
                    errorbar=("ci", 95), ax=ax, palette="colorblind")
        ax.set_title(MODEL_LABELS[m])
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([STRATEGY_LABELS[s] for s in order], rotation=20, fontsize=7)
        ax.set_ylabel("dice (%)")
    fig.tight_layout()
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def df_to_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A plain DataFrame (no index) as a Markdown table; p-values in scientific notation."""
    def fmt(col, v):
        if isinstance(v, float):
            if math.isnan(v):
                return "–"
            return f"{v:.2e}" if col == "pvalue" else format(v, floatfmt)
        return str(v)

    header = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt(c, row[c]) for c in df.columns) + " |")
    return "\n".join(lines) + "\n"


def write_report(path: str | os.PathLike, title: str, sections: list[tuple[str, str]]) -> Path:
    """Write a Markdown report: a title and (heading, body) sections, atomically."""
    parts = [f"# {title}\n"]
    for heading, body in sections:
        parts.append(f"## {heading}\n\n{body.strip()}\n")
    path = Path(path)
    write_text_atomic(path, "\n".join(parts))
    return path


def _figure_md(report_dir: Path, paths: Iterable[Path] | None, caption: str) -> str:
    paths = [Path(p) for p in (paths or [])]
    png = next((p for p in paths if p.suffix == ".png"), None)
    if png is None or not png.is_file():
        return f"*({caption}: not drawn, its runs are missing)*"
    rel = os.path.relpath(png, report_dir)
    pdf = next((p for p in paths if p.suffix == ".pdf"), None)
    link = f" ([PDF]({os.path.relpath(pdf, report_dir)}))" if pdf is not None else ""
    return f"![{caption}]({rel}){link}"


def report_sections(
    report_path: str | os.PathLike,
    *,
    profile: str,
    metrics: pd.DataFrame,
    table1: pd.DataFrame,
    table2: pd.DataFrame | None = None,
    tests: pd.DataFrame | None = None,
    speedups: pd.DataFrame | None = None,
    gap: pd.DataFrame | None = None,
    figures: Mapping[str, Iterable[Path]] | None = None,
    notes: Iterable[str] = (),
) -> list[tuple[str, str]]:
    """The sections of ``report.md``: every table and figure of this run next to the study's
    numbers (Synthetic Boost, Tables 1-2, Sec. 4 tests and speed-ups)."""
    report_dir = Path(report_path).parent
    figures = dict(figures or {})
    runs = metrics.groupby(["model", "strategy", "encoders", "prompt"]).size()
    overview = [
        f"Profile **{profile}**: {len(runs)} runs, {len(metrics)} test scores "
        f"({int(runs.min())}-{int(runs.max())} per run; the study: 600 = 200 images x 3 "
        "structures). Dice in percent; \"study\" rows are the published values.",
        *notes,
    ]
    sections = [("What was run", "\n\n".join(overview))]
    if gap is not None:
        sections.append(("P0 (empty prompt) versus P1 (structure named)",
                         prompt_gap_verdict(gap) + "\n\n" + df_to_markdown(gap)))
    sections.append(("Table 1: encoders trained (study: \"unfrozen\")",
                     to_markdown(format_table(table1))))
    if table2 is not None and (table2["n"] > 0).any():
        sections.append(("Table 2: encoders frozen", to_markdown(format_table(table2))))
    diffs = strategy_differences(table1)
    body = _figure_md(report_dir, figures.get("strategy_difference"),
                      "Mean dice of each strategy minus real")
    if not diffs.empty:
        body += "\n\n" + df_to_markdown(diffs)
    sections.append(("Strategy minus real (the study's main figure)", body))
    fdiff = freeze_differences(metrics)
    body = _figure_md(report_dir, figures.get("freeze_difference"), "Frozen minus trained")
    if not fdiff.empty:
        body += "\n\n" + df_to_markdown(fdiff)
    effect = paper_freeze_effect()
    body += ("\n\nIn the study's own tables, frozen minus trained (Table 2 - Table 1), per "
             "model: CLIPSeg's encoders never trained in the study's code (transformers runs "
             "them under `torch.no_grad()`), so its two tables differ only by run-to-run "
             "noise.\n\n" + df_to_markdown(effect))
    sections.append(("Frozen minus trained encoders", body))
    if tests is not None:
        body = ("One-sided Wilcoxon signed-rank tests over test samples matched by sample and "
                "structure; diff = mean of a - b (dice points).\n\n**This run**\n\n"
                + (df_to_markdown(tests) if not tests.empty else "*(no pair of runs to test)*")
                + "\n\n**The study**\n\n" + df_to_markdown(pd.DataFrame(STUDY_TESTS)))
        sections.append(("Paired tests", body))
    if speedups is not None:
        body = ("Epochs (and seconds) to the best validation dice, real divided by "
                "synth-pt-real-ft (pretraining on synthetic images not counted, as in the "
                "study); `match_speedup`: real's epochs to its best validation dice divided by "
                "the epochs synth-pt-real-ft needs to reach that dice. Seconds are wall clock "
                "(noisy on a shared machine).\n\n")
        capped = speedups[speedups.filter(like="_at_cap").any(axis=1)] if not speedups.empty \
            else speedups
        if len(capped):
            body += (f"**Caveat**: {len(capped)} of {len(speedups)} real runs were still "
                     "improving at their last epoch (best epoch = epoch cap): their best epoch, "
                     "and `epoch_speedup`, are censored by the cap; `match_speedup` is the "
                     "better measure here, and synth-pt-real-ft's gain over real partly "
                     "reflects the real runs' under-training.\n\n")
        summary = speedup_summary(speedups)
        body += (df_to_markdown(summary) + "\n\n" + df_to_markdown(speedups)
                 if not speedups.empty else "*(no real / synth-pt-real-ft pair)*")
        body += "\n\n" + _figure_md(report_dir, figures.get("learning_curves"), "Learning curves")
        sections.append(("Convergence", body))
    sections.append(("Per structure", _figure_md(report_dir, figures.get("per_structure"),
                                                 "Dice per structure")))
    return sections
