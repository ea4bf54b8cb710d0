"""Tables and figures of task files for notebook 03: example prompts, token lengths against
CLIP's context, shape words per structure and view.

The prompts part knows nothing of models: token counts come from a function the caller
passes, e.g. ``ClipTokenizer(77).token_lengths`` (``echo_vlsm.models.tokenizer``).

Examples::

    tasks = {"camus": read_tasks("data/phantom", "train")}
    lengths = token_length_table(tasks, ClipTokenizer(77).token_lengths)
    truncation_summary(lengths, limit=77)
    fig = plot_shapes(shape_table(tasks))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from echo_vlsm.prompts.shape import SHAPES
from echo_vlsm.prompts.templates import PLACES, PROMPT_KEYS
from echo_vlsm.prompts.templates import phrasings_of as _phrasings
from echo_vlsm.structures import STRUCTURES, VIEWS

SHAPE_ORDER = SHAPES  # the shape words in table and plot order (geometry's words first)


def _iter_tasks(tasks_by_group: Mapping[str, Sequence[Mapping]]):
    for group, tasks in tasks_by_group.items():
        for task in tasks:
            yield group, task


def prompt_frame(prompts: Mapping[str, str | Sequence[str]]) -> pd.DataFrame:
    """``make_prompts`` output as a table: rows P0..P7, a column per phrasing."""
    rows = {}
    for key in PROMPT_KEYS:
        if key in prompts:
            options = _phrasings(prompts[key])
            rows[key] = [options[min(j, len(options) - 1)] for j in range(len(PLACES))]
    return pd.DataFrame.from_dict(rows, orient="index", columns=[f"... {p}." for p in PLACES])


def prompt_examples(
    tasks_by_group: Mapping[str, Sequence[Mapping]], structure: str = "lv", phrasing: int = 0
) -> pd.DataFrame:
    """One sample's prompts per group (e.g. per kind): rows P0..P7, a column per group,
    the first task of ``structure`` in each group, phrasing 0 ("of the heart") or 1."""
    columns = {}
    for group, tasks in tasks_by_group.items():
        task = next((t for t in tasks if t.get("structure") == structure), None)
        if task is None:
            continue
        stem = (task.get("attributes") or {}).get("stem", task["img_name"])
        col = {}
        for key in PROMPT_KEYS:
            if key in task["prompts"]:
                options = _phrasings(task["prompts"][key])
                col[key] = options[min(phrasing, len(options) - 1)]
        columns[f"{group}: {stem}"] = pd.Series(col, dtype=object)
    return pd.DataFrame(columns).reindex(list(PROMPT_KEYS)).fillna("-")


def token_length_table(
    tasks_by_group: Mapping[str, Sequence[Mapping]],
    count_tokens: Callable[[list[str]], list[int]],
) -> pd.DataFrame:
    """Tidy token counts: one row per (group, task, prompt key, phrasing) with columns
    ``group, structure, key, phrasing, tokens``. ``count_tokens(texts)`` gives the number of
    tokens of each text before truncation (start and end of text included); each distinct
    text is counted once."""
    rows = []
    for group, task in _iter_tasks(tasks_by_group):
        for key in PROMPT_KEYS:
            if key in task["prompts"]:
                for j, text in enumerate(_phrasings(task["prompts"][key])):
                    rows.append((group, task.get("structure"), key, j, text))
    table = pd.DataFrame(rows, columns=["group", "structure", "key", "phrasing", "text"])
    unique = sorted(set(table["text"]))
    lengths = dict(zip(unique, count_tokens(unique))) if unique else {}
    table["tokens"] = table["text"].map(lengths).astype("int64")
    return table


def truncation_summary(lengths: pd.DataFrame, limit: int = 77) -> pd.DataFrame:
    """Per group and prompt key: prompts, median and maximum tokens, and how many prompts
    exceed ``limit`` tokens (CLIP's context: 77) and would be truncated."""
    g = lengths.groupby(["group", "key"], sort=False)["tokens"]
    out = pd.DataFrame(
        {
            "prompts": g.size(),
            "median_tokens": g.median(),
            "max_tokens": g.max(),
            f"over_{limit}": g.apply(lambda s: int((s > limit).sum())),
        }
    )
    return out.reset_index()


def plot_token_lengths(lengths: pd.DataFrame, limit: int = 77):
    """Token count per prompt key (box per group) with CLIP's context limit as a line."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    keys = [k for k in PROMPT_KEYS if k in set(lengths["key"])]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    sns.boxplot(data=lengths, x="key", y="tokens", hue="group", order=keys, ax=ax,
                fliersize=2, linewidth=0.8)
    ax.axhline(limit, color="crimson", linestyle="--", linewidth=1)
    ax.text(len(keys) - 0.5, limit, f" context limit {limit}", color="crimson",
            va="bottom", ha="right", fontsize=8)
    ax.set_ylim(0, max(limit, int(lengths["tokens"].max())) * 1.1)
    ax.set_xlabel("prompt")
    ax.set_ylabel("CLIP tokens (with start/end)")
    ax.set_title("Prompt length against CLIP's context")
    fig.tight_layout()
    return fig


def shape_table(tasks_by_group: Mapping[str, Sequence[Mapping]]) -> pd.DataFrame:
    """Tidy shape words: ``group, split, structure, view, phase, shape`` per task."""
    rows = []
    for group, task in _iter_tasks(tasks_by_group):
        a = task.get("attributes") or {}
        split = str(task["img_name"]).split("/")[1] if "/" in str(task["img_name"]) else ""
        rows.append((group, split, task.get("structure"), a.get("view"), a.get("phase"),
                     a.get("shape")))
    return pd.DataFrame(rows, columns=["group", "split", "structure", "view", "phase", "shape"])


def shape_counts(shapes: pd.DataFrame) -> pd.DataFrame:
    """Counts of each shape word per group, structure and view (a wide table)."""
    extra = sorted(set(shapes["shape"].dropna()) - set(SHAPE_ORDER))
    counts = (
        shapes.groupby(["group", "structure", "view"])["shape"].value_counts().unstack(fill_value=0)
    )
    cols = [c for c in (*SHAPE_ORDER, *extra) if c in counts.columns]
    order = {s: i for i, s in enumerate(STRUCTURES)}
    counts = counts[cols].reset_index()
    counts = counts.sort_values(
        ["group", "structure", "view"], key=lambda s: s.map(order) if s.name == "structure" else s
    )
    return counts.set_index(["group", "structure", "view"])


def plot_shapes(shapes: pd.DataFrame):
    """Bar counts of the shape words per structure (columns) and group (rows), by view."""
    import seaborn as sns

    words = [s for s in SHAPE_ORDER if s in set(shapes["shape"])]
    words += sorted(set(shapes["shape"].dropna()) - set(SHAPE_ORDER))
    structures = [s for s in STRUCTURES if s in set(shapes["structure"])]
    grid = sns.catplot(
        data=shapes, x="shape", hue="view", col="structure", row="group", kind="count",
        order=words, hue_order=[v for v in VIEWS if v in set(shapes["view"])],
        col_order=structures, height=2.6, aspect=1.15, sharey=False,
    )
    grid.set_titles("{row_name} - {col_name}")
    grid.set_xticklabels(rotation=30)
    grid.figure.suptitle("Shape words per structure and view", y=1.02)
    return grid.figure
