"""The life of a run folder ``<runs_root>/<run_id>/``: complete, damaged, interrupted, or made
with other settings, and what ``fit`` starts from.

- A complete folder (``grid.run_problem`` is None) is returned as it is (``load_run``), when
  it was made with the same settings (``check_settings``).
- A folder marked done whose files do not match its summary (a truncated
  ``model.safetensors``, a damaged ``metrics.csv``) is redone (``forget_damaged``): damaged
  weights retrain, any other damage re-scores the saved model.
- An interrupted run continues from its ``state.pt`` (``saved_state``) with the same settings.
- A ``synth-pt-real-ft`` run starts from the synthetic run's best weights
  (``pretraining_weights``) and, under ``as-run``, its best-epoch state ``best_state.pt``
  (``pretraining_state``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from echo_vlsm.grid import (
    CONFIG_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    METRICS_FILE,
    SUBSET_FILE,
    SUMMARY_FILE,
    Problem,
    ProblemKind,
    run_complete,
    run_problem,
    safetensors_problem,
)
from echo_vlsm.paths import resolve
from echo_vlsm.train import distributed as D
from echo_vlsm.train.checkpoint import STATE_FILE, WEIGHTS_FILE, load_state
from echo_vlsm.train.clinical_eval import CLINICAL_FILE
from echo_vlsm.train.config import TrainConfig, result_fields

__all__ = ["BEST_STATE_FILE", "MissingRunError", "RunResult", "check_settings", "complete_run",
           "forget_damaged", "history_frame", "load_run", "pretraining_state",
           "pretraining_weights", "saved_state", "settings_problem"]

#: The state at the best epoch, which ``synth-pt-real-ft`` continues under ``as-run``.
BEST_STATE_FILE = "best_state.pt"
#: What a run writes: removed to start afresh (``overwrite``) or to train a damaged run again
#: (``clinical.csv`` too: it measures the weights that go).
RESULT_FILES = (SUMMARY_FILE, METRICS_FILE, STATE_FILE, WEIGHTS_FILE, HISTORY_FILE,
                CLINICAL_FILE)


class MissingRunError(FileNotFoundError):
    """A run this run depends on (the synthetic pretraining of synth-pt-real-ft) is missing."""


@dataclass
class RunResult:
    """A finished run: its folder, config, summary, history and per-sample test metrics."""

    run_dir: Path
    config: TrainConfig
    summary: dict
    history: pd.DataFrame
    metrics: pd.DataFrame


def history_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows of ``history.csv`` (``HISTORY_COLUMNS``) as a frame."""
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def load_run(run_dir: str | Path) -> RunResult:
    """Read a run directory written by ``fit``."""
    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name}: missing; is the run complete?")
    config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    hist_path = run_dir / HISTORY_FILE
    history = pd.read_csv(hist_path) if hist_path.is_file() else history_frame([])
    metrics = pd.read_csv(run_dir / METRICS_FILE, dtype={"sample": str, "prompt": str})
    return RunResult(run_dir, config, summary, history, metrics)


# -- settings -------------------------------------------------------------------------------
def settings_problem(config: TrainConfig, saved: dict, path: Path) -> Problem | None:
    """A ``foreign settings`` problem when ``saved`` (the ``result_fields`` a run folder's
    ``config.json`` or ``state.pt`` holds) differs from ``config``'s, naming each field that
    differs (a field the saved settings lack differs too); None when they are the same."""
    now = result_fields(config)
    missing = object()
    diff = sorted(k for k in now if saved.get(k, missing) != now[k])
    if not diff:
        return None
    shown = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" if k in saved
                      else f"{k}: (not recorded) -> {now[k]!r}" for k in diff)
    return Problem(ProblemKind.FOREIGN_SETTINGS, path.name, shown)


def check_settings(config: TrainConfig, saved: dict, path: Path) -> None:
    """A run folder continues (or is returned) only for the settings it was made with.

    Raises:
        ValueError: naming ``path`` and each field that differs (``settings_problem``).
    """
    problem = settings_problem(config, saved, path)
    if problem is not None:
        raise ValueError(
            f"{path}: written by a run with different settings ({problem.detail}); "
            "use another runs_root, fit(..., overwrite=True), or delete the run folder")


