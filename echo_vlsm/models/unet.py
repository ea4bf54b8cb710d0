"""A text-free supervised baseline: MONAI's nnU-Net-like ``DynUNet`` (beyond the study).

The study quotes a supervised state of the art on CAMUS (94.1 mean Dice) that its tables never
place beside the VLSMs. This baseline is one network predicting the three structures at once,
softmax over background + LV cavity, myocardium and left atrium, as CAMUS U-Nets do; it is
trained and scored by the same engine as CLIPSeg and CRIS, which works per triplet
``(image, prompt, mask)``:

- its "prompt" is the structure: the triplets of prompt key ``none`` carry the structure's
  name, which :meth:`UNetBaseline.tokenize` turns into a class index (no text reaches the
  network; ``input_ids`` are ``(B, 1)`` class indices 1..3);
- ``forward`` returns, per triplet, the softmax log-odds of that triplet's class,
  ``z_c - logsumexp(z_others)``, so ``sigmoid(logit)`` is exactly the softmax probability of
  the structure; the engine's threshold 0.5, its losses and its metrics apply unchanged, and
  the three thresholded masks of an image are disjoint (at most one class exceeds 0.5).

Sizes (this project's choices, not the study's): ``paper`` is an nnU-Net-like 2D DynUNet at
256 x 256 (6 stages, filters 32, 64, 128, 256, 512, 512, 3 x 3 kernels, instance norm, leaky
ReLU; 20.6 M parameters); ``tiny`` the same design at 96 x 96 with 4 stages and filters
8..64 (0.12 M parameters), fast on a CPU. Inputs are the engine's 3-channel gray images; the
first channel is read (the three are equal). No pretrained weights: it is trained from
scratch, and it has no CLIP encoders to freeze.

Examples::

    >>> model = build_unet("tiny")
    >>> ids, mask = model.tokenize(["Myocardium", "Left atrium cavity"])
    >>> ids.tolist()
    [[2], [3]]
    >>> model(torch.zeros(2, 3, 96, 96), ids, mask).shape
    torch.Size([2, 1, 96, 96])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from echo_vlsm.models.base import ModelSpec, SegmentationModel, check_model, check_upsample
from echo_vlsm.structures import LABELS, STRUCTURE_NAMES, STRUCTURES

#: Per size: the input side and the DynUNet's filters per stage (stride 1 first, then 2).
CONFIGS: dict[str, dict] = {
    "paper": {"image_size": 256, "filters": (32, 64, 128, 256, 512, 512)},
    "tiny": {"image_size": 96, "filters": (8, 16, 32, 64)},
}
#: Gray images in [0, 1] mapped to about [-1, 1].
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
N_CLASSES = 1 + len(STRUCTURES)  # background + the three structures


def unet_spec(size: str) -> ModelSpec:
    """Input size, normalisation and threshold 0.5 (on the softmax probability)."""
    return ModelSpec(name="unet", size=size, image_size=CONFIGS[size]["image_size"],
                     mean=MEAN, std=STD, threshold=0.5, context_length=1)


class UNetBaseline(SegmentationModel):
    """A multi-class U-Net seen by the engine as a per-structure segmentation model.

    Args:
        net: a module mapping ``(B, 1, H, W)`` to class logits ``(B, 4, H, W)`` (background,
            ``lv``, ``myo``, ``la``), e.g. MONAI's ``DynUNet``.
        spec: input size, normalisation and threshold.

    ``class_logits(pixel_values)`` gives the four channels; ``forward(pixel_values,
    input_ids, attention_mask)`` the log-odds of the class in ``input_ids[:, 0]``.
    """

    def __init__(self, net: nn.Module, spec: ModelSpec):
        super().__init__(spec)
        self.net = net
        self._stride = 2 ** (len(CONFIGS[spec.size]["filters"]) - 1)

    def to(self, *args, **kwargs):
        """``nn.Module.to`` without ``memory_format``: DynUNet registers its blocks twice (its
        skip layers), and safetensors can store such shared tensors only when contiguous, so
        the weights stay in the default format (inputs may still be channels-last)."""
        kwargs.pop("memory_format", None)
        return super().to(*args, **kwargs)

    # -- the engine's hooks -------------------------------------------------------------
    def encoder_modules(self) -> list[nn.Module]:
        return []

    def set_encoders(self, encoders: str) -> None:
        """Only ``"trained"``: a text-free U-Net has no CLIP encoders to freeze."""
        if encoders != "trained":
            raise ValueError(f"the U-Net baseline has no CLIP encoders to freeze: encoders "
                             f"must be 'trained', got {encoders!r}")
        self.encoders = "trained"

    def side_requirement(self, height: int, width: int) -> str | None:
        if height % self._stride or width % self._stride:
            return f"sides divisible by {self._stride}"
        return None

    def tokenize(self, texts: Sequence[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The class index of each text's structure, ``(B, 1)``, and a mask of ones: a
        structure key (``lv``), its name (``Left ventricular cavity``) or a text starting
        with the name (a P1.. prompt) gives that structure's label (1..3)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no prompts given: expected a non-empty list of structure names")
        ids = [[structure_class(t)] for t in texts]
        ids_t = torch.tensor(ids, dtype=torch.long)
        return ids_t, torch.ones_like(ids_t)

    def check_inputs(self, pixel_values, input_ids, attention_mask=None) -> None:
        super().check_inputs(pixel_values, input_ids, attention_mask)
        if input_ids.shape[1] != 1 or bool(((input_ids < 1) | (input_ids >= N_CLASSES)).any()):
            raise ValueError(f"input_ids of the U-Net are (B, 1) class indices 1..{N_CLASSES - 1} "
                             "(UNetBaseline.tokenize of the structure's name), got "
                             f"{tuple(input_ids.shape)} with values {input_ids.unique().tolist()}")

    # -- the architecture ---------------------------------------------------------------
    def class_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 4, H, W)`` of background, ``lv``, ``myo``, ``la``."""
        return self.net(pixel_values[:, :1])

    def segment(self, pixel_values, input_ids, attention_mask=None) -> torch.Tensor:
        z = self.class_logits(pixel_values).float()
        c = input_ids[:, 0].long().to(z.device)
        chosen = z.gather(1, c.view(-1, 1, 1, 1).expand(-1, 1, *z.shape[-2:]))
        others = torch.ones(len(c), N_CLASSES, dtype=torch.bool, device=z.device)
        others[torch.arange(len(c), device=z.device), c] = False
        rest = z.masked_fill(~others[:, :, None, None], float("-inf"))
        return chosen - torch.logsumexp(rest, dim=1, keepdim=True)


