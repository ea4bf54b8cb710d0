"""Training and scoring of the vision-language segmentation models (Synthetic Boost, Sec. 3).

``fit(TrainConfig(...))`` trains one run of the study's grid (or only scores it, ``zeroshot``)
and writes its folder ``<runs_root>/<run_id>/``; ``evaluate(config)`` scores a checkpoint on
the real test split. The same code runs under ``torchrun --nproc_per_node N``
(``python -m echo_vlsm.train key=value ...``).

Examples::

    from echo_vlsm.train import TrainConfig, fit
    result = fit(TrainConfig(model="clipseg", size="tiny", prompt="p3", strategy="real"))
    result.summary["best_val_dice"], result.metrics.dice.mean()
"""

from echo_vlsm.train.config import STRATEGIES, TrainConfig, run_id
from echo_vlsm.train.loop import (
    MissingRunError,
    RunResult,
    evaluate,
    fit,
    is_complete,
    load_run,
)

__all__ = ["STRATEGIES", "MissingRunError", "RunResult", "TrainConfig", "evaluate", "fit",
           "is_complete", "load_run", "run_id"]
