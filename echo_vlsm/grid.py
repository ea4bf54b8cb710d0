"""The study's vocabulary and the run contract, in one place (Synthetic Boost, Tables 1 and 2).

Every other module takes these names from here: the models, their sizes, the encoder
settings, the training strategies (in the study's order, which is also the order runs depend
on each other), the prompt keys each strategy can use, the tidy metric columns, the name of a
run and its folder's files, which run a synth-pt-real-ft run starts from, and when a run is
complete. This module imports nothing heavy (no torch, no pandas), so the runner and the
analysis load in a blink.

Examples::

    >>> run = Run("cris", "synth-pt-real-ft", "frozen", "p7")
    >>> run.id
    'cris_synth-pt-real-ft_frozen_p7'
    >>> pretrain_source(run).id
    'cris_synthetic_frozen_p6'
    >>> parse_run_id("clipseg_real_trained_p2") == Run("clipseg", "real", "trained", "p2")
    True
    >>> STRATEGY_PROMPTS["synthetic"][-1]
    'p6'
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: The two vision-language segmentation models of the study.
MODELS: tuple[str, ...] = ("clipseg", "cris")
#: ``paper``: the study's architecture; ``tiny``: the same architecture at small width.
SIZES: tuple[str, ...] = ("paper", "tiny")
#: CLIP image and text encoders trained with the decoder, or frozen (Table 2).
ENCODERS: tuple[str, ...] = ("trained", "frozen")
#: The study's strategies, in its table order, which is also dependency order: zero-shot
#: trains nothing; synth-pt-real-ft starts from a synthetic run.
STRATEGIES: tuple[str, ...] = ("zeroshot", "synthetic", "real", "synth-pt-real-ft")
#: The prompt kinds P0..P7.
PROMPT_KEYS: tuple[str, ...] = tuple(f"p{i}" for i in range(8))
#: Synthetic images carry no image-quality label, so a synthetic set stops at P6.
SYNTHETIC_PROMPT_KEYS: tuple[str, ...] = PROMPT_KEYS[:7]
#: A training prompt key outside the grid: a random one of P0..P7 per sample.
RANDOM_PROMPT = "random"
#: Which prompt keys the study ran with each strategy.
STRATEGY_PROMPTS: dict[str, tuple[str, ...]] = {
    "zeroshot": PROMPT_KEYS,
    "synthetic": SYNTHETIC_PROMPT_KEYS,
    "real": PROMPT_KEYS,
    "synth-pt-real-ft": PROMPT_KEYS,
}
#: Columns of a run's tidy ``metrics.csv``: one row per test sample and structure; dice and
#: iou in percent, hd95 in pixels at 512 x 512.
METRIC_COLUMNS: tuple[str, ...] = (
    "model", "strategy", "encoders", "prompt", "sample", "structure", "view", "phase",
    "dice", "iou", "hd95",
)
#: Columns of a run's ``history.csv``: one row per epoch.
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds", "images_per_s",
)

# The files of a run folder ``<runs_root>/<run_id>/``.
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"

_FIELDS = ("model", "strategy", "encoders", "prompt")


def run_id(model: str, strategy: str, encoders: str, prompt: str) -> str:
    """The name of a run: ``<model>_<strategy>_<encoders>_<prompt>``.

    Raises:
        ValueError: a part is empty or holds ``_`` or ``/`` (it could not be parsed back).

    Examples::

        >>> run_id("cris", "synth-pt-real-ft", "frozen", "p3")
        'cris_synth-pt-real-ft_frozen_p3'
    """
    for name, value in zip(_FIELDS, (model, strategy, encoders, prompt)):
        if not isinstance(value, str) or not value or "_" in value or "/" in value:
            raise ValueError(f"run_id: {name} must be a non-empty string without '_' or '/', "
                             f"got {value!r}")
    return f"{model}_{strategy}_{encoders}_{prompt}"


@dataclass(frozen=True, order=True)
class Run:
    """One cell of the study's grid: a model finetuned (or not, for zero-shot) with one
    strategy, encoder setting and prompt."""

    model: str
    strategy: str
    encoders: str
    prompt: str

    @property
    def id(self) -> str:
        """``<model>_<strategy>_<encoders>_<prompt>`` (``run_id``)."""
        return run_id(self.model, self.strategy, self.encoders, self.prompt)

    def as_dict(self) -> dict[str, str]:
        return {"model": self.model, "strategy": self.strategy, "encoders": self.encoders,
                "prompt": self.prompt}


def parse_run_id(text: str) -> Run:
    """``"cris_synth-pt-real-ft_frozen_p3"`` -> ``Run``; the inverse of ``run_id``.

    Raises:
        ValueError: ``text`` is not a run id of a known model, strategy and encoder setting.
    """
    parts = str(text).split("_")
    if (len(parts) != 4 or parts[0] not in MODELS or parts[1] not in STRATEGIES
            or parts[2] not in ENCODERS or not parts[3]):
        raise ValueError(
            f"{text!r} is not a run id <model>_<strategy>_<encoders>_<prompt> with model in "
            f"{list(MODELS)}, strategy in {list(STRATEGIES)}, encoders in {list(ENCODERS)}"
        )
    return Run(*parts)


def pretrain_prompt(prompt: str) -> str:
    """The synthetic prompt a synth-pt-real-ft run with ``prompt`` pretrains on: itself, but
    P6 for P7 (synthetic images have no quality label; their P6 already carries the shape)."""
    return "p6" if prompt == "p7" else prompt


def pretrain_source(run: Run) -> Run | None:
    """The synthetic run whose best weights a synth-pt-real-ft run starts from (same model and
    encoders, ``pretrain_prompt``); None for the other strategies."""
    if run.strategy != "synth-pt-real-ft":
        return None
    return Run(run.model, "synthetic", run.encoders, pretrain_prompt(run.prompt))


# -- complete means intact ------------------------------------------------------------------
#: The summary's key that records the files a complete folder vouches for.
FILES_KEY = "files"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_records(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, dict]:
    """``{name: {"size", "sha256", "mtime_ns"}}`` of the files ``names`` in ``folder``: what a
    summary records to vouch for them (``files_problem`` checks them later)."""
    folder = Path(folder)
    out = {}
    for name in names:
        st = (folder / name).stat()
        out[name] = {"size": st.st_size, "sha256": sha256_file(folder / name),
                     "mtime_ns": st.st_mtime_ns}
    return out


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a ``.safetensors`` file is cut short or damaged, from its own header (the header's
    length, the JSON header and the end of its last tensor), or None when its size fits.
    Reads the header only: cheap enough for ``status``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short for a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"size {size} bytes, its header alone needs {8 + n}"
            header = json.loads(f.read(n))
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    except ValueError:
        return "its header is not JSON: not a safetensors file"
    if not isinstance(header, dict):
        return "its header is not a JSON object: not a safetensors file"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    need = 8 + n + (max(ends) if ends else 0)
    if size != need:
        return f"size {size} bytes, its header needs {need}"
    return None


def files_problem(folder: str | os.PathLike, records: Mapping, deep: bool = False) -> str | None:
    """``"missing: <name>"`` or ``"damaged: <name> (...)"`` for the first file of ``records``
    (``file_records``) that is not as recorded, None when all are.

    Sizes are always compared; the SHA-256 when ``deep``, or when a file's modification time
    differs from the recorded one (a copy, a rewrite), so a check of an untouched folder
    reads no file.
    """
    folder = Path(folder)
    for name, rec in records.items():
        path = folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return f"missing: {name}"
        except OSError as exc:
            return f"damaged: {name} (unreadable: {exc.strerror or exc})"
        try:
            size, digest, mtime = int(rec["size"]), str(rec["sha256"]), rec.get("mtime_ns")
        except (KeyError, TypeError, ValueError):
            return f"damaged: {SUMMARY_FILE} (its record of {name} is not size and sha256)"
        if st.st_size != size:
            return f"damaged: {name} (size {st.st_size} bytes, expected {size})"
        if deep or mtime is None or st.st_mtime_ns != mtime:
            try:
                if sha256_file(path) != digest:
                    return f"damaged: {name} (sha256 differs from the one recorded in " \
                           f"{SUMMARY_FILE})"
            except OSError as exc:
                return f"damaged: {name} (unreadable: {exc.strerror or exc})"
    return None


def read_summary(folder: str | os.PathLike) -> tuple[dict | None, str | None]:
    """``(summary, None)`` from ``<folder>/summary.json``, or ``(None, problem)``."""
    path = Path(folder) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"missing: {SUMMARY_FILE}"
    except (OSError, ValueError) as exc:
        return None, f"damaged: {SUMMARY_FILE} (not readable JSON: {str(exc)[:80]})"
    if not isinstance(summary, dict):
        return None, f"damaged: {SUMMARY_FILE} (a JSON {type(summary).__name__}, not an object)"
    return summary, None


def read_done_summary(folder: str | os.PathLike) -> tuple[dict | None, str | None]:
    """``(summary, None)`` when ``<folder>/summary.json`` says ``done: true``, else
    ``(None, problem)`` (missing, damaged, or not done)."""
    summary, problem = read_summary(folder)
    if problem is not None:
        return None, problem
    if summary.get("done") is not True:
        return None, f"incomplete: {SUMMARY_FILE} has no done: true"
    return summary, None


def run_files(strategy: str | None) -> tuple[str, ...]:
    """The files a complete run folder vouches for: config, history, test metrics, and the
    best weights unless the run is zero-shot (which trains nothing)."""
    names = (CONFIG_FILE, HISTORY_FILE, METRICS_FILE)
    return names if strategy == "zeroshot" else (CONFIG_FILE, HISTORY_FILE, WEIGHTS_FILE,
                                                 METRICS_FILE)


def run_problem(run_dir: str | os.PathLike, deep: bool = False) -> str | None:
    """Why a run folder is not complete and intact, or None when it is.

    One of ``"missing: <file>"``, ``"incomplete: summary.json has no done: true"``,
    ``"damaged: <file> (...)"``. A complete run's ``summary.json`` records the size and
    SHA-256 of its files (``"files"``, see ``file_records``); each must match
    (``files_problem``; ``deep`` hashes every file). Summaries written before that record
    existed are checked as far as they can be: ``metrics.csv`` must exist and, for a run
    that trains, ``model.safetensors`` too, its size fitting its own header
    (``safetensors_problem``).

    Examples::

        >>> import tempfile
        >>> run_problem(tempfile.mkdtemp())
        'missing: summary.json'
    """
    run_dir = Path(run_dir)
    summary, problem = read_done_summary(run_dir)
    if problem is not None:
        return problem
    records = summary.get(FILES_KEY)
    if records is not None:
        if not isinstance(records, dict) or not records:
            return f"damaged: {SUMMARY_FILE} ('{FILES_KEY}' is not a record of files)"
        return files_problem(run_dir, records, deep=deep)
    # an older summary, without the record of its files
    if not (run_dir / METRICS_FILE).is_file():
        return f"missing: {METRICS_FILE}"
    try:
        trains = parse_run_id(run_dir.name).strategy != "zeroshot"
    except ValueError:
        trains = False
    weights = run_dir / WEIGHTS_FILE
    if trains and not weights.is_file():
        return f"missing: {WEIGHTS_FILE}"
    if weights.is_file() and (why := safetensors_problem(weights)) is not None:
        return f"damaged: {WEIGHTS_FILE} ({why})"
    return None


def run_complete(run_dir: str | os.PathLike) -> bool:
    """A run folder is complete when ``summary.json`` says ``"done": true`` and the files it
    vouches for are intact (``run_problem`` is None). A missing, unreadable or damaged
    summary, or a damaged or missing file, means not complete."""
    return run_problem(run_dir) is None


def check_choice(owner: str, name: str, value, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError("<owner>.<name>=<value>; expected one of <allowed>")`` unless
    ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{owner}.{name}={value!r}; expected one of {allowed}")
