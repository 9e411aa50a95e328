"""Architecture settings of a SAM model, kept apart from weight metadata.

A :class:`SamConfig` says how to build the network; nothing in it says where the
weights come from (see :mod:`samkit.weights` for that).

The image encoder comes from a family of :mod:`samkit.modeling.families` named by
``encoder_family``. The ViT family's settings are the flat ``encoder_*`` fields (so configs and
stored dicts written before families existed keep working); any other family keeps its settings
in ``encoder_options`` and ignores the ``encoder_*`` fields.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass, replace
from typing import Any

from .families import get_family

DECODER_KINDS = ("sam", "hq")


@dataclass(frozen=True)
class SamConfig:
    """Shape of a SAM network: image encoder, prompt encoder and mask decoder.

    The defaults are the paper's ``vit_b``. All sizes are in pixels or channels.

    Attributes:
        image_size: side of the square model input (1024 in the paper).
        patch_size: the encoder's total stride (the ViT patch side); the image embedding is
            ``image_size // patch_size`` square.
        encoder_embed_dim: ViT width (this and the other ``encoder_*`` fields: ViT family only).
        encoder_depth: number of ViT blocks.
        encoder_num_heads: attention heads per ViT block.
        encoder_global_attn_indexes: blocks that attend globally; the rest use windows.
        encoder_window_size: window side (in patches) of windowed blocks.
        encoder_mlp_ratio: ViT MLP hidden width / embed width.
        prompt_embed_dim: width of the image embedding, prompt tokens and decoder.
        mask_in_chans: hidden channels of the mask-prompt downscaler.
        decoder_depth: two-way transformer layers in the mask decoder.
        decoder_num_heads: attention heads in the decoder.
        decoder_mlp_dim: MLP width in the decoder.
        num_multimask_outputs: ambiguity-aware masks (3 in the paper).
        iou_head_depth: layers of the IoU prediction MLP.
        iou_head_hidden_dim: width of the IoU prediction MLP.
        pixel_mean: per-channel RGB mean on the 0-255 scale.
        pixel_std: per-channel RGB std on the 0-255 scale.
        embedding_prompt_dim: width of CLIP-style embeddings accepted as prompts; 0 (the paper's
            released models) means the model has no embedding prompt path.
        embedding_prompt_hidden_dim: hidden width of that projection (0: prompt_embed_dim).
        encoder_family: name of the image-encoder family (``"vit"``: Meta's SAM).
        encoder_options: settings of a family other than ViT, as a mapping; those left out take
            the family's defaults (stored as sorted ``(name, value)`` pairs of every setting, so
            the config stays hashable and equal settings compare equal); empty for ViT.
        decoder_kind: ``"sam"`` (SAM's mask decoder) or ``"hq"`` (HQ-SAM's: an extra HQ output
            token whose mask fuses early encoder features; see :mod:`samkit.modeling.hq_decoder`).
    """

    image_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    encoder_window_size: int = 14
    encoder_mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    embedding_prompt_dim: int = 0
    embedding_prompt_hidden_dim: int = 0
    encoder_family: str = "vit"
    encoder_options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()
    decoder_kind: str = "sam"

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size must be a multiple of patch_size, got {self.image_size} and {self.patch_size}"
            )
        if (self.prompt_embed_dim // 2) % self.decoder_num_heads:
            raise ValueError(
                "prompt_embed_dim // 2 must be divisible by decoder_num_heads, got "
                f"{self.prompt_embed_dim} and {self.decoder_num_heads}"
            )
        if self.decoder_kind not in DECODER_KINDS:
            raise ValueError(f"decoder_kind must be one of {list(DECODER_KINDS)}, got {self.decoder_kind!r}")
        object.__setattr__(self, "encoder_global_attn_indexes", tuple(self.encoder_global_attn_indexes))
        object.__setattr__(self, "encoder_options", _frozen_options(self.encoder_options))
        family = get_family(self.encoder_family)
        settings = family.settings_of(self)  # the family validates its settings
        # Every setting spelled out, so equal settings give equal configs.
        if not family.config_fields and is_dataclass(settings):
            object.__setattr__(self, "encoder_options", _frozen_options(asdict(settings)))
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))

    @property
    def encoder(self) -> Any:
        """The encoder family's settings object (a :class:`~samkit.modeling.vit.ViTConfig` for ViT)."""
        return get_family(self.encoder_family).settings_of(self)

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for the paper's models)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (4x the embedding grid, 256 in the paper)."""
        return 4 * self.embedding_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        d["encoder_options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.encoder_options}
        d["pixel_mean"] = list(self.pixel_mean)
        d["pixel_std"] = list(self.pixel_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamConfig":
        """Inverse of :meth:`to_dict`; fields left out take their defaults (older stored dicts
        have no ``encoder_family``: they are ViT)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SamConfig fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "SamConfig":
        return replace(self, **changes)


def _frozen_options(options: Any) -> tuple[tuple[str, Any], ...]:
    """``encoder_options`` as sorted (name, value) pairs, lists turned into tuples."""
    items = options.items() if isinstance(options, Mapping) else options
    try:
        pairs = [(name, tuple(v) if isinstance(v, list) else v) for name, v in items]
    except (TypeError, ValueError):
        raise ValueError(f"encoder_options must be a mapping of setting names to values, got {options!r}") from None
    if not all(isinstance(name, str) for name, _ in pairs):
        raise ValueError(f"encoder_options names must be strings, got {[name for name, _ in pairs]}")
    return tuple(sorted(pairs))


def _variant(**kwargs: Any):
    def build(**overrides: Any) -> SamConfig:
        return SamConfig(**dict(kwargs, **overrides))

    return build


# Variants are short builders; caller kwargs override the defaults.
CONFIGS = {
    "vit_b": _variant(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                      encoder_global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": _variant(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                      encoder_global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": _variant(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                      encoder_global_attn_indexes=(7, 15, 23, 31)),
    # MobileSAM: TinyViT-5M distilled from vit_h, SAM's prompt encoder and decoder.
    "mobile_sam": _variant(encoder_family="tiny_vit", encoder_options={}),
    # HQ-SAM: SAM's encoders with the HQ decoder (vit_tiny: HQ on MobileSAM's TinyViT).
    "hq_vit_b": _variant(decoder_kind="hq", encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                         encoder_global_attn_indexes=(2, 5, 8, 11)),
    "hq_vit_l": _variant(decoder_kind="hq", encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                         encoder_global_attn_indexes=(5, 11, 17, 23)),
    "hq_vit_h": _variant(decoder_kind="hq", encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                         encoder_global_attn_indexes=(7, 15, 23, 31)),
    "hq_vit_tiny": _variant(decoder_kind="hq", encoder_family="tiny_vit", encoder_options={}),
    # A tiny configuration for tests and for the model trained on synthetic scenes.
    "tiny": _variant(image_size=128, patch_size=16, encoder_embed_dim=32, encoder_depth=2,
                     encoder_num_heads=2, encoder_global_attn_indexes=(1,), encoder_window_size=4,
                     prompt_embed_dim=32, mask_in_chans=4, decoder_depth=2, decoder_num_heads=2,
                     decoder_mlp_dim=64, iou_head_hidden_dim=32),
}

# Other names of variants: the official packages' registry keys.
ALIASES = {"vit_t": "mobile_sam"}


def get_config(name: str, **overrides: Any) -> SamConfig:
    """Return the architecture of a named variant (``vit_b``, ``vit_l``, ``vit_h``, ``mobile_sam`` (alias
    ``vit_t``), ``hq_vit_b``, ``hq_vit_l``, ``hq_vit_h``, ``hq_vit_tiny``, ``tiny``)."""
    name = ALIASES.get(name, name)
    if name not in CONFIGS:
        raise ValueError(f"unknown model variant {name!r}; expected one of {sorted([*CONFIGS, *ALIASES])}")
    return CONFIGS[name](**overrides)
