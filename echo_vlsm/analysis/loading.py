"""Reading what the runs left: tidy ``metrics.csv`` files, summaries, histories, and the
study's published Tables 1 and 2 (``paper/paper_results.csv``)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.errors import PathError
from echo_vlsm.grid import (
    ENCODERS,
    HISTORY_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    MODELS,
    RUN_COLUMNS,
    STRATEGIES,
    STUDY_STRATEGIES,
    SUMMARY_FILE,
    VLSM_MODELS,
    parse_run_id,
)
from echo_vlsm.structures import STRUCTURES

# paper_results.csv names the encoders of Table 1 "unfrozen".
_PAPER_ENCODERS = {"unfrozen": "trained", "frozen": "frozen"}
PAPER_RESULTS = Path(__file__).resolve().parents[2] / "paper" / "paper_results.csv"
#: The runner's record of runs kept with ``--keep-stale`` (in a profile's runs folder).
STALE_FILE = "stale_runs.json"
_STALE_SHAPE = 'the runner writes {"runs": [run ids], "time": ...}'


#: What seeds replicate: a run's fields but its seed.
CELL_COLUMNS: tuple[str, ...] = tuple(c for c in RUN_COLUMNS if c != "seed")
#: The run fields beyond the study's four (a replicate, a real-data subset, a prompt option).
_EXTRA_COLUMNS: tuple[str, ...] = ("seed", "real_fraction", "provenance")


class MetricsFormatError(PathError):
    """A metrics or history file that does not have the tidy format."""


def _require_run_columns(df: pd.DataFrame) -> None:
    missing = [c for c in _EXTRA_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"the table lacks the run columns {missing}; a table of runs has "
                         f"{list(RUN_COLUMNS)} (read_metrics, load_summaries and "
                         "load_histories give them)")


def with_run_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``seed``, ``real_fraction`` and ``provenance`` columns typed int,
    float, bool.

    Raises:
        ValueError: ``df`` lacks one of those columns; the message names them.
    """
    _require_run_columns(df)
    return df.astype({"seed": int, "real_fraction": float, "provenance": bool})


def study_mask(df: pd.DataFrame) -> pd.Series:
    """Which rows of a metrics, summaries or histories table are the study's own cells: its
    models (CLIPSeg, CRIS) and strategies, seed 0, all the real data, no provenance phrase
    (``echo_vlsm.grid.Run.is_study``).

    Raises:
        ValueError: ``df`` lacks the ``seed``, ``real_fraction`` or ``provenance`` column.
    """
    _require_run_columns(df)
    mask = df["model"].isin(VLSM_MODELS) & df["strategy"].isin(STUDY_STRATEGIES)
    mask &= pd.to_numeric(df["seed"], errors="coerce").fillna(-1) == 0
    mask &= pd.to_numeric(df["real_fraction"], errors="coerce").fillna(-1) == 1.0
    mask &= ~df["provenance"].fillna(True).astype(bool)
    return mask