def structure_class(text: str) -> int:
    """The label (1..3, ``echo_vlsm.structures.LABELS``) of the structure a text names.

    >>> structure_class("Left ventricular cavity"), structure_class("la")
    (1, 3)
    """
    t = str(text).strip()
    if t in LABELS:
        return LABELS[t]
    for key, name in sorted(STRUCTURE_NAMES.items(), key=lambda kv: -len(kv[1])):
        if t.lower().startswith(name.lower()):
            return LABELS[key]
    raise ValueError(f"the U-Net baseline reads the structure only: {text!r} names none of "
                     f"{list(STRUCTURE_NAMES.values())} (or the keys {list(STRUCTURES)}); "
                     "train it with prompt 'none'")


def build_unet(size: str = "paper", pretrained=None, encoders: str = "trained",
               upsample: str = "bilinear", **kwargs) -> UNetBaseline:
    """The U-Net baseline of a size with random weights (MONAI ``DynUNet``; see the module).
    ``upsample`` is accepted as the other builders take it (an exported folder's spec names
    it) and has no effect: the U-Net's logits are at the input size.

    Raises:
        ValueError: ``pretrained`` given (the baseline trains from scratch), ``encoders``
            other than ``"trained"``, an unknown size.
    """
    from monai.networks.nets import DynUNet

    if kwargs:
        raise TypeError(f"unexpected arguments for unet: {sorted(kwargs)}")
    check_model("unet", size, encoders)
    check_upsample(upsample)
    if pretrained is not None and pretrained is not False:
        raise ValueError(f"the U-Net baseline has no pretrained weights (it trains from "
                         f"scratch): pretrained must be None, got {pretrained!r}")
    filters = CONFIGS[size]["filters"]
    n = len(filters)
    net = DynUNet(spatial_dims=2, in_channels=1, out_channels=N_CLASSES, kernel_size=[3] * n,
                  strides=[1] + [2] * (n - 1), upsample_kernel_size=[2] * (n - 1),
                  filters=list(filters), norm_name=("INSTANCE", {"affine": True}),
                  act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
                  deep_supervision=False)
    model = UNetBaseline(net, unet_spec(size))
    model.set_encoders(encoders)
    return model
