"""The embedding prompt path: a CLIP (text or image) embedding becomes one prompt token.

SAM's paper (section 7.5) trains the decoder with the CLIP *image* embedding of a crop
around each mask as a prompt and, at inference, gives the CLIP *text* embedding of a
phrase instead. Meta never released those weights; samkit trains them (``samkit.train``).
The module is absent from the paper's checkpoints and from models built with
``embedding_prompt_dim=0`` (the default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP


class EmbeddingPrompt(nn.Module):
    """Projects (N, D) embeddings to (N, 1, C) prompt tokens for the mask decoder.

    Embeddings are L2-normalised first (CLIP similarity lives on the unit sphere).

    Args:
        in_dim: width D of the incoming embeddings (e.g. 512 for CLIP ViT-B/32).
        embed_dim: prompt token width C (the model's ``prompt_embed_dim``).
        hidden_dim: width of the 2-layer projection MLP; defaults to ``embed_dim``.
    """

    def __init__(self, in_dim: int, embed_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.proj = MLP(in_dim, hidden_dim or embed_dim, embed_dim, 2)
        self.type_embed = nn.Embedding(1, embed_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.in_dim:
            raise ValueError(f"embeddings must have shape (N, {self.in_dim}), got {tuple(embeddings.shape)}")
        x = F.normalize(embeddings.to(self.type_embed.weight.dtype), dim=-1)
        return (self.proj(x) + self.type_embed.weight).unsqueeze(1)
