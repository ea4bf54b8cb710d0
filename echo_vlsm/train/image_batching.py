"""One image pass for its structures (``TrainConfig.image_batching``, beyond the study).

Each image of a split appears in several triplets (CAMUS: LV, myocardium and LA), and the
study's sampler scatters them over an epoch, so the image encoder runs once per triplet.
With ``image_batching`` the engine

* orders an epoch by image (``image_order``): the images are permuted with the epoch's
  seeded generator and each image's triplets follow one another (in storage order);
* cuts that order into batches of whole images (``image_batches``): as many images as fit in
  ``batch_size`` triplets (CAMUS at batch 16: 5 images, 15 triplets; an image with more
  triplets than the batch size is a batch of its own; a trailing batch of one triplet joins
  the previous batch, as in ``engine.batches``);
* runs the image encoder once per distinct image of a batch (``ImageBatchedModel``): the
  batch's unique images are encoded (with gradients when the encoders train), each triplet
  gathers its image's outputs with ``index_select`` (autograd sums the gradients of an
  image's uses), then the text encoder and the rest of the model run per triplet as usual.

The loss and every gradient equal those of the plain forward on the same triplets (float
tolerance; ``tests/test_image_batching.py``). One thing differs with trained batch-norm
encoders (CRIS's ResNet) in training mode: the batch statistics over the unique images have
the mean and the biased variance of those over the triplets' copies, so the forward is the
same, but the running variance is updated with the unbiased variance of ``U`` images instead
of ``3U`` rows (a factor ``(3U - 1) / (3U - 3)`` apart); it is a buffer, used in evaluation.

With the frozen cache (``train.frozen_cache``) the encoders already run once per image, so
the option changes only the order and the batches. Models that do not split their forward at
the image encoder (the U-Net baseline) are refused (``TrainConfig`` and
``ImageBatchedModel``), and so is ``torchrun`` (batches of whole images are not split over
processes). The option changes the sample order, hence the results: it is off by default and
off in both study recipes (``as-published``, ``as-run``) and in every shipped profile.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from echo_vlsm.models.base import SegmentationModel, upsample_to
from echo_vlsm.train.triplets import normalise

__all__ = ["ImageBatchedModel", "image_batches", "image_order"]


def image_order(image_index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An epoch's triplet order (on the CPU): the images permuted by ``generator``, each
    image's triplets consecutive, in their storage order.

    Examples::

        >>> index = torch.tensor([0, 1, 2, 0, 1, 2])  # three images, two triplets each
        >>> order = image_order(index, torch.Generator().manual_seed(0))
        >>> index[order].tolist()
        [2, 2, 0, 0, 1, 1]
    """
    rows = image_index.cpu()
    n_images = int(rows.max()) + 1 if len(rows) else 0
    rank = torch.empty(n_images, dtype=torch.long)
    rank[torch.randperm(n_images, generator=generator)] = torch.arange(n_images)
    return torch.sort(rank[rows], stable=True).indices


def image_batches(order: torch.Tensor, image_index: torch.Tensor,
                  batch_size: int) -> list[torch.Tensor]:
    """``order`` (triplets grouped by image, as ``image_order`` gives them) cut into batches
    of whole images: as many consecutive images as fit in ``batch_size`` triplets (at least
    one); a trailing batch of one triplet joins the previous one (batch norm needs two).

    Examples::

        >>> index = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
        >>> [b.tolist() for b in image_batches(torch.arange(10), index, 7)]
        [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    """
    if batch_size < 1:
        raise ValueError(f"image_batches: batch_size must be >= 1, got {batch_size}")
    rows = image_index.cpu()[order.cpu()]
    counts = torch.unique_consecutive(rows, return_counts=True)[1].tolist()
    sizes: list[int] = []
    for count in counts:
        if sizes and sizes[-1] + count <= batch_size:
            sizes[-1] += count
        else:
            sizes.append(count)
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2] += sizes.pop()
    return list(torch.split(order, sizes))


class ImageBatchedModel(nn.Module):
    """The model called on image rows: ``forward(image_rows, input_ids, attention_mask)``
    normalises the distinct images among ``images[image_rows]`` (uint8 ``(I, S, S)``, the
    training split's), runs ``encode_frozen_image`` once on them, gathers each row's outputs,
    and returns ``segment_encoded``'s logits upsampled to ``(B, 1, S, S)``: equal to
    ``model(normalised images[image_rows], input_ids, attention_mask)``. With frozen encoders
    the image encoder runs without autograd, as in the model's own forward. ``module`` is
    the model (``checkpoint.unwrap`` finds it)."""

    def __init__(self, model: SegmentationModel, images: torch.Tensor,
                 channels_last: bool = False) -> None:
        super().__init__()
        if not model.splits_frozen:
            raise ValueError(f"image_batching: {type(model).__name__} does not split its "
                             "forward at the image encoder (encode_frozen_image); train it "
                             "with image_batching: false")
        self.module = model
        self.images = images
        self.channels_last = channels_last

    def forward(self, image_rows: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        model = self.module
        spec = model.spec
        unique, inverse = torch.unique(image_rows, return_inverse=True)
        dtype = next(model.parameters()).dtype
        x = normalise(self.images[unique], spec.mean, spec.std,
                      channels_last=self.channels_last, dtype=dtype)
        frozen = model.encoders == "frozen"
        with torch.no_grad() if frozen else contextlib.nullcontext():
            encoded = model.encode_frozen_image(x)
            text = model.encode_frozen_text(input_ids, attention_mask)
        image = [_rows(t, inverse) for t in encoded]
        logits = model.segment_encoded(image, text, attention_mask)
        side = int(self.images.shape[-1])
        return upsample_to(logits, (side, side), spec.upsample)


def _rows(t: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``t``'s rows ``inverse`` (channels-last 4-D tensors stay channels-last)."""
    out = t.index_select(0, inverse)
    if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) \
            and not t.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out
