"""Beyond the study: which of its proposed next experiments a folder of runs holds, the
mixed-training and provenance cells beside the study's strategies, and a supervised U-Net
beside the VLSMs and the supervised state of the art the study cites.

Four blocks, each present only when its runs are (``beyond_blocks``): seed replicates
(``seeds``), ``mixed`` training with or without provenance in the prompt, real fractions
below 1 (``efficiency``), and the text-free baseline (``unet``). ``beyond_results`` computes
every table of the blocks present, for notebook 08 and ``report.beyond_sections``; with the
runs' summaries, how every run in the folder ended (``stopping``), and with seeds,
synth-pt-real-ft minus real over seeds in plain words (``seed_gain_table``,
``seed_gain_text``), which ``convergence_sections`` adds to the report's sections.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.analysis.convergence import STOPPING_LEGEND, stopping_table, stopping_verdict
from echo_vlsm.analysis.efficiency import (
    CURVE_LABELS,
    curve_name,
    efficiency_table,
    images_to_reach,
)
from echo_vlsm.analysis.figures import _difference_panels, save_figure
from echo_vlsm.analysis.loading import paper_results, with_run_columns
from echo_vlsm.analysis.seeds import (
    beyond_pairs,
    cell_label,
    claim_verdicts,
    paper_lookup,
    run_means,
    seed_comparisons,
    seed_table,
    study_value,
)
from echo_vlsm.analysis.tables import MODEL_LABELS, markdown_table, order_rows, prompt_label
from echo_vlsm.grid import BASELINE_MODELS, PROMPT_KEYS, VLSM_MODELS, parse_run_id

#: The supervised state of the art on CAMUS that the study cites (mean dice, percent).
SUPERVISED_SOTA = 94.1
#: Where ``SUPERVISED_SOTA`` comes from, as the report quotes it.
SUPERVISED_SOTA_SOURCE = (
    "the supervised state of the art that Synthetic Boost (Adhikari et al., ASMUS 2023) "
    "cites: 94.1 mean dice on CAMUS (the study's text as quoted in echo-vlsm issue #15; its "
    "tables do not place it beside the VLSMs)"
)
#: The blocks beyond the study, in report order.
BLOCKS = ("seeds", "mixed", "efficiency", "baseline")
#: Columns of ``beyond_table``, in order: the strategies a baseline trains with, and mixed
#: with provenance.
BEYOND_CURVES = ("synthetic", "real", "synth-pt-real-ft", "mixed", "mixed+prov")


def beyond_blocks(df: pd.DataFrame) -> dict[str, bool]:
    """Which blocks beyond the study ``df`` (tidy metrics) has runs for: ``seeds`` (a run
    with a seed other than 0), ``mixed`` (strategy mixed), ``efficiency`` (a real fraction
    below 1), ``baseline`` (a text-free model, e.g. the U-Net)."""
    df = with_run_columns(df)
    return {
        "seeds": bool((df["seed"] != 0).any()),
        "mixed": bool((df["strategy"] == "mixed").any()),
        "efficiency": bool((df["real_fraction"] < 1).any()),
        "baseline": bool(df["model"].isin(BASELINE_MODELS).any()),
    }


def _cell_text(r) -> str:
    spread = f" ± {r.seed_std:.2f}" if not np.isnan(r.seed_std) else ""
    seeds = f" ({r.n_seeds} seeds)" if r.n_seeds > 1 else ""
    return f"{r.dice_mean:.2f}{spread}{seeds}"


def _trained_on_all_real(df: pd.DataFrame, seeds: pd.DataFrame | None) -> pd.DataFrame:
    """The rows of ``seeds`` (a ``seed_table``, made from ``df`` if None) of cells trained on
    all the real data (real fraction 1, not zero-shot)."""
    table = seed_table(df) if seeds is None else seeds
    return table[(table["real_fraction"] == 1.0) & (table["strategy"] != "zeroshot")]


def beyond_table(df: pd.DataFrame, seeds: pd.DataFrame | None = None) -> pd.DataFrame:
    """The cells trained on all the real data, one row per model, encoders and prompt (the
    U-Net's prompt: ``none``), one column per strategy (synthetic, real, synth-pt-real-ft,
    mixed, mixed + provenance): "mean ± across-seed std (k seeds)" of the runs' mean test
    dice; the U-Net rows beside the VLSMs'. ``seeds``: a ``seed_table`` already made."""
    table = _trained_on_all_real(df, seeds)
    rows: dict[tuple, dict[str, str]] = {}
    for r in table.itertuples():
        key = (r.model, r.encoders, r.prompt)
        row = rows.setdefault(key, {"model": MODEL_LABELS.get(r.model, r.model),
                                    "encoders": r.encoders, "prompt": prompt_label(r.prompt)})
        row[CURVE_LABELS[curve_name(r.strategy, r.provenance)]] = _cell_text(r)
    cols = ["model", "encoders", "prompt"] + [CURVE_LABELS[c] for c in BEYOND_CURVES]
    order = {m: i for i, m in enumerate(VLSM_MODELS + BASELINE_MODELS)}
    prompts = {p: i for i, p in enumerate(PROMPT_KEYS)}
    keys = sorted(rows, key=lambda k: (order.get(k[0], 99), k[1] != "trained",
                                       prompts.get(k[2], 99)))
    out = pd.DataFrame([rows[k] for k in keys], columns=cols).astype(object).fillna("–")
    return out


