"""The study's vocabulary and the run contract, in one place (Synthetic Boost, Tables 1 and 2).

Every other module takes these names from here: the models, their sizes, the encoder settings,
the training strategies (in the study's order, which is also the order runs depend on each
other), the prompt keys each strategy can use, the tidy metric columns, the name of a run and
its folder's files, which run a synth-pt-real-ft run starts from, and when a run is complete.
This module imports nothing heavy (no torch, no pandas), so the runner and the analysis load in
a blink.

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
from enum import Enum
from pathlib import Path
from typing import Any

#: The two vision-language segmentation models of the study.
VLSM_MODELS: tuple[str, ...] = ("clipseg", "cris")
#: Text-free supervised baselines trained by the same engine (beyond the study): a U-Net
#: predicting the three structures at once (softmax over background + 3).
BASELINE_MODELS: tuple[str, ...] = ("unet",)
#: Every model this project trains; ``all`` in a profile's grid means ``VLSM_MODELS``.
MODELS: tuple[str, ...] = VLSM_MODELS + BASELINE_MODELS
#: ``paper``: the study's architecture; ``tiny``: the same architecture at small width.
SIZES: tuple[str, ...] = ("paper", "tiny")
#: CLIP image and text encoders trained with the decoder, or frozen (Table 2).
ENCODERS: tuple[str, ...] = ("trained", "frozen")
#: The study's strategies, in its table order, which is also dependency order: zero-shot
#: trains nothing; synth-pt-real-ft starts from a synthetic run.
STUDY_STRATEGIES: tuple[str, ...] = ("zeroshot", "synthetic", "real", "synth-pt-real-ft")
#: The study's strategies and ``mixed`` (beyond the study, its proposed direction): one
#: training set of real and synthetic images together. ``all`` in a grid means the study's.
STRATEGIES: tuple[str, ...] = STUDY_STRATEGIES + ("mixed",)
#: Strategies whose training set holds real images: the ones ``real_fraction`` subsets.
REAL_DATA_STRATEGIES: tuple[str, ...] = ("real", "synth-pt-real-ft", "mixed")
#: The prompt kinds P0..P7.
PROMPT_KEYS: tuple[str, ...] = tuple(f"p{i}" for i in range(8))
#: Synthetic images carry no image-quality label, so a synthetic set stops at P6.
SYNTHETIC_PROMPT_KEYS: tuple[str, ...] = PROMPT_KEYS[:7]
#: A training prompt key outside the grid: a random one of P0..P7 per sample.
RANDOM_PROMPT = "random"
#: The prompt of a text-free model (``BASELINE_MODELS``).
NO_PROMPT = "none"
#: Which prompt keys the study ran with each strategy (``mixed``: P0-P6, the keys both real
#: and synthetic images have).
STRATEGY_PROMPTS: dict[str, tuple[str, ...]] = {
    "zeroshot": PROMPT_KEYS,
    "synthetic": SYNTHETIC_PROMPT_KEYS,
    "real": PROMPT_KEYS,
    "synth-pt-real-ft": PROMPT_KEYS,
    "mixed": SYNTHETIC_PROMPT_KEYS,
}
#: The strategies a baseline trains with (zero-shot needs a pretrained text-prompted model).
BASELINE_STRATEGIES: tuple[str, ...] = ("synthetic", "real", "synth-pt-real-ft", "mixed")
#: The fields that name a run (``Run.as_record``), first in each of its tables.
RUN_COLUMNS: tuple[str, ...] = ("model", "strategy", "encoders", "prompt", "seed",
                                "real_fraction", "provenance")
#: ``metrics.csv``: a row per test sample and structure; dice, iou in %, hd95 in px at 512.
METRIC_COLUMNS: tuple[str, ...] = (
    *RUN_COLUMNS, "sample", "structure", "view", "phase", "dice", "iou", "hd95")
#: ``clinical.csv`` (``train.clinical_eval``): per test patient, LV volumes (mL) and EF (%).
CLINICAL_COLUMNS: tuple[str, ...] = (
    *RUN_COLUMNS, "patient", "split", "ref_edv_ml", "ref_esv_ml", "ref_ef_percent",
    "gt_edv_ml", "gt_esv_ml", "gt_ef_percent", "gt_reason",
    "pred_edv_ml", "pred_esv_ml", "pred_ef_percent", "pred_reason")
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
CLINICAL_FILE = "clinical.csv"  # a product of evaluation: not among the files vouched for
CROSS_METRICS_FILE = "metrics_{dataset}.csv"  # metrics.csv on another dataset's test split
CROSS_CLINICAL_FILE = "clinical_{dataset}.csv"  # clinical.csv there (train.cross_eval)
SUMMARY_FILE = "summary.json"
#: A run trained on part of the real data records which patients (``real_fraction`` < 1).
SUBSET_FILE = "real_subset.json"

_FIELDS = RUN_COLUMNS[:4]  # the study's four


def run_id(model: str, strategy: str, encoders: str, prompt: str, seed: int = 0,
           real_fraction: float = 1.0, provenance: bool = False) -> str:
    """The name of a run: ``<model>_<strategy>_<encoders>_<prompt>``, then ``_seed<N>`` when
    the seed is not 0, ``_real<percent>`` when it trains on part of the real data and
    ``_prov`` when its prompts say real or synthetic. The study's runs (seed 0, all the real
    data, no provenance) keep their four-part names.

    Raises:
        ValueError: a part is empty or holds ``_`` or ``/`` (it could not be parsed back).

    Examples::

        >>> run_id("cris", "synth-pt-real-ft", "frozen", "p3")
        'cris_synth-pt-real-ft_frozen_p3'
        >>> run_id("clipseg", "mixed", "trained", "p1", seed=2, real_fraction=0.05,
        ...        provenance=True)
        'clipseg_mixed_trained_p1_seed2_real5_prov'
    """
    for name, value in zip(_FIELDS, (model, strategy, encoders, prompt)):
        if not isinstance(value, str) or not value or "_" in value or "/" in value:
            raise ValueError(f"run_id: {name} must be a non-empty string without '_' or '/', "
                             f"got {value!r}")
    parts = [model, strategy, encoders, prompt]
    if seed:
        parts.append(f"seed{int(seed)}")
    if real_fraction != 1.0:
        parts.append(f"real{fraction_percent(real_fraction)}")
    if provenance:
        parts.append("prov")
    return "_".join(parts)


def fraction_percent(fraction: float) -> str:
    """``0.05`` -> ``"5"``, ``0.125`` -> ``"12.5"``: a fraction as the percent a run id shows.

    >>> fraction_percent(0.1), fraction_percent(0.125)
    ('10', '12.5')
    """
    return f"{round(float(fraction) * 100, 6):g}"


@dataclass(frozen=True, order=True)
class Run:
    """One cell of the grid: a model finetuned (or not, for zero-shot) with one strategy,
    encoder setting and prompt; beyond the study, a training ``seed`` (a replicate), the
    ``real_fraction`` of the real training patients it sees, and ``provenance`` (its prompts
    say whether an image is real or synthetic; ``mixed`` only).

    Raises:
        ValueError: an unknown model, strategy, encoder setting or prompt, or a combination
            the grid has no cell for (e.g. a real fraction for a synthetic run).
    """

    model: str
    strategy: str
    encoders: str
    prompt: str
    seed: int = 0
    real_fraction: float = 1.0
    provenance: bool = False

    def __post_init__(self):
        problem = run_problem_of(self)
        if problem:
            raise ValueError(f"run {self.model}/{self.strategy}/{self.encoders}/{self.prompt}"
                             f" (seed {self.seed!r}, real_fraction {self.real_fraction!r}, "
                             f"provenance {self.provenance!r}): {problem}")
        object.__setattr__(self, "real_fraction", float(self.real_fraction))

    @property
    def id(self) -> str:
        """``<model>_<strategy>_<encoders>_<prompt>[_seed<N>][_real<pct>][_prov]``."""
        return run_id(self.model, self.strategy, self.encoders, self.prompt, self.seed,
                      self.real_fraction, self.provenance)

    @property
    def is_study(self) -> bool:
        """A cell of the study's own grid (its models, strategies, seed 0, all real data)."""
        return (self.model in VLSM_MODELS and self.strategy in STUDY_STRATEGIES
                and self.seed == 0 and self.real_fraction == 1.0 and not self.provenance)

    @property
    def cell(self) -> tuple[str, str, str, str]:
        """``(model, strategy, encoders, prompt)``: what seeds replicate."""
        return (self.model, self.strategy, self.encoders, self.prompt)

    def as_dict(self) -> dict:
        """The run's fields as notebook 04's parameters: the four study fields always,
        ``seed``, ``real_fraction`` and ``provenance`` only when they differ from the
        defaults (so the parameters, and the fingerprints, of the study's runs are those
        they always were)."""
        out: dict[str, Any] = {c: getattr(self, c) for c in _FIELDS}
        if self.seed:
            out["seed"] = self.seed
        if self.real_fraction != 1.0:
            out["real_fraction"] = self.real_fraction
        if self.provenance:
            out["provenance"] = True
        return out

    def as_record(self) -> dict:
        """All seven fields (a row of a table of runs)."""
        return {c: getattr(self, c) for c in RUN_COLUMNS}


