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
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from echo_vlsm.dataset import RECORDS_FILE, image_name, mask_name, read_records, task_path
from echo_vlsm.errors import PathError
from echo_vlsm.grid import NO_PROMPT, PROMPT_KEYS, RANDOM_PROMPT
from echo_vlsm.io import read_png, write_text_atomic
from echo_vlsm.prompts import vqa
from echo_vlsm.prompts.shape_backends import check_backend, shape_of
from echo_vlsm.prompts.templates import (
    KINDS,
    Attributes,
    make_prompts,
    phrasings_of,
    with_provenance,
)
from echo_vlsm.structures import SPLITS, STRUCTURE_NAMES, STRUCTURES

__all__ = [
    "ON_EMPTY", "REQUIRED_KEYS", "TaskFileError", "build_tasks", "detect_kind", "dumps_tasks",
    "pick_prompt", "prompt_candidates", "read_tasks", "task_path", "write_tasks",
]

REQUIRED_KEYS: tuple[str, ...] = ("img_name", "mask_name", "prompts")
ON_EMPTY: tuple[str, ...] = ("error", "skip")


class TaskFileError(PathError):
    """A task file that cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------- writing


def _text(value) -> str | None:
    """A records.csv text field: None where empty or missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
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


@dataclass
class _Build:
    """What building the task entries of one dataset carries from step to step."""

    root: Path
    kind: str
    shape_backend: str
    vqa_model: str | os.PathLike | None
    cache_dir: str | os.PathLike | bool | None
    unmatched: str
    device: str | None
    on_empty: str
    skipped: list[str] = field(default_factory=list)  # empty masks left out (on_empty="skip")

    @property
    def csv(self) -> Path:
        return self.root / RECORDS_FILE


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
    root = Path(dataset_dir)
    records = read_records(root)
    build = _Build(root, _task_kind(kind, records), check_backend(shape_backend, "shape_backend"),
                   vqa_model, cache_dir, unmatched, device, _check_on_empty(on_empty))
    if shape_backend == "vqa":
        vqa.resolve_model(vqa_model)  # fail early on a missing model
        if cache_dir is None:
            build.cache_dir = root / ".cache" / "vqa"
    present = _splits_to_build(records, splits, build.csv)
    total = sum(int((records["split"] == s).sum()) for s in present) * len(STRUCTURES)
    bar = tqdm(total=total, desc=f"tasks {root.name}", disable=None, unit="mask")
    try:
        out = {split: _split_tasks(build, records, split, bar) for split in present}
    finally:
        bar.close()
    if build.skipped:
        warnings.warn(
            f"{root}: left {len(build.skipped)} empty mask(s) out of the task files, "
            f"e.g. {build.skipped[:3]}",
            stacklevel=2,
        )
    return out


def _task_kind(kind: str, records: pd.DataFrame) -> str:
    """``kind``, or for ``auto`` the kind ``detect_kind`` reads from the records."""
    if kind == "auto":
        kind = detect_kind(records)
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {[*KINDS, 'auto']}")
    return kind


def _check_on_empty(on_empty: str) -> str:
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty={on_empty!r}; expected one of {list(ON_EMPTY)}")
    return on_empty