def study_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` that belong to the study's own grid (``study_mask``): what its
    Tables 1 and 2, paired tests, difference figures and convergence speed-ups are made of,
    so that seed replicates, real fractions, ``mixed`` and U-Net runs in the same folder
    leave them unchanged.

    >>> t = pd.DataFrame({"model": ["cris", "cris", "unet"], "strategy": ["real"] * 3,
    ...                   "seed": [0, 1, 0], "real_fraction": 1.0, "provenance": False})
    >>> study_rows(t).index.tolist()
    [0]
    """
    return df[study_mask(df)]


def beyond_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` that go beyond the study (the complement of ``study_rows``)."""
    return df[~study_mask(df)]


_TRUE = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


def _run_columns_checked(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check and type the run columns of a file (its reader has checked that they exist)."""
    seed = pd.to_numeric(df["seed"], errors="coerce")
    if seed.isna().any() or (seed < 0).any() or (seed != seed.round()).any():
        raise MetricsFormatError(path, "column 'seed' must hold integers >= 0")
    df["seed"] = seed.astype(int)
    frac = pd.to_numeric(df["real_fraction"], errors="coerce")
    if frac.isna().any() or (frac <= 0).any() or (frac > 1).any():
        raise MetricsFormatError(path, "column 'real_fraction' must hold numbers in (0, 1]")
    df["real_fraction"] = frac.astype(float)
    prov = df["provenance"].map(lambda v: v if isinstance(v, (bool, np.bool_))
                                else _TRUE.get(str(v).strip().lower()))
    if prov.isna().any():
        raise MetricsFormatError(path, "column 'provenance' must hold true or false")
    df["provenance"] = prov.astype(bool)
    return df


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """Read one tidy ``metrics.csv`` and check its columns and values: every one of
    ``METRIC_COLUMNS``, ``seed``, ``real_fraction`` and ``provenance`` included.

    Raises:
        MetricsFormatError: the file breaks one of those rules; the message names it.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"sample": str, "prompt": str, "view": str, "phase": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MetricsFormatError(path, f"not a readable CSV ({exc})") from exc
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise MetricsFormatError(
            path, f"missing columns {missing}; a tidy metrics file has {list(METRIC_COLUMNS)}"
        )
    if df.empty:
        raise MetricsFormatError(path, "has a header but no rows")
    vocab = {"model": MODELS, "encoders": ENCODERS, "strategy": STRATEGIES,
             "structure": STRUCTURES}
    for col, allowed in vocab.items():
        bad = sorted(set(df[col].astype(str)) - set(allowed))
        if bad:
            raise MetricsFormatError(
                path, f"column {col!r} has values {bad}; accepted: {list(allowed)}"
            )
    if df["prompt"].isna().any():
        raise MetricsFormatError(path, "column 'prompt' has empty values")
    df = _run_columns_checked(df, path)
    for col in ("dice", "iou", "hd95"):
        values = pd.to_numeric(df[col], errors="coerce")
        if col != "hd95" and values.isna().any():
            raise MetricsFormatError(path, f"column {col!r} has non-numeric or empty values")
        df[col] = values.astype(float)
    for col in ("dice", "iou"):
        if ((df[col] < 0) | (df[col] > 100)).any():
            raise MetricsFormatError(
                path, f"column {col!r} has values outside 0..100 (it is in percent)"
            )
    return df[list(METRIC_COLUMNS)]


def metrics_files(root: str | os.PathLike) -> list[Path]:
    """Every ``metrics.csv`` under ``root``, sorted."""
    return sorted(Path(root).rglob(METRICS_FILE))


def load_metrics(root: str | os.PathLike) -> pd.DataFrame:
    """All ``metrics.csv`` files under ``root`` as one tidy table (one row per test sample
    and structure). Errors name the offending file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of runs")
    files = metrics_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: holds no metrics.csv (run notebook 04 first)")
    return pd.concat([read_metrics(f) for f in files], ignore_index=True)


