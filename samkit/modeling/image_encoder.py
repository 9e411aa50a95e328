"""SAM image encoder: a ViT with windowed and global attention and a convolutional neck.

Parameter names follow Meta's checkpoints (``patch_embed.proj``, ``blocks.N.attn.qkv``,
``blocks.N.attn.rel_pos_h`` ...), so official weights load unchanged.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with the
decomposed relative-position bias passed as an additive mask. For global attention the
bias is built for a block of query rows at a time, so the full (tokens x tokens) matrix
is never materialised for all heads at once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock

# Upper bound on the bytes of one relative-position bias block (per attention call). On a CPU
# smaller blocks stay nearer the cache; on a GPU each block is a kernel launch that must fill
# the device, so its blocks are larger (vit_b, batch 8, fp32 global attention: 7 blocks of at
# most 682 query rows instead of 49 of at most 85).
_BIAS_BLOCK_BYTES = 128 * 1024 * 1024
_BIAS_BLOCK_BYTES_GPU = 1024 * 1024 * 1024


def resize_relative_positions(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample a (L, C) relative-position table to (length, C) when L differs."""
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(rel_pos.float().T[None], size=length, mode="linear")
    return resized[0].T.to(rel_pos.dtype)


def relative_position_lookup(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) pair along one axis.

    Args:
        q_size: number of query positions along the axis.
        k_size: number of key positions along the axis.
        rel_pos: (L, C) learned table.

    Returns:
        (q_size, k_size, C) embeddings.
    """
    table = resize_relative_positions(rel_pos, 2 * max(q_size, k_size) - 1)
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    index = (q_coords - k_coords) + (k_size - 1) * k_scale
    return table[index.long()]


def decomposed_relative_bias(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                             size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Height and width terms of the decomposed relative-position bias (MViTv2).

    Args:
        q: (B, heads, H*W, C) unscaled queries.
        rel_h: (H, H, C) lookup from :func:`relative_position_lookup`.
        rel_w: (W, W, C) lookup.
        size: (H, W) of the token grid.

    Returns:
        ``bias_h`` (B, heads, H, W, H) and ``bias_w`` (B, heads, H, W, W); the bias of query
        (qh, qw) on key (kh, kw) is ``bias_h[..., qh, qw, kh] + bias_w[..., qh, qw, kw]``.
    """
    h, w = size
    r_q = q.unflatten(2, (h, w))
    bias_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rel_h)
    bias_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rel_w)
    return bias_h, bias_w


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) token grid with relative positions."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, use_rel_pos: bool = True,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos=True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        n = h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            rel_h = relative_position_lookup(h, h, self.rel_pos_h).to(q.dtype)
            rel_w = relative_position_lookup(w, w, self.rel_pos_w).to(q.dtype)
            bias_h, bias_w = decomposed_relative_bias(q, rel_h, rel_w, (h, w))
            bias_h = bias_h.flatten(2, 3)  # (B, heads, N, H)
            bias_w = bias_w.flatten(2, 3)  # (B, heads, N, W)
            row_bytes = b * self.num_heads * n * q.element_size()
            budget = _BIAS_BLOCK_BYTES if q.device.type == "cpu" else _BIAS_BLOCK_BYTES_GPU
            rows = max(1, min(n, budget // max(row_bytes, 1)))
            outs = []
            for start in range(0, n, rows):
                stop = min(n, start + rows)
                mask = (bias_h[:, :, start:stop, :, None] + bias_w[:, :, start:stop, None, :]).flatten(3)
                outs.append(F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=mask))
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(out)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into (B * nWindows, window, window, C), zero-padding H and W up."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


class Block(nn.Module):
    """Transformer block; ``window_size`` 0 means global attention."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 use_rel_pos: bool = True, window_size: int = 0,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
                              input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            size = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded, size)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding; returns (B, H/patch, W/patch, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """The SAM ViT image encoder.

    Input: (B, 3, image_size, image_size) normalised, padded images.
    Output: (B, out_chans, image_size / patch, image_size / patch) image embeddings.
    """

    def __init__(self, *, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 out_chans: int = 256, qkv_bias: bool = True, use_rel_pos: bool = True,
                 window_size: int = 14, global_attn_indexes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
                  window_size=0 if i in global_attn_indexes else window_size, input_size=(grid, grid))
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
