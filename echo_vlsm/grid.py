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

import json
import os
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


def run_complete(run_dir: str | os.PathLike) -> bool:
    """A run folder is complete when ``summary.json`` says ``"done": true`` and
    ``metrics.csv`` exists. A missing, unreadable or damaged summary means not complete."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(summary, dict) and bool(summary.get("done"))
            and (run_dir / METRICS_FILE).is_file())


def check_choice(owner: str, name: str, value, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError("<owner>.<name>=<value>; expected one of <allowed>")`` unless
    ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{owner}.{name}={value!r}; expected one of {allowed}")
