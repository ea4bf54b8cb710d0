"""Clinical indices for the reader (notebook 09): each cell against the reference beside
CAMUS's published figures, the points of the Bland-Altman and scatter figures, all results in
one call, and the "Clinical indices" sections of ``report.md`` (a marked block of its own,
``CLINICAL_BEGIN`` / ``CLINICAL_END``, written with ``report.update_report``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.analysis.clinical import (
    AGAINST,
    CELL_COLUMNS,
    EF_CATEGORIES,
    INDICES,
    STAT_COLUMNS,
    _column,
    camus_clinical,
    cell_agreement,
    clinical_agreement,
    clinical_tests,
    floor_table,
    nan_rates,
)
from echo_vlsm.analysis.report import _figure_md
from echo_vlsm.analysis.seeds import CELL_DEFAULTS, cell_label
from echo_vlsm.analysis.tables import markdown_table
from echo_vlsm.grid import STRATEGIES

#: The lines around the block notebook 09 writes at the end of ``report.md``.
CLINICAL_BEGIN = "<!-- clinical indices: begin (notebook 09 writes this block) -->"
CLINICAL_END = "<!-- clinical indices: end -->"
CLINICAL_MARKERS = (CLINICAL_BEGIN, CLINICAL_END)
MASKS_LABEL = "ground-truth masks"
CAMUS_LABEL = "CAMUS best network (Leclerc et al. 2019, cross-validation)"


def _cell_value(rows: pd.DataFrame, index: str, col: str) -> float:
    sel = rows.loc[rows["index"] == index, col]
    return float(sel.iloc[0]) if len(sel) else float("nan")


def _count(n: float) -> object:
    return int(n) if np.isfinite(n) else "–"


def _headline_row(label: str, rows: pd.DataFrame, seeds: object, nan_rate: float) -> dict:
    """One line of ``headline_table`` from a cell's (or the floor's) rows per index."""
    def get(index: str, col: str) -> float:
        return _cell_value(rows, index, col)

    return {
        "measured": label, "seeds": seeds, "patients": _count(get("ef", "n")),
        "EF NaN (%)": nan_rate,
        "EDV r": get("edv", "pearson_r"), "ESV r": get("esv", "pearson_r"),
        "EDV/ESV r (mean)": np.nanmean([get("edv", "pearson_r"), get("esv", "pearson_r")])
        if rows["pearson_r"].notna().any() else float("nan"),
        "EDV MAE (mL)": get("edv", "mae"), "ESV MAE (mL)": get("esv", "mae"),
        "EDV/ESV MAE (mL, mean)": float(np.mean([get("edv", "mae"), get("esv", "mae")])),
        "EF r": get("ef", "pearson_r"), "EF MAE (points)": get("ef", "mae"),
        "EF bias": get("ef", "bias"), "EF LoA low": get("ef", "loa_low"),
        "EF LoA high": get("ef", "loa_high"),
        "EF category agreement (%)": get("ef", "category_agreement"),
        "EF kappa": get("ef", "kappa"),
    }


def headline_table(cells: pd.DataFrame, floor: pd.DataFrame | None = None,
                   camus: pd.DataFrame | None = None, against: str = "reference") \
        -> pd.DataFrame:
    """One line per cell (``cell_agreement``) against ``against``, then the ground-truth masks
    against the reference (``floor``) and CAMUS's best network (``camus``, against its
    reference values, cross-validated over its training patients): the correlation and MAE
    of EDV and ESV (and their mean, CAMUS's figure), of EF, EF's bias and limits of agreement,
    and the EF categories' agreement and kappa. Numbers are means over seeds."""
    cells = cells[cells["against"] == against]
    rows = []
    for cell, g in cells.groupby(list(CELL_COLUMNS), sort=False):
        rec = dict(zip(CELL_COLUMNS, cell))
        nan_rate = float(g["pred_nan_rate"].iloc[0]) if "pred_nan_rate" in g else float("nan")
        rows.append(_headline_row(cell_label(rec), g, int(g["n_seeds"].max()), nan_rate))
    if floor is not None and against == "reference":
        rows.append(_headline_row(MASKS_LABEL, floor, "–", float("nan")))
    if camus is not None and against == "reference":
        c = camus.set_index("index")
        rows.append({"measured": CAMUS_LABEL,
                     "seeds": "–", "patients": "–",
                     "EDV/ESV r (mean)": float(c.loc["edv_esv", "correlation"]),
                     "EDV/ESV MAE (mL, mean)": float(c.loc["edv_esv", "mae"]),
                     "EF r": float(c.loc["ef", "correlation"]),
                     "EF MAE (points)": float(c.loc["ef", "mae"])})
    cols = list(_headline_row("", pd.DataFrame(columns=["index", *STAT_COLUMNS]), 0, 0.0))
    return pd.DataFrame(rows, columns=cols)


# -- figures' points -------------------------------------------------------------------------
def best_cells(cells: pd.DataFrame, against: str = "reference") -> list[dict]:
    """Per strategy (in ``STRATEGIES`` order), the cell with the lowest mean absolute EF
    error against ``against`` (mean over seeds; ``cell_agreement``), cells with no measured
    EF left out."""
    ef = cells[(cells["against"] == against) & (cells["index"] == "ef")].dropna(subset=["mae"])
    out = []
    for strategy in STRATEGIES:
        rows = ef[ef["strategy"] == strategy]
        if not rows.empty:
            top = rows.loc[rows["mae"].idxmin()]
            out.append({c: top[c] for c in CELL_COLUMNS})
    return out


def figure_points(df: pd.DataFrame, cells: Sequence[Mapping],
                  against: str = "reference") -> pd.DataFrame:
    """The points of the Bland-Altman and scatter figures: one row per (group, patient, seed,
    index) measured on both sides, columns ``group, index, measured, truth``. A group per
    cell of ``cells`` (its seeds pooled), and, against the reference, the ground-truth masks
    once per patient (``MASKS_LABEL``)."""
    frames = []
    truth_src = AGAINST[against]
    groups = []
    for cell in cells:
        where = {**CELL_DEFAULTS, **dict(cell)}
        mask = pd.Series(True, index=df.index)
        for key in CELL_COLUMNS:
            mask &= df[key] == where[key]
        groups.append((cell_label(where), df[mask], "pred"))
    if against == "reference":
        groups.append((MASKS_LABEL, df.drop_duplicates(["patient", "split"]), "gt"))
    for label, rows, src in groups:
        for index in INDICES:
            pts = pd.DataFrame({"group": label, "index": index,
                                "measured": rows[_column(src, index)].to_numpy(float),
                                "truth": rows[_column(truth_src, index)].to_numpy(float)})
            frames.append(pts[np.isfinite(pts["measured"]) & np.isfinite(pts["truth"])])
    if not frames:
        return pd.DataFrame(columns=["group", "index", "measured", "truth"])
    return pd.concat(frames, ignore_index=True)


# -- everything at once, the report ----------------------------------------------------------
def clinical_results(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                     camus: pd.DataFrame | None = None) -> dict:
    """Every table of the clinical analysis of ``load_clinical``'s table: ``agreement``
    (per run), ``nans``, ``cells`` (per cell), ``floor``, ``camus``, ``headline`` (against
    the reference, with the floor and CAMUS), ``headline_masks`` (against the ground-truth
    masks), ``tests`` (the EF error's paired tests against the reference) and ``best`` (each
    strategy's best cell, for the figures)."""
    agreement = clinical_agreement(df)
    nans = nan_rates(df)
    cells = cell_agreement(agreement, nans)
    floor = floor_table(df)
    camus = camus_clinical() if camus is None else camus
    return {
        "n_runs": len(nans), "agreement": agreement, "nans": nans, "cells": cells,
        "floor": floor, "camus": camus,
        "headline": headline_table(cells, floor, camus, against="reference"),
        "headline_masks": headline_table(cells, against="masks"),
        "tests": clinical_tests(df, n_boot=n_boot, seed=seed, level=level),
        "best": best_cells(cells),
    }


def ef_tests_display(tests: pd.DataFrame) -> pd.DataFrame:
    """The paired tests (``clinical_tests``) for a reader: errors, difference and interval in
    EF points, seeds as ``a/b``."""
    def num(v: float, fmt: str = ".2f") -> str:
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)

    rows = [{"comparison": r.comparison, "a": r.a, "b": r.b,
             "seeds a/b": f"{r.n_seeds_a}/{r.n_seeds_b}", "patients": r.n,
             "|EF error| a": num(r.error_a), "|EF error| b": num(r.error_b),
             "a - b": num(r.diff, "+.2f"),
             "CI": f"[{num(r.ci_low, '+.2f')}, {num(r.ci_high, '+.2f')}]",
             "Wilcoxon p (a < b, one run each)": num(r.wilcoxon_p, ".2e"),
             "verdict": r.verdict} for r in tests.itertuples()]
    return pd.DataFrame(rows, columns=["comparison", "a", "b", "seeds a/b", "patients",
                                       "|EF error| a", "|EF error| b", "a - b", "CI",
                                       "Wilcoxon p (a < b, one run each)", "verdict"])


