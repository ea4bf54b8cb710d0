"""Training and scoring of the vision-language segmentation models (Synthetic Boost, Sec. 3).

``fit(TrainConfig(...))`` trains one run of the study's grid (or only scores it, ``zeroshot``)
and writes its folder ``<runs_root>/<run_id>/``; ``evaluate(config)`` scores a checkpoint on
the real test split. The same code runs under ``torchrun --nproc_per_node N``
(``python -m echo_vlsm.train key=value ...``).

The modules, one concern each: ``fitting`` (``fit``: a run end to end), ``rundir`` (the run
folder: complete, damaged, resumed, settings), ``data`` (the model and the data of a run),
``engine`` (epochs, steps, checkpoints, DDP), ``stopping`` (best score and early stopping),
``scoring`` (``validate``, ``predict``, ``evaluate``; ``evaluate_clinical`` and
``ensure_clinical``: a run's ``clinical.csv`` without training), ``clinical_eval`` (its
rows), ``provenance`` (where the initial
weights came from); ``config``, ``checkpoint``, ``losses``, ``metrics``, ``triplets``,
``subsets``, ``distributed`` and ``plots`` beside them.

Examples::

    from echo_vlsm.train import TrainConfig, fit
    result = fit(TrainConfig(model="clipseg", size="tiny", prompt="p3", strategy="real"))
    result.summary["best_val_dice"], result.metrics.dice.mean()
"""

from echo_vlsm.grid import run_complete as is_complete
from echo_vlsm.train.config import STRATEGIES, TrainConfig, run_id
from echo_vlsm.train.data import ImageCounts, TrainingData, build, load_split, load_training_data
from echo_vlsm.train.engine import make_optimizer, train_step
from echo_vlsm.train.fitting import fit
from echo_vlsm.train.rundir import MissingRunError, RunResult, load_run
from echo_vlsm.train.scoring import (
    ensure_clinical,
    ensure_runs_clinical,
    eval_generator,
    evaluate,
    evaluate_clinical,
    predict,
    validate,
)
from echo_vlsm.train.stopping import STOP_REASONS, BestScore, EarlyStopping

__all__ = ["STOP_REASONS", "STRATEGIES", "BestScore", "EarlyStopping", "ImageCounts",
           "MissingRunError", "RunResult", "TrainConfig", "TrainingData", "build",
           "ensure_clinical", "ensure_runs_clinical", "eval_generator", "evaluate",
           "evaluate_clinical", "fit",
           "is_complete", "load_run", "load_split", "load_training_data", "make_optimizer",
           "predict", "run_id", "train_step", "validate"]
