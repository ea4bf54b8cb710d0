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
  how every run ended (``stopping_table``: early stopping or the epoch cap);
- ``figures``: strategy and freeze differences, learning curves, per structure;
- ``report``: ``report.md`` (``report_sections``; ``beyond_sections`` and
  ``update_report`` for notebook 08's block);
- clinical indices (issue 21, notebook 09): ``clinical`` (``load_clinical``: every run's
  ``clinical.csv``; ``clinical_agreement``: Pearson r, Bland-Altman bias and limits, MAE
  and the EF categories' agreement and kappa per run; ``cell_agreement``, ``nan_rates``,
  ``floor_table``, ``camus_clinical``; ``clinical_tests``: paired tests of the absolute EF
  error), ``clinical_report`` (``clinical_results``, ``headline_table``,
  ``clinical_sections`` for notebook 09's block of ``report.md``);
- cross-dataset transfer (issue 22, notebook 09): ``transfer`` (``load_transfer``: each run's
  own LV scores beside its ``metrics_<dataset>.csv`` and ``clinical_<dataset>.csv``;
  ``run_table``, ``transfer_table``: dice on both test splits, the drop, EF MAE;
  ``drop_tests``: does synthetic pretraining change the drop?), ``transfer_report``
  (``transfer_results``, ``transfer_sections`` for notebook 09's second block);
- beyond the study (issue #15): ``seeds`` (``seed_table``, the hierarchical bootstrap
  ``hierarchical_bootstrap``, ``claim_verdicts``), ``efficiency`` (dice against real
  training images, ``images_to_reach``), ``beyond`` (``beyond_blocks``, ``beyond_table``,
  ``baseline_table``, ``SUPERVISED_SOTA``, ``beyond_results``).

The study's tables, tests and figures use the study's own cells only (``study_rows``: seed 0,
all the real data, CLIPSeg and CRIS, its four strategies), so runs beyond it in the same
folder leave them unchanged.

It loads no torch. Examples::

    df = load_metrics("runs/demo")
    t1 = summary_table(df, "trained")
    write_table(t1, "paper/demo", "table1", caption="Dice (%), encoders trained")
    paired_test(df, {"model": "cris", "strategy": "synth-pt-real-ft", "prompt": "p2"},
                {"model": "cris", "strategy": "real", "prompt": "p2"})
"""

from echo_vlsm.analysis.beyond import (
    BLOCKS,
    SUPERVISED_SOTA,
    SUPERVISED_SOTA_SOURCE,
    baseline_table,
    beyond_blocks,
    beyond_results,
    beyond_summary,
    beyond_table,
    mixed_difference_figure,
    mixed_differences,
)
from echo_vlsm.analysis.clinical import (
    CLINICAL_COLUMNS,
    CLINICAL_FILE,
    EF_CATEGORIES,
    ClinicalFormatError,
    agreement,
    camus_clinical,
    category_agreement,
    cell_agreement,
    clinical_agreement,
    clinical_pairs,
    clinical_tests,
    cohen_kappa,
    ef_category,
    ef_error_comparison,
    floor_table,
    load_clinical,
    nan_rates,
    read_clinical,
)
from echo_vlsm.analysis.clinical_report import (
    CLINICAL_MARKERS,
    best_cells,
    clinical_results,
    clinical_sections,
    clinical_summary,
    ef_tests_display,
    ef_tests_summary,
    figure_points,
    headline_table,
)
from echo_vlsm.analysis.convergence import (
    STUDY_SPEEDUPS,
    convergence_speedups,
    never_learned,
    speedup_summary,
    stopping_table,
    stopping_verdict,
)
from echo_vlsm.analysis.differences import (
    freeze_differences,
    paper_freeze_effect,
    prompt_gap,
    prompt_gap_verdict,
    strategy_differences,
)
from echo_vlsm.analysis.efficiency import (
    efficiency_figure,
    efficiency_runs,
    efficiency_table,
    images_to_reach,
)
from echo_vlsm.analysis.figures import (
    bland_altman_figure,
    clinical_scatter_figure,
    freeze_difference_figure,
    learning_curve_figure,
    per_structure_figure,
    save_figure,
    strategy_difference_figure,
    transfer_figure,
)
from echo_vlsm.analysis.loading import (
    CELL_COLUMNS,
    PAPER_RESULTS,
    RUN_COLUMNS,
    MetricsFormatError,
    beyond_rows,
    load_histories,
    load_metrics,
    load_summaries,
    metrics_files,
    paper_results,
    read_metrics,
    stale_note,
    stale_runs,
    study_mask,
    study_rows,
    with_run_columns,
)
from echo_vlsm.analysis.paired import (
    STUDY_TESTS,
    PairedTest,
    best_cell,
    paired_test,
    select,
    study_tests,
)
from echo_vlsm.analysis.report import (
    beyond_sections,
    report_sections,
    update_report,
    write_report,
)
from echo_vlsm.analysis.seeds import (
    BootstrapResult,
    bootstrap_difference,
    claim_pairs,
    claim_verdicts,
    claims_summary,
    comparison_display,
    hierarchical_bootstrap,
    run_means,
    seed_comparison,
    seed_comparisons,
    seed_table,
    seed_table_display,
    verdict,
)
from echo_vlsm.analysis.tables import (
    MODEL_LABELS,
    STRATEGY_LABELS,
    format_table,
    markdown_table,
    summary_table,
    to_latex,
    to_markdown,
    write_frame,
    write_table,
)
from echo_vlsm.analysis.transfer import (
    TransferData,
    cross_clinical_file,
    cross_metrics_file,
    drop_summary,
    drop_tests,
    load_transfer,
    run_table,
    transfer_display,
    transfer_table,
)
from echo_vlsm.analysis.transfer_report import (
    TRANSFER_MARKERS,
    drop_tests_display,
    status_note,
    transfer_results,
    transfer_sections,
    transfer_summary,
)
from echo_vlsm.grid import ENCODERS, METRIC_COLUMNS, MODELS, PROMPT_KEYS, STRATEGIES

__all__ = [
    "BLOCKS", "CELL_COLUMNS", "CLINICAL_COLUMNS", "CLINICAL_FILE", "CLINICAL_MARKERS",
    "EF_CATEGORIES", "ENCODERS", "METRIC_COLUMNS", "MODELS", "MODEL_LABELS", "PAPER_RESULTS",
    "PROMPT_KEYS", "RUN_COLUMNS", "STRATEGIES", "STRATEGY_LABELS", "STUDY_SPEEDUPS", "STUDY_TESTS",
    "SUPERVISED_SOTA", "SUPERVISED_SOTA_SOURCE", "BootstrapResult", "ClinicalFormatError",
    "MetricsFormatError", "PairedTest", "agreement", "baseline_table", "best_cell", "best_cells",
    "beyond_blocks", "beyond_results", "beyond_rows", "beyond_sections", "beyond_summary",
    "beyond_table", "bland_altman_figure", "bootstrap_difference", "camus_clinical",
    "category_agreement", "cell_agreement", "claim_pairs", "claim_verdicts", "claims_summary",
    "clinical_agreement", "clinical_pairs", "clinical_results", "clinical_scatter_figure",
    "clinical_sections", "clinical_summary", "clinical_tests", "cohen_kappa", "comparison_display",
    "convergence_speedups", "ef_category", "ef_error_comparison", "ef_tests_display",
    "ef_tests_summary", "efficiency_figure", "efficiency_runs", "efficiency_table",
    "figure_points", "floor_table", "format_table", "freeze_difference_figure",
    "freeze_differences", "headline_table", "hierarchical_bootstrap", "images_to_reach",
    "learning_curve_figure", "load_clinical", "load_histories", "load_metrics", "load_summaries",
    "markdown_table", "metrics_files", "mixed_difference_figure", "mixed_differences", "nan_rates",
    "never_learned",
    "paired_test", "paper_freeze_effect", "paper_results", "per_structure_figure", "prompt_gap",
    "prompt_gap_verdict", "read_clinical", "read_metrics", "report_sections", "run_means",
    "save_figure", "seed_comparison", "seed_comparisons", "seed_table", "seed_table_display",
    "select", "speedup_summary", "stale_note", "stale_runs", "stopping_table", "stopping_verdict",
    "strategy_difference_figure", "strategy_differences", "study_mask", "study_rows",
    "study_tests", "summary_table", "to_latex", "to_markdown", "update_report", "verdict",
    "with_run_columns", "write_frame", "write_report", "write_table",
    # cross-dataset transfer (issue 22, notebook 09)
    "TRANSFER_MARKERS", "TransferData", "cross_clinical_file", "cross_metrics_file",
    "drop_summary", "drop_tests", "drop_tests_display", "load_transfer", "run_table",
    "status_note", "transfer_display", "transfer_figure", "transfer_results",
    "transfer_sections", "transfer_summary", "transfer_table",
]