def ef_tests_summary(tests: pd.DataFrame) -> str:
    """One paragraph: per kind of comparison, in how many pairs a (synthetic pretraining, the
    richer prompt) had the smaller mean absolute EF error, how many Wilcoxon tests gave
    p < 0.05, and how many bootstrap verdicts say it survives seed variation."""
    if tests.empty:
        return "No pair of cells to compare: the runs hold no synth-pt-real-ft next to real " \
               "and no prompt next to P1 in the same cell."
    parts = []
    for kind, sel in (("synthetic pretraining (synth-pt-real-ft vs real)",
                       tests["comparison"] == "synth-pt-real-ft vs real"),
                      ("a richer prompt (each prompt vs P1; P1 vs P0)",
                       tests["comparison"] != "synth-pt-real-ft vs real")):
        t = tests[sel]
        if t.empty:
            continue
        lower = int((t["diff"] < 0).sum())
        sig = int((t["wilcoxon_p"] < 0.05).sum())
        held = int((t["verdict"] == "survives").sum())
        parts.append(f"{kind}: the smaller mean absolute EF error in {lower} of {len(t)} "
                     f"pairs, Wilcoxon p < 0.05 in {sig}, surviving seed variation in {held}")
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


def _number_note(results: Mapping) -> str:
    nans, floor = results["nans"], results["floor"].set_index("index")
    full = int((nans["pred_nan"] == 0).sum())
    note = (f"{results['n_runs']} runs with `clinical.csv`; {full} of them measured every "
            f"test patient's EF on the prediction.")
    if floor.loc["ef", "n"] > 0:
        note += (f" The ground-truth masks against the reference (the floor: measuring "
                 f"alone): EF MAE {floor.loc['ef', 'mae']:.2f} points over "
                 f"{int(floor.loc['ef', 'n'])} patients"
                 + (f", EDV MAE {floor.loc['edv', 'mae']:.2f} mL, ESV MAE "
                    f"{floor.loc['esv', 'mae']:.2f} mL" if floor.loc["edv", "n"] > 0 else "")
                 + ".")
    return note


