"""The model and the data of a run: ``build`` (the model of a config, seeded), ``load_split``
(one split's decoded triplets) and ``load_training_data`` (the training and validation sets of
a run's strategy and real fraction, with a record of the images it trains on).

Beyond the study, the ``mixed`` strategy trains on one set of the real and the synthetic
triplets (``concat_triplets``), and ``real_fraction`` < 1 keeps a patient-level subset of the
real patients (``echo_vlsm.train.subsets``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from echo_vlsm.models import SegmentationModel, build_model
from echo_vlsm.paths import resolve
from echo_vlsm.train.checkpoint import unwrap_segmentation
from echo_vlsm.train.config import TrainConfig
from echo_vlsm.train.subsets import select_patients, synthetic_share
from echo_vlsm.train.triplets import Triplets, concat_triplets, load_triplets

__all__ = ["ImageCounts", "TrainingData", "build", "load_split", "load_training_data",
           "rehearsal_share"]


def build(config: TrainConfig, device: torch.device,
          pretrained: bool = True) -> SegmentationModel:
    """The model of ``config`` on ``device`` (weights seeded by ``config.seed``);
    ``pretrained=False``: without the pretrained weights (they come from elsewhere)."""
    torch.manual_seed(config.seed)
    extra = {"trust": config.trust_weights, "dropout": float(config.setting("dropout"))} \
        if config.model == "cris" else {}
    model = build_model(config.model, size=config.size,
                        pretrained=config.pretrained if pretrained else None,
                        encoders=config.encoders, **extra)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def load_split(config: TrainConfig, model: nn.Module, dataset_dir: Path, split: str,
               device: torch.device | str, full_masks: bool = False,
               progress: bool | None = None, source: str = "real") -> Triplets:
    """The decoded triplets of a split for ``model`` (``load_triplets``), on ``device``.
    ``source`` (``real`` | ``synthetic``): where the split's images come from, which the
    prompts say when ``config.provenance`` (validation and test: real)."""
    plain = unwrap_segmentation(model)
    return load_triplets(dataset_dir, split, config.prompt, plain.spec.image_size,
                         plain.tokenize, cache_dir=config.cache_dir,
                         full_masks=full_masks, device=device, progress=progress is not False,
                         provenance=source if config.provenance else None)


@dataclass(frozen=True)
class ImageCounts:
    """The unique images a run trains on: all, the real ones (the data-efficiency axis) and
    the synthetic ones. ``summary()``: as ``summary.json`` records them."""

    train_images: int
    real_train_images: int
    synthetic_train_images: int

    def summary(self) -> dict[str, int]:
        return {"train_images": self.train_images, "real_train_images": self.real_train_images,
                "synthetic_train_images": self.synthetic_train_images}


@dataclass(frozen=True)
class TrainingData:
    """A run's training set (None for zeroshot) and validation set; the unique images it
    trains on; for a real-data subset (``real_fraction`` < 1), per split the patients kept
    (``select_patients``'s record), else None."""

    train: Triplets | None
    val: Triplets
    images: ImageCounts
    subset: dict | None = None


def load_training_data(config: TrainConfig, model: nn.Module, device: torch.device | str,
                       progress: bool | None = None) -> TrainingData:
    """The training and validation sets of a run. ``real_fraction < 1``: both on that
    patient-level subset of the real patients (``echo_vlsm.train.subsets``); ``mixed``: the
    real training triplets and the synthetic ones (all, or ``synthetic_ratio`` per real
    image) in one set, validated on the real ones."""
    def load(split: str, root: Path = config.train_dir, source: str = "real") -> Triplets:
        return load_split(config, model, root, split, device, False, progress, source)

    synthetic = config.strategy == "synthetic"
    val = load("val", source="synthetic" if synthetic else "real")
    train = None if config.strategy == "zeroshot" else load(
        "train", source="synthetic" if synthetic else "real")
    subset = None
    if config.subset:
        subset = {}
        val, subset["val"] = select_patients(val, config.real_fraction, config.subset_seed,
                                             config.train_dir)
        if train is not None:
            train, subset["train"] = select_patients(train, config.real_fraction,
                                                     config.subset_seed, config.train_dir)
    n_train = 0 if train is None else int(train.images.shape[0])
    real = 0 if synthetic else n_train
    n_syn = n_train if synthetic else 0
    if config.strategy == "mixed":
        syn = load("train", resolve(config.synthetic_dir), "synthetic")
        syn = synthetic_share(syn, config.synthetic_ratio, real, config.subset_seed)
        n_syn = int(syn.images.shape[0])
        assert train is not None  # only zeroshot has no training set
        train = concat_triplets([train, syn])
    if config.fast_dev_run is not None:  # a rehearsal reaches no further than its N batches
        val = rehearsal_share(val, config.fast_dev_run * config.global_batch_size)
        if train is not None:
            train = rehearsal_share(train, config.fast_dev_run * config.global_batch_size)
    return TrainingData(train, val, ImageCounts(real + n_syn, real, n_syn), subset)


def rehearsal_share(data: Triplets, triplets: int) -> Triplets:
    """The first images of ``data`` (in storage order) whose triplets number at least
    ``triplets`` (all of them when there are fewer): what a ``fast_dev_run`` of N batches can
    reach, so that its frozen cache encodes those images and not the whole split."""
    per_image = torch.bincount(data.image_index.cpu(), minlength=int(data.images.shape[0]))
    reached = torch.nonzero(per_image.cumsum(0) >= triplets).view(-1)
    n = int(reached[0]) + 1 if len(reached) else int(per_image.shape[0])
    return data if n == int(per_image.shape[0]) else data.select_images(torch.arange(n))