# -- a folder that is there -----------------------------------------------------------------
def complete_run(config: TrainConfig, dist: D.Dist, overwrite: bool) -> RunResult | None:
    """The run folder when it is complete (and made with these settings); with ``overwrite``
    its results are removed first, so nothing is reused."""
    run_dir = config.run_dir
    if overwrite and dist.main and run_dir.is_dir():
        for name in (*RESULT_FILES, SUBSET_FILE):
            (run_dir / name).unlink(missing_ok=True)
    if dist.main and run_dir.is_dir():
        forget_damaged(run_dir)
    D.barrier(dist)
    if not run_complete(run_dir):
        return None
    done = load_run(run_dir)
    check_settings(config, result_fields(done.config), run_dir / CONFIG_FILE)
    return done


def _weights_bad(run_dir: Path, problem: Problem) -> bool:
    """Whether a damaged run must train again: its best weights (which ``state.pt`` does not
    hold) or their record are damaged or missing, or there is no ``state.pt`` to score from
    (deleted on completion unless ``keep_state``; training again ends with the same
    weights)."""
    weights = run_dir / WEIGHTS_FILE
    if problem.concerns(WEIGHTS_FILE):
        return True
    if problem.kind is ProblemKind.DAMAGED and problem.file == SUMMARY_FILE \
            and weights.is_file() and safetensors_problem(weights) is not None:
        return True
    return not (run_dir / STATE_FILE).is_file()


def forget_damaged(run_dir: Path) -> Problem | None:
    """A run folder marked done whose files do not match its summary is redone: damaged or
    missing weights retrain from the start, which ends with the same weights; any other
    damage re-scores the saved model. Returns the problem found (None for a folder that is
    intact or not done)."""
    problem = run_problem(run_dir, deep=True)
    if problem is None or not (run_dir / SUMMARY_FILE).is_file() \
            or problem.kind is ProblemKind.INCOMPLETE:
        return None
    weights_bad = _weights_bad(run_dir, problem)
    redo = RESULT_FILES if weights_bad else (SUMMARY_FILE, METRICS_FILE)
    print(f"{run_dir}: {problem}; {'training again' if weights_bad else 'scoring again'} "
          f"(removed {', '.join(n for n in redo if (run_dir / n).exists())})", flush=True)
    for name in redo:
        (run_dir / name).unlink(missing_ok=True)
    return problem


def saved_state(config: TrainConfig) -> dict | None:
    """``state.pt`` of an interrupted run with these settings, or None."""
    path = config.run_dir / STATE_FILE
    state = load_state(path) if path.is_file() else None
    if state is not None:
        check_settings(config, state.get("config") or {}, path)
    return state


# -- what synth-pt-real-ft starts from ------------------------------------------------------
def pretraining_weights(config: TrainConfig) -> Path:
    """The weights a ``synth-pt-real-ft`` run starts from: ``init_from``, else the best
    weights of its synthetic run (``TrainConfig.pretraining_run``).

    Raises:
        MissingRunError: ``init_from`` does not exist, or the synthetic run is not complete
            and intact (naming its problem).
    """
    if config.init_from is not None:
        path = resolve(config.init_from)
        if not path.is_file():
            raise MissingRunError(f"{path}: init_from weights do not exist")
        return path
    source = config.pretraining_run()
    if source is None:
        raise ValueError(f"strategy {config.strategy!r} starts from no synthetic run")
    weights = source / WEIGHTS_FILE
    problem = run_problem(source, deep=True)
    if problem is None and not weights.is_file():
        problem = Problem(ProblemKind.MISSING, WEIGHTS_FILE)
    if problem is not None:
        prompt = source.name.rsplit("_", 1)[-1]
        raise MissingRunError(
            f"{source}: strategy 'synth-pt-real-ft' starts from the synthetic run "
            f"{source.name!r}, which is not complete and intact ({problem}); run it (again: "
            f"fit redoes what is damaged) with strategy='synthetic', prompt={prompt!r}, or "
            "pass init_from=<weights.safetensors>")
    return weights


def pretraining_state(config: TrainConfig, weights: Path) -> dict | None:
    """The synthetic run's state at its best epoch, when the recipe continues it (``as-run``,
    as the study's ``ckpt_path=best.ckpt``); None when it starts afresh or from ``init_from``.

    Raises:
        MissingRunError: the synthetic run kept no ``best_state.pt``.
    """
    if config.init_from is not None or not config.setting("resume_pretraining"):
        return None
    path = weights.parent / BEST_STATE_FILE
    if not path.is_file():
        raise MissingRunError(
            f"{path}: missing; resume_pretraining continues the synthetic run's optimiser, "
            "schedule, epoch counter and early stopping from its best epoch, which only a "
            "synthetic run with resume_pretraining (recipe 'as-run') keeps; train that run "
            "again with it (another runs_root), or set resume_pretraining=False")
    return load_state(path)
