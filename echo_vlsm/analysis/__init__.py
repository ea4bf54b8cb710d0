"""Tidy metrics -> the study's tables, paired tests and figures (Synthetic Boost, Sec. 4).

Every run of notebook 04 writes a tidy ``metrics.csv`` (one row per test sample and structure,
dice and IoU in percent, HD95 in pixels at 512x512). This package reads them back as one table
and derives what the study reports; its parts:

- ``loading``: ``load_metrics``, ``load_summaries``, ``load_histories``, ``paper_results``;
- ``tables``: ``summary_table`` (mean +- std dice next to the study's Table 1 or 2),
  ``format_table`` / ``write_table`` (the study's wide layout, Markdown and LaTeX);
- ``paired``: ``paired_test`` (one-sided Wilcoxon signed-rank or paired t over matched
  samples), ``study_tests``;
- ``differences``: strategy minus real, frozen minus trained, the P0/P1 prompt gap;
- ``convergence``: epochs and seconds to the best validation dice, real vs synth-pt-real-ft;
- ``figures``: strategy and freeze differences, learning curves, per structure;
- ``report``: ``report.md``.

It loads no torch. Examples::

    df = load_metrics("runs/demo")
    t1 = summary_table(df, "trained")
    write_table(t1, "paper/demo", "table1", caption="Dice (%), encoders trained")
    paired_test(df, {"model": "cris", "strategy": "synth-pt-real-ft", "prompt": "p2"},
                {"model": "cris", "strategy": "real", "prompt": "p2"})
"""

from echo_vlsm.analysis.convergence import STUDY_SPEEDUPS, convergence_speedups, speedup_summary
from echo_vlsm.analysis.differences import (
    freeze_differences,
    paper_freeze_effect,
    prompt_gap,
    prompt_gap_verdict,
    strategy_differences,
)
from echo_vlsm.analysis.figures import (
    freeze_difference_figure,
    learning_curve_figure,
    per_structure_figure,
    save_figure,
    strategy_difference_figure,
)
from echo_vlsm.analysis.loading import (
    PAPER_RESULTS,
    MetricsFormatError,
    load_histories,
    load_metrics,
    load_summaries,
    metrics_files,
    paper_results,
    read_metrics,
    stale_note,
    stale_runs,
)
from echo_vlsm.analysis.paired import (
    STUDY_TESTS,
    PairedTest,
    best_cell,
    paired_test,
    select,
    study_tests,
)
from echo_vlsm.analysis.report import report_sections, write_report
from echo_vlsm.analysis.tables import (
    MODEL_LABELS,
    STRATEGY_LABELS,
    format_table,
    markdown_table,
    summary_table,
    to_latex,
    to_markdown,
    write_table,
)
from echo_vlsm.grid import ENCODERS, METRIC_COLUMNS, MODELS, PROMPT_KEYS, STRATEGIES

__all__ = [
    "ENCODERS", "METRIC_COLUMNS", "MODELS", "MODEL_LABELS", "PAPER_RESULTS", "PROMPT_KEYS",
    "STRATEGIES", "STRATEGY_LABELS", "STUDY_SPEEDUPS", "STUDY_TESTS", "MetricsFormatError",
    "PairedTest", "best_cell", "convergence_speedups", "format_table",
    "freeze_difference_figure", "freeze_differences", "learning_curve_figure",
    "load_histories", "load_metrics", "load_summaries", "markdown_table", "metrics_files",
    "paired_test", "paper_freeze_effect", "paper_results", "per_structure_figure",
    "prompt_gap", "prompt_gap_verdict", "read_metrics", "report_sections", "save_figure",
    "select", "speedup_summary", "stale_note", "stale_runs", "strategy_difference_figure", "strategy_differences",
    "study_tests", "summary_table", "to_latex", "to_markdown", "write_report", "write_table",
]
