"""Task files: one entry per (image, structure) with its attributes and prompts P0..P7.

``<dataset>/tasks/<split>.json`` is a list sorted by (``img_name``, ``structure``)::

    {"img_name": "images/train/patient0001_2CH_ED.png",
     "mask_name": "masks/lv/train/patient0001_2CH_ED.png",
     "structure": "lv",
     "attributes": {"stem": ..., "structure": ..., "view": ..., "phase": ..., "sex": ...,
                    "age": ..., "quality": ..., "shape": ...},
     "prompts": {"p0": "", "p1": [first phrasing, second phrasing], ..., "p7": [...]}}

Paths are relative to the dataset folder. ``img_name``, ``mask_name`` and ``prompts`` are the
keys of the study's own task files, so either kind of file feeds the training code.
Synthetic sets (no image quality) get the synthetic prompts: P6 carries the shape, no P7.

Examples::

    write_tasks("data/phantom", kind="camus")
    tasks = read_tasks("data/phantom", "train")
    text = pick_prompt(tasks[0], "p3", numpy.random.default_rng(0))
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from echo_vlsm.io import read_png, write_text_atomic
from echo_vlsm.prompts.shape import BACKENDS, shape_of
from echo_vlsm.prompts.templates import KINDS, PROMPT_KEYS, Attributes, make_prompts
from echo_vlsm.prompts.templates import phrasings_of as _phrasings
from echo_vlsm.structures import SPLITS, STRUCTURES

TASKS_DIR = "tasks"
REQUIRED_KEYS: tuple[str, ...] = ("img_name", "mask_name", "prompts")
ON_EMPTY: tuple[str, ...] = ("error", "skip")


class TaskFileError(ValueError):
    """A task file that cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def task_path(dataset_dir: str | os.PathLike, split: str) -> Path:
    """``<dataset>/tasks/<split>.json``."""
    return Path(dataset_dir) / TASKS_DIR / f"{split}.json"


# --------------------------------------------------------------------------- writing


