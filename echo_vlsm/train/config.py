"""One frozen dataclass per training run (Synthetic Boost, Sec. 3: the finetuning recipe).

A run is named by ``run_id(model, strategy, encoders, prompt)``, e.g.
``cris_synth-pt-real-ft_frozen_p3``, and lives in ``<runs_root>/<run_id>/``.

Examples::

    >>> cfg = TrainConfig(model="clipseg", size="tiny", prompt="p2", epochs=3)
    >>> cfg.run_id
    'clipseg_real_trained_p2'
    >>> cfg.learning_rate
    0.002

A ``recipe`` fills every field left at ``None`` that the study's text and its code set
differently (``docs/recipes.md``); a field given explicitly wins:

    >>> run = TrainConfig(model="clipseg", strategy="synth-pt-real-ft", recipe="as-run")
    >>> run.learning_rate, run.setting("patience"), run.setting("resume_pretraining")
    (0.0002, 20, True)
    >>> run.replace(lr=1e-3).learning_rate
    0.001
    >>> TrainConfig(model="cris").setting("dropout"), TrainConfig(model="cris").setting("loss")
    (0.1, 'dice-bce')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echo_vlsm.device import PRECISIONS
from echo_vlsm.grid import (
    BASELINE_MODELS,
    BASELINE_STRATEGIES,
    ENCODERS,
    MODELS,
    NO_PROMPT,
    PROMPT_KEYS,
    RANDOM_PROMPT,
    REAL_DATA_STRATEGIES,
    SIZES,
    STRATEGIES,
    Run,
    check_choice,
    pretrain_source,
    run_id,
)
from echo_vlsm.paths import resolve

__all__ = ["DEFAULT_BATCH", "DEFAULT_LR", "ENCODERS", "LOSSES", "MODELS", "PRECISIONS",
           "RECIPES", "RECIPE_FIELDS", "RUNTIME_FIELDS", "SIZES", "STRATEGIES", "TrainConfig",
           "prompt_keys", "recipe_value", "result_fields", "run_id"]
#: The study's learning rates (AdamW) and batch sizes per model; for the U-Net baseline
#: (beyond the study) this project's choice, AdamW at 1e-3 with batch 16 as usual for 2D
#: CAMUS U-Nets trained from scratch (the study trained none).
DEFAULT_LR = {"clipseg": 2e-3, "cris": 2e-5, "unet": 1e-3}
DEFAULT_BATCH = {"clipseg": 128, "cris": 32, "unet": 16}

#: ``as-published``: the study's text (Sec. 3); ``as-run``: its code and configuration.
RECIPES = ("as-published", "as-run")
#: ``dice-bce``: Dice + bce_weight x BCE on logits; ``dicece-probs``: MONAI 1.2's ``DiceCELoss``
#: fed with probabilities, as the study's code ran it (``echo_vlsm.train.losses``).
LOSSES = ("dice-bce", "dicece-probs")
#: The fields a recipe sets when they are left at ``None`` (see :func:`recipe_value`).
RECIPE_FIELDS = ("dropout", "loss", "bce_weight", "lr", "patience", "min_delta",
                 "resume_pretraining")


def recipe_value(recipe: str, name: str, model: str, strategy: str):
    """What ``recipe`` sets ``name`` to for a run of ``model`` under ``strategy``
    (``docs/recipes.md`` has the table and the sources). ``mixed`` is set as ``real`` (it
    trains on the real images and more); the ``unet`` baseline's learning rate is
    :data:`DEFAULT_LR`'s under both recipes (the study has none).

    Examples::

        >>> recipe_value("as-run", "dropout", "cris", "real")
        0.2
        >>> recipe_value("as-published", "patience", "cris", "real") is None  # never stops early
        True
    """
    check_choice("TrainConfig", "recipe", recipe, RECIPES)
    run = recipe == "as-run"
    if name == "dropout":  # CRIS decoder; the study's text says nothing, CRIS's paper 0.1
        return 0.2 if run else 0.1
    if name == "loss":
        return "dicece-probs" if run else "dice-bce"
    if name == "bce_weight":  # MONAI's lambda_ce in the code, 0.25 in the text
        return 0.2 if run else 0.25
    if name == "lr":  # the pt-ft script passes no lr: CLIPSeg's config default 2e-4 applies
        if run and model == "clipseg" and strategy == "synth-pt-real-ft":
            return 2e-4
        return DEFAULT_LR[model]
    if name == "patience":  # Lightning's EarlyStopping(patience=20) on the validation dice
        return 20 if run else None
    if name == "min_delta":  # its min_delta 1e-4 on a dice in [0, 1]: 0.01 percent
        return 0.01 if run else 0.0
    if name == "resume_pretraining":  # ckpt_path=best.ckpt of the synthetic run
        return run
    raise KeyError(f"{name!r} is not a recipe field; recipe fields: {RECIPE_FIELDS}")


def prompt_keys(model: str | None = None) -> tuple[str, ...]:
    """The prompt keys a run may use: ``p0``..``p7`` and ``random`` (a random one of them
    per sample); a text-free model's (``unet``): ``none`` only.

    >>> prompt_keys("unet")
    ('none',)
    """
    if model in BASELINE_MODELS:
        return (NO_PROMPT,)
    return (*PROMPT_KEYS, RANDOM_PROMPT)



@dataclass(frozen=True)
class TrainConfig:
    """Everything one training (or zero-shot evaluation) run depends on.

    Args:
        model, size, pretrained: passed to ``echo_vlsm.models.build_model`` (``pretrained``:
            ``None`` random weights, ``True`` the study's weights, or a hub id / local path).
            ``unet``: the text-free baseline (beyond the study): prompt ``none``, encoders
            ``trained``, no pretrained weights.
        prompt: ``p0``..``p7`` or ``random``; one of the two phrasings is drawn per sample and
            epoch, as the study did; ``none`` for ``unet``.
        strategy: ``real`` (train and validate on real images), ``synthetic`` (on synthetic
            images), ``synth-pt-real-ft`` (start from the best weights of the ``synthetic`` run
            with the same model, encoders and prompt, P6's for P7, then train on real),
            ``zeroshot`` (evaluate the initial model, no training) or ``mixed`` (beyond the
            study: train on the real and the synthetic training images together, validate on
            the real ones). The test split is always the real test split.
        encoders: ``trained`` or ``frozen`` CLIP encoders.
        epochs, min_epochs: at most ``epochs``; early stopping never before ``min_epochs``.
        min_steps: nor before this many optimisation steps (``0``: no such floor). Patience
            counts epochs, and a run on a fraction of the patients takes fewer steps per
            epoch: 25 % of the demo's 14 training patients is 3 steps an epoch, so 8 epochs
            without a better validation dice can end it before it has learned anything.
        batch_size: global batch (split over processes under torchrun); ``None``: the study's
            (128 CLIPSeg, 32 CRIS).
        lr: AdamW learning rate; ``None``: the study's (2e-3 CLIPSeg, 2e-5 CRIS).
        weight_decay: AdamW weight decay (1e-3).
        recipe: ``as-published`` (the study's text, the default) or ``as-run`` (its code): fills
            the fields below that are left at ``None`` (``docs/recipes.md``).
        dice_weight, bce_weight: loss = dice_weight x Dice + bce_weight x cross-entropy
            (``None``: the recipe's, 0.25 as published, 0.2 as run).
        loss: ``dice-bce`` (on logits) or ``dicece-probs`` (the study's code: MONAI 1.2's
            DiceCELoss fed with probabilities); ``None``: the recipe's.
        dropout: CRIS decoder dropout (``None``: the recipe's, 0.1 as published, 0.2 as run);
            not used by CLIPSeg.
        plateau_patience, plateau_factor: ReduceLROnPlateau on the validation loss (5, 0.1).
        patience: early stopping after this many epochs without a validation dice better by
            more than ``min_delta`` (``0``: never; ``None``: the recipe's, never as published,
            20 as run).
        min_delta: the improvement early stopping needs, in dice percent (``None``: the
            recipe's, 0 as published, 0.01 as run); the best weights need any improvement.
        resume_pretraining: ``synth-pt-real-ft`` continues the synthetic run's optimiser
            state, learning-rate schedule, epoch counter and early-stopping state (its state at
            the best epoch, as Lightning's ``best.ckpt``) instead of starting them afresh
            (``None``: the recipe's, fresh as published, continued as run).
        fast_dev_run: a rehearsal, as Lightning's ``fast_dev_run``: ``N`` training batches of
            one epoch, ``N`` validation batches and ``N`` test images (``None``: off).
        trust_weights: let CRIS read a TorchScript archive (OpenAI's CLIP ``RN50.pt``), which
            unpickles code; only for files from a source you trust.
        keep_state: keep ``state.pt`` (the resumable state: weights, optimiser moments) when
            the run completes; by default it is deleted then (1.7 GB for a paper-size CRIS).
        grad_clip: gradient-norm clipping (0.5; ``None`` off).
        precision: ``auto`` (bf16 autocast on GPUs that support it, else fp16 with a gradient
            scaler; fp32 on CPU), ``bf16``, ``fp16`` or ``fp32``.
        compile: ``torch.compile`` the model. channels_last: channels-last memory format.
        seed: seeds weights, batch order and phrasing choice; a resumed run ends where an
            uninterrupted one does. The grid's seed (a replicate): the run id ends in
            ``_seed<N>`` when it is not 0.
        real_fraction: train and validate on this fraction (0 < f <= 1) of the real patients
            of each split (``echo_vlsm.train.subsets``: nested, fixed by ``subset_seed``;
            recorded in ``real_subset.json``); strategies with real training data only
            (``real``, ``synth-pt-real-ft``, ``mixed``). The test split is never subset.
        subset_seed: which patients a fraction keeps (the same for every ``seed``).
        provenance: ``mixed`` only: each training prompt says whether its image is real or
            synthetic (``echo_vlsm.prompts.PROVENANCE_PHRASES``); validation and test read
            the real phrase.
        synthetic_ratio: ``mixed`` only: synthetic training images per real training image
            (a seeded draw of whole images); ``None``: all synthetic images.
        real_dir, synthetic_dir, runs_root: folders (relative ones from the project root).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``, ...
        init_from: weights (``.safetensors``) to start from instead of the synthetic run's, for
            ``synth-pt-real-ft``.
        save_predictions: also write the test predictions as PNG (``predictions/``).
        cache_dir: where decoded datasets are cached (default ``<dataset>/.cache``).
        frozen_cache: with frozen encoders, compute what they compute once per split and
            train the rest from it (``echo_vlsm.train.frozen_cache``; the same results
            within float tolerance); ``False``: run the encoders at every step.
        image_batching: beyond the study: an image's triplets (its structures) train in one
            batch and the image encoder runs once per distinct image of a batch
            (``echo_vlsm.train.image_batching``); it changes the sample order, hence the
            results. Off by default, in both recipes (the study's order) and in every shipped
            profile; not for the ``unet`` baseline.
    """

    model: str = "clipseg"
    size: str = "tiny"
    pretrained: Any = None
    prompt: str = "p1"
    strategy: str = "real"
    encoders: str = "trained"
    epochs: int = 5
    min_epochs: int = 1
    min_steps: int = 0
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-3
    recipe: str = "as-published"
    dice_weight: float = 1.0
    bce_weight: float | None = None
    loss: str | None = None
    dropout: float | None = None
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    patience: int | None = None
    min_delta: float | None = None
    resume_pretraining: bool | None = None
    grad_clip: float | None = 0.5
    precision: str = "auto"
    compile: bool = False
    channels_last: bool = True
    seed: int = 0
    real_dir: str = "data/phantom"
    synthetic_dir: str = "data/phantom-synthetic"
    runs_root: str = "runs/demo"
    device: str = "auto"
    init_from: str | None = None
    save_predictions: bool = False
    cache_dir: str | None = None
    fast_dev_run: int | None = None
    trust_weights: bool = False
    keep_state: bool = False
    real_fraction: float = 1.0
    subset_seed: int = 0
    provenance: bool = False
    synthetic_ratio: float | None = None
    frozen_cache: bool = True
    image_batching: bool = False

    def __post_init__(self):
        for name, allowed in (("model", MODELS), ("size", SIZES), ("strategy", STRATEGIES),
                              ("encoders", ENCODERS), ("precision", PRECISIONS),
                              ("recipe", RECIPES)):
            check_choice("TrainConfig", name, getattr(self, name), allowed)
        if self.loss is not None:
            check_choice("TrainConfig", "loss", self.loss, LOSSES)
        for name in ("trust_weights", "keep_state", "resume_pretraining", "provenance",
                     "frozen_cache", "image_batching"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (value is None and name in RECIPE_FIELDS):
                raise ValueError(f"TrainConfig.{name}={value!r}; expected true or false")
        if self.fast_dev_run is not None and (isinstance(self.fast_dev_run, bool) or not isinstance(
                self.fast_dev_run, int) or self.fast_dev_run < 1):
            raise ValueError(f"TrainConfig.fast_dev_run={self.fast_dev_run!r}; expected None or "
                             "an integer >= 1 (batches, validation batches and test images)")
        if self.dropout is not None and not 0 <= float(self.dropout) < 1:
            raise ValueError(f"TrainConfig.dropout={self.dropout!r}; expected None or "
                             "0 <= dropout < 1")
        if self.prompt not in prompt_keys(self.model):
            raise ValueError(f"TrainConfig.prompt={self.prompt!r}: unknown prompt key for "
                             f"model {self.model!r}; expected one of {prompt_keys(self.model)}")
        self._check_beyond()
        for name in ("epochs", "min_epochs", "min_steps", "plateau_patience", "seed",
                     "subset_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name}={value!r}; expected an integer >= 0")
        if self.strategy != "zeroshot" and self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs={self.epochs}: strategy {self.strategy!r} "
                             "trains for at least 1 epoch (use strategy='zeroshot' to only "
                             "evaluate)")
        if self.min_epochs > max(self.epochs, 1):
            raise ValueError(f"TrainConfig.min_epochs={self.min_epochs} exceeds "
                             f"epochs={self.epochs}")
        for name, low in (("batch_size", 1), ("patience", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < low):
                raise ValueError(f"TrainConfig.{name}={value!r}; expected None or an integer "
                                 f">= {low}")
        for name in ("lr", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not float(value) > 0:
                raise ValueError(f"TrainConfig.{name}={value!r}; expected None or > 0")
        for name in ("weight_decay", "dice_weight", "bce_weight", "min_delta"):
            value = getattr(self, name)
            if value is not None and not float(value) >= 0:
                raise ValueError(f"TrainConfig.{name}={value!r}; expected >= 0")
        if self.dice_weight == 0 and self.setting("bce_weight") == 0:
            raise ValueError("TrainConfig: dice_weight and bce_weight are both 0")
        if not 0 < float(self.plateau_factor) < 1:
            raise ValueError(f"TrainConfig.plateau_factor={self.plateau_factor!r}; expected "
                             "0 < factor < 1")
        if self.init_from is not None and self.strategy != "synth-pt-real-ft":
            raise ValueError("TrainConfig.init_from is only used by strategy "
                             f"'synth-pt-real-ft', not {self.strategy!r}")

    def _check_beyond(self) -> None:
        """The fields beyond the study: the baseline's limits, real_fraction, provenance and
        synthetic_ratio, each with the strategies it applies to."""
        if self.model in BASELINE_MODELS:
            if self.encoders != "trained":
                raise ValueError(f"TrainConfig.encoders={self.encoders!r}: model "
                                 f"{self.model!r} has no CLIP encoders to freeze; expected "
                                 "'trained'")
            if self.pretrained is not None and self.pretrained is not False:
                raise ValueError(f"TrainConfig.pretrained={self.pretrained!r}: model "
                                 f"{self.model!r} trains from scratch; expected None")
            if self.strategy not in BASELINE_STRATEGIES:
                raise ValueError(f"TrainConfig.strategy={self.strategy!r}: model "
                                 f"{self.model!r} trains with one of {BASELINE_STRATEGIES}")
            if self.image_batching:
                raise ValueError(f"TrainConfig.image_batching=True: model {self.model!r} has "
                                 "no image encoder split from the rest of its network to run "
                                 "once per image; expected false")
        f = self.real_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < float(f) <= 1:
            raise ValueError(f"TrainConfig.real_fraction={f!r}; expected a number with "
                             "0 < real_fraction <= 1")
        if float(f) != 1.0 and self.strategy not in REAL_DATA_STRATEGIES:
            raise ValueError(f"TrainConfig.real_fraction={f!r}: strategy {self.strategy!r} "
                             f"trains on no real images; real_fraction < 1 needs one of "
                             f"{REAL_DATA_STRATEGIES}")
        if self.provenance and (self.strategy != "mixed" or self.model in BASELINE_MODELS):
            raise ValueError(f"TrainConfig.provenance=True: a prompt option of a "
                             f"text-prompted model's 'mixed' strategy, not {self.model!r} "
                             f"with {self.strategy!r}")
        r = self.synthetic_ratio
        if r is not None:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not float(r) > 0:
                raise ValueError(f"TrainConfig.synthetic_ratio={r!r}; expected None (all "
                                 "synthetic images) or a number > 0")
            if self.strategy != "mixed":
                raise ValueError(f"TrainConfig.synthetic_ratio={r!r}: only strategy 'mixed' "
                                 f"mixes synthetic images in, not {self.strategy!r}")

    # -- derived values ---------------------------------------------------------------------
    @property
    def run(self) -> Run:
        """The grid cell of this run (its seed, real fraction and provenance included)."""
        return Run(self.model, self.strategy, self.encoders, self.prompt, seed=self.seed,
                   real_fraction=float(self.real_fraction), provenance=self.provenance)

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def run_dir(self) -> Path:
        return resolve(self.runs_root) / self.run_id

    def setting(self, name: str):
        """A recipe field as this run uses it: the field when given, else the recipe's."""
        value = getattr(self, name)
        if value is not None:
            return value
        return recipe_value(self.recipe, name, self.model, self.strategy)

    def settings(self) -> dict:
        """Every recipe field as this run uses it (recorded in ``summary.json``)."""
        return {name: self.setting(name) for name in RECIPE_FIELDS}

    @property
    def learning_rate(self) -> float:
        return float(self.setting("lr"))

    @property
    def early_stopping(self) -> int | None:
        """The early-stopping patience in epochs, or None for none."""
        patience = self.setting("patience")
        return patience if patience else None

    @property
    def global_batch_size(self) -> int:
        return int(self.batch_size) if self.batch_size is not None else DEFAULT_BATCH[self.model]

    @property
    def train_dir(self) -> Path:
        """The dataset trained and validated on (``mixed``: validated on; it also trains on
        ``synthetic_dir``'s training split)."""
        return resolve(self.synthetic_dir if self.strategy == "synthetic" else self.real_dir)

    @property
    def subset(self) -> bool:
        """Trains on part of the real patients (``real_fraction < 1``)."""
        return float(self.real_fraction) != 1.0

    @property
    def test_dir(self) -> Path:
        """The real dataset whose test split every strategy is scored on."""
        return resolve(self.real_dir)

    def pretraining_run(self) -> Path | None:
        """For ``synth-pt-real-ft``: the synthetic run it starts from (P6's for P7: synthetic
        images carry no quality, so their P6 already holds the shape, as in the study)."""
        source = pretrain_source(self.run)
        return None if source is None else resolve(self.runs_root) / source.id

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict (``config.json``, a YAML parameter set); unknown keys are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; accepted: {sorted(names)}")
        return cls(**values)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: Fields that do not change what a run computes (where and how fast it runs, what it keeps;
#: ``frozen_cache``: the same results within float tolerance).
RUNTIME_FIELDS = ("device", "compile", "cache_dir", "save_predictions", "runs_root",
                  "real_dir", "synthetic_dir", "trust_weights", "keep_state", "frozen_cache")


def result_fields(config: TrainConfig) -> dict:
    """The fields of a config that determine its results (compared when resuming), with every
    recipe field as the run uses it, so ``bce_weight: 0.25`` written by an older run matches
    ``bce_weight: None`` under ``as-published``. ``recipe`` itself is left out: what it sets
    is compared field by field."""
    values = {k: v for k, v in config.to_dict().items()
              if k not in RUNTIME_FIELDS and k != "recipe"}
    values["real_fraction"] = float(values["real_fraction"])
    values.update(config.settings())
    values["patience"] = config.early_stopping  # 0 and None both mean never
    if config.model != "cris":
        values.pop("dropout")  # CLIPSeg has no such setting
    if not config.image_batching:  # what every run computed before the field existed
        values.pop("image_batching")
    if not config.min_steps:  # likewise
        values.pop("min_steps")
    return values
