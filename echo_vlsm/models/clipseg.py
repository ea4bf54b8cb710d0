"""CLIPSeg (Lüddecke & Ecker, CVPR 2022) on Hugging Face's ``CLIPSegForImageSegmentation``.

The study finetuned "CIDAS/clipseg-rd64-refined" (ViT-B/16 CLIP, reduce_dim 64, activations
of layers 3/6/9, complex transposed convolution). transformers runs the CLIP encoders under
``torch.no_grad()``, so the study's "unfrozen" CLIPSeg never trained its encoders (Known
defects). :class:`CLIPSeg` calls the same submodules in its own forward, so that with
``encoders="trained"`` gradients reach the vision and text encoders, and with
``encoders="frozen"`` the output equals transformers' forward on the same weights.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from echo_vlsm.models.base import ModelSpec, SegmentationModel, check_model
from echo_vlsm.models.weights import load_clipseg_pretrained

if TYPE_CHECKING:
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

HUB_ID = "CIDAS/clipseg-rd64-refined"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Architecture of each size: transformers' CLIPSegConfig arguments, and the input size.
CONFIGS: dict[str, dict] = {
    # CIDAS/clipseg-rd64-refined: 150,747,746 parameters.
    "paper": dict(
        image_size=352,
        config=dict(
            text_config=dict(),  # CLIP ViT-B/16 text tower: width 512, 12 layers, 8 heads
            vision_config=dict(patch_size=16),  # width 768, 12 layers, 12 heads, 224 px pos. emb.
            projection_dim=512,
            extract_layers=(3, 6, 9),
            reduce_dim=64,
            decoder_num_attention_heads=4,
            decoder_intermediate_size=2048,
            conditional_layer=0,
            use_complex_transposed_convolution=True,
        ),
    ),
    # The same architecture at small width for CPU tests and the demo.
    "tiny": dict(
        image_size=96,
        config=dict(
            text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                             num_attention_heads=4),
            vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                               num_attention_heads=4, patch_size=8, image_size=96),
            projection_dim=64,
            extract_layers=(1, 2, 3),
            reduce_dim=32,
            decoder_num_attention_heads=4,
            decoder_intermediate_size=128,
            conditional_layer=0,
            use_complex_transposed_convolution=True,
        ),
    ),
}


#: CLIPSeg's decoder ends in transposed convolutions that reach the input size at patch 16
#: (the paper size), as in the public CLIPSeg code, so nothing is interpolated there; the tiny
#: size (patch 8) gives H / 2, resized bilinearly (``align_corners=False``).
UPSAMPLE = "bilinear"


def clipseg_spec(size: str, upsample: str = UPSAMPLE) -> ModelSpec:
    """Input size, ImageNet normalisation and threshold 0.5 of the study's CLIPSeg setup."""
    return ModelSpec(name="clipseg", size=size, image_size=CONFIGS[size]["image_size"],
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, threshold=0.5, context_length=77,
                     upsample=upsample)


def clipseg_config(size: str) -> CLIPSegConfig:
    """transformers' ``CLIPSegConfig`` of a size."""
    from transformers import CLIPSegConfig

    return CLIPSegConfig(**CONFIGS[size]["config"])


