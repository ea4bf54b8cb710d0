"""What a run records as it trains: its best validation score (``BestScore``) and early
stopping (``EarlyStopping``), which also says why the run stopped (``stopped_by``:
``patience``, ``epochs`` or ``fast_dev_run``, as ``summary.json`` records it).

Both are stored in ``state.pt`` as plain dicts (``as_dict`` / ``state_dict``), so an
interrupted run continues with them, and ``as-run`` synth-pt-real-ft continues a synthetic
run's early stopping from its best epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from echo_vlsm.train.config import TrainConfig

__all__ = ["STOP_REASONS", "BestScore", "EarlyStopping", "first_stopping_epoch"]

#: Why a run stopped: early stopping's patience ran out, the cap of ``epochs`` was reached,
#: or the run was a rehearsal (``fast_dev_run``: one epoch).
STOP_REASONS = ("patience", "epochs", "fast_dev_run")


def first_stopping_epoch(config: TrainConfig, steps_per_epoch: int) -> int:
    """The first epoch after which early stopping may end a run: ``min_epochs``, or later
    where ``min_steps`` takes more epochs of ``steps_per_epoch`` steps. It may lie past the
    cap of ``epochs``: such a run is stopped by the cap, and says so.

    >>> cfg = TrainConfig(epochs=150, min_epochs=1, min_steps=110)
    >>> first_stopping_epoch(cfg, 11), first_stopping_epoch(cfg, 3), first_stopping_epoch(cfg, 200)
    (10, 37, 1)
    """
    return max(config.min_epochs, math.ceil(config.min_steps / max(1, steps_per_epoch)))


@dataclass
class EarlyStopping:
    """Early stopping on the validation Dice, as Lightning's ``EarlyStopping``: a wait counter
    reset by an improvement of more than ``min_delta`` over the best Dice so far; the run
    stops when the wait reaches ``patience`` (None: never), never before ``min_epochs``, and
    at the latest after ``max_epochs`` (one epoch for a ``fast_dev_run``).

    >>> stop = EarlyStopping(patience=1, min_delta=0.0, min_epochs=1, max_epochs=10)
    >>> stop.update(1, 50.0), stop.update(2, 40.0), stop.stopped_by
    (False, True, 'patience')
    """

    patience: int | None
    min_delta: float
    min_epochs: int
    max_epochs: int
    fast_dev_run: bool = False
    best: float = -math.inf
    wait: int = 0
    stopped_by: str | None = None  # one of STOP_REASONS once the run stops

    @classmethod
    def of(cls, config: TrainConfig, steps_per_epoch: int = 1) -> EarlyStopping:
        """The early stopping of ``config``'s recipe (``patience``, ``min_delta``) for a run
        of ``steps_per_epoch`` optimisation steps an epoch (``first_stopping_epoch``)."""
        return cls(patience=config.early_stopping, min_delta=float(config.setting("min_delta")),
                   min_epochs=first_stopping_epoch(config, steps_per_epoch),
                   max_epochs=config.epochs, fast_dev_run=config.fast_dev_run is not None)

    def update(self, epoch: int, val_dice: float) -> bool:
        """Count epoch ``epoch``'s validation Dice; returns whether the run stops now."""
        if val_dice > self.best + self.min_delta:
            self.best, self.wait = val_dice, 0
        else:
            self.wait += 1
        self.stopped_by = self.reason(epoch)
        return self.stopped_by is not None

    def reason(self, epoch: int) -> str | None:
        """Why the run stops after epoch ``epoch`` with the present wait, or None. A rehearsal
        stops after its epoch; the patience, when both it and the cap end the run at once."""
        if self.fast_dev_run:
            return "fast_dev_run"
        if self.patience is not None and epoch >= self.min_epochs and self.wait >= self.patience:
            return "patience"
        if epoch >= self.max_epochs:
            return "epochs"
        return None

    def state_dict(self) -> dict[str, Any]:
        """``{"best", "wait"}``: what ``state.pt`` keeps."""
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any], epoch: int | None = None) -> None:
        """Continue from ``state_dict()``; ``epoch``: the last epoch of a run that had
        stopped after it (its reason is found again), None when it goes on."""
        self.best, self.wait = state["best"], int(state["wait"])
        self.stopped_by = None if epoch is None else self.reason(epoch)


@dataclass
class BestScore:
    """The best epoch so far by validation Dice, when it was reached (training seconds), the
    initial model's validation score, and what the run started from: the weights it was
    initialised from and, under ``as-run`` synth-pt-real-ft, the state it continued
    (``continued_from``) at the synthetic run's epoch (``first_epoch`` is the next one).
    ``as_dict()`` is what ``summary.json`` and ``state.pt`` record."""

    best_epoch: int = 0
    best_val_dice: float = -math.inf
    seconds_to_best: float = 0.0
    initial_val_dice: float | None = None
    initial_val_loss: float | None = None
    initialised_from: str | None = None
    first_epoch: int | None = None
    continued_from: str | None = None

    def update(self, epoch: int, val_dice: float, seconds: float) -> bool:
        """Count epoch ``epoch``'s validation Dice after ``seconds`` of training; returns
        whether it is the best so far."""
        if not val_dice > self.best_val_dice:  # NaN never is
            return False
        self.best_epoch, self.best_val_dice, self.seconds_to_best = epoch, val_dice, seconds
        return True

    def as_dict(self) -> dict[str, Any]:
        out = {"best_epoch": self.best_epoch, "best_val_dice": self.best_val_dice,
               "seconds_to_best": self.seconds_to_best,
               "initial_val_dice": self.initial_val_dice,
               "initial_val_loss": self.initial_val_loss,
               "initialised_from": self.initialised_from}
        if self.first_epoch is not None:  # recorded only when a state was continued
            out["first_epoch"] = self.first_epoch
        if self.continued_from is not None:
            out["continued_from"] = self.continued_from
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BestScore:
        """From ``as_dict()`` (``state.pt``'s ``best``)."""
        return cls(**values)