def run_problem_of(run: Run) -> str | None:
    """Why ``run``'s fields name no cell of the grid, or None."""
    if run.model not in MODELS:
        return f"unknown model; expected one of {MODELS}"
    if run.strategy not in STRATEGIES:
        return f"unknown strategy; expected one of {STRATEGIES}"
    if run.encoders not in ENCODERS:
        return f"unknown encoders; expected one of {ENCODERS}"
    if run.model in BASELINE_MODELS:
        if run.prompt != NO_PROMPT:
            return f"a text-free model takes prompt {NO_PROMPT!r}"
        if run.encoders != "trained":
            return "a text-free model has no CLIP encoders to freeze (encoders 'trained')"
        if run.strategy not in BASELINE_STRATEGIES:
            return f"a text-free model trains with one of {BASELINE_STRATEGIES}"
    elif run.prompt not in PROMPT_KEYS and run.prompt != RANDOM_PROMPT:
        return f"unknown prompt; expected one of {PROMPT_KEYS} or {RANDOM_PROMPT!r}"
    if isinstance(run.seed, bool) or not isinstance(run.seed, int) or run.seed < 0:
        return "seed must be an integer >= 0"
    if isinstance(run.real_fraction, bool) or not isinstance(run.real_fraction, (int, float)):
        return "real_fraction must be a number in (0, 1]"
    if not 0 < float(run.real_fraction) <= 1:
        return "real_fraction must be in (0, 1]"
    if float(run.real_fraction) != 1.0 and run.strategy not in REAL_DATA_STRATEGIES:
        return f"real_fraction < 1 needs a strategy with real training data {REAL_DATA_STRATEGIES}"
    if not isinstance(run.provenance, bool):
        return "provenance must be true or false"
    if run.provenance and (run.strategy != "mixed" or run.model in BASELINE_MODELS):
        return "provenance is a prompt option of a text-prompted model's mixed strategy"
    if run.strategy == "zeroshot" and run.seed:
        return "zero-shot trains nothing: it has seed 0 only"
    return None