class CLIPSeg(SegmentationModel):
    """CLIPSeg with a forward that lets gradients reach the CLIP encoders.

    Args:
        net: a ``transformers.CLIPSegForImageSegmentation`` (its weights and submodules are used).
        spec: input size, normalisation and threshold.
        encoders: ``"trained"`` (the CLIP vision and text encoders receive gradients) or
            ``"frozen"`` (their parameters have ``requires_grad=False`` and run without autograd;
            only the FiLM-conditioned decoder trains).

    ``forward(pixel_values, input_ids, attention_mask)`` returns logits ``(B, 1, H, W)`` at the
    input resolution. Images must be square with a side divisible by the patch size (the
    decoder folds the token grid back into a square); position embeddings are interpolated
    bicubically when the side differs from the CLIP config's (224 for ViT-B/16 at 352 px).
    The vision encoder runs only up to the deepest extracted layer (as the original CLIPSeg
    does): later layers do not influence the segmentation. ``tokenize(texts)`` gives the CLIP
    tokenizer's ``(input_ids, attention_mask)``. The contract (input checks, frozen encoders,
    upsampling) is :class:`~echo_vlsm.models.base.SegmentationModel`'s.
    """

    net: CLIPSegForImageSegmentation

    def __init__(self, net: CLIPSegForImageSegmentation, spec: ModelSpec,
                 encoders: str = "trained"):
        super().__init__(spec)
        self.net = net
        self.extract_layers = tuple(int(i) for i in net.config.extract_layers)
        # transformers types vision_config as dict | CLIPSegVisionConfig | None; after
        # CLIPSegConfig's __init__ it is always a CLIPSegVisionConfig.
        vision_config: Any = net.config.vision_config
        self.patch_size = int(vision_config.patch_size)
        self.set_encoders(encoders)

    # -- the contract's hooks ---------------------------------------------------------------
    def encoder_modules(self) -> list[nn.Module]:
        """The CLIP parts (vision and text towers with their projections)."""
        return [self.net.clip]

    def side_requirement(self, height: int, width: int) -> str | None:
        """Square, with a side divisible by the patch size."""
        if height != width or height % self.patch_size:
            return f"square images with a side divisible by {self.patch_size}"
        return None

    # -- forward ----------------------------------------------------------------------------
    def image_activations(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Token activations of the vision encoder after the layers in ``extract_layers``."""
        vision = self.net.clip.vision_model
        hidden = vision.embeddings(pixel_values, interpolate_pos_encoding=True)
        hidden = vision.pre_layrnorm(hidden)
        activations = []
        for i, layer in enumerate(vision.encoder.layers[: max(self.extract_layers) + 1]):
            hidden = layer(hidden, None)
            if i in self.extract_layers:
                activations.append(hidden)
        return [activations[sorted(self.extract_layers).index(i)] for i in self.extract_layers]

    def text_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        """Projected sentence feature of the CLIP text encoder (the FiLM condition)."""
        features = self.net.clip.get_text_features(input_ids, attention_mask=attention_mask)
        return features.pooler_output

    # -- the forward split at the frozen encoders ---------------------------------------------
    splits_frozen = True

    def encode_frozen_image(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The activations of the extracted layers (``image_activations``), ``(B, T, D)``."""
        return self.image_activations(pixel_values)

    def encode_frozen_text(self, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """The FiLM condition (``text_embedding``), ``(B, projection_dim)``."""
        return [self.text_embedding(input_ids, attention_mask)]

    def segment_encoded(self, image: list[torch.Tensor], text: list[torch.Tensor],
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's logits from the activations and the condition."""
        logits = self.net.decoder(image, text[0]).logits
        return logits.reshape(image[0].shape[0], 1, *logits.shape[-2:])

    def segment(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder logits ``(B, 1, H / 2, W / 2)`` for patch 8, ``(B, 1, H, W)`` for 16."""
        frozen = self.encoders == "frozen"
        with torch.no_grad() if frozen else contextlib.nullcontext():
            activations = self.encode_frozen_image(pixel_values)
            condition = self.encode_frozen_text(input_ids, attention_mask)
        return self.segment_encoded(activations, condition, attention_mask)


def _default_decoder_init(net: CLIPSegForImageSegmentation) -> None:
    """PyTorch's default initialisation for the decoder's FiLM, reduce and transposed
    convolution layers of a randomly initialised CLIPSeg. transformers draws them from
    N(0, 1), which gives logits of magnitude ~50 at the start and a saturated sigmoid."""
    decoder = net.decoder
    for module in [decoder.film_mul, decoder.film_add, *decoder.reduces,
                   *decoder.transposed_convolution.modules()]:
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()


def _check_size(config, size: str, source) -> None:
    """The loaded weights must be of the requested size's architecture."""
    expected = clipseg_config(size)
    fields = [("vision_config", "hidden_size"), ("vision_config", "patch_size"),
              ("vision_config", "num_hidden_layers"), ("text_config", "hidden_size"),
              (None, "reduce_dim"), (None, "projection_dim")]
    wrong = []
    for part, field in fields:
        have = getattr(getattr(config, part) if part else config, field)
        want = getattr(getattr(expected, part) if part else expected, field)
        if have != want:
            wrong.append(f"{part + '.' if part else ''}{field} {have} (size {size!r}: {want})")
    if wrong:
        other = [s for s in CONFIGS if s != size]
        raise ValueError(f"CLIPSeg weights {source} are not of size {size!r}: "
                         + ", ".join(wrong) + f"; build with size={other[0]!r}?")


def build_clipseg(size: str = "paper", pretrained=None, encoders: str = "trained",
                  upsample: str = UPSAMPLE, **kwargs) -> CLIPSeg:
    """CLIPSeg of a size; ``pretrained``: ``None`` (random), ``True`` (the study's weights,
    "CIDAS/clipseg-rd64-refined" or ``$ECHO_VLSM_CLIPSEG_WEIGHTS``), a hub id or a local
    directory saved with ``save_pretrained``. ``upsample``: see :data:`UPSAMPLE` (no effect
    at the paper size, whose decoder output is already at the input size)."""
    from transformers import CLIPSegForImageSegmentation

    if kwargs:
        raise TypeError(f"unexpected arguments for clipseg: {sorted(kwargs)}")
    check_model("clipseg", size, encoders)
    spec = clipseg_spec(size, upsample)
    if pretrained is None or pretrained is False:
        net = CLIPSegForImageSegmentation(clipseg_config(size))
        _default_decoder_init(net)
    else:
        net = load_clipseg_pretrained(pretrained)
        _check_size(net.config, size, pretrained)
    return CLIPSeg(net, spec, encoders=encoders)