def _text(value) -> str | None:
    """A records.csv text field: None where empty or missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    text = str(value).strip()
    return text or None


def detect_kind(records) -> str:
    """``synthetic`` when the records name source images (``source_stem``) or carry no image
    quality at all, else ``camus``."""
    if "source_stem" in records.columns and records["source_stem"].map(_text).notna().any():
        return "synthetic"
    if len(records) and records["quality"].map(_text).isna().all():
        return "synthetic"
    return "camus"


def build_tasks(
    dataset_dir: str | os.PathLike,
    kind: str = "auto",
    shape_backend: str = "geometry",
    *,
    vqa_model: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | bool | None = None,
    unmatched: str = "keep",
    on_empty: str = "error",
    device: str | None = None,
) -> dict[str, list[dict]]:
    """The task entries of every split of a dataset (``write_tasks`` without writing)."""
    from echo_vlsm.data.export import read_records

    root = Path(dataset_dir)
    records = read_records(root)
    csv = root / "records.csv"
    if kind == "auto":
        kind = detect_kind(records)
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {[*KINDS, 'auto']}")
    if shape_backend not in BACKENDS:
        raise ValueError(
            f"unknown shape_backend {shape_backend!r}; expected one of {list(BACKENDS)}"
        )
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty={on_empty!r}; expected one of {list(ON_EMPTY)}")
    if shape_backend == "vqa":
        from echo_vlsm.prompts.vqa import resolve_model

        resolve_model(vqa_model)  # fail early on a missing model
        if cache_dir is None:
            cache_dir = root / ".cache" / "vqa"
    present = [s for s in SPLITS if (records["split"] == s).any()]
    unknown = sorted(set(records["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"{csv}: unknown split(s) {unknown}; expected {list(SPLITS)}")
    if splits is not None:
        bad = [s for s in splits if s not in present]
        if bad:
            raise ValueError(f"{csv}: no records for split(s) {bad}; the dataset has {present}")
        present = [s for s in present if s in splits]

    out: dict[str, list[dict]] = {}
    skipped: list[str] = []
    total = sum(int((records["split"] == s).sum()) for s in present) * len(STRUCTURES)
    bar = tqdm(total=total, desc=f"tasks {root.name}", disable=None, unit="mask")
    try:
        for split in present:
            rows = records[records["split"] == split].sort_values("stem", kind="stable")
            entries = []
            for row in rows.itertuples(index=False):
                stem = str(row.stem)
                img_name = f"images/{split}/{stem}.png"
                image = None
                for structure in STRUCTURES:
                    bar.update(1)
                    mask_name = f"masks/{structure}/{split}/{stem}.png"
                    mask_path = root / mask_name
                    if not mask_path.is_file():
                        raise FileNotFoundError(
                            f"{mask_path}: mask missing for {stem} ({structure}) listed in "
                            f"{csv}; export the dataset again (notebook 01)"
                        )
                    mask = read_png(mask_path)
                    if not mask.any():
                        if on_empty == "skip":
                            skipped.append(mask_name)
                            continue
                        raise ValueError(
                            f"{mask_path}: empty mask (no {structure} in {stem}); its shape "
                            "word (P7) is undefined. Pass on_empty='skip' to leave such "
                            "masks out of the task files"
                        )
                    if shape_backend == "vqa":
                        if image is None:
                            image = read_png(root / img_name)
                        shape = shape_of(
                            mask, "vqa", model=vqa_model, structure=structure, image=image,
                            cache_dir=cache_dir, unmatched=unmatched, device=device,
                        )  # fmt: skip
                    else:
                        shape = shape_of(mask, structure=structure)
                    try:
                        attrs = Attributes(
                            structure=structure, view=str(row.view), phase=str(row.phase),
                            sex=_text(row.sex), age=None if _text(row.age) is None
                            else int(row.age), quality=_text(row.quality), shape=shape,
                        )  # fmt: skip
                        prompts = make_prompts(attrs, kind)
                    except ValueError as exc:
                        raise ValueError(f"{csv}: record {stem!r}: {exc}") from exc
                    attributes = {
                        "stem": stem, "structure": structure, "view": attrs.view,
                        "phase": attrs.phase, "sex": attrs.sex, "age": attrs.age,
                        "quality": attrs.quality if kind == "camus" else None,
                        "shape": attrs.shape,
                    }  # fmt: skip
                    entries.append({
                        "img_name": img_name, "mask_name": mask_name, "structure": structure,
                        "attributes": attributes, "prompts": prompts,
                    })  # fmt: skip
            entries.sort(key=lambda t: (t["img_name"], t["structure"]))
            out[split] = entries
    finally:
        bar.close()
    if skipped:
        warnings.warn(
            f"{root}: left {len(skipped)} empty mask(s) out of the task files, e.g. {skipped[:3]}",
            stacklevel=2,
        )
    return out


def dumps_tasks(tasks: list[dict]) -> str:
    """The canonical text of a task file (stable key order, two-space indent)."""
    return json.dumps(tasks, indent=2, ensure_ascii=False) + "\n"


def write_tasks(
    dataset_dir: str | os.PathLike,
    kind: str = "auto",
    shape_backend: str = "geometry",
    **kwargs,
) -> dict[str, Path]:
    """Write ``<dataset>/tasks/<split>.json`` for each split in ``records.csv``.

    Args:
        dataset_dir: an exported dataset (``records.csv``, ``images/``, ``masks/``).
        kind: ``camus`` (P0..P7), ``synthetic`` (P0..P6, shape in P6, no quality), or
            ``auto`` (synthetic when the records have ``source_stem`` or no quality).
        shape_backend: ``geometry`` (``shape_of``, deterministic) or ``vqa`` (the study's
            VQA question; give ``vqa_model=``; answers cached in ``<dataset>/.cache/vqa``).
        **kwargs: ``vqa_model``, ``splits``, ``cache_dir``, ``unmatched``, ``device``, and
            ``on_empty`` (``error`` | ``skip``: what to do with an empty mask).

    Files are written atomically and only when their content changes; the same inputs give
    byte-identical files. Returns ``{split: path}``.
    """
    if "backend" in kwargs:
        raise TypeError(
            "write_tasks takes shape_backend= ('geometry' or 'vqa'); backend= is the name of "
            "the same choice in shape_of"
        )
    tasks = build_tasks(dataset_dir, kind, shape_backend, **kwargs)
    paths = {}
    for split, entries in tasks.items():
        path = task_path(dataset_dir, split)
        text = dumps_tasks(entries)
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            write_text_atomic(path, text)
        paths[split] = path
    return paths


# --------------------------------------------------------------------------- reading


def _check_prompts(path: Path, i: int, prompts) -> None:
    if not isinstance(prompts, Mapping):
        raise TaskFileError(path, f"task {i}: 'prompts' must be an object of p0..p7, got "
                                  f"{type(prompts).__name__}")  # fmt: skip
    for key, value in prompts.items():
        if key not in PROMPT_KEYS:
            raise TaskFileError(path, f"task {i}: unknown prompt key {key!r}; expected "
                                      f"{list(PROMPT_KEYS)}")  # fmt: skip
        ok = isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        )
        if not ok:
            raise TaskFileError(path, f"task {i}: prompt {key!r} must be a string or a "
                                      f"non-empty list of strings, got {value!r}")  # fmt: skip


def read_tasks(dataset_dir: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Read ``<dataset>/tasks/<split>.json`` (or a task file given directly, without split).

    Checks that it is a JSON list of objects with ``img_name``, ``mask_name`` and ``prompts``
    (the study's keys; ``structure`` and ``attributes`` are optional) and that prompts are
    strings or lists of strings under the keys p0..p7. Errors name the file.
    """
    if split is None:
        path = Path(dataset_dir)
        if path.is_dir():
            raise TaskFileError(path, "a dataset folder: give split= (train, val or test)")
    else:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        path = task_path(dataset_dir, split)
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"{path}: no task file (task files there: {have}); write them with "
            "echo_vlsm.prompts.write_tasks or notebook 03"
        )
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise TaskFileError(path, f"not UTF-8 text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise TaskFileError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(tasks, list):
        raise TaskFileError(path, f"expected a JSON list of tasks, got {type(tasks).__name__}")
    for i, task in enumerate(tasks):
        if not isinstance(task, Mapping):
            raise TaskFileError(path, f"task {i} is a {type(task).__name__}, not an object")
        missing = [k for k in REQUIRED_KEYS if k not in task]
        if missing:
            raise TaskFileError(
                path, f"task {i} lacks {missing}; a task has img_name, mask_name, prompts "
                "(and structure, attributes)"
            )  # fmt: skip
        _check_prompts(path, i, task["prompts"])
    return tasks


# --------------------------------------------------------------------------- picking


def _choice(n: int, rng) -> int:
    if n == 1:
        return 0
    if rng is None:
        return 0
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(n))
    if isinstance(rng, random.Random):
        return rng.randrange(n)
    raise TypeError(
        f"rng must be a numpy.random.Generator, a random.Random or None, got {type(rng).__name__}"
    )


