"""What every segmentation model of the study shares: its :class:`ModelSpec` and the
:class:`SegmentationModel` contract.

A model is called as ``model(pixel_values, input_ids, attention_mask) -> logits (B, 1, H, W)``
at the input resolution. The base class holds the parts of that contract that do not depend
on the architecture: the input checks at the boundary (each error says what would be
accepted), the frozen-or-trained CLIP encoders, and the upsampling of the logits to the input
size. A model file (``clipseg.py``, ``cris.py``) keeps its whole architecture and fills in
three hooks: :meth:`~SegmentationModel.encoder_modules`,
:meth:`~SegmentationModel.side_requirement` and :meth:`~SegmentationModel.segment`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from echo_vlsm.grid import ENCODERS, MODELS, SIZES
from echo_vlsm.models.tokenizer import TokenizerMixin


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects: square input side in pixels, per-channel normalisation of
    ``[0, 1]`` images, the threshold on ``sigmoid(logits)``, the text context length, and
    how the architecture's logits are brought to the input size (``upsample``, one of
    :data:`UPSAMPLINGS`)."""

    name: str
    size: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float
    context_length: int = 77
    upsample: str = "bilinear"

    def __post_init__(self):
        check_upsample(self.upsample)


def check_model(name: str, size: str, encoders: str) -> None:
    """Raise ``ValueError`` naming the accepted values unless ``name``, ``size`` and
    ``encoders`` are among ``MODELS``, ``SIZES`` and ``ENCODERS``.

    Examples::

        >>> check_model("clipseg", "tiny", "frozen")
        >>> check_model("sam", "tiny", "frozen")
        Traceback (most recent call last):
        ...
        ValueError: unknown model 'sam'; expected one of ('clipseg', 'cris', 'unet')
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} for {name}; expected one of {SIZES}")
    check_encoders(encoders)


def check_encoders(encoders: str) -> None:
    """Raise ``ValueError`` unless ``encoders`` is ``"trained"`` or ``"frozen"``."""
    if encoders not in ENCODERS:
        raise ValueError(f"encoders must be one of {ENCODERS}, got {encoders!r}")


#: How logits are resized to the input: ``"bilinear"`` (``align_corners=False``) or
#: ``"bicubic-corners"`` (bicubic, ``align_corners=True``: what the study's CRIS code does
#: inside its forward, so its loss is taken on those logits).
UPSAMPLINGS = ("bilinear", "bicubic-corners")


def check_upsample(upsample: str) -> None:
    """Raise ``ValueError`` naming :data:`UPSAMPLINGS` unless ``upsample`` is one of them."""
    if upsample not in UPSAMPLINGS:
        raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {upsample!r}")


def upsample_to(logits: torch.Tensor, size, upsample: str = "bilinear") -> torch.Tensor:
    """``logits`` (B, 1, h, w) resized to ``size`` as ``upsample`` says (see
    :data:`UPSAMPLINGS`); returned as they are when already of that size.

    Examples::

        >>> upsample_to(torch.zeros(2, 1, 24, 24), (96, 96)).shape
        torch.Size([2, 1, 96, 96])
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> upsample_to(x, (3, 3), "bicubic-corners")[0, 0, 0].tolist()  # corners kept
        [0.0, 0.5, 1.0]
    """
    check_upsample(upsample)
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    if upsample == "bicubic-corners":
        return F.interpolate(logits, size=tuple(size), mode="bicubic", align_corners=True)
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationModel(TokenizerMixin, nn.Module):
    """The contract of a text-prompted segmentation model with CLIP encoders.

    ``forward(pixel_values, input_ids, attention_mask=None)`` checks the inputs, runs
    :meth:`segment` and upsamples its logits to the input's ``H, W`` (``spec.upsample``).
    ``set_encoders`` and ``train`` keep the CLIP encoders frozen (no gradient, eval mode) or
    trained.
    ``tokenize(texts)`` gives the CLIP tokenizer's ``(input_ids, attention_mask)``.

    A subclass calls ``super().__init__(spec)``, builds its parts, then calls
    ``self.set_encoders(encoders)``, and implements:

    * :meth:`encoder_modules`: the CLIP parts that ``encoders="frozen"`` freezes;
    * :meth:`always_trained_modules` (optional): parts inside them that always train;
    * :meth:`side_requirement`: which image sides it accepts;
    * :meth:`segment`: the architecture, logits ``(B, 1, h, w)`` at any resolution.
    """

    spec: ModelSpec

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.encoders = "trained"

    # -- hooks ----------------------------------------------------------------------------
    def encoder_modules(self) -> list[nn.Module]:
        """The CLIP image and text encoders (frozen with ``encoders="frozen"``)."""
        raise NotImplementedError

    def always_trained_modules(self) -> list[nn.Module]:
        """Modules inside the encoders that train even when the encoders are frozen."""
        return []

    def side_requirement(self, height: int, width: int) -> str | None:
        """``None`` when an image of ``height x width`` is accepted, else what is needed
        (completes "<Model> needs ...")."""
        raise NotImplementedError

    def segment(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Logits ``(B, 1, h, w)`` of checked inputs, at the architecture's resolution."""
        raise NotImplementedError

    # -- encoders -------------------------------------------------------------------------
    def set_encoders(self, encoders: str) -> None:
        """Freeze (``"frozen"``) or unfreeze (``"trained"``) the CLIP encoders."""
        check_encoders(encoders)
        self.encoders = encoders
        for module in self.encoder_modules():
            module.requires_grad_(encoders == "trained")
        for module in self.always_trained_modules():
            module.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoders == "frozen":  # frozen encoders stay in eval mode (dropout, BN stats)
            for module in self.encoder_modules():
                module.eval()
            for module in self.always_trained_modules():
                module.train(mode)
        return self

    # -- forward --------------------------------------------------------------------------
    def check_inputs(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> None:
        """Raise ``ValueError`` saying what would be accepted unless the inputs fit."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
        h, w = (int(n) for n in pixel_values.shape[-2:])
        needed = self.side_requirement(h, w)
        if needed:
            side = self.spec.image_size
            raise ValueError(f"{type(self).__name__} needs {needed}, got {h}x{w}; resize to "
                             f"{side}x{side}")
        if input_ids.ndim != 2 or input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"input_ids must be (B, L) with B = {pixel_values.shape[0]}, "
                             f"got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.spec.context_length:
            raise ValueError(f"input_ids longer than the text context "
                             f"({self.spec.context_length})")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match "
                             f"input_ids {tuple(input_ids.shape)}")

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(pixel_values, input_ids, attention_mask)
        logits = self.segment(pixel_values, input_ids, attention_mask)
        return upsample_to(logits, pixel_values.shape[-2:], self.spec.upsample)

    # -- the forward split at the frozen encoders (echo_vlsm.train.frozen_cache) -------------
    #: True when the model splits its forward at the frozen encoders: ``segment`` is
    #: ``segment_encoded`` of ``encode_frozen_image`` and ``encode_frozen_text``.
    splits_frozen: bool = False

    def encode_frozen_image(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """What the image encoder's frozen part computes from checked ``pixel_values``,
        each tensor ``(B, ...)``: with frozen encoders the same every epoch."""
        raise NotImplementedError(f"{type(self).__name__} does not split its forward at the "
                                  "frozen encoders")

    def encode_frozen_text(self, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """What the text encoder's frozen part computes from one text per row, each tensor
        ``(B, ...)``: with frozen encoders the same every epoch."""
        raise NotImplementedError(f"{type(self).__name__} does not split its forward at the "
                                  "frozen encoders")

    def segment_encoded(self, image: list[torch.Tensor], text: list[torch.Tensor],
                        attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``segment``'s logits from the outputs of ``encode_frozen_image`` and
        ``encode_frozen_text`` (the rest of the model: what trains)."""
        raise NotImplementedError(f"{type(self).__name__} does not split its forward at the "
                                  "frozen encoders")

    def forward_encoded(self, image: list[torch.Tensor], text: list[torch.Tensor],
                        attention_mask: torch.Tensor | None, size: int) -> torch.Tensor:
        """``forward``'s logits ``(B, 1, size, size)`` from the frozen encoders' outputs for
        images of side ``size``: equal to ``forward`` on the images and texts they came
        from."""
        logits = self.segment_encoded(image, text, attention_mask)
        return upsample_to(logits, (size, size), self.spec.upsample)