def _splits_to_build(records: pd.DataFrame, splits: Sequence[str] | None, csv: Path) -> list[str]:
    """The splits present in the records (in ``SPLITS`` order), or the asked ones of them."""
    present = [s for s in SPLITS if (records["split"] == s).any()]
    unknown = sorted(set(records["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"{csv}: unknown split(s) {unknown}; expected {list(SPLITS)}")
    if splits is not None:
        bad = [s for s in splits if s not in present]
        if bad:
            raise ValueError(f"{csv}: no records for split(s) {bad}; the dataset has {present}")
        present = [s for s in present if s in splits]
    return present


def _split_tasks(build: _Build, records: pd.DataFrame, split: str, bar) -> list[dict]:
    """The entries of one split, sorted by (``img_name``, ``structure``)."""
    rows = records[records["split"] == split].sort_values("stem", kind="stable")
    entries = []
    for row in rows.itertuples(index=False):
        entries.extend(_image_tasks(build, split, row, bar))
    entries.sort(key=lambda t: (t["img_name"], t["structure"]))
    return entries


def _image_tasks(build: _Build, split: str, row, bar) -> list[dict]:
    """The entries of one image: one per structure whose mask is not empty."""
    stem = str(row.stem)
    img_name = image_name(split, stem)
    image = None  # read only for the VQA backend, once per image
    entries = []
    for structure in STRUCTURES:
        bar.update(1)
        name = mask_name(structure, split, stem)
        mask = _read_mask(build, name, stem, structure)
        if mask is None:
            continue
        if build.shape_backend == "vqa":
            if image is None:
                image = read_png(build.root / img_name)
            shape = shape_of(
                mask, "vqa", model=build.vqa_model, structure=structure, image=image,
                cache_dir=build.cache_dir, unmatched=build.unmatched, device=build.device,
            )
        else:
            shape = shape_of(mask, structure=structure)
        entries.append(_task_entry(build, row, img_name, name, structure, shape))
    return entries


def _read_mask(build: _Build, name: str, stem: str, structure: str) -> np.ndarray | None:
    """A structure's mask; None for an empty one with ``on_empty="skip"``."""
    path = build.root / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: mask missing for {stem} ({structure}) listed in {build.csv}; export the "
            "dataset again (notebook 01)"
        )
    mask = read_png(path)
    if mask.any():
        return mask
    if build.on_empty == "skip":
        build.skipped.append(name)
        return None
    raise ValueError(
        f"{path}: empty mask (no {structure} in {stem}); its shape word (P7) is undefined. "
        "Pass on_empty='skip' to leave such masks out of the task files"
    )


def _task_entry(build: _Build, row, img_name: str, name: str, structure: str,
                shape: str) -> dict:
    """One task entry: the record's attributes and the prompts made from them."""
    stem = str(row.stem)
    try:
        attrs = Attributes(
            structure=structure, view=str(row.view), phase=str(row.phase), sex=_text(row.sex),
            age=None if _text(row.age) is None else int(row.age), quality=_text(row.quality),
            shape=shape,
        )
        prompts = make_prompts(attrs, build.kind)
    except ValueError as exc:
        raise ValueError(f"{build.csv}: record {stem!r}: {exc}") from exc
    attributes = {
        "stem": stem, "structure": structure, "view": attrs.view, "phase": attrs.phase,
        "sex": attrs.sex, "age": attrs.age,
        "quality": attrs.quality if build.kind == "camus" else None, "shape": attrs.shape,
    }
    return {"img_name": img_name, "mask_name": name, "structure": structure,
            "attributes": attributes, "prompts": prompts}


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
                                  f"{type(prompts).__name__}")
    for key, value in prompts.items():
        if key not in PROMPT_KEYS:
            raise TaskFileError(path, f"task {i}: unknown prompt key {key!r}; expected "
                                      f"{list(PROMPT_KEYS)}")
        ok = isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        )
        if not ok:
            raise TaskFileError(path, f"task {i}: prompt {key!r} must be a string or a "
                                      f"non-empty list of strings, got {value!r}")


def _check_names(path: Path, i: int, task: Mapping) -> None:
    """``img_name``/``mask_name``: relative paths that stay inside the dataset folder."""
    for key in ("img_name", "mask_name"):
        name = task[key]
        if not isinstance(name, str) or not name.strip():
            raise TaskFileError(path, f"task {i}: {key} must be a path inside the dataset "
                                      f"folder (e.g. 'images/train/<stem>.png'), got {name!r}")
        rel = PurePosixPath(name.replace("\\", "/"))
        if (rel.is_absolute() or PureWindowsPath(name).drive or ".." in rel.parts
                or name.startswith("~")):
            raise TaskFileError(path, f"task {i}: {key} {name!r} points outside the dataset "
                                      "folder; paths in a task file are relative to it, without "
                                      "'..' (e.g. 'images/train/<stem>.png')")