def parse_run_id(text: str) -> Run:
    """``"cris_synth-pt-real-ft_frozen_p3"`` -> ``Run``; the inverse of ``run_id``.

    Raises:
        ValueError: ``text`` is not a run id of a known model, strategy and encoder setting.

    >>> parse_run_id("unet_real_trained_none_seed1_real25")  # doctest: +NORMALIZE_WHITESPACE
    Run(model='unet', strategy='real', encoders='trained', prompt='none', seed=1,
        real_fraction=0.25, provenance=False)
    """
    parts = str(text).split("_")
    bad = ValueError(
        f"{text!r} is not a run id <model>_<strategy>_<encoders>_<prompt>[_seed<N>]"
        f"[_real<percent>][_prov] with model in {list(MODELS)}, strategy in "
        f"{list(STRATEGIES)}, encoders in {list(ENCODERS)}"
    )
    if (len(parts) < 4 or parts[0] not in MODELS or parts[1] not in STRATEGIES
            or parts[2] not in ENCODERS or not parts[3]):
        raise bad
    extra: dict = {}
    for part in parts[4:]:  # order and repeats: the canonical-name check below
        if part.startswith("seed") and part[4:].isdigit():
            extra["seed"] = int(part[4:])
        elif part.startswith("real"):
            try:
                extra["real_fraction"] = float(part[4:]) / 100
            except ValueError:
                raise bad from None
        elif part == "prov":
            extra["provenance"] = True
        else:
            raise bad
    try:
        run = Run(parts[0], parts[1], parts[2], parts[3], **extra)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if run.id != text:  # "seed0", "real100", "prov_seed1", "seed1_seed2": not canonical
        raise ValueError(f"{text!r} is not written as a run id; its run is named {run.id!r}")
    return run


