"""The TinyViT encoder family (MobileSAM's image encoder): settings, builder, recognition, inference.

TinyViT (arXiv 2207.10666) as MobileSAM (arXiv 2306.14289) uses it: a convolutional stem
(stride 4), one stage of MBConv blocks, three stages of windowed-attention blocks, then SAM's
neck. Patch merging halves the grid after stages 0 and 1 and keeps it after stage 2, so the
total stride is 16 and a 1024 input gives SAM's 64 x 64 embedding. Parameter names follow the
official ``mobile_sam`` package (``patch_embed.seq.0.c``, ``layers.1.blocks.0.attn.qkv``,
``attention_biases`` ...), so ``mobile_sam.pt`` loads unchanged; its ImageNet head
(``norm_head``, ``head``) is kept for that reason and unused.

Attention inside a window adds a learned per-head bias that depends on the absolute offset
``(|dy|, |dx|)`` between two positions; table entry ``|dy| * window + |dx|`` holds it. Grids
that are not a multiple of the window are zero-padded at the bottom and right before the
attention's layer norm (the padded positions are keys too), as in the official code.

Example:
    >>> from samkit.modeling import build_sam, get_config
    >>> model = build_sam(get_config("mobile_sam"))                     # doctest: +SKIP
    >>> model.image_encoder(torch.zeros(1, 3, 1024, 1024)).shape         # doctest: +SKIP
    torch.Size([1, 256, 64, 64])
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from samkit.errors import CheckpointError

from .common import LayerNorm2d
from .encoder_family import EncoderFamily, block_indexes

if TYPE_CHECKING:  # annotations only
    from .config import SamConfig

__all__ = ["TINY_VIT", "TinyViTConfig", "TinyViTEncoder", "build_tiny_vit_encoder", "infer_tiny_vit", "is_tiny_vit"]

_PREFIX = "image_encoder."
STAGES = 4
STRIDE = 16  # stem 4, then merges of 2, 2 and 1


@dataclass(frozen=True)
class TinyViTConfig:
    """Settings of a TinyViT image encoder (MobileSAM's are the defaults).

    Attributes:
        embed_dims: widths of the 4 stages.
        depths: blocks per stage (stage 0: MBConv blocks, stages 1-3: attention blocks).
        num_heads: attention heads of stages 1-3 (stage 0 has no attention; the official
            code's 4-entry lists carry an unused first entry).
        window_sizes: attention window sides (in grid cells) of stages 1-3.
        mlp_ratio: MLP hidden width / stage width of the attention blocks.
        mbconv_expand_ratio: hidden width / width of the MBConv blocks.
        local_conv_size: kernel side of the depthwise convolution between attention and MLP.
        num_classes: outputs of the unused ImageNet head (1000 in ``mobile_sam.pt``; 0: none).
    """

    embed_dims: tuple[int, int, int, int] = (64, 128, 160, 320)
    depths: tuple[int, int, int, int] = (2, 2, 6, 2)
    num_heads: tuple[int, int, int] = (4, 5, 10)
    window_sizes: tuple[int, int, int] = (7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000

    def __post_init__(self) -> None:
        for name, want in (("embed_dims", STAGES), ("depths", STAGES), ("num_heads", STAGES - 1),
                           ("window_sizes", STAGES - 1)):
            value = tuple(getattr(self, name))
            if len(value) != want or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ValueError(f"TinyViT {name} must be {want} positive ints, got {value}")
            object.__setattr__(self, name, value)
        bad = [(d, h) for d, h in zip(self.embed_dims[1:], self.num_heads) if d % h]
        if bad:
            raise ValueError(f"TinyViT stage widths must be divisible by their heads, got (width, heads) {bad}")
        if self.local_conv_size < 1 or self.local_conv_size % 2 == 0 or self.num_classes < 0:
            raise ValueError("TinyViT local_conv_size must be odd and num_classes >= 0, got "
                             f"{self.local_conv_size} and {self.num_classes}")


class ConvNorm(nn.Module):
    """Convolution without bias, then batch norm (keys ``c`` and ``bn``); padding keeps the side / stride."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


class PatchEmbed(nn.Module):
    """(B, 3, S, S) -> (B, dim, S/4, S/4): two stride-2 3x3 convolutions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvNorm(3, dim // 2, 3, 2), nn.GELU(), ConvNorm(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, skip, GELU; (B, C, H, W) in and out."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvNorm(dim, hidden)
        self.conv2 = ConvNorm(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + self.conv3(y))


class PatchMerging(nn.Module):
    """(B, C, H, W) -> (B, C', H / stride, W / stride): 1x1, depthwise 3x3 with the stride, 1x1."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, out_dim)
        self.conv2 = ConvNorm(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvNorm(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Multi-head attention over (B, N, C) tokens of one window (N = window^2), with offset biases."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        index = (rows[:, None] - rows[None]).abs() * window + (cols[:, None] - cols[None]).abs()
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # Per head the projection holds [q, k, v] side by side: (B, N, heads, 3 * head_dim).
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1).transpose(1, 2).chunk(3, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Layer norm, linear, GELU, linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise convolution, MLP; (B, H, W, C) in and out."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvNorm(dim, dim, local_conv_size, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        pad_h, pad_w = (s - h % s) % s, (s - w % s) % s
        windows = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        hp, wp = h + pad_h, w + pad_w
        windows = windows.view(b, hp // s, s, wp // s, s, c).transpose(2, 3).reshape(-1, s * s, c)
        attended = self.attn(windows).view(b, hp // s, wp // s, s, s, c).transpose(2, 3).reshape(b, hp, wp, c)
        x = x + attended[:, :h, :w]
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks then patch merging; (B, C, H, W) in and out."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks, then patch merging unless last; (B, C, H, W) in and out."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int,
                 downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size)
                                    for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViTEncoder(nn.Module):
    """MobileSAM's image encoder.

    Input: (B, 3, img_size, img_size) normalised, padded images (``img_size`` a multiple of 16).
    Output: (B, out_chans, img_size / 16, img_size / 16) image embeddings.
    """

    def __init__(self, settings: TinyViTConfig, *, img_size: int = 1024, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        dims, s = settings.embed_dims, settings
        self.patch_embed = PatchEmbed(dims[0])
        first_merge = PatchMerging(dims[0], dims[1], 2)
        stages: list[nn.Module] = [ConvStage(dims[0], s.depths[0], s.mbconv_expand_ratio, first_merge)]
        for i in range(1, STAGES):  # merges halve the side, except the one into the last stage
            merge = PatchMerging(dims[i], dims[i + 1], 1 if i + 1 == STAGES - 1 else 2) if i < STAGES - 1 else None
            stages.append(AttentionStage(dims[i], s.depths[i], s.num_heads[i - 1], s.window_sizes[i - 1],
                                         s.mlp_ratio, s.local_conv_size, merge))
        self.layers = nn.ModuleList(stages)
        self.norm_head = nn.LayerNorm(dims[-1])  # ImageNet head: in the checkpoints, unused by SAM
        self.head = nn.Linear(dims[-1], s.num_classes) if s.num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out_chans, kernel_size=1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False), LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_early_features(x)[0]

    def forward_with_early_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embeddings and the output of stage 1, (B, embed_dims[2], S/16, S/16) (HQ-SAM fuses it)."""
        if x.shape[-1] % STRIDE or x.shape[-2] % STRIDE:
            raise ValueError(f"TinyViT input sides must be multiples of {STRIDE}, got {tuple(x.shape[-2:])}")
        x = self.layers[1](self.layers[0](self.patch_embed(x)))
        early = x
        for stage in self.layers[2:]:
            x = stage(x)
        return self.neck(x), early


def build_tiny_vit_encoder(config: "SamConfig") -> TinyViTEncoder:
    """The TinyViT image encoder of ``config`` (its ``encoder_options``, image size, embedding width)."""
    if config.patch_size != STRIDE:
        raise ValueError(f"the tiny_vit family has a total stride of {STRIDE}: patch_size must be {STRIDE}, "
                         f"got {config.patch_size}")
    return TinyViTEncoder(TINY_VIT.settings_of(config), img_size=config.image_size, out_chans=config.prompt_embed_dim)


def is_tiny_vit(keys: Collection[str]) -> bool:
    """Whether the keys hold a TinyViT encoder (convolutional stem, MBConv first stage)."""
    return (f"{_PREFIX}patch_embed.seq.0.c.weight" in keys
            and f"{_PREFIX}layers.0.blocks.0.conv1.c.weight" in keys)


def infer_tiny_vit(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """SamConfig fields implied by a TinyViT encoder's tensor shapes.

    The image size is in no shape (TinyViT has no positional table); the stride is always 16.
    Heads and window sides come from the ``attention_biases`` tables, (heads, window^2).

    Raises:
        CheckpointError: a key TinyViT needs is missing or the blocks disagree.
    """
    keys = list(state_dict)

    def shape(key: str) -> tuple[int, ...]:
        if _PREFIX + key not in state_dict:
            raise CheckpointError(f"not a TinyViT SAM state dict: expected key {_PREFIX + key!r}, "
                                  f"got keys like {keys[:5]}")
        return tuple(state_dict[_PREFIX + key].shape)

    depths = [len(block_indexes(keys, rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.")) for i in range(STAGES)]
    if min(depths) == 0 or block_indexes(keys, r"image_encoder\.layers\.(\d+)\.") != list(range(STAGES)):
        raise CheckpointError(f"a TinyViT encoder has {STAGES} stages of blocks, got blocks per stage {depths}")
    hidden, dim0 = shape("layers.0.blocks.0.conv1.c.weight")[:2]
    dims, heads, windows, mlp_ratios, local = [dim0], [], [], set(), set()
    for i in range(1, STAGES):
        for j in range(depths[i]):
            block = f"layers.{i}.blocks.{j}."
            n_heads, table = shape(block + "attn.attention_biases")
            window = math.isqrt(table)
            if j == 0:
                dims.append(shape(block + "attn.norm.weight")[0])
                heads.append(n_heads)
                windows.append(window)
            if (n_heads, window) != (heads[-1], windows[-1]) or window * window != table:
                raise CheckpointError(f"inconsistent TinyViT stage {i}: block {j} has attention biases "
                                      f"{(n_heads, table)}, block 0 {(heads[-1], windows[-1] ** 2)}")
            mlp_ratios.add(shape(block + "mlp.fc1.weight")[0] / dims[-1])
            local.add(shape(block + "local_conv.c.weight")[-1])
    if len(mlp_ratios) != 1 or len(local) != 1:
        raise CheckpointError(f"inconsistent TinyViT blocks: MLP ratios {sorted(mlp_ratios)}, depthwise kernels "
                              f"{sorted(local)}; expected one of each")
    head = state_dict.get(f"{_PREFIX}head.weight")
    options = dict(embed_dims=tuple(dims), depths=tuple(depths), num_heads=tuple(heads), window_sizes=tuple(windows),
                   mlp_ratio=mlp_ratios.pop(), mbconv_expand_ratio=hidden / dim0, local_conv_size=local.pop(),
                   num_classes=0 if head is None else int(head.shape[0]))
    return {"patch_size": STRIDE, "encoder_options": options}


TINY_VIT = EncoderFamily(name="tiny_vit", settings=TinyViTConfig, build=build_tiny_vit_encoder,
                         matches=is_tiny_vit, infer=infer_tiny_vit)