def read_tasks(dataset_dir: str | os.PathLike, split: str | None = None) -> list[dict]:
    """Read ``<dataset>/tasks/<split>.json`` (or a task file given directly, without split).

    Checks that it is a JSON list of objects with ``img_name``, ``mask_name`` and ``prompts``
    (the study's keys; ``structure`` and ``attributes`` are optional), that ``img_name`` and
    ``mask_name`` are paths inside the dataset folder (relative, no ``..``), and that prompts
    are strings or lists of strings under the keys p0..p7. Errors name the file and the task.
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
            )
        _check_names(path, i, task)
        _check_prompts(path, i, task["prompts"])
    return tasks


# --------------------------------------------------------------------------- picking


def prompt_candidates(task: Mapping, key: str, provenance: str | None = None) -> list[str]:
    """Every text a prompt ``key`` gives for ``task``: the one rule ``pick_prompt`` draws from
    and the training data (``echo_vlsm.train.triplets``) tokenizes up front.

    ``key``: ``p0``..``p7`` -> that prompt's phrasings (one for P0, the study's two for
    P1..); ``random`` -> every non-empty phrasing of every prompt of the task; ``none`` (a
    text-free model's) -> the structure's name alone, which such a model reads as a class;
    any other text containing a space -> that text itself (a fixed override prompt).
    ``provenance`` (``real`` | ``synthetic``, beyond the study) appends the phrase saying
    where the image comes from to each text (``templates.with_provenance``).

    Raises:
        ValueError: ``task`` is not a task; ``key`` is unknown or the task lacks it (``p7``
            of a synthetic task), the message listing the valid keys; a prompt is neither a
            string nor a list of strings; ``random`` on a task without a non-empty prompt.

    Examples::

        >>> task = {"img_name": "images/train/a.png", "prompts": {"p0": "", "p1": [
        ...     "Left atrium cavity of the heart.",
        ...     "Left atrium cavity in the cardiac ultrasound."]}}
        >>> prompt_candidates(task, "p1")[1]
        'Left atrium cavity in the cardiac ultrasound.'
        >>> prompt_candidates(task, "random") == prompt_candidates(task, "p1")  # P0 is empty
        True
        >>> prompt_candidates(task, "An echo of the heart.")
        ['An echo of the heart.']
        >>> prompt_candidates({**task, "structure": "la"}, "none")
        ['Left atrium cavity']
        >>> prompt_candidates(task, "p1", provenance="real")[0]
        'Left atrium cavity of the heart in a real echocardiogram.'
    """
    texts = _candidates(task, key)
    if provenance is None:
        return texts
    return [with_provenance(t, provenance) for t in texts]


def _candidates(task: Mapping, key: str) -> list[str]:
    if not isinstance(task, Mapping) or not isinstance(task.get("prompts"), Mapping):
        raise ValueError(f"not a task (an object with a 'prompts' object): {task!r:.200}")
    if not isinstance(key, str):
        raise ValueError(f"prompt key must be a string, got {type(key).__name__}: {key!r}")
    prompts = task["prompts"]
    if key in PROMPT_KEYS and key in prompts:
        return _phrasings(task, key)
    if key == NO_PROMPT:
        return [STRUCTURE_NAMES[_structure_of(task)]]
    if key == RANDOM_PROMPT:
        options = [t for k in PROMPT_KEYS if k in prompts for t in _phrasings(task, k) if t]
        if not options:
            raise ValueError(f"task {task.get('img_name')!r} has no non-empty prompt")
        return options
    if " " in key.strip():
        return [key]
    raise ValueError(_key_problem(task, key))


def _structure_of(task: Mapping) -> str:
    """The structure key of a task: its ``structure``, its attributes', or its mask's folder
    (``masks/<structure>/<split>/<stem>.png``)."""
    attrs = task.get("attributes")
    if not isinstance(attrs, Mapping):
        attrs = {}
    candidates = [task.get("structure"), attrs.get("structure")]
    parts = PurePosixPath(str(task.get("mask_name", "")).replace("\\", "/")).parts
    candidates += [p for p in parts if p in STRUCTURES]
    for value in candidates:
        if value in STRUCTURES:
            return str(value)
    raise ValueError(f"task {task.get('img_name')!r} names no structure ({list(STRUCTURES)}); "
                     f"prompt {NO_PROMPT!r} gives the structure's name")


def _phrasings(task: Mapping, key: str) -> list[str]:
    value = task["prompts"][key]
    ok = isinstance(value, str) or (
        isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value)
    )
    if not ok:
        raise ValueError(f"prompt {key!r} of task {task.get('img_name')!r} must be a string or "
                         f"a list of strings, got {value!r}")
    return phrasings_of(value)


def _key_problem(task: Mapping, key: str) -> str:
    """Why ``key`` gives no prompt for ``task``, with the keys that would."""
    have = [k for k in PROMPT_KEYS if k in task["prompts"]]
    fixed = "or a free text with spaces as a fixed prompt"
    if key not in PROMPT_KEYS:
        valid = [*PROMPT_KEYS, RANDOM_PROMPT, NO_PROMPT]
        return f"unknown prompt key {key!r}; expected one of {valid}, {fixed}"
    note = "; synthetic tasks have no p7: their P6 carries the shape" if key == "p7" else ""
    return (f"task {task.get('img_name')!r} has no prompt {key!r} (it has {have}{note}); valid "
            f"keys for this task: {[*have, RANDOM_PROMPT]}, {fixed}")


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


def pick_prompt(task: Mapping, key: str, rng=None, provenance: str | None = None) -> str:
    """The text prompt of a task for ``key`` (Synthetic Boost: one phrasing drawn at random).

    One of ``prompt_candidates(task, key, provenance)``, drawn uniformly with ``rng`` (a numpy
    Generator or a ``random.Random``; ``None`` gives the first one). Errors as
    ``prompt_candidates``.
    """
    options = prompt_candidates(task, key, provenance)
    return options[_choice(len(options), rng)]