def pretrain_prompt(prompt: str) -> str:
    """The synthetic prompt a synth-pt-real-ft run with ``prompt`` pretrains on: itself, but
    P6 for P7 (synthetic images have no quality label; their P6 already carries the shape)."""
    return "p6" if prompt == "p7" else prompt


def pretrain_source(run: Run) -> Run | None:
    """The synthetic run whose best weights a synth-pt-real-ft run starts from (same model,
    encoders and seed, ``pretrain_prompt``, all the synthetic data); None for the other
    strategies. Every real fraction of a seed shares it."""
    if run.strategy != "synth-pt-real-ft":
        return None
    return Run(run.model, "synthetic", run.encoders, pretrain_prompt(run.prompt), seed=run.seed)


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
    stats = {name: (Path(folder) / name).stat() for name in names}
    return {name: {"size": st.st_size, "sha256": sha256_file(Path(folder) / name),
                   "mtime_ns": st.st_mtime_ns} for name, st in stats.items()}


class ProblemKind(Enum):
    """What is wrong with a file of a run folder (``Problem``): not there; ``summary.json``
    without ``done: true``; there but not as recorded (size, SHA-256, header, unreadable,
    not JSON); written by a run with other settings."""

    MISSING = "missing"
    INCOMPLETE = "incomplete"
    DAMAGED = "damaged"
    FOREIGN_SETTINGS = "foreign settings"


@dataclass(frozen=True)
class Problem:
    """Why a file of a run folder is not as a complete run leaves it: its ``kind``, the
    ``file`` (its name in the folder), a ``detail`` and, for a damaged record in
    ``summary.json``, the file the record is ``about``. ``str()`` is the message a reader
    sees; code branches on ``kind``, ``file`` and ``about``, never on the text.

    >>> str(Problem(ProblemKind.DAMAGED, "history.csv", "size 3 bytes, expected 9"))
    'damaged: history.csv (size 3 bytes, expected 9)'
    """

    kind: ProblemKind
    file: str
    detail: str = ""
    about: str | None = None

    def __str__(self) -> str:
        if self.kind is ProblemKind.INCOMPLETE:
            return f"incomplete: {self.file} {self.detail}"
        text = f"{self.kind.value}: {self.file}"
        return f"{text} ({self.detail})" if self.detail else text

    def concerns(self, name: str) -> bool:
        """Whether the problem is with file ``name`` or with its record in the summary."""
        return name in (self.file, self.about)


def _damaged(name: str, detail: str, about: str | None = None) -> Problem:
    return Problem(ProblemKind.DAMAGED, name, detail, about)


def safetensors_problem(path: str | os.PathLike) -> Problem | None:
    """Why a ``.safetensors`` file is cut short or damaged, from its own header (the header's
    length, the JSON header and the end of its last tensor), or None when its size fits.
    Reads the header only: cheap enough for ``status``. The problem's ``detail`` is the
    reason alone, e.g. ``"size 90 bytes, its header needs 264"``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return _damaged(path.name, f"{size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return _damaged(path.name, f"size {size} bytes, its header alone needs {8 + n}")
            header = json.loads(f.read(n))
    except OSError as exc:
        return _damaged(path.name, f"unreadable ({exc.strerror or exc})")
    except ValueError:
        return _damaged(path.name, "its header is not JSON: not a safetensors file")
    if not isinstance(header, dict):
        return _damaged(path.name, "its header is not a JSON object: not a safetensors file")
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    need = 8 + n + (max(ends) if ends else 0)
    if size != need:
        return _damaged(path.name, f"size {size} bytes, its header needs {need}")
    return None


def files_problem(folder: str | os.PathLike, records: Mapping,
                  deep: bool = False) -> Problem | None:
    """The problem of the first file of ``records`` (``file_records``) that is not as
    recorded (``missing: <name>``, ``damaged: <name> (...)``), None when all are.

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
            return Problem(ProblemKind.MISSING, name)
        except OSError as exc:
            return _damaged(name, f"unreadable: {exc.strerror or exc}")
        try:
            size, digest, mtime = int(rec["size"]), str(rec["sha256"]), rec.get("mtime_ns")
        except (KeyError, TypeError, ValueError):
            return _damaged(SUMMARY_FILE, f"its record of {name} is not size and sha256",
                            about=name)
        if st.st_size != size:
            return _damaged(name, f"size {st.st_size} bytes, expected {size}")
        if deep or mtime is None or st.st_mtime_ns != mtime:
            try:
                if sha256_file(path) != digest:
                    return _damaged(name, f"sha256 differs from the one recorded in "
                                          f"{SUMMARY_FILE}")
            except OSError as exc:
                return _damaged(name, f"unreadable: {exc.strerror or exc}")
    return None


