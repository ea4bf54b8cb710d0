"""The study's tables: mean +- std dice per strategy x model x prompt next to the published
Table 1 (encoders trained, "unfrozen") or Table 2 (frozen), in its wide layout, as Markdown
and LaTeX."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from echo_vlsm.analysis.loading import paper_results, study_rows
from echo_vlsm.grid import ENCODERS, MODELS, PROMPT_KEYS, STRATEGIES
from echo_vlsm.io import write_text_atomic

MODEL_LABELS = {"clipseg": "CLIPSeg", "cris": "CRIS", "unet": "U-Net"}
STRATEGY_LABELS = {
    "zeroshot": "Zero-shot",
    "synthetic": "Synthetic",
    "real": "Real",
    "synth-pt-real-ft": "Synth-PT:Real-FT",
    "mixed": "Mixed",
}


def prompt_label(prompt: str) -> str:
    """``"p2"`` -> ``"P2"``; other prompts (``none``, ``random``) as they are."""
    return prompt.upper() if prompt in PROMPT_KEYS else str(prompt)


def order_rows(df: pd.DataFrame) -> pd.DataFrame:
    keys = {
        "strategy": {s: i for i, s in enumerate(STRATEGIES)},
        "model": {m: i for i, m in enumerate(MODELS)},
        "prompt": {p: i for i, p in enumerate(PROMPT_KEYS)},
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
    of the study's table is listed, with ``n = 0`` where it was not reproduced. Only the
    study's own cells count (``study_rows``: seed 0, all the real data, its models and
    strategies); the runs beyond it have their own tables (``seeds``, ``beyond``).
    """
    if encoders not in ENCODERS:
        raise ValueError(f"encoders={encoders!r}; expected one of {list(ENCODERS)}")
    df = study_rows(df)
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
    return order_rows(out)[keys + ["n", "dice_mean", "dice_std", "paper_mean", "paper_std"]]


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
    prompts = [p for p in PROMPT_KEYS if p in set(summary["prompt"])]
    for (strategy, model), group in order_rows(summary).groupby(["strategy", "model"], sort=False):
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


def markdown_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A DataFrame (its index left out) as a GitHub Markdown table: floats with ``floatfmt``,
    p-values (column ``pvalue``) in scientific notation, NaN as "–".

    >>> print(markdown_table(pd.DataFrame({"model": ["cris"], "dice": [91.234]})), end="")
    | model | dice |
    |---|---|
    | cris | 91.23 |
    """
    def fmt(col, v):
        if isinstance(v, float):
            if math.isnan(v):
                return "–"
            return f"{v:.2e}" if col == "pvalue" else format(v, floatfmt)
        return str(v)

    header = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt(c, v) for c, v in zip(df.columns, row.tolist()))
                     + " |")
    return "\n".join(lines) + "\n"


def to_markdown(wide: pd.DataFrame) -> str:
    """A wide table (``format_table``) as a GitHub Markdown table, its index as columns."""
    return markdown_table(wide.reset_index())


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


def write_frame(df: pd.DataFrame, out_dir: str | os.PathLike, name: str, caption: str = "",
                floatfmt: str = ".2f") -> dict[str, Path]:
    """Write a long table as ``<name>.md`` (``markdown_table``, under a bold caption) and
    ``<name>.csv`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    paths = {"md": out_dir / f"{name}.md", "csv": out_dir / f"{name}.csv"}
    md = (f"**{caption}**\n\n" if caption else "") + markdown_table(df, floatfmt=floatfmt)
    write_text_atomic(paths["md"], md)
    write_text_atomic(paths["csv"], df.to_csv(index=False))
    return paths


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
