"""CRIS: CLIP-Driven Referring Image Segmentation (Wang et al., CVPR 2022), the whole model.

Top to bottom: the CLIP RN50 image and text encoders (open_clip's ``ModifiedResNet`` and text
transformer, QuickGELU), whose attention pool is replaced by CRIS's *spatial* attention pool
(keeps every position, positional embedding resized bicubically to the feature grid, plus the
``connect`` 1x1 conv + BN residual that is not part of CLIP's weights); the text-conditioned
FPN neck; the 3-layer transformer decoder (sine positional encodings, cross-attention to the
word features with a padding mask); the projector, whose 3x3 kernel is predicted from the
sentence feature. Input 416 px; logits come at 1/4 of the input and are upsampled to the
input resolution inside ``forward`` as the study's CRIS code does: bicubic with
``align_corners=True`` (``upsample="bicubic-corners"``, the default); training loss and
metrics are computed on those full-resolution logits. ``upsample="bilinear"``
(``align_corners=False``) is the other choice: the two agree at 1/4 resolution only (on
random weights they differ by up to about a third of the output's range; on smooth logits
their masks overlap with dice about 0.99).

Module and parameter names follow the public CRIS code (``backbone.``, ``neck.``,
``decoder.``, ``proj.``) so its DataParallel checkpoints (``module.`` prefix) load strictly.
Deliberate differences from the public code, none of which changes the computation with the
same weights in eval mode: the padding mask comes from ``attention_mask`` (the public code
tests ``input_ids == 0``, which never fires with Hugging Face's tokenizer that pads with
49407); attention runs batch-first through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from echo_vlsm.models.base import ModelSpec, SegmentationModel, check_model
from echo_vlsm.models.weights import load_cris_pretrained

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Architecture of each size. ``paper`` is CRIS R50 (146,849,122 parameters); ``tiny`` is the
#: same architecture at small width. ``pos_grid`` is the attention pool's positional grid of
#: the CLIP weights (7 = 224 px / 32), resized to the feature grid at run time.
CONFIGS: dict[str, dict] = {
    "paper": dict(
        image_size=416, embed_dim=1024, vision_layers=(3, 4, 6, 3), vision_width=64,
        vision_head_width=64, pos_grid=7, text_width=512, text_heads=8, text_layers=12,
        fpn_in=(512, 1024, 1024), fpn_out=(256, 512, 1024),
        num_layers=3, num_head=8, dim_ffn=2048,
    ),
    "tiny": dict(
        image_size=96, embed_dim=128, vision_layers=(1, 1, 1, 1), vision_width=16,
        vision_head_width=64, pos_grid=7, text_width=64, text_heads=4, text_layers=2,
        fpn_in=(128, 256, 128), fpn_out=(32, 64, 128),
        num_layers=3, num_head=4, dim_ffn=128,
    ),
}

#: Default threshold on sigmoid(logits): CRIS's public configuration (0.35). The study's text
#: says 0.5 for both models; its CRIS runs used the CRIS configuration. See docs/weights.md.
THRESHOLD = 0.35


#: How CRIS's 1/4-resolution logits reach the input size: the study's code (its
#: ``segmenter.py``) interpolates bicubically with ``align_corners=True`` inside ``forward``.
UPSAMPLE = "bicubic-corners"

#: Dropout of the decoder's attention, FFN and residual branches. This project: 0.1 (the
#: CRIS paper's); the study's code configures 0.2 (``build_cris(dropout=0.2)``).
DROPOUT = 0.1


def cris_spec(size: str, upsample: str = UPSAMPLE) -> ModelSpec:
    """Input size, CLIP normalisation, CRIS's threshold 0.35 and the upsampling of the
    logits (default the study's ``"bicubic-corners"``)."""
    return ModelSpec(name="cris", size=size, image_size=CONFIGS[size]["image_size"],
                     mean=CLIP_MEAN, std=CLIP_STD, threshold=THRESHOLD, context_length=77,
                     upsample=upsample)


# -- small building blocks (named as in the public code so checkpoint keys match) ------------
def conv_layer(in_dim: int, out_dim: int, kernel_size: int = 1, padding: int = 0,
               stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding, bias=False),
                         nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True))


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` (same parameters and buffers, so checkpoint keys match) that also
    works in training mode on a batch of one sentence feature.

    The FPN's ``txt_proj`` normalises (B, C) sentence features: with B = 1 there is one value
    per channel, the batch variance is undefined and ``nn.BatchNorm1d`` raises. Then this
    layer normalises with its running statistics, as in eval mode, and leaves them unchanged
    for that call (there are no batch statistics to learn from); the affine weight and bias
    still get gradients. For B >= 2 it is exactly ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = x.shape[0] * (x[0, 0].numel() if x.ndim > 2 else 1) == 1
        if not (self.training and single and self.track_running_stats
                and self.running_mean is not None):
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)


def linear_layer(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear (no bias) + BatchNorm1d + ReLU (the BatchNorm also accepts a batch of one in
    training mode, see :class:`BatchNorm1d`)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), BatchNorm1d(out_dim),
                         nn.ReLU(inplace=True))


class CoordConv(nn.Module):
    """Conv layer on the features with two extra channels of x and y coordinates in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding: int = 1):
        super().__init__()
        self.conv1 = conv_layer(in_channels + 2, out_channels, kernel_size, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y]).unsqueeze(0).expand(b, -1, -1, -1)
        return self.conv1(torch.cat([x, coords], dim=1))


# -- image encoder: CLIP RN50 with CRIS's spatial attention pool -------------------------------
class SpatialAttentionPool(nn.Module):
    """CRIS's replacement of CLIP's attention pool: multi-head self-attention over all C5
    positions (no pooled class token) with CLIP's q/k/v/c projections, the positional
    embedding resized bicubically to the feature grid, plus a ``connect`` residual
    (1x1 conv + BN, not in CLIP's weights), then ReLU. Output (B, output_dim, H, W)."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.spacial_dim = spacial_dim
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(
            torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.connect = nn.Sequential(nn.Conv2d(embed_dim, output_dim, 1, bias=False),
                                     nn.BatchNorm2d(output_dim))

    def grid_positional_embedding(self, h: int, w: int) -> torch.Tensor:
        """(h*w, C) positional embedding of the spatial tokens (the class token's is unused)."""
        g, c = self.spacial_dim, self.positional_embedding.shape[1]
        pos = self.positional_embedding[1:]
        if (h, w) == (g, g):
            return pos
        pos = pos.reshape(1, g, g, c).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        return pos.flatten(2).transpose(1, 2)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.connect(x)
        return F.relu(self.attend(x) + residual)

    def combine(self, attended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` from ``attend(x)`` computed before: the ``connect`` residual added."""
        return F.relu(attended + self.connect(x))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """The attention branch (CLIP's weights, frozen with the encoders), ``(B, output_dim,
        H, W)``: ``forward`` without the ``connect`` residual and the ReLU."""
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.grid_positional_embedding(h, w).to(x.dtype)
        heads = self.num_heads

        def split(t):  # (B, N, C) -> (B, heads, N, C / heads)
            return t.reshape(b, h * w, heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(tokens)),
                                             split(self.k_proj(tokens)),
                                             split(self.v_proj(tokens)))
        out = self.c_proj(out.transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, -1, h, w)


def build_clip(cfg: dict) -> Any:
    """open_clip's CLIP ModifiedResNet (QuickGELU, OpenAI layout) with CRIS's spatial pool
    (an ``open_clip.model.CLIP``; open_clip ships no type information, hence ``Any``)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    clip = CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=CLIPVisionCfg(layers=cfg["vision_layers"], width=cfg["vision_width"],
                                 head_width=cfg["vision_head_width"],
                                 image_size=cfg["pos_grid"] * 32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=cfg["text_width"],
                             heads=cfg["text_heads"], layers=cfg["text_layers"]),
        quick_gelu=True,
    )
    old = clip.visual.attnpool
    pool = SpatialAttentionPool(cfg["pos_grid"], old.q_proj.in_features, old.num_heads,
                                cfg["embed_dim"])
    pool.load_state_dict(old.state_dict(), strict=False)  # keep CLIP's initialisation
    clip.visual.attnpool = pool
    return clip


