"""Cross-dataset transfer for the reader (notebook 09): every result of ``transfer`` in one
call, the runs that lack an evaluation named, the "Cross-dataset transfer" sections of
``report.md`` (a marked block of its own, ``TRANSFER_BEGIN`` / ``TRANSFER_END``, written with
``report.update_report``) and the JSON of their key numbers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.analysis.report import _figure_md
from echo_vlsm.analysis.tables import markdown_table
from echo_vlsm.analysis.transfer import (
    DATASET_LABELS,
    EVALUATED,
    cross_clinical_file,
    cross_metrics_file,
    drop_summary,
    drop_tests,
    load_transfer,
    run_table,
    transfer_display,
    transfer_table,
)

#: The lines around the block notebook 09 writes at the end of ``report.md``.
TRANSFER_BEGIN = "<!-- cross-dataset transfer: begin (notebook 09 writes this block) -->"
TRANSFER_END = "<!-- cross-dataset transfer: end -->"
TRANSFER_MARKERS = (TRANSFER_BEGIN, TRANSFER_END)


def transfer_results(root: str | os.PathLike, dataset: str = "echonet", n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """Every table of the transfer analysis of the runs under ``root`` on ``dataset``:
    ``status`` (per run folder), ``n_evaluated`` (runs scored on both test splits), ``runs``
    (``run_table``), ``table`` (``transfer_table``, per cell), ``display`` (for a reader),
    ``tests`` (``drop_tests``) and ``verdict`` (``drop_summary``)."""
    data = load_transfer(root, dataset)
    runs = run_table(data)
    table = transfer_table(runs)
    tests = drop_tests(data, table, n_boot=n_boot, seed=seed, level=level)
    return {"dataset": dataset, "status": data.status, "n_evaluated": len(runs),
            "runs": runs, "table": table, "display": transfer_display(table, dataset),
            "tests": tests, "verdict": drop_summary(tests, dataset)}


def _ids(ids: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in ids)


def status_note(status: pd.DataFrame, dataset: str = "echonet") -> str:
    """The runs not in the tables, named by group: finished runs without their evaluation
    on ``dataset``, runs whose prompt it cannot make (with the reason), unfinished runs; and
    evaluated runs without ``clinical_<dataset>.csv`` (no EF on it)."""
    parts = []
    missing = status[status["status"] == f"no {cross_metrics_file(dataset)}"]
    if not missing.empty:
        parts.append(f"**Not evaluated on {dataset}** ({len(missing)}, no "
                     f"`{cross_metrics_file(dataset)}`): {_ids(missing['run_id'])}.")
    barred = status[status["status"].str.startswith("not evaluable")]
    for reason, g in barred.groupby("status", sort=True):
        parts.append(f"**Prompt not available on {dataset}** ({len(g)}; "
                     f"{reason.removeprefix('not evaluable: ')}): {_ids(g['run_id'])}.")
    unfinished = status[status["status"].str.startswith("unfinished")]
    if not unfinished.empty:
        parts.append(f"**Unfinished** ({len(unfinished)}, no `metrics.csv`): "
                     f"{_ids(unfinished['run_id'])}.")
    no_ef = status[(status["status"] == EVALUATED) & ~status["clinical_cross"].astype(bool)]
    if not no_ef.empty:
        parts.append(f"**Evaluated without EF** ({len(no_ef)}, no "
                     f"`{cross_clinical_file(dataset)}`: EF columns empty): "
                     f"{_ids(no_ef['run_id'])}.")
    return "\n\n".join(parts)


def drop_tests_display(tests: pd.DataFrame) -> pd.DataFrame:
    """``drop_tests`` for a reader: drops, gains and the change in dice points, the interval
    as ``[low, high]``, seeds as ``a/b``, p-values in scientific notation."""
    def num(v: float, fmt: str = "+.2f") -> str:
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)

    rows = [{"a": r.a, "b": r.b, "seeds a/b": f"{r.n_seeds_a}/{r.n_seeds_b}",
             "samples own/other": f"{r.n_in}/{r.n_cross}", "drop a": num(r.drop_a, ".2f"),
             "drop b": num(r.drop_b, ".2f"), "gain own (p)": f"{num(r.gain_in)} "
             f"({num(r.p_gain_in, '.1e')})", "gain other (p)": f"{num(r.gain_cross)} "
             f"({num(r.p_gain_cross, '.1e')})", "change = drop a - drop b": num(r.change),
             "CI": f"[{num(r.ci_low)}, {num(r.ci_high)}]",
             "rank-sum p": num(r.p_change, ".2e"), "rank-biserial": num(r.rank_biserial),
             "verdict": r.verdict} for r in tests.itertuples()]
    return pd.DataFrame(rows)


def _tests_body(results: Mapping, n_boot: int, level: float) -> str:
    other = DATASET_LABELS.get(results["dataset"], results["dataset"])
    tests = results["tests"]
    return (
        "Does synthetic pretraining change the drop? For synth-pt-real-ft (a) against real "
        "(b), same model, encoders and prompt: drop a - drop b = (a - b on the own test split) "
        f"- (a - b on {other}), the gain of pretraining at home minus its gain away (negative: "
        "pretraining loses less). A run's drop has no per-sample value (the two test sets "
        "share no sample), but each gain does: per sample, a's LV dice minus b's. On one run "
        "per cell (seed 0, else the lowest seed both cells have), the two-sided Wilcoxon "
        "signed-rank test of each gain (p in "
        "brackets) and the Wilcoxon rank-sum (Mann-Whitney) test of the home differences "
        "against the away ones, with its rank-biserial correlation (+1: every home difference "
        "above every away one); the interval is a hierarchical bootstrap "
        f"({n_boot} replicates, {level * 100:g} %: each cell's seeds, each run keeping its two "
        "scores, then the samples of both test sets). The verdict comes from the interval "
        "with 2 or more seeds per cell, else from the rank-sum test.\n\n"
        + results["verdict"] + "\n\n"
        + (markdown_table(drop_tests_display(tests)) if not tests.empty
           else "*(no pair of cells to test)*"))


def transfer_sections(report_path: str | os.PathLike, results: Mapping, *,
                      figures: Mapping[str, Iterable[Path] | None] | None = None,
                      n_boot: int = 2000, level: float = 0.95) -> list[tuple[str, str]]:
    """The "Cross-dataset transfer" sections of ``report.md`` from ``transfer_results``: the
    table per cell beside the in-dataset result, the figure (``{"transfer": paths}``), the
    runs left out, then the paired question. No run evaluated on the dataset: no section
    (``[]``)."""
    if results["n_evaluated"] == 0:
        return []
    dataset = results["dataset"]
    other = DATASET_LABELS.get(dataset, dataset)
    figure = _figure_md(Path(report_path).parent, dict(figures or {}).get("transfer"),
                        f"LV dice on the own test split and on {other}")
    note = status_note(results["status"], dataset)
    body = (
        f"Each run, trained on its own dataset (CAMUS; in the demo the phantom in CAMUS's "
        f"layout), scored without retraining on the test split of {other} (in the demo the "
        "phantom in its layout, with another acquisition), with the prompts both datasets can "
        f"make. Per cell (seeds averaged): mean LV dice on the run's own test split and on "
        f"{other}, the drop (own minus {other}, dice points; its across-seed sd), and the mean "
        "absolute EF error against each dataset's reference (EF points; on the own split by "
        f"the biplane method of discs, on {other} by single-plane discs from the 4CH view "
        "alone, so the EF change mixes the transfer with the method) and against "
        f"{other}'s traced masks. {results['n_evaluated']} runs evaluated on both.\n\n"
        + markdown_table(results["display"]) + "\n\n" + figure
        + ("\n\n" + note if note else ""))
    return [(f"Cross-dataset transfer: tested on {other}", body),
            ("Cross-dataset transfer: does synthetic pretraining change the drop?",
             _tests_body(results, n_boot, level))]


def _records(df: pd.DataFrame) -> list[dict]:
    sel = df.astype(object)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
            for r in sel.where(sel.notna(), None).to_dict("records")]


def transfer_summary(results: Mapping, sections: Sequence[tuple[str, str]] = (),
                     **meta: object) -> dict:
    """The key numbers of ``transfer_results`` as plain JSON (NaN as null), for
    ``transfer.json`` beside notebook 09's tables: ``meta``, the dataset, the number of runs
    evaluated, each run's status, the report's section headings, the table per cell, the
    paired tests and the verdict."""
    status = results["status"]
    return {**meta, "dataset": results["dataset"], "n_evaluated": results["n_evaluated"],
            "status": dict(zip(status["run_id"], status["status"])),
            "sections": [heading for heading, _ in sections],
            "table": _records(results["table"]), "tests": _records(results["tests"]),
            "verdict": results["verdict"]}
