"""Two-way transformer of the SAM mask decoder.

Prompt tokens attend to image tokens and image tokens attend back to prompt tokens.
Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention with optional down-projection of the internal width.

    Inputs are (B, N, C); ``downsample_rate`` divides the width used inside attention.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads must divide {self.internal_dim}, got {num_heads}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention on already projected (B, N, internal) q, k, v; returns (B, Nq, C)."""
        out = F.scaled_dot_product_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v))
        out = out.transpose(1, 2).flatten(2)
        return self.out_proj(out)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, token->image attention, MLP, image->token attention."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor, *, shared_image_projections: tuple[torch.Tensor, ...] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block.

        Args:
            queries: (B, Nt, C) prompt tokens.
            keys: (B, Ni, C) image tokens.
            query_pe: (B, Nt, C) positional encoding of the tokens.
            key_pe: (B or 1, Ni, C) positional encoding of the image tokens.
            shared_image_projections: optional precomputed ``(k, v, q)`` projections of the image
                tokens, (1, Ni, internal) each, for when ``keys`` is identical for every prompt.
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        cross = self.cross_attn_token_to_image
        if shared_image_projections is not None:
            k_img, v_img, q_img = shared_image_projections
            b = queries.shape[0]
            attn = cross.attend(cross.q_proj(queries + query_pe), k_img.expand(b, -1, -1), v_img.expand(b, -1, -1))
        else:
            attn = cross(queries + query_pe, keys + key_pe, keys)
        queries = self.norm2(queries + attn)
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        back = self.cross_attn_image_to_token
        if shared_image_projections is not None:
            b = queries.shape[0]
            attn = back.attend(q_img.expand(b, -1, -1), back.k_proj(q), back.v_proj(queries))
        else:
            attn = back(keys + key_pe, q, queries)
        keys = self.norm4(keys + attn)
        return queries, keys

    def image_projections(self, keys: torch.Tensor, key_pe: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Projections of the image tokens that do not depend on the prompt (for sharing)."""
        cross, back = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        with_pe = keys + key_pe
        return cross.k_proj(with_pe), cross.v_proj(keys), back.q_proj(with_pe)


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayAttentionBlock` with a final token->image attention."""

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor,
                *, image_shared: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: (B, C, H, W) image tokens, or (1, C, H, W) when ``image_shared``.
            image_pe: (1, C, H, W) positional encoding.
            point_embedding: (B, Nt, C) prompt tokens.
            image_shared: the image tokens are the same for every prompt; the prompt-independent
                projections of the first block are then computed once instead of B times.

        Returns:
            tokens (B, Nt, C) and image tokens (B, H*W, C).
        """
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        shared = None
        if image_shared and self.layers:
            shared = self.layers[0].image_projections(keys, key_pe)
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe,
                                  shared_image_projections=shared if i == 0 else None)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attn)
        return queries, keys