# -- neck, decoder, projector ----------------------------------------------------------------
class FPN(nn.Module):
    """CRIS's text-conditioned feature pyramid: C5 is multiplied by the projected sentence
    feature, then fused top-down with C4 and C3 to one 1/16 map with coordinate features."""

    def __init__(self, in_channels=(512, 1024, 1024), out_channels=(256, 512, 1024)):
        super().__init__()
        c3, c4, c5 = in_channels
        o3, o4, o5 = out_channels
        self.txt_proj = linear_layer(c5, o5)
        self.f1_v_proj = conv_layer(c5, o5, 1, 0)
        self.norm_layer = nn.Sequential(nn.BatchNorm2d(o5), nn.ReLU(inplace=True))
        self.f2_v_proj = conv_layer(c4, o4, 3, 1)
        self.f2_cat = conv_layer(o5 + o4, o4, 1, 0)
        self.f3_v_proj = conv_layer(c3, o3, 3, 1)
        self.f3_cat = conv_layer(o3 + o4, o4, 1, 0)
        self.f4_proj5 = conv_layer(o5, o4, 3, 1)
        self.f4_proj4 = conv_layer(o4, o4, 3, 1)
        self.f4_proj3 = conv_layer(o4, o4, 3, 1)
        self.aggr = conv_layer(3 * o4, o4, 1, 0)
        self.coordconv = nn.Sequential(CoordConv(o4, o4, 3, 1), conv_layer(o4, o4, 3, 1))

    def forward(self, features, state: torch.Tensor) -> torch.Tensor:
        v3, v4, v5 = features
        state = self.txt_proj(state)[:, :, None, None]
        f5 = self.norm_layer(self.f1_v_proj(v5) * state)  # 1/32
        f4 = self.f2_v_proj(v4)  # 1/16
        f4 = self.f2_cat(torch.cat([f4, _up2(f5)], dim=1))
        f3 = F.avg_pool2d(self.f3_v_proj(v3), 2, 2)  # 1/8 -> 1/16
        f3 = self.f3_cat(torch.cat([f3, f4], dim=1))
        fq = torch.cat([self.f4_proj3(f3), self.f4_proj4(f4), _up2(self.f4_proj5(f5))], dim=1)
        return self.coordconv(self.aggr(fq))


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def sine_positions_1d(d_model: int, length: int, device=None, dtype=None) -> torch.Tensor:
    """(length, d_model) sine/cosine encoding of word positions (Vaswani et al.)."""
    if d_model % 2:
        raise ValueError(f"sine positional encoding needs an even width, got {d_model}")
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / d_model))
    pe = torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).reshape(length, -1)
    return pe.to(dtype or torch.float32)