def pick_prompt(task: Mapping, key: str, rng=None) -> str:
    """The text prompt of a task for ``key`` (Synthetic Boost: one phrasing drawn at random).

    ``key``: ``p0``..``p7`` -> one of the prompt's phrasings, drawn with ``rng`` (a numpy
    Generator or a ``random.Random``; ``None`` gives the first phrasing); ``random`` -> any
    non-empty phrasing of any prompt of the task, uniformly; any other text containing a
    space -> that text itself (a fixed override prompt). An unknown key, or one the task
    lacks (``p7`` of a synthetic task), raises a ValueError listing the valid keys.
    """
    if not isinstance(task, Mapping) or not isinstance(task.get("prompts"), Mapping):
        raise ValueError(f"not a task (an object with a 'prompts' object): {task!r:.200}")
    if not isinstance(key, str):
        raise ValueError(f"prompt key must be a string, got {type(key).__name__}: {key!r}")
    prompts = task["prompts"]
    if key in prompts and key in PROMPT_KEYS:
        options = _phrasings(prompts[key])
        return options[_choice(len(options), rng)]
    if key == "random":
        options = [t for k in PROMPT_KEYS if k in prompts for t in _phrasings(prompts[k]) if t]
        if not options:
            raise ValueError(f"task {task.get('img_name')!r} has no non-empty prompt")
        return options[_choice(len(options), rng)]
    if " " in key.strip():
        return key
    valid = [k for k in PROMPT_KEYS if k in prompts]
    note = ""
    if key in PROMPT_KEYS:
        note = (" (synthetic tasks have no p7: their P6 carries the shape)"
                if key == "p7" else "")  # fmt: skip
        problem = f"task {task.get('img_name')!r} has no prompt {key!r}{note}"
    else:
        problem = f"unknown prompt key {key!r}"
    raise ValueError(
        f"{problem}; valid keys for this task: {[*valid, 'random']}, or a free text "
        "with spaces as a fixed prompt"
    )