def read_summary(folder: str | os.PathLike) -> tuple[dict | None, Problem | None]:
    """``(summary, None)`` from ``<folder>/summary.json``, or ``(None, problem)``."""
    path = Path(folder) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, Problem(ProblemKind.MISSING, SUMMARY_FILE)
    except (OSError, ValueError) as exc:
        return None, _damaged(SUMMARY_FILE, f"not readable JSON: {str(exc)[:80]}")
    if not isinstance(summary, dict):
        return None, _damaged(SUMMARY_FILE, f"a JSON {type(summary).__name__}, not an object")
    return summary, None


def read_done_summary(folder: str | os.PathLike) -> tuple[dict | None, Problem | None]:
    """``(summary, None)`` when ``<folder>/summary.json`` says ``done: true``, else
    ``(None, problem)``."""
    summary, problem = read_summary(folder)
    if problem is not None:
        return None, problem
    assert summary is not None  # read_summary gives a summary or a problem
    if summary.get("done") is not True:
        return None, Problem(ProblemKind.INCOMPLETE, SUMMARY_FILE, "has no done: true")
    return summary, None


def run_files(strategy: str | None, subset: bool = False) -> tuple[str, ...]:
    """The files a complete run folder vouches for: config, history, test metrics, the best
    weights unless the run is zero-shot (which trains nothing), and the record of its real
    patients when it trained on part of them (``subset``)."""
    names: tuple[str, ...] = (CONFIG_FILE, HISTORY_FILE, METRICS_FILE)
    if strategy != "zeroshot":
        names = (CONFIG_FILE, HISTORY_FILE, WEIGHTS_FILE, METRICS_FILE)
    return names + ((SUBSET_FILE,) if subset else ())


def run_problem(run_dir: str | os.PathLike, deep: bool = False) -> Problem | None:
    """Why a run folder is not complete and intact, or None when it is.

    A ``Problem``: ``missing: <file>``, ``incomplete: summary.json has no done: true`` or
    ``damaged: <file> (...)``. A complete run's ``summary.json`` records the size and
    SHA-256 of its files (``"files"``, ``file_records``); each must match (``files_problem``;
    ``deep`` hashes every file).

    Examples::

        >>> import tempfile
        >>> str(run_problem(tempfile.mkdtemp()))
        'missing: summary.json'
    """
    run_dir = Path(run_dir)
    summary, problem = read_done_summary(run_dir)
    if problem is not None:
        return problem
    assert summary is not None  # read_done_summary gives a summary or a problem
    records = summary.get(FILES_KEY)
    if not isinstance(records, dict) or not records:
        return _damaged(SUMMARY_FILE, f"'{FILES_KEY}' is not a record of files")
    return files_problem(run_dir, records, deep=deep)


def run_complete(run_dir: str | os.PathLike) -> bool:
    """A run folder is complete when ``summary.json`` says ``"done": true`` and the files it
    vouches for are intact: ``run_problem`` is None."""
    return run_problem(run_dir) is None


def check_choice(owner: str, name: str, value, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError("<owner>.<name>=<value>; expected one of <allowed>")`` unless
    ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{owner}.{name}={value!r}; expected one of {allowed}")