def sine_positions_2d(d_model: int, height: int, width: int, device=None,
                      dtype=None) -> torch.Tensor:
    """(height*width, d_model) encoding: the first half of the channels encodes x, the second
    half y, each as interleaved sine/cosine (as in CRIS)."""
    if d_model % 4:
        raise ValueError("2-D sine positional encoding needs a width divisible by 4, got "
                         f"{d_model}")
    half = d_model // 2
    pe_x = sine_positions_1d(half, width, device)  # (W, half)
    pe_y = sine_positions_1d(half, height, device)  # (H, half)
    pe = torch.cat([pe_x[None, :, :].expand(height, -1, -1),
                    pe_y[:, None, :].expand(-1, width, -1)], dim=-1)
    return pe.reshape(height * width, d_model).to(dtype or torch.float32)


class TransformerDecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention over the visual tokens, cross-attention to the
    word features (padding masked), FFN; each attention output is layer-normalised before the
    residual sum, as in CRIS."""

    def __init__(self, d_model: int = 512, nhead: int = 8, dim_feedforward: int = 2048,
                 dropout: float = 0.1):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout,
                                                    batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, dim_feedforward), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.LayerNorm(dim_feedforward),
                                 nn.Linear(dim_feedforward, d_model))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, vis, txt, vis_pos, txt_pos, pad_mask):
        x = self.norm1(vis)
        q = x + vis_pos
        x = self.self_attn(q, q, x, need_weights=False)[0]
        vis = vis + self.dropout1(self.self_attn_norm(x))
        x = self.norm2(vis)
        x = self.multihead_attn(x + vis_pos, txt + txt_pos, txt, key_padding_mask=pad_mask,
                                need_weights=False)[0]
        vis = vis + self.dropout2(self.cross_attn_norm(x))
        return vis + self.dropout3(self.ffn(self.norm3(vis)))


class TransformerDecoder(nn.Module):
    """CRIS's vision-language decoder: ``num_layers`` layers, then a LayerNorm."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_ffn: int,
                 dropout: float):
        super().__init__()
        self.layers = nn.ModuleList([TransformerDecoderLayer(d_model, nhead, dim_ffn, dropout)
                                     for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)

    def forward(self, vis: torch.Tensor, txt: torch.Tensor, pad_mask: torch.Tensor):
        b, c, h, w = vis.shape
        vis_pos = sine_positions_2d(c, h, w, vis.device, vis.dtype)[None]
        txt_pos = sine_positions_1d(txt.shape[-1], txt.shape[1], txt.device, txt.dtype)[None]
        out = vis.flatten(2).transpose(1, 2)  # (B, HW, C)
        for layer in self.layers:
            out = layer(out, txt, vis_pos, txt_pos, pad_mask)
        return self.norm(out).transpose(1, 2).reshape(b, c, h, w)


class Projector(nn.Module):
    """Upsamples the decoder map 4x and applies a per-sample 3x3 convolution whose weights and
    bias are predicted from the sentence feature (CRIS's text-to-pixel contrast)."""

    def __init__(self, word_dim: int = 1024, in_dim: int = 256, kernel_size: int = 3):
        super().__init__()
        self.in_dim = in_dim
        self.kernel_size = kernel_size
        self.vis = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            conv_layer(in_dim * 2, in_dim * 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            conv_layer(in_dim * 2, in_dim, 3, padding=1),
            nn.Conv2d(in_dim, in_dim, 1))
        self.txt = nn.Linear(word_dim, in_dim * kernel_size * kernel_size + 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = self.vis(x)
        b, c, h, w = x.shape
        params = self.txt(state)
        weight = params[:, :-1].reshape(b, c, self.kernel_size, self.kernel_size)
        bias = params[:, -1]
        out = F.conv2d(x.reshape(1, b * c, h, w), weight.to(x.dtype), bias.to(x.dtype),
                       padding=self.kernel_size // 2, groups=b)
        return out.reshape(b, 1, h, w)


# -- the model -------------------------------------------------------------------------------
class CRIS(SegmentationModel):
    """CRIS R50.

    Args:
        size: ``"paper"`` or ``"tiny"`` (see ``CONFIGS``).
        encoders: ``"trained"`` or ``"frozen"``. Frozen: the CLIP image and text encoders get
            ``requires_grad=False`` and stay in eval mode (BatchNorm statistics fixed), except
            the spatial pool's ``connect`` residual, which CLIP's weights do not contain and
            which therefore always trains.

    ``forward(pixel_values, input_ids, attention_mask)`` -> logits (B, 1, H, W) for any B,
    1 included, in training mode too (see :class:`BatchNorm1d`); H and W must be multiples of
    32. Logits are upsampled from 1/4 resolution as ``upsample`` says (default the study's
    bicubic with ``align_corners=True``; ``"bilinear"`` selectable). ``dropout``: the
    decoder's dropout (default :data:`DROPOUT`; the study's code: 0.2). ``tokenize(texts)``
    gives the CLIP tokenizer's ``(input_ids, attention_mask)``.
    The contract (input checks, frozen encoders, upsampling) is
    :class:`~echo_vlsm.models.base.SegmentationModel`'s.
    """

    def __init__(self, size: str = "paper", encoders: str = "trained",
                 upsample: str = UPSAMPLE, dropout: float = DROPOUT):
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"CRIS dropout must be in [0, 1), got {dropout!r}")
        super().__init__(cris_spec(size, upsample))
        cfg = CONFIGS[size]
        if cfg["text_width"] != cfg["fpn_out"][1]:
            raise ValueError("CRIS needs the text width to equal the decoder width (fpn_out[1])")
        self.backbone = build_clip(cfg)
        self.neck = FPN(cfg["fpn_in"], cfg["fpn_out"])
        vis_dim = cfg["fpn_out"][1]
        self.decoder = TransformerDecoder(cfg["num_layers"], vis_dim, cfg["num_head"],
                                          cfg["dim_ffn"], float(dropout))
        self.proj = Projector(cfg["embed_dim"], vis_dim // 2, 3)
        self.set_encoders(encoders)

    # -- the contract's hooks ---------------------------------------------------------------
    def encoder_modules(self) -> list[nn.Module]:
        """The CLIP RN50 image and text encoders."""
        return [self.backbone]

    def always_trained_modules(self) -> list[nn.Module]:
        """The spatial pool's ``connect`` residual: not in CLIP's weights, so it always trains."""
        return [self.backbone.visual.attnpool.connect]

    def side_requirement(self, height: int, width: int) -> str | None:
        """H and W multiples of 32 (the C5 stride)."""
        return "H and W divisible by 32" if height % 32 or width % 32 else None

    # -- encoders' forward ------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor):
        """C3 (1/8), C4 (1/16) and the spatially pooled C5 (1/32) of the CLIP ResNet."""
        visual = self.backbone.visual
        x = visual.stem(pixel_values.to(visual.conv1.weight.dtype))
        x = visual.layer1(x)
        c3 = visual.layer2(x)
        c4 = visual.layer3(c3)
        c5 = visual.attnpool(visual.layer4(c4))
        return c3, c4, c5

    def encode_text(self, input_ids: torch.Tensor):
        """Word features (B, L, width) after the final LayerNorm, and the projected sentence
        feature (B, embed_dim) read at the end-of-text token (the highest id, as in CLIP)."""
        clip = self.backbone
        length = input_ids.shape[1]
        x = clip.token_embedding(input_ids) + clip.positional_embedding[:length]
        causal = clip.attn_mask[:length, :length]
        x = clip.transformer(x, attn_mask=causal)
        words = clip.ln_final(x)
        eot = words[torch.arange(words.shape[0], device=words.device), input_ids.argmax(dim=-1)]
        projection = clip.text_projection
        state = projection(eot) if isinstance(projection, nn.Linear) else eot @ projection
        return words, state

    # -- the forward split at the frozen encoders ---------------------------------------------
    splits_frozen = True

    def encode_frozen_image(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """C3, C4, the last stage's output and the spatial pool's attention branch
        (``SpatialAttentionPool.attend``): everything of the image encoder but the pool's
        ``connect`` residual, which always trains."""
        visual = self.backbone.visual
        x = visual.stem(pixel_values.to(visual.conv1.weight.dtype))
        x = visual.layer1(x)
        c3 = visual.layer2(x)
        c4 = visual.layer3(c3)
        x4 = visual.layer4(c4)
        return [c3, c4, x4, visual.attnpool.attend(x4)]

    def encode_frozen_text(self, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Word features and sentence feature (``encode_text``; the padding mask is applied
        in the decoder, not here)."""
        return list(self.encode_text(input_ids))

    def segment_encoded(self, image: list[torch.Tensor], text: list[torch.Tensor],
                        attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Logits ``(B, 1, H / 4, W / 4)`` from the frozen encoders' outputs: the pool's
        ``connect`` residual, the neck, the decoder (padding masked where ``attention_mask``
        is 0) and the projector."""
        if attention_mask is None:
            raise ValueError("CRIS.segment_encoded needs the attention mask of the texts")
        c3, c4, x4, attended = image
        c5 = self.backbone.visual.attnpool.combine(attended, x4)
        words, state = text
        fq = self.neck((c3, c4, c5), state)
        fq = self.decoder(fq, words, attention_mask == 0)
        # 1/4 of the input; forward upsamples these logits as spec.upsample says
        return self.proj(fq, state)

    def segment(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, 1, H / 4, W / 4)``; the padding mask comes from ``attention_mask``, or
        without one, from the first end-of-text token."""
        if attention_mask is None:  # tokens after the first end-of-text are padding
            attention_mask = (torch.cumsum(input_ids == self.tokenizer.eot_id, dim=1)
                              - (input_ids == self.tokenizer.eot_id).long()) == 0
        image = self.encode_frozen_image(pixel_values)
        text = self.encode_frozen_text(input_ids, attention_mask)
        return self.segment_encoded(image, text, attention_mask)


def build_cris(size: str = "paper", pretrained=None, encoders: str = "trained",
               trust: bool = False, upsample: str = UPSAMPLE,
               dropout: float = DROPOUT) -> CRIS:
    """CRIS of a size. ``pretrained``: ``None`` (random), ``True`` (the CRIS checkpoint at
    ``$ECHO_VLSM_CRIS_WEIGHTS`` or ``weights/cris/cris_best.pth``), or a path to either a CRIS
    checkpoint (loaded strictly) or CLIP RN50 weights (OpenAI's TorchScript ``RN50.pt`` with
    ``trust=True``, or a plain state dict; loaded into the encoders, the rest random).
    ``upsample``: ``"bicubic-corners"`` (the study's, default) or ``"bilinear"``;
    ``dropout``: the decoder's (default 0.1; the study's code 0.2)."""
    check_model("cris", size, encoders)
    model = CRIS(size, encoders=encoders, upsample=upsample, dropout=dropout)
    if pretrained is not None and pretrained is not False:
        load_cris_pretrained(model, pretrained, trust=trust)
    return model