def mixed_differences(df: pd.DataFrame, seeds: pd.DataFrame | None = None,
                      reference: str = "real") -> pd.DataFrame:
    """Mean dice (over seeds) of each strategy minus ``reference``, per model, encoders and
    prompt, at all the real data, with mixed and mixed + provenance (``curve``
    ``mixed+prov``) beside the study's strategies; ``paper_diff``: the study's, where it has
    both cells."""
    table = _trained_on_all_real(df, seeds)
    table = table.assign(strategy=[curve_name(s, p) for s, p in
                                   zip(table["strategy"], table["provenance"])])
    keys = ["model", "encoders", "prompt"]
    ref = table[table["strategy"] == reference].set_index(keys)
    rows = []
    for r in table[table["strategy"] != reference].itertuples():
        k = (r.model, r.encoders, r.prompt)
        if k not in ref.index:
            continue
        rows.append({"strategy": r.strategy, "model": r.model, "encoders": r.encoders,
                     "prompt": r.prompt, "n_seeds": r.n_seeds,
                     "diff": r.dice_mean - ref.at[k, "dice_mean"],
                     "paper_diff": r.paper_mean - ref.at[k, "paper_mean"]})
    cols = ["strategy", "model", "encoders", "prompt", "n_seeds", "diff", "paper_diff"]
    return order_rows(pd.DataFrame(rows, columns=cols))


def mixed_difference_figure(diffs: pd.DataFrame, out_dir: str | os.PathLike,
                            name: str = "mixed_difference") -> list[Path]:
    """The study's main figure with mixed and mixed + provenance: mean dice of each strategy
    minus real per prompt and VLSM, encoders trained (bars: this work, mean over seeds;
    black ticks: the study, which ran no mixed cell)."""
    import matplotlib.pyplot as plt

    sel = diffs[diffs["model"].isin(VLSM_MODELS) & (diffs["encoders"] == "trained")]
    if sel.empty or not sel["strategy"].str.startswith("mixed").any():
        raise ValueError("no mixed run next to 'real' for the same VLSM and prompt")
    labels = sel.assign(strategy=sel["strategy"].map(lambda s: CURVE_LABELS.get(s, s)))
    order = [CURVE_LABELS[c] for c in BEYOND_CURVES if c != "real"]
    fig = _difference_panels(labels, "strategy", order, "Strategy minus real, with mixed",
                             "Δ dice vs real (points)")
    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return paths


