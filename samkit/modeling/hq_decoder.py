"""HQ-SAM's mask decoder (arXiv 2306.01567): SAM's decoder plus one HQ output token.

The HQ token runs through the two-way transformer with SAM's tokens. Its mask is read from
*HQ features*: the upscaled image tokens refined by two convolutions, plus the image embedding
and an early encoder feature map, each upscaled 4x (``embedding_encoder``,
``compress_vit_feat``). The early features are the output of the first global-attention block
of a ViT, or of stage 1 of a TinyViT (:data:`EARLY_FEATURES`). Parameter names follow the
official ``segment_anything_hq`` package (``hf_token``, ``hf_mlp``, ...), so ``sam_hq_vit_*.pth``
load unchanged.

Outputs, as the official decoder's: one mask per prompt. Its score is that of SAM's single
output, or with ``multimask_output`` the best of SAM's ambiguity outputs; its logits are the HQ
mask's plus that SAM output's, or the HQ mask's alone with ``hq_token_only`` (default False, as
the official predictor's).

Example:
    >>> model = build_sam(get_config("hq_vit_b"))                       # doctest: +SKIP
    >>> features, early = model.encode_with_early_features(images)       # doctest: +SKIP
    >>> logits, scores = model.mask_decoder(features, pe, sparse, dense, True, early_features=early)  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .families import get_family
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .transformer import TwoWayTransformer

if TYPE_CHECKING:  # annotations only
    from .config import SamConfig

__all__ = ["EARLY_FEATURES", "EarlyFeatures", "MaskDecoderHQ", "vit_with_early_features"]


def _upscale4(in_chans: int, mid_chans: int, out_chans: int) -> nn.Sequential:
    """Two stride-2 transposed convolutions with a layer norm and GELU between: 4x the side."""
    return nn.Sequential(nn.ConvTranspose2d(in_chans, mid_chans, kernel_size=2, stride=2), LayerNorm2d(mid_chans),
                         nn.GELU(), nn.ConvTranspose2d(mid_chans, out_chans, kernel_size=2, stride=2))


class MaskDecoderHQ(MaskDecoder):
    """SAM's mask decoder with HQ-SAM's HQ token (state dict of ``segment_anything_hq``'s ``MaskDecoderHQ``).

    Args:
        transformer_dim: channel width of the image embedding and tokens (C).
        transformer: the two-way transformer.
        num_multimask_outputs: SAM's ambiguity-aware outputs (3).
        iou_head_depth: layers of the IoU MLP.
        iou_head_hidden_dim: width of the IoU MLP.
        early_dim: channels of the early encoder features.
        hq_token_only: default of :meth:`forward`'s ``hq_token_only``.
    """

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256, early_dim: int,
                 hq_token_only: bool = False) -> None:
        super().__init__(transformer_dim=transformer_dim, transformer=transformer,
                         num_multimask_outputs=num_multimask_outputs, iou_head_depth=iou_head_depth,
                         iou_head_hidden_dim=iou_head_hidden_dim)
        c = transformer_dim
        self.hq_token_only = hq_token_only
        self.hf_token = nn.Embedding(1, c)
        self.hf_mlp = MLP(c, c, c // 8, 3)
        self.compress_vit_feat = _upscale4(early_dim, c, c // 8)
        self.embedding_encoder = _upscale4(c, c // 4, c // 8)
        self.embedding_maskfeature = nn.Sequential(nn.Conv2d(c // 8, c // 4, 3, 1, 1), LayerNorm2d(c // 4), nn.GELU(),
                                                   nn.Conv2d(c // 4, c // 8, 3, 1, 1))

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool, *,
                early_features: torch.Tensor | None = None,
                hq_token_only: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict one mask per prompt.

        Args:
            image_embeddings: (1, C, H, W) image embedding (one image; the prompts share it).
            image_pe: (1, C, H, W) positional encoding of the grid.
            sparse_prompt_embeddings: (B, Nt, C) point/box embeddings.
            dense_prompt_embeddings: (1 or B, C, H, W) mask-prompt embeddings.
            multimask_output: pair the HQ mask with the best-scoring of SAM's ambiguity outputs
                instead of SAM's single output.
            early_features: (1, early_dim, H, W) early encoder features (required).
            hq_token_only: return the HQ mask alone; None: the decoder's ``hq_token_only``.

        Returns:
            low-res mask logits (B, 1, 4H, 4W) and scores (B, 1).
        """
        if early_features is None:
            raise ValueError("the HQ decoder needs early_features from the image encoder (encode with "
                             "Sam.encode_with_early_features, or a samkit.Segmenter)")
        if image_embeddings.shape[0] != 1 or early_features.shape[0] != 1:
            raise ValueError("the HQ decoder takes one image: image_embeddings and early_features must have batch 1, "
                             f"got {image_embeddings.shape[0]} and {early_features.shape[0]}")
        hq_only = self.hq_token_only if hq_token_only is None else hq_token_only
        b, n = sparse_prompt_embeddings.shape[0], self.num_mask_tokens
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        tokens = torch.cat([output_tokens.to(sparse_prompt_embeddings.dtype).unsqueeze(0).expand(b, -1, -1),
                            sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        hs, keys = self.transformer(src, image_pe, tokens)
        grid = (src.shape[2], src.shape[3])
        upscaled = self.output_upscaling(keys.expand(b, -1, -1).transpose(1, 2).reshape(b, -1, *grid))
        hq_features = self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early_features)
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features
        bu, cu, hu, wu = upscaled.shape
        masks = (self.hf_mlp(hs[:, 1 + n])[:, None] @ upscaled_hq.reshape(bu, cu, hu * wu)).view(bu, 1, hu, wu)
        iou = self.iou_prediction_head(hs[:, 0])
        if multimask_output:
            scores, best = iou[:, 1:n].max(dim=1, keepdim=True)
            best = best[:, 0] + 1
        else:
            scores, best = iou[:, :1], torch.zeros(b, dtype=torch.long, device=iou.device)
        if not hq_only:
            hyper = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(n)], dim=1)
            chosen = hyper[torch.arange(b, device=hyper.device), best][:, None]  # (B, 1, C/8)
            masks = masks + (chosen @ upscaled.reshape(bu, cu, hu * wu)).view(bu, 1, hu, wu)
        return masks, scores


