"""``report.md``: every table and figure of a profile next to the study's numbers, and (from
notebook 08) the blocks beyond the study, in a marked block at its end."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from echo_vlsm.analysis.beyond import BLOCKS, SUPERVISED_SOTA_SOURCE
from echo_vlsm.analysis.convergence import STOPPING_LEGEND, speedup_summary, stopping_verdict
from echo_vlsm.analysis.differences import (
    freeze_differences,
    paper_freeze_effect,
    prompt_gap_verdict,
    strategy_differences,
)
from echo_vlsm.analysis.loading import study_rows
from echo_vlsm.analysis.paired import STUDY_TESTS
from echo_vlsm.analysis.seeds import claims_summary, comparison_display, seed_table_display
from echo_vlsm.analysis.tables import format_table, markdown_table, to_markdown
from echo_vlsm.errors import PathError
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
    stopping: pd.DataFrame | None = None,
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
    if stopping is not None:
        sections.append(("How every run ended", stopping_verdict(stopping) + "\n\n"
                         + STOPPING_LEGEND + "\n\n" + markdown_table(stopping)))
    if speedups is not None:
        sections.append(("Convergence", _convergence_body(speedups) + "\n\n"
                         + figure("learning_curves", "Learning curves")))
    sections.append(("Per structure", figure("per_structure", "Dice per structure")))
    return sections


def _overview(profile: str, metrics: pd.DataFrame, notes: Iterable[str]) -> str:
    metrics = study_rows(metrics)
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
        names = ", ".join(f"{m} {e} {p.upper()}" for m, e, p in
                          capped[["model", "encoders", "prompt"]].itertuples(index=False))
        body += (f"**Caveat**: {len(capped)} of {len(speedups)} real runs ({names}) had "
                 "their best validation dice at their last epoch: still improving when "
                 "they stopped (at the epoch cap, or by early stopping after gains smaller "
                 "than its `min_delta`), so their best epoch, and `epoch_speedup`, are "
                 "censored; `match_speedup` is the better measure here, and "
                 "synth-pt-real-ft's gain over real may partly reflect the real runs' "
                 "under-training.\n\n")
    if speedups.empty:
        return body + "*(no real / synth-pt-real-ft pair)*"
    return body + markdown_table(speedup_summary(speedups)) + "\n\n" + markdown_table(speedups)


# -- beyond the study (notebook 08) ---------------------------------------------------------
#: The lines around the block notebook 08 writes at the end of ``report.md``.
BEYOND_BEGIN = "<!-- beyond the study: begin (notebook 08 writes this block) -->"
BEYOND_END = "<!-- beyond the study: end -->"
_BEYOND_BLOCK = re.compile("\n" + re.escape(BEYOND_BEGIN) + ".*?" + re.escape(BEYOND_END)
                           + r"(?:\n|\Z)", re.S)
_BLOCK_NAMES = {"seeds": "seed replicates", "mixed": "mixed training (with or without "
                "provenance)", "efficiency": "real fractions below 1",
                "baseline": "the supervised U-Net"}


def update_report(path: str | os.PathLike, sections: list[tuple[str, str]],
                  title: str = "Reproduction report", *,
                  markers: tuple[str, str] = (BEYOND_BEGIN, BEYOND_END)) -> Path:
    """Write ``sections`` as the beyond-the-study block at the end of ``report.md``
    (between ``BEYOND_BEGIN`` and ``BEYOND_END``), replacing the block a previous call wrote
    and leaving the rest (notebook 06's report) as it is. With no sections the block is
    removed: the file is then byte for byte what notebook 06 wrote (untouched if it had no
    block). A missing report is started with ``title``. ``markers``: the (begin, end) lines
    of another block (notebook 09's clinical block), handled the same way; each block
    leaves the others as they are.

    Raises:
        PathError: the report holds one marker of the block without the other (naming the
            file); nothing is written then.
    """
    path = Path(path)
    before = path.read_text(encoding="utf-8") if path.is_file() else None
    begin, end = markers
    text = _without_block(path, before, markers) if before is not None else f"# {title}\n"
    if sections:
        body = "\n".join(f"## {heading}\n\n{body.strip()}\n" for heading, body in sections)
        text = f"{text.rstrip(chr(10))}\n\n{begin}\n\n{body}\n{end}\n"
    if text != before and (before is not None or sections):
        write_text_atomic(path, text)
    return path


def _without_block(path: Path, text: str,
                   markers: tuple[str, str] = (BEYOND_BEGIN, BEYOND_END)) -> str:
    """``text`` without its block(s) between ``markers`` (default: beyond the study); a
    marker left without its partner (one of the two lines deleted by hand) raises
    ``PathError`` naming the file, since where the block ends is then unknown and appending
    would leave two blocks."""
    begin, end = markers
    block = _BEYOND_BLOCK if markers == (BEYOND_BEGIN, BEYOND_END) else re.compile(
        "\n" + re.escape(begin) + ".*?" + re.escape(end) + r"(?:\n|\Z)", re.S)
    rest = block.sub("", text)
    for marker, partner in ((begin, end), (end, begin)):
        if marker in rest:
            raise PathError(path, f"the line {marker!r} has no matching {partner!r}: one "
                                  "marker of the block it opens or closes was deleted, so "
                                  "where the block lies is unknown; put the missing line back "
                                  "(or delete the whole block with its markers) and run again")
    return rest


def beyond_sections(
    report_path: str | os.PathLike,
    results: Mapping,
    *,
    figures: Mapping[str, Iterable[Path]] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
) -> list[tuple[str, str]]:
    """The report's sections beyond the study, from ``beyond.beyond_results``: an overview
    (which blocks have runs, every cell at all the real data), then seed variation (the seed
    table, the study's claims with their bootstrap intervals and Wilcoxon tests, the other
    comparisons), mixed training and provenance, data efficiency, and the supervised
    baseline, each only when its runs exist. No block with runs: no section (``[]``), so a
    report without such runs stays as notebook 06 wrote it.

    ``figures``: ``{"mixed_difference": paths, "data_efficiency": paths}``.
    """
    blocks = results["blocks"]
    if not any(blocks.values()):
        return []
    report_dir = Path(report_path).parent
    figures = dict(figures or {})

    def figure(key: str, caption: str) -> str:
        return _figure_md(report_dir, figures.get(key), caption)

    present = [_BLOCK_NAMES[b] for b in BLOCKS if blocks[b]]
    absent = [_BLOCK_NAMES[b] for b in BLOCKS if not blocks[b]]
    overview = ("Runs beyond the study's grid (issue #15: its proposed next experiments, seed "
                "variation and a supervised baseline). The study's own tables (notebooks 05 "
                "and 06) use only its own cells (seed 0, all the real data, CLIPSeg and CRIS, its "
                "four strategies); these sections hold the rest. Runs present: "
                + ", ".join(present) + "."
                + (f" No runs, so no section: {', '.join(absent)}." if absent else "")
                + "\n\nEvery cell trained on all the real data: mean over seeds of each run's "
                "mean test dice ± the across-seed standard deviation.\n\n"
                + markdown_table(results["beyond_table"]))
    sections = [("Beyond the study: what was run", overview)]
    comparisons = results.get("comparisons")
    if blocks["seeds"]:
        sections.append(("Beyond the study: seed variation",
                         _seeds_body(results, comparisons, n_boot, level)))
    if blocks["mixed"]:
        body = ("Mixed training, the study's proposed direction: one training set of real and "
                "synthetic images, evaluated on the real test split; with provenance, each "
                "training prompt says whether its image is real or synthetic (at test time: "
                "real). Mean dice (over seeds) of each strategy minus real; `paper_diff` is the "
                "study's, which ran no mixed cell.\n\n"
                + figure("mixed_difference", "Strategy minus real, with mixed") + "\n\n"
                + markdown_table(results["mixed_differences"]))
        mixed = comparisons[comparisons["comparison"].isin(
            ["mixed vs real", "provenance in the prompt"])] if comparisons is not None else None
        if mixed is not None and not mixed.empty and not blocks["seeds"]:
            body += ("\n\n" + _bootstrap_definition(n_boot, level) + "\n\n"
                     + markdown_table(comparison_display(mixed)))
        sections.append(("Beyond the study: mixed training and provenance", body))
    if blocks["efficiency"]:
        sections.append(("Beyond the study: data efficiency",
                         _efficiency_body(results, figure("data_efficiency",
                                                          "Test dice against real training "
                                                          "images"))))
    if blocks["baseline"]:
        body = (f"A text-free U-Net (MONAI) trained by the same engine and scored by the same "
                f"metrics, beside the VLSMs; for reference, {SUPERVISED_SOTA_SOURCE}.\n\n"
                + markdown_table(results["baseline"]))
        unet = comparisons[comparisons["comparison"] == "U-Net vs best VLSM"] \
            if comparisons is not None else None
        if unet is not None and not unet.empty and not blocks["seeds"]:
            body += "\n\n" + markdown_table(comparison_display(unet))
        sections.append(("Beyond the study: supervised baseline", body))
    return sections


def _bootstrap_definition(n_boot: int, level: float) -> str:
    return (f"Hierarchical bootstrap ({n_boot} replicates): each replicate resamples each "
            "cell's seeds with replacement, then the test samples (one draw for both cells, "
            "which share the real test split), and takes mean dice of a minus b; CI: its "
            f"{level * 100:g} % percentile interval. A claim *survives* seed variation when "
            "its interval excludes 0 in the claimed direction; *not testable* with fewer than "
            "2 seeds in a cell. Beside it, the study's one-sided Wilcoxon signed-rank test on "
            "one run per cell (seed 0), and at how many common seeds that test alone is "
            "significant.")


def _seeds_body(results: Mapping, comparisons, n_boot: int, level: float) -> str:
    claims = results["claims"]
    body = ("The study ran one training per cell and compared cells with a Wilcoxon test "
            "over test samples, which ignores how far a cell moves when only the training "
            "seed changes. Per cell: the mean over seeds of each run's mean test dice, the "
            "across-seed standard deviation, and the study's value.\n\n"
            + markdown_table(seed_table_display(results["seed_table"]))
            + "\n\n" + _bootstrap_definition(n_boot, level) + "\n\n"
            + claims_summary(claims, level=level, n_boot=n_boot) + "\n\n"
            + "**The study's claims**\n\n" + markdown_table(comparison_display(claims)))
    if comparisons is not None and not comparisons.empty:
        body += ("\n\n**Beyond the study's claims** (two-sided)\n\n"
                 + markdown_table(comparison_display(comparisons)))
    return body


def _efficiency_body(results: Mapping, figure: str) -> str:
    reach = results.get("reach")
    body = ("Test dice against the number of real training images (patient-level "
            "subsets of the real training patients, nested), per strategy and model; error "
            "bars: the across-seed standard deviation.\n\n"
            + figure)
    if reach is not None:
        body += ("\n\nReal training images each strategy needs to reach the dice of "
                 "`real` with all of them (linear interpolation between measured "
                 "fractions):\n\n" + (markdown_table(reach) if not reach.empty
                                        else "*(no real run with all the real data)*"))
    return body