def clinical_sections(report_path: str | os.PathLike, results: Mapping | None, *,
                      figures: Mapping[str, Iterable[Path] | None] | None = None,
                      n_boot: int = 2000, level: float = 0.95) -> list[tuple[str, str]]:
    """The "Clinical indices" sections of ``report.md`` from ``clinical_results``: the
    agreement with the reference beside CAMUS's figures, with the ground-truth masks, the
    measurements that failed, the figures (``{"bland_altman": paths, "scatter": paths}``),
    then the paired tests of the EF error. ``results`` None (no run has ``clinical.csv``):
    no section (``[]``)."""
    if results is None:
        return []
    report_dir = Path(report_path).parent
    figures = dict(figures or {})
    cols = [c for c in results["headline"].columns if c not in ("EDV r", "ESV r")]
    camus = results["camus"].set_index("index")
    nan_runs = results["nans"][results["nans"]["pred_nan"] > 0]
    body = (
        "LV end-diastolic and end-systolic volumes and ejection fraction measured on each "
        "run's predicted masks of the test patients by the biplane method of discs (CAMUS's "
        "disc height; `docs/clinical.md`), against the dataset's reference values and against "
        "the same measurement on the ground-truth masks. Per cell, the mean over seeds of each "
        "run's Pearson r, mean absolute error (MAE), Bland-Altman bias (measured - reference) "
        "and 95 % limits of agreement (bias ± 1.96 sd), and agreement on the EF categories "
        f"({', '.join(EF_CATEGORIES)}: percent and Cohen's kappa).\n\n"
        + _number_note(results) + "\n\n**Against the reference values**\n\n"
        + markdown_table(results["headline"][cols])
        + f"\n\nCAMUS's figures ({camus.loc['ef', 'source']}) are its best network's, from "
        "cross-validation over its training patients, not from the 50 test patients, on real "
        "echocardiograms: a yardstick, not a like-for-like comparison."
        + "\n\n**Against the ground-truth masks** (segmentation error alone)\n\n"
        + markdown_table(results["headline_masks"][[c for c in cols if c != "EF NaN (%)"]])
        + "\n\n" + _figure_md(report_dir, figures.get("bland_altman"), "Bland-Altman plots")
        + "\n\n" + _figure_md(report_dir, figures.get("scatter"), "Measured against reference"))
    if not nan_runs.empty:
        body += ("\n\n**Measurements that failed** (EF not measured on the prediction)\n\n"
                 + markdown_table(nan_runs[["model", "strategy", "encoders", "prompt", "seed",
                                            "n_patients", "pred_nan_rate", "pred_reasons"]]))
    tests = ("Per patient, the absolute EF error against the reference; for two cells a and "
             "b, the mean over seeds of a's mean error minus b's over the patients both "
             "measured, with its hierarchical bootstrap interval "
             f"({n_boot} replicates, {level * 100:g} %: seeds, then patients); *survives* "
             "when it excludes 0 below (a errs less), *not testable* with fewer than 2 seeds "
             "in a cell; beside it the one-sided Wilcoxon signed-rank test (a < b) on one run "
             "per cell. a is synth-pt-real-ft against real, and the richer prompt against P1 "
             "(P1 against P0).\n\n" + ef_tests_summary(results["tests"]) + "\n\n"
             + (markdown_table(ef_tests_display(results["tests"])) if not results["tests"].empty
                else "*(no pair of cells to test)*"))
    return [("Clinical indices", body), ("Clinical indices: paired tests of the EF error",
                                         tests)]


def _records(df: pd.DataFrame) -> list[dict]:
    sel = df.astype(object)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
            for r in sel.where(sel.notna(), None).to_dict("records")]


def clinical_summary(results: Mapping | None, sections: Sequence[tuple[str, str]] = (),
                     **meta: object) -> dict:
    """The key numbers of ``clinical_results`` as plain JSON (NaN as null), for
    ``clinical.json`` beside notebook 09's tables: ``meta``, the number of runs, the report's
    section headings, the headline table, the floor, the NaN rates and the paired tests."""
    if results is None:
        return {**meta, "n_runs": 0, "sections": [], "headline": [], "floor": [], "nans": [],
                "tests": []}
    return {**meta, "n_runs": results["n_runs"],
            "sections": [heading for heading, _ in sections],
            "headline": _records(results["headline"]), "floor": _records(results["floor"]),
            "nans": _records(results["nans"]), "tests": _records(results["tests"])}