def paper_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The study's Tables 1 and 2 with this project's names: columns ``table, encoders,
    strategy, model, prompt, paper_mean, paper_std`` (``encoders`` trained | frozen,
    ``model`` clipseg | cris)."""
    path = Path(path) if path is not None else PAPER_RESULTS
    df = pd.read_csv(path)
    need = {"table", "encoders", "strategy", "model", "prompt", "dice_mean", "dice_std"}
    if need - set(df.columns):
        raise MetricsFormatError(path, f"missing columns {sorted(need - set(df.columns))}")
    df = df.assign(
        encoders=df["encoders"].map(_PAPER_ENCODERS),
        model=df["model"].str.lower(),
        prompt=df["prompt"].str.lower(),
    ).rename(columns={"dice_mean": "paper_mean", "dice_std": "paper_std"})
    if df["encoders"].isna().any():
        raise MetricsFormatError(path, f"encoders must be one of {list(_PAPER_ENCODERS)}")
    return df[["table", "encoders", "strategy", "model", "prompt", "paper_mean", "paper_std"]]


def _run_dirs(root: Path) -> list[Path]:
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            parse_run_id(d.name)
        except ValueError:
            continue
        out.append(d)
    return out


def load_summaries(root: str | os.PathLike) -> pd.DataFrame:
    """``summary.json`` of every run folder under ``root`` (named by run id) as one table:
    run_id, the run's fields (``RUN_COLUMNS``), best_epoch, best_val_dice, initial_val_dice
    (its starting weights' score), seconds_to_best, epochs_run, stopped_by (``patience``,
    ``epochs`` or ``fast_dev_run``), seconds_total, done,
    and (NaN where a summary lacks them) ``n_train``, ``train_images`` and
    ``real_train_images`` (unique real images it trained on)."""
    rows = []
    for d in _run_dirs(Path(root)):
        f = d / SUMMARY_FILE
        if not f.is_file():
            continue
        try:
            s = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise MetricsFormatError(f, f"not valid JSON ({exc})") from exc
        missing = [k for k in ("best_epoch", "seconds_to_best") if k not in s]
        if missing:
            raise MetricsFormatError(f, f"missing keys {missing}")
        rows.append({**s, **parse_run_id(d.name).as_record(), "run_id": d.name})
    cols = ["run_id", *RUN_COLUMNS, "best_epoch", "best_val_dice", "initial_val_dice",
            "seconds_to_best", "epochs_run", "stopped_by", "seconds_total", "done", "n_train",
            "train_images", "real_train_images"]
    out = pd.DataFrame(rows)
    for c in cols:
        if c not in out.columns:
            out[c] = np.nan
    return out[cols]


def load_histories(root: str | os.PathLike) -> pd.DataFrame:
    """``history.csv`` of every run folder under ``root`` as one long table, with the run's
    fields (``RUN_COLUMNS``), ``run_id`` and ``epoch`` (1-based if absent)."""
    frames = []
    for d in _run_dirs(Path(root)):
        f = d / HISTORY_FILE
        if not f.is_file():
            continue
        h = pd.read_csv(f)
        if h.empty:
            continue
        if "epoch" not in h.columns:
            h.insert(0, "epoch", np.arange(1, len(h) + 1))
        for k, v in parse_run_id(d.name).as_record().items():
            h[k] = v
        h["run_id"] = d.name
        frames.append(h)
    if not frames:
        return pd.DataFrame(columns=["run_id", *RUN_COLUMNS, "epoch"])
    return pd.concat(frames, ignore_index=True)


def stale_runs(root: str | os.PathLike) -> list[str]:
    """The runs under ``root`` that the runner kept although their inputs changed
    (``echo-vlsm reproduce --keep-stale``; ``stale_runs.json``); ``[]`` without that file.

    Raises:
        MetricsFormatError: the file exists but cannot be read, is not JSON, or holds no
            list of run ids under ``runs``; the message names it.
    """
    path = Path(root) / STALE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsFormatError(path, f"unreadable ({exc})") from exc
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise MetricsFormatError(path, f"not JSON ({exc}); {_STALE_SHAPE}") from None
    runs = record.get("runs") if isinstance(record, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        raise MetricsFormatError(path, f"no list of run ids under 'runs'; {_STALE_SHAPE}")
    return list(runs)


def stale_note(root: str | os.PathLike) -> list[str]:
    """A report note naming the stale runs kept under ``root`` (none when there are none).

    An unreadable ``stale_runs.json`` gives a note (and a warning) that says so: which runs
    are stale is then unknown, and the report must not read as if none were."""
    try:
        runs = stale_runs(root)
    except MetricsFormatError as err:
        warnings.warn(str(err), stacklevel=2)
        return [f"**Stale runs unknown**: `{err.path}` cannot be read ({err.problem}), so the "
                "runs kept with `--keep-stale` (whose inputs changed after they ran) cannot be "
                "named here; the next `echo-vlsm reproduce` writes the file again."]
    if not runs:
        return []
    return [f"**Stale runs kept** ({len(runs)}, `--keep-stale`): their inputs or parameters "
            f"changed after they ran, so they do not match the current profile: "
            f"{', '.join(f'`{r}`' for r in runs)}."]