def baseline_table(df: pd.DataFrame, seeds: pd.DataFrame | None = None,
                   paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """The supervised U-Net beside the VLSMs, per strategy, at all the real data: its mean
    dice over seeds (± across-seed std), per structure (LV cavity, myocardium, LA), the best
    VLSM cell of this work for the same strategy and the difference, the study's best VLSM
    value for that strategy (Table 1), and the supervised state of the art the study cites
    (``SUPERVISED_SOTA``)."""
    table = seed_table(df, paper) if seeds is None else seeds
    table = table[(table["real_fraction"] == 1.0) & ~table["provenance"].astype(bool)]
    lookup = paper_lookup(paper_results() if paper is None else paper)
    metrics = with_run_columns(df)
    rows = []
    for r in table[table["model"].isin(BASELINE_MODELS)].itertuples():
        own = metrics[(metrics["model"] == r.model) & (metrics["strategy"] == r.strategy)
                      & (metrics["real_fraction"] == 1.0) & ~metrics["provenance"]]
        per_structure = own.groupby("structure")["dice"].mean()
        vlsm = table[table["model"].isin(VLSM_MODELS) & (table["strategy"] == r.strategy)]
        best = vlsm.loc[vlsm["dice_mean"].idxmax()] if not vlsm.empty else None
        published = [v for m in VLSM_MODELS for p in PROMPT_KEYS
                     if not np.isnan(v := study_value(lookup, m, r.strategy, "trained", p))]
        study_best = max(published) if published else np.nan
        rows.append({
            "model": r.model, "strategy": r.strategy, "n_seeds": r.n_seeds,
            "dice_mean": r.dice_mean, "seed_std": r.seed_std,
            **{f"dice_{s}": per_structure.get(s, np.nan) for s in ("lv", "myo", "la")},
            "best_vlsm": f"{MODEL_LABELS[best['model']]} {prompt_label(best['prompt'])}"
            + (" frozen" if best["encoders"] == "frozen" else "") if best is not None else "–",
            "best_vlsm_dice": best["dice_mean"] if best is not None else np.nan,
            "minus_best_vlsm": r.dice_mean - best["dice_mean"] if best is not None else np.nan,
            "study_best_vlsm": study_best, "supervised_sota": SUPERVISED_SOTA,
        })
    cols = ["model", "strategy", "n_seeds", "dice_mean", "seed_std", "dice_lv", "dice_myo",
            "dice_la", "best_vlsm", "best_vlsm_dice", "minus_best_vlsm", "study_best_vlsm",
            "supervised_sota"]
    return order_rows(pd.DataFrame(rows, columns=cols))


def beyond_results(df: pd.DataFrame, summaries: pd.DataFrame | None = None,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Every table of the blocks beyond the study that ``df`` has runs for: ``blocks``
    (``beyond_blocks``), ``seed_table`` (always), ``beyond_table``; with seeds ``claims``
    (``claim_verdicts``) and ``comparisons`` (mixed, provenance, U-Net: ``beyond_pairs``,
    hierarchical bootstrap); with mixed ``mixed_differences``; with real fractions
    ``efficiency`` and ``reach`` (needs ``summaries``); with the U-Net ``baseline``. A block
    without runs maps its tables to None. With ``summaries``: ``stopping``
    (``stopping_table`` of every run, the study's included); with seeds: ``seed_gain``
    (``seed_gain_table``)."""
    blocks = beyond_blocks(df)
    seeds = seed_table(df)
    out: dict = {"blocks": blocks, "seed_table": seeds, "beyond_table": beyond_table(df, seeds),
                 "claims": None, "comparisons": None, "mixed_differences": None,
                 "efficiency": None, "reach": None, "baseline": None, "stopping": None,
                 "seed_gain": None}
    if summaries is not None:
        out["stopping"] = stopping_table(summaries)
    if blocks["seeds"]:
        out["claims"] = claim_verdicts(df, n_boot=n_boot, seed=seed, level=level)
        out["seed_gain"] = seed_gain_table(df, out["claims"])
    pairs = beyond_pairs(df, seeds)
    if pairs:
        out["comparisons"] = seed_comparisons(df, pairs, n_boot=n_boot, seed=seed, level=level)
    if blocks["mixed"]:
        out["mixed_differences"] = mixed_differences(df, seeds)
    if blocks["efficiency"] and summaries is not None:
        eff = efficiency_table(df, summaries)
        out["efficiency"], out["reach"] = eff, images_to_reach(eff)
    if blocks["baseline"]:
        out["baseline"] = baseline_table(df, seeds)
    return out


def _records(df: pd.DataFrame | None, cols: list[str]) -> list[dict]:
    if df is None:
        return []
    sel = df[cols].astype(object)
    return sel.where(sel.notna(), None).to_dict("records")


def beyond_summary(results: dict, sections: Sequence[tuple[str, str]] = (), **meta) -> dict:
    """The key numbers of ``beyond_results`` as plain JSON (NaN as null), for
    ``beyond.json`` beside notebook 08's tables: ``meta``, the blocks, the report's section
    headings, the claims' verdicts, the other comparisons, the real images to reach, how
    many runs ended how (``stopped_by``: count per value) and synth-pt-real-ft minus real
    over seeds (``seed_gain``)."""
    cmp_cols = ["comparison", "a", "b", "n_seeds_a", "n_seeds_b", "diff", "ci_low", "ci_high",
                "wilcoxon_p", "verdict"]
    stopping = results.get("stopping")
    ended = {} if stopping is None else {
        str(k): int(v) for k, v in stopping["stopped_by"].value_counts().items()}
    gain = results.get("seed_gain")
    return {**meta, "blocks": dict(results["blocks"]), "stopped_by": ended,
            "seed_gain": _records(gain, list(gain.columns)) if gain is not None else [],
            "sections": [heading for heading, _ in sections],
            "claims": _records(results.get("claims"), cmp_cols),
            "comparisons": _records(results.get("comparisons"), cmp_cols),
            "reach": _records(results.get("reach"), ["model", "encoders", "prompt", "curve",
                                                     "target_dice", "images_needed", "needed"])}


# -- convergence and the seed-aware gain ----------------------------------------------------
#: The report's section on how every run ended (``convergence_sections``).
RUN_ENDINGS_HEADING = "Beyond the study: how every run ended"
#: The report's section on synth-pt-real-ft minus real over seeds (``convergence_sections``).
SEED_GAIN_HEADING = "Beyond the study: synthetic pretraining over seeds"
_SEEDS_HEADING = "Beyond the study: seed variation"  # report.beyond_sections' heading
_GAIN = ("synth-pt-real-ft", "real")  # a minus b
_GAIN_CLAIM = "synth-pt-real-ft beats real"  # claim_verdicts' name of that comparison


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def seed_gain_table(df: pd.DataFrame, claims: pd.DataFrame | None = None) -> pd.DataFrame:
    """synth-pt-real-ft minus real over seeds, per VLSM, encoders and prompt that ran both at
    all the real data without provenance: the seeds of each (``seeds_real``,
    ``seeds_synth``), the mean over seeds of each run's mean test dice and its across-seed
    standard deviation (ddof=1, NaN with one seed), their difference (``diff``), the
    difference seed by seed (``diff_per_seed``: each seed the two cells share; ``diff_min``,
    ``diff_max``), and from ``claims`` (``claim_verdicts``) the hierarchical bootstrap's
    interval and verdict of that claim (NaN and ``–`` without it)."""
    runs = run_means(df)
    runs = runs[runs["model"].isin(VLSM_MODELS) & (runs["real_fraction"] == 1.0)
                & ~runs["provenance"].astype(bool)]
    verdicts = {} if claims is None else {
        r.a: r for r in claims[claims["comparison"] == _GAIN_CLAIM].itertuples()}
    rows = []
    for (model, encoders, prompt), g in runs.groupby(["model", "encoders", "prompt"], sort=False):
        a = g[g["strategy"] == _GAIN[0]].set_index("seed")["dice"].sort_index()
        b = g[g["strategy"] == _GAIN[1]].set_index("seed")["dice"].sort_index()
        if a.empty or b.empty:
            continue
        per_seed = pd.Series({s: a[s] - b[s] for s in a.index if s in b.index}, dtype=float)
        claim = verdicts.get(cell_label({"model": model, "strategy": _GAIN[0],
                                         "encoders": encoders, "prompt": prompt}))
        rows.append({
            "model": model, "encoders": encoders, "prompt": prompt,
            "seeds_real": len(b), "seeds_synth": len(a),
            "real_mean": b.mean(), "real_seed_std": _std(b),
            "synth_mean": a.mean(), "synth_seed_std": _std(a), "diff": a.mean() - b.mean(),
            "diff_per_seed": ", ".join(f"{d:+.2f} (seed {s})" for s, d in per_seed.items()),
            "diff_min": per_seed.min() if len(per_seed) else np.nan,
            "diff_max": per_seed.max() if len(per_seed) else np.nan,
            "ci_low": claim.ci_low if claim is not None else np.nan,
            "ci_high": claim.ci_high if claim is not None else np.nan,
            "verdict": claim.verdict if claim is not None else "–",
        })
    cols = ["model", "encoders", "prompt", "seeds_real", "seeds_synth", "real_mean",
            "real_seed_std", "synth_mean", "synth_seed_std", "diff", "diff_per_seed",
            "diff_min", "diff_max", "ci_low", "ci_high", "verdict"]
    return order_rows(pd.DataFrame(rows, columns=cols))


def _gain_sentence(r, level: float) -> str:
    """One cell of ``seed_gain_text``: the difference, its spread, what it shows."""
    name = f"{MODEL_LABELS.get(r.model, r.model)} {prompt_label(r.prompt)}" + (
        " (frozen encoders)" if r.encoders == "frozen" else "")
    plural = "s" if r.seeds_synth > 1 else ""
    text = (f"**{name}**: synth-pt-real-ft minus real is {r.diff:+.2f} dice points (mean over "
            f"{r.seeds_synth} seed{plural} of synth-pt-real-ft and {r.seeds_real} of real")
    if r.diff_per_seed and (r.seeds_synth > 1 or r.seeds_real > 1):
        text += f"; seed by seed {r.diff_per_seed}"
    if not (np.isnan(r.real_seed_std) or np.isnan(r.synth_seed_std)):
        text += (f"; across seeds, real's runs vary by {r.real_seed_std:.2f} points and "
                 f"synth-pt-real-ft's by {r.synth_seed_std:.2f} (standard deviations)")
    text += ")."
    interval = f" The {level * 100:g} % interval [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
    verdict = str(r.verdict)
    if verdict == "survives":
        return text + interval + (" lies above 0: over these seeds, synthetic pretraining "
                                  "gave a higher test dice in this cell.")
    if verdict == "reversed":
        return text + interval + (" lies below 0: over these seeds, training on the real "
                                  "images alone gave a higher test dice in this cell.")
    if verdict.startswith("does not survive"):
        return text + interval + (" includes 0: the difference cannot be told apart from "
                                  "what changing the training seed and the test images "
                                  "does; these runs show no gain or loss from synthetic "
                                  "pretraining in this cell, nor do they rule one out.")
    if verdict.startswith("not testable"):
        return text + (" With a single seed in a cell, how far its result moves with the seed "
                       "is unknown, so this difference cannot be told apart from seed "
                       "variation.")
    return text + " No seed-aware interval was computed for this cell."


def _compared_runs(stopping: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``stopping`` (``stopping_table``) of the runs ``table`` compares."""
    cells = set(zip(table["model"], table["encoders"], table["prompt"]))
    keep = []
    for rid in stopping["run_id"]:
        run = parse_run_id(rid)
        keep.append(run.strategy in _GAIN and run.real_fraction == 1.0 and not run.provenance
                    and (run.model, run.encoders, run.prompt) in cells)
    return stopping[keep]


def seed_gain_text(table: pd.DataFrame, stopping: pd.DataFrame | None = None,
                   level: float = 0.95) -> str:
    """``seed_gain_table`` in plain words: per cell the difference, its spread over seeds and
    what the seed-aware interval shows; then how the compared runs ended (from ``stopping``,
    a ``stopping_table``) and what the evidence cannot say."""
    if table.empty:
        return ("No cell ran both real and synth-pt-real-ft on all the real data: there is "
                "no synthetic-pretraining difference to state.")
    parts = [_gain_sentence(r, level) for r in table.itertuples()]
    fewest = int(min(table["seeds_real"].min(), table["seeds_synth"].min()))
    if fewest > 1:
        parts.append(f"With {fewest} seeds per cell the interval's seed part rests on "
                     f"{fewest} trainings per cell: a coarse measure of seed variation, which "
                     "more seeds could widen or narrow.")
    if stopping is not None:
        runs = _compared_runs(stopping, table)
        capped = runs.loc[runs["stopped_by"] == "epochs", "run_id"].tolist()
        parts.append(f"All {len(runs)} runs compared here stopped by early stopping, none at "
                     "its epoch cap." if not capped and len(runs) else
                     f"{len(capped)} of the {len(runs)} runs compared here stopped at the "
                     f"epoch cap ({', '.join(capped)}): a run at its cap may still have been "
                     "improving, so the difference may partly reflect under-training.")
    parts.append("These are tiny, randomly initialised models trained on the echo phantom: "
                 "the verdict describes this demo, not the study's models on CAMUS.")
    return "\n\n".join(parts[:len(table)]) + "\n\n" + " ".join(parts[len(table):])


def convergence_sections(sections: Sequence[tuple[str, str]], results: Mapping,
                         level: float = 0.95) -> list[tuple[str, str]]:
    """``sections`` (``report.beyond_sections``) with how every run in the folder ended
    (``results["stopping"]``: the study's runs, which notebook 06 lists too, and those
    beyond it) after the overview, and synth-pt-real-ft minus real over seeds
    (``results["seed_gain"]``) after the seed-variation section. No sections (no run beyond
    the study): none added, so the report stays as notebook 06 wrote it."""
    out = list(sections)
    if not out:
        return out
    stopping = results.get("stopping")
    if stopping is not None:
        body = ("Every trained run in the runs folder, the study's own and those beyond it: "
                "what ended its training. " + stopping_verdict(stopping) + "\n\n"
                + STOPPING_LEGEND + "\n\n" + markdown_table(stopping))
        out.insert(1, (RUN_ENDINGS_HEADING, body))
    gain = results.get("seed_gain")
    if gain is not None:
        body = seed_gain_text(gain, stopping, level) + "\n\n" + markdown_table(gain)
        at = next((i + 1 for i, (h, _) in enumerate(out) if h == _SEEDS_HEADING), len(out))
        out.insert(at, (SEED_GAIN_HEADING, body))
    return out
