"""``report.md``: every table and figure of a profile next to the study's numbers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from echo_vlsm.analysis.convergence import speedup_summary
from echo_vlsm.analysis.differences import (
    freeze_differences,
    paper_freeze_effect,
    prompt_gap_verdict,
    strategy_differences,
)
from echo_vlsm.analysis.paired import STUDY_TESTS
from echo_vlsm.analysis.tables import format_table, markdown_table, to_markdown
from echo_vlsm.io import write_text_atomic


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
    numbers (Synthetic Boost, Tables 1-2, Sec. 4 tests and speed-ups).

    Returns:
        ``(heading, markdown body)`` pairs for ``write_report``; a section whose input is
        ``None`` is left out.
    """
    report_dir = Path(report_path).parent
    figures = dict(figures or {})

    def figure(key: str, caption: str) -> str:
        return _figure_md(report_dir, figures.get(key), caption)

    sections = [("What was run", _overview(profile, metrics, notes))]
    if gap is not None:
        sections.append(("P0 (empty prompt) versus P1 (structure named)",
                         prompt_gap_verdict(gap) + "\n\n" + markdown_table(gap)))
    sections.append(("Table 1: encoders trained (study: \"unfrozen\")",
                     to_markdown(format_table(table1))))
    if table2 is not None and (table2["n"] > 0).any():
        sections.append(("Table 2: encoders frozen", to_markdown(format_table(table2))))
    sections.append(("Strategy minus real (the study's main figure)",
                     _with_table(figure("strategy_difference",
                                        "Mean dice of each strategy minus real"),
                                 strategy_differences(table1))))
    sections.append(("Frozen minus trained encoders", _freeze_body(
        figure("freeze_difference", "Frozen minus trained"), metrics)))
    if tests is not None:
        sections.append(("Paired tests", _tests_body(tests)))
    if speedups is not None:
        sections.append(("Convergence", _convergence_body(speedups) + "\n\n"
                         + figure("learning_curves", "Learning curves")))
    sections.append(("Per structure", figure("per_structure", "Dice per structure")))
    return sections


def _overview(profile: str, metrics: pd.DataFrame, notes: Iterable[str]) -> str:
    runs = metrics.groupby(["model", "strategy", "encoders", "prompt"]).size()
    rehearsal = [f"**REHEARSAL** (`--fast-dev-run`): every run trained on a few batches "
                 f"and scored on a few test images, to prove the `{profile[:-4]}` profile "
                 "runs end to end. These numbers are not results."] \
        if profile.endswith("-fdr") else []
    overview = [
        *rehearsal,
        f"Profile **{profile}**: {len(runs)} runs, {len(metrics)} test scores "
        f"({int(runs.min())}-{int(runs.max())} per run; the study: 600 = 200 images x 3 "
        "structures). Dice in percent; \"study\" rows are the published values.",
        *notes,
    ]
    return "\n\n".join(overview)


def _with_table(body: str, table: pd.DataFrame) -> str:
    return body + ("\n\n" + markdown_table(table) if not table.empty else "")


def _freeze_body(figure: str, metrics: pd.DataFrame) -> str:
    body = _with_table(figure, freeze_differences(metrics))
    return body + ("\n\nIn the study's own tables, frozen minus trained (Table 2 - Table 1), "
                   "per model: CLIPSeg's encoders never trained in the study's code "
                   "(transformers runs them under `torch.no_grad()`), so its two tables differ "
                   "only by run-to-run noise.\n\n" + markdown_table(paper_freeze_effect()))


def _tests_body(tests: pd.DataFrame) -> str:
    return ("One-sided Wilcoxon signed-rank tests over test samples matched by sample and "
            "structure; diff = mean of a - b (dice points).\n\n**This run**\n\n"
            + (markdown_table(tests) if not tests.empty else "*(no pair of runs to test)*")
            + "\n\n**The study**\n\n" + markdown_table(pd.DataFrame(STUDY_TESTS)))


def _convergence_body(speedups: pd.DataFrame) -> str:
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
    if speedups.empty:
        return body + "*(no real / synth-pt-real-ft pair)*"
    return body + markdown_table(speedup_summary(speedups)) + "\n\n" + markdown_table(speedups)
