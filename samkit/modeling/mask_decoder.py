"""SAM mask decoder: prompt tokens + image embedding -> mask logits and predicted IoU."""
from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts ``num_multimask_outputs + 1`` masks (output 0 is the single-mask output).

    Args:
        transformer_dim: channel width of the image embedding and tokens.
        transformer: the two-way transformer.
        num_multimask_outputs: ambiguity-aware outputs (3 in the paper).
        iou_head_depth: layers of the IoU MLP.
        iou_head_hidden_dim: width of the IoU MLP.
    """

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def output_selection(self, multimask_output: bool) -> slice:
        return slice(1, None) if multimask_output else slice(0, 1)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks.

        Args:
            image_embeddings: (1 or B, C, H, W) image embedding(s).
            image_pe: (1, C, H, W) positional encoding of the grid.
            sparse_prompt_embeddings: (B, Nt, C) point/box embeddings.
            dense_prompt_embeddings: (1 or B, C, H, W) mask-prompt embeddings.
            multimask_output: return the 3 ambiguity outputs instead of the single one.

        Returns:
            low-res mask logits (B, K, 4H, 4W) and predicted IoU (B, K), K = 3 or 1.
        """
        sel = self.output_selection(multimask_output)
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                        outputs=sel)
        return masks, iou[:, sel]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                      *, outputs: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (B, K, 4H, 4W) for the ``outputs`` tokens (all by default), IoU (B, num_mask_tokens)."""
        tokens, keys, grid = self.run_transformer(image_embeddings, image_pe, sparse_prompt_embeddings,
                                                  dense_prompt_embeddings)
        iou_pred = self.iou_prediction_head(tokens[:, 0, :])
        index = range(self.num_mask_tokens)[outputs] if outputs is not None else range(self.num_mask_tokens)
        return self.masks_from_tokens(keys, tokens[:, 1:1 + self.num_mask_tokens, :], grid, index), iou_pred

    def run_transformer(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                        sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """The two-way transformer on [IoU token, mask tokens, prompt tokens] and the image.

        Returns:
            output tokens (B, 1 + num_mask_tokens + Nt, C) (token 0 feeds the IoU head, tokens
            1..num_mask_tokens the hypernetworks), image tokens (B, H*W, C) and the grid (H, W).
            Split from :meth:`predict_masks` so callers can read the IoU before making masks.
        """
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.to(sparse_prompt_embeddings.dtype).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        if src.shape[0] not in (1, b):
            raise ValueError(f"image embeddings batch must be 1 or {b}, got {src.shape[0]}")
        hs, keys = self.transformer(src, image_pe, tokens)
        return hs, keys.expand(b, -1, -1), (src.shape[2], src.shape[3])

    def masks_from_tokens(self, keys: torch.Tensor, mask_tokens: torch.Tensor, grid: tuple[int, int],
                          index: range | list[int]) -> torch.Tensor:
        """Upscale (B, H*W, C) image tokens and apply the hypernetworks of ``index``: (B, len(index), 4H, 4W).

        The plain conv-transpose pass; :class:`samkit.modeling.fast_decoder.FastMaskDecoder`
        computes the same token-major (chosen by ``build_sam(fast_decoder=...)``).
        """
        b, _, c = keys.shape
        upscaled = self.output_upscaling(keys.transpose(1, 2).reshape(b, c, *grid))
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens[:, i, :]) for i in index], dim=1)
        bu, cu, hu, wu = upscaled.shape
        return (hyper_in @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
