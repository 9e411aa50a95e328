"""The ViT encoder family (Meta's SAM ``vit_b`` / ``vit_l`` / ``vit_h``): settings, builder,
recognition and shape inference, Hugging Face key names.

Its settings are the flat ``encoder_*`` fields of :class:`~samkit.modeling.config.SamConfig`
(kept flat so ``SamConfig(encoder_embed_dim=...)`` keeps working); :class:`ViTConfig` is the
family's view of them.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from samkit.errors import CheckpointError

from .encoder_family import EncoderFamily, block_indexes
from .image_encoder import ImageEncoderViT

if TYPE_CHECKING:  # annotations only
    from .config import SamConfig

__all__ = ["VIT", "ViTConfig", "build_vit_encoder", "infer_vit", "is_vit"]

_PREFIX = "image_encoder."


@dataclass(frozen=True)
class ViTConfig:
    """Settings of a SAM ViT image encoder (the patch side is ``SamConfig.patch_size``).

    Attributes:
        embed_dim: ViT width.
        depth: number of blocks.
        num_heads: attention heads per block.
        global_attn_indexes: blocks that attend globally; the rest use windows.
        window_size: window side (in patches) of windowed blocks.
        mlp_ratio: MLP hidden width / embed width.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.num_heads < 1 or self.embed_dim % self.num_heads:
            raise ValueError("encoder_embed_dim must be divisible by encoder_num_heads, got "
                             f"{self.embed_dim} and {self.num_heads}")
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"encoder_global_attn_indexes must lie in [0, {self.depth}), got {bad}")


def build_vit_encoder(config: "SamConfig") -> ImageEncoderViT:
    """The ViT image encoder of ``config`` (its ``encoder_*`` fields, image and patch size)."""
    vit = VIT.settings_of(config)
    return ImageEncoderViT(
        img_size=config.image_size, patch_size=config.patch_size, embed_dim=vit.embed_dim, depth=vit.depth,
        num_heads=vit.num_heads, mlp_ratio=vit.mlp_ratio, out_chans=config.prompt_embed_dim,
        window_size=vit.window_size, global_attn_indexes=vit.global_attn_indexes,
    )


def is_vit(keys: Collection[str]) -> bool:
    """Whether the keys hold a SAM ViT encoder (patch embedding, absolute positions, blocks)."""
    return f"{_PREFIX}patch_embed.proj.weight" in keys and f"{_PREFIX}pos_embed" in keys


def infer_vit(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """SamConfig fields implied by a ViT encoder's tensor shapes.

    The heads come from the relative-position tables, ``(2 * side - 1, head_dim)``: blocks whose
    side is the embedding grid attend globally, the others use windows of that side (so the
    window size is implied only when some block is windowed).

    Raises:
        CheckpointError: a key the ViT needs is missing or the blocks disagree.
    """
    keys = list(state_dict)

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"not a SAM state dict: expected key {key!r}, got keys like {keys[:5]}")
        return tuple(state_dict[key].shape)

    embed_dim, _, patch_size, _ = shape(f"{_PREFIX}patch_embed.proj.weight")
    grid = shape(f"{_PREFIX}pos_embed")[1]
    depth = len(block_indexes(keys, r"image_encoder\.blocks\.(\d+)\."))
    global_blocks, windows, head_dims = [], set(), set()
    for i in range(depth):
        length, head_dim = shape(f"{_PREFIX}blocks.{i}.attn.rel_pos_h")
        head_dims.add(head_dim)
        if length == 2 * grid - 1:
            global_blocks.append(i)
        else:
            windows.add((length + 1) // 2)
    if len(windows) > 1 or len(head_dims) != 1 or embed_dim % next(iter(head_dims)):
        raise CheckpointError(f"inconsistent ViT blocks: window sides {sorted(windows)}, head widths "
                              f"{sorted(head_dims)} for width {embed_dim}; expected one of each")
    found = dict(image_size=grid * patch_size, patch_size=patch_size, encoder_embed_dim=embed_dim,
                 encoder_depth=depth, encoder_num_heads=embed_dim // head_dims.pop(),
                 encoder_global_attn_indexes=tuple(global_blocks),
                 encoder_mlp_ratio=shape(f"{_PREFIX}blocks.0.mlp.lin1.weight")[0] / embed_dim)
    if windows:
        found["encoder_window_size"] = windows.pop()
    return found


# (Hugging Face name, Meta name) of the encoder's parameters; {field}s are hf_mapping's patterns.
HF_RENAMES = (
    ("vision_encoder.patch_embed.projection.{p}", "image_encoder.patch_embed.proj.{p}"),
    ("vision_encoder.pos_embed", "image_encoder.pos_embed"),
    ("vision_encoder.layers.{i}.layer_norm1.{p}", "image_encoder.blocks.{i}.norm1.{p}"),
    ("vision_encoder.layers.{i}.layer_norm2.{p}", "image_encoder.blocks.{i}.norm2.{p}"),
    ("vision_encoder.layers.{i}.attn.qkv.{p}", "image_encoder.blocks.{i}.attn.qkv.{p}"),
    ("vision_encoder.layers.{i}.attn.proj.{p}", "image_encoder.blocks.{i}.attn.proj.{p}"),
    ("vision_encoder.layers.{i}.attn.{rel}", "image_encoder.blocks.{i}.attn.{rel}"),
    ("vision_encoder.layers.{i}.mlp.{lin}.{p}", "image_encoder.blocks.{i}.mlp.{lin}.{p}"),
    ("vision_encoder.neck.conv1.{p}", "image_encoder.neck.0.{p}"),
    ("vision_encoder.neck.layer_norm1.{p}", "image_encoder.neck.1.{p}"),
    ("vision_encoder.neck.conv2.{p}", "image_encoder.neck.2.{p}"),
    ("vision_encoder.neck.layer_norm2.{p}", "image_encoder.neck.3.{p}"),
)

VIT = EncoderFamily(
    name="vit", settings=ViTConfig, build=build_vit_encoder, matches=is_vit, infer=infer_vit,
    config_fields=(("embed_dim", "encoder_embed_dim"), ("depth", "encoder_depth"),
                   ("num_heads", "encoder_num_heads"), ("global_attn_indexes", "encoder_global_attn_indexes"),
                   ("window_size", "encoder_window_size"), ("mlp_ratio", "encoder_mlp_ratio")),
    hf_renames=HF_RENAMES,
)