def vit_with_early_features(encoder: ImageEncoderViT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A SAM ViT's embeddings (B, C, h, w) and the output of its first global-attention block (B, D, h, w)."""
    x = encoder.patch_embed(x) + encoder.pos_embed
    early = None
    for block in encoder.blocks:
        x = block(x)
        if early is None and block.window_size == 0:
            early = x.permute(0, 3, 1, 2)
    if early is None:
        raise ValueError("HQ-SAM takes its early features from the first global-attention ViT block; this "
                         "encoder has none (encoder_global_attn_indexes is empty)")
    return encoder.neck(x.permute(0, 3, 1, 2)), early


@dataclass(frozen=True)
class EarlyFeatures:
    """Where an encoder family's early features come from.

    Attributes:
        width: ``SamConfig -> int``, their channels.
        run: ``(encoder, images) -> (embeddings, early features)``, both (B, channels, h, w).
    """

    width: Callable[["SamConfig"], int]
    run: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


EARLY_FEATURES: dict[str, EarlyFeatures] = {
    "vit": EarlyFeatures(width=lambda config: config.encoder_embed_dim, run=vit_with_early_features),
    "tiny_vit": EarlyFeatures(width=lambda config: get_family("tiny_vit").settings_of(config).embed_dims[2],
                              run=lambda encoder, x: encoder.forward_with_early_features(x)),
}


def early_features_of(config: "SamConfig") -> EarlyFeatures:
    """The :class:`EarlyFeatures` of ``config``'s encoder family; ValueError when it has none."""
    found = EARLY_FEATURES.get(config.encoder_family)
    if found is None:
        raise ValueError(f"the HQ decoder needs early encoder features; the {config.encoder_family!r} family has "
                         f"none registered (expected one of {sorted(EARLY_FEATURES)})")
    return found
