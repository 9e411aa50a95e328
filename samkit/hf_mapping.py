"""Hugging Face ``transformers`` SAM checkpoints <-> Meta's checkpoint names and :class:`SamConfig`.

``transformers.SamModel`` holds exactly the tensors of Meta's checkpoints under other names
(``vision_encoder.layers.3.layer_norm1.weight`` is ``image_encoder.blocks.3.norm1.weight``). The
conversion is pure renaming: no tensor is reshaped, transposed or scaled. The random-Fourier
positional matrix is ``(2, C // 2)`` on both sides; ``transformers`` stores it twice, tied
(``shared_image_embedding.positional_embedding`` and
``prompt_encoder.shared_embedding.positional_embedding``), Meta once
(``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``).

The image encoder's names come from its family (``EncoderFamily.hf_renames``; ViT's are in
:mod:`samkit.modeling.vit`); the prompt encoder's and mask decoder's are shared and listed here.
Configurations translate for the ViT family only (``transformers.SamModel`` has no other).

Known numerical difference: ``transformers`` builds the LayerNorms inside the decoder's two-way
attention blocks with ``mask_decoder_config.layer_norm_eps`` (1e-6) where Meta uses PyTorch's
default 1e-5. Models loaded by samkit follow Meta.

Example:
    >>> from samkit.hf_mapping import hf_to_meta_state_dict, sam_config_from_hf
    >>> meta_sd = hf_to_meta_state_dict(hf_model.state_dict())      # doctest: +SKIP
    >>> config = sam_config_from_hf(hf_model.config.to_dict())      # doctest: +SKIP
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from samkit.modeling.config import SamConfig
from samkit.modeling.families import FAMILIES

__all__ = ["hf_config_from_sam", "hf_to_meta_state_dict", "is_hf_state_dict", "meta_to_hf_state_dict",
           "sam_config_from_hf"]

_FIELDS = {
    "i": r"\d+",
    "n": r"[1-4]",
    "p": r"weight|bias",
    "lin": r"lin1|lin2",
    "rel": r"rel_pos_h|rel_pos_w",
    "attn": r"self_attn|cross_attn_token_to_image|cross_attn_image_to_token",
    "proj": r"q_proj|k_proj|v_proj|out_proj",
}

_HF_POSITIONAL = "shared_image_embedding.positional_embedding"
_HF_POSITIONAL_TIED = "prompt_encoder.shared_embedding.positional_embedding"
_META_POSITIONAL = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

# (Hugging Face name, Meta name) outside the image encoder (the encoder's are its family's
# hf_renames). A {field} matches the pattern in _FIELDS and is copied across.
_RENAMES = (
    (_HF_POSITIONAL, _META_POSITIONAL),
    ("prompt_encoder.mask_embed.conv1.{p}", "prompt_encoder.mask_downscaling.0.{p}"),
    ("prompt_encoder.mask_embed.layer_norm1.{p}", "prompt_encoder.mask_downscaling.1.{p}"),
    ("prompt_encoder.mask_embed.conv2.{p}", "prompt_encoder.mask_downscaling.3.{p}"),
    ("prompt_encoder.mask_embed.layer_norm2.{p}", "prompt_encoder.mask_downscaling.4.{p}"),
    ("prompt_encoder.mask_embed.conv3.{p}", "prompt_encoder.mask_downscaling.6.{p}"),
    ("prompt_encoder.no_mask_embed.weight", "prompt_encoder.no_mask_embed.weight"),
    ("prompt_encoder.not_a_point_embed.weight", "prompt_encoder.not_a_point_embed.weight"),
    ("prompt_encoder.point_embed.{i}.weight", "prompt_encoder.point_embeddings.{i}.weight"),
    ("mask_decoder.iou_token.weight", "mask_decoder.iou_token.weight"),
    ("mask_decoder.mask_tokens.weight", "mask_decoder.mask_tokens.weight"),
    ("mask_decoder.transformer.layers.{i}.{attn}.{proj}.{p}", "mask_decoder.transformer.layers.{i}.{attn}.{proj}.{p}"),
    ("mask_decoder.transformer.layers.{i}.layer_norm{n}.{p}", "mask_decoder.transformer.layers.{i}.norm{n}.{p}"),
    ("mask_decoder.transformer.layers.{i}.mlp.{lin}.{p}", "mask_decoder.transformer.layers.{i}.mlp.{lin}.{p}"),
    ("mask_decoder.transformer.final_attn_token_to_image.{proj}.{p}",
     "mask_decoder.transformer.final_attn_token_to_image.{proj}.{p}"),
    ("mask_decoder.transformer.layer_norm_final_attn.{p}", "mask_decoder.transformer.norm_final_attn.{p}"),
    ("mask_decoder.upscale_conv1.{p}", "mask_decoder.output_upscaling.0.{p}"),
    ("mask_decoder.upscale_layer_norm.{p}", "mask_decoder.output_upscaling.1.{p}"),
    ("mask_decoder.upscale_conv2.{p}", "mask_decoder.output_upscaling.3.{p}"),
)

# The decoder's MLPs: Meta numbers every linear layer (layers.0 .. layers.D-1); transformers
# names the first and last (proj_in, proj_out) and numbers the hidden ones from 0.
_MLP = r"(?P<mlp>mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))"
_HF_MLP = re.compile(_MLP + r"\.(?P<layer>proj_in|proj_out|layers\.(?P<k>\d+))\.(?P<p>weight|bias)")
_META_MLP = re.compile(_MLP + r"\.layers\.(?P<k>\d+)\.(?P<p>weight|bias)")


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(f"(?P<{part}>{_FIELDS[part]})" if index % 2 else re.escape(part)
                              for index, part in enumerate(parts)))


@lru_cache(maxsize=8)
def _compiled(renames: tuple[tuple[str, str], ...]) -> tuple[list, list]:
    return [(_pattern(hf), meta) for hf, meta in renames], [(_pattern(meta), hf) for hf, meta in renames]


def _rules(to_meta: bool) -> list[tuple[re.Pattern[str], str]]:
    """Rename rules of every registered family's encoder plus the shared ones."""
    renames = tuple(rule for family in FAMILIES.values() for rule in family.hf_renames) + _RENAMES
    return _compiled(renames)[0 if to_meta else 1]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, target in rules:
        match = pattern.fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    return None


def _mlp_depths(keys: Iterable[str], pattern: re.Pattern[str]) -> dict[str, int]:
    """Number of numbered ``layers.k`` per MLP prefix."""
    numbered: dict[str, set[int]] = {}
    for key in keys:
        match = pattern.fullmatch(key)
        if match:
            layers = numbered.setdefault(match["mlp"], set())
            if match["k"] is not None:
                layers.add(int(match["k"]))
    return {mlp: len(layers) for mlp, layers in numbered.items()}


def _raise_unknown(unknown: list[str], naming: str) -> None:
    if unknown:
        shown = ", ".join(unknown[:20]) + (f" ... and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        raise ValueError(f"{len(unknown)} keys are not {naming} SAM parameter names: {shown}")


def is_hf_state_dict(keys: Iterable[str]) -> bool:
    """Whether parameter names follow ``transformers``' SAM naming (``vision_encoder.*`` ...)."""
    return any(k.startswith(("vision_encoder.", "shared_image_embedding.")) for k in keys)


def hf_to_meta_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a ``transformers.SamModel`` state dict to Meta's checkpoint names.

    Args:
        state_dict: parameter name -> tensor, as ``SamModel.state_dict()`` or ``model.safetensors``.

    Returns:
        A new dict with the same tensor objects under Meta's names.

    Raises:
        ValueError: a key is not a SAM parameter, or the two tied copies of the positional
            matrix differ.
    """
    depths = _mlp_depths(state_dict, _HF_MLP)
    out: dict[str, Any] = {}
    rules = _rules(to_meta=True)
    unknown = []
    for key, value in state_dict.items():
        if key == _HF_POSITIONAL_TIED:
            if _HF_POSITIONAL in state_dict:
                other = state_dict[_HF_POSITIONAL]
                if tuple(other.shape) != tuple(value.shape) or (value.device.type != "meta"
                                                                and not bool((other == value).all())):
                    raise ValueError(f"tied tensors {_HF_POSITIONAL} and {_HF_POSITIONAL_TIED} differ; expected equal")
                continue
            out[_META_POSITIONAL] = value
            continue
        match = _HF_MLP.fullmatch(key)
        if match:
            hidden = depths[match["mlp"]]
            layer = {"proj_in": 0, "proj_out": hidden + 1}.get(match["layer"])
            index = layer if layer is not None else int(match["k"]) + 1
            out[f"{match['mlp']}.layers.{index}.{match['p']}"] = value
            continue
        target = _rename(key, rules)
        if target is None:
            unknown.append(key)
        else:
            out[target] = value
    _raise_unknown(unknown, "Hugging Face")
    return out


def meta_to_hf_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a Meta-format SAM state dict to ``transformers.SamModel`` names (inverse of
    :func:`hf_to_meta_state_dict`); the positional matrix is written under both tied names.

    Raises:
        ValueError: a key is not a Meta SAM parameter, or a decoder MLP has fewer than 2 layers
            (``transformers`` cannot represent it).
    """
    depths = _mlp_depths(state_dict, _META_MLP)
    out: dict[str, Any] = {}
    rules = _rules(to_meta=False)
    unknown = []
    for key, value in state_dict.items():
        match = _META_MLP.fullmatch(key)
        if match:
            depth, index = depths[match["mlp"]], int(match["k"])
            if depth < 2:
                raise ValueError(f"{match['mlp']} has {depth} linear layer; transformers needs at least 2")
            layer = "proj_in" if index == 0 else "proj_out" if index == depth - 1 else f"layers.{index - 1}"
            out[f"{match['mlp']}.{layer}.{match['p']}"] = value
            continue
        target = _rename(key, rules)
        if target is None:
            unknown.append(key)
            continue
        out[target] = value
        if target == _HF_POSITIONAL:
            out[_HF_POSITIONAL_TIED] = value.clone() if hasattr(value, "clone") else value
    _raise_unknown(unknown, "Meta")
    return out


# transformers' defaults, used when a config.json leaves a field out.
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "vision_config": dict(hidden_size=768, output_channels=256, num_hidden_layers=12, num_attention_heads=12,
                          num_channels=3, image_size=1024, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6,
                          qkv_bias=True, mlp_ratio=4.0, mlp_dim=None, use_abs_pos=True, use_rel_pos=True,
                          window_size=14, global_attn_indexes=[2, 5, 8, 11], num_pos_feats=128),
    "prompt_encoder_config": dict(hidden_size=256, image_size=1024, patch_size=16, mask_input_channels=16,
                                  num_point_embeddings=4, hidden_act="gelu", layer_norm_eps=1e-6),
    "mask_decoder_config": dict(hidden_size=256, hidden_act="relu", mlp_dim=2048, num_hidden_layers=2,
                                num_attention_heads=8, attention_downsample_rate=2, num_multimask_outputs=3,
                                iou_head_depth=3, iou_head_hidden_dim=256, layer_norm_eps=1e-6),
}

# Settings Meta's SAM (and so samkit) has fixed: (section, field, the only supported value).
_FIXED = [
    ("vision_config", "num_channels", 3), ("vision_config", "hidden_act", "gelu"),
    ("vision_config", "layer_norm_eps", 1e-6), ("vision_config", "qkv_bias", True),
    ("vision_config", "use_abs_pos", True), ("vision_config", "use_rel_pos", True),
    ("prompt_encoder_config", "hidden_act", "gelu"), ("prompt_encoder_config", "num_point_embeddings", 4),
    ("prompt_encoder_config", "layer_norm_eps", 1e-6),
    ("mask_decoder_config", "hidden_act", "relu"), ("mask_decoder_config", "attention_downsample_rate", 2),
]


def _side(value: Any, name: str) -> int:
    """A square size given as an int or as [s, s]."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name} must be square, got {list(value)}")
        value = value[0]
    return int(value)


def sam_config_from_hf(hf_config: Mapping[str, Any] | Any) -> SamConfig:
    """Translate a ``transformers`` SAM configuration into a :class:`SamConfig`.

    Args:
        hf_config: the parsed ``config.json`` of a SAM folder, or a ``transformers.SamConfig``
            (anything with ``to_dict()``).

    Returns:
        The architecture; ``pixel_mean`` and ``pixel_std`` keep SAM's defaults (they live in the
        processor's config, which is not read).

    Raises:
        ValueError: the configuration is not SAM's or uses a setting samkit cannot build.
    """
    if not isinstance(hf_config, Mapping) and hasattr(hf_config, "to_dict"):
        hf_config = hf_config.to_dict()
    if not isinstance(hf_config, Mapping):
        raise ValueError(f"expected a config mapping or an object with to_dict(), got {type(hf_config).__name__}")
    model_type = hf_config.get("model_type", "sam")
    if model_type != "sam":
        raise ValueError(f"expected a Hugging Face config with model_type 'sam', got {model_type!r}")
    sections = {}
    for name, defaults in _HF_DEFAULTS.items():
        given = hf_config.get(name) or {}
        if not isinstance(given, Mapping):
            given = given.to_dict() if hasattr(given, "to_dict") else {}
        sections[name] = {**defaults, **{k: v for k, v in given.items() if k in defaults and v is not None}}
    for section, field, value in _FIXED:
        if sections[section][field] != value:
            raise ValueError(f"samkit cannot build {section}.{field}={sections[section][field]!r}; expected {value!r}")
    vision, prompt, decoder = (sections[n] for n in _HF_DEFAULTS)
    width = int(vision["output_channels"])
    if not int(prompt["hidden_size"]) == int(decoder["hidden_size"]) == width:
        raise ValueError("vision_config.output_channels, prompt_encoder_config.hidden_size and "
                         "mask_decoder_config.hidden_size must be equal, got "
                         f"{width}, {prompt['hidden_size']} and {decoder['hidden_size']}")
    if 2 * int(vision["num_pos_feats"]) != width:
        raise ValueError(f"vision_config.num_pos_feats must be half the prompt width {width}, "
                         f"got {vision['num_pos_feats']}")
    image_size, patch_size = _side(vision["image_size"], "image_size"), _side(vision["patch_size"], "patch_size")
    prompt_sizes = (_side(prompt["image_size"], "image_size"), _side(prompt["patch_size"], "patch_size"))
    if prompt_sizes != (image_size, patch_size):
        raise ValueError("prompt_encoder_config image_size/patch_size must equal vision_config's, got "
                         f"{prompt['image_size']}/{prompt['patch_size']} and {image_size}/{patch_size}")
    if int(decoder["iou_head_depth"]) < 2:
        raise ValueError(f"mask_decoder_config.iou_head_depth must be >= 2, got {decoder['iou_head_depth']}")
    hidden = int(vision["hidden_size"])
    mlp_dim = vision["mlp_dim"] if vision["mlp_dim"] is not None else int(hidden * float(vision["mlp_ratio"]))
    return SamConfig(
        image_size=image_size, patch_size=patch_size, encoder_embed_dim=hidden,
        encoder_depth=int(vision["num_hidden_layers"]), encoder_num_heads=int(vision["num_attention_heads"]),
        encoder_global_attn_indexes=tuple(int(i) for i in vision["global_attn_indexes"]),
        encoder_window_size=int(vision["window_size"]), encoder_mlp_ratio=int(mlp_dim) / hidden,
        prompt_embed_dim=width, mask_in_chans=int(prompt["mask_input_channels"]),
        decoder_depth=int(decoder["num_hidden_layers"]), decoder_num_heads=int(decoder["num_attention_heads"]),
        decoder_mlp_dim=int(decoder["mlp_dim"]), num_multimask_outputs=int(decoder["num_multimask_outputs"]),
        iou_head_depth=int(decoder["iou_head_depth"]), iou_head_hidden_dim=int(decoder["iou_head_hidden_dim"]),
    )


def hf_config_from_sam(config: SamConfig) -> dict[str, Any]:
    """The ``transformers`` SAM configuration (as a ``config.json`` dict) of a :class:`SamConfig`.

    Example:
        >>> import transformers                                                   # doctest: +SKIP
        >>> hf = transformers.SamConfig(**hf_config_from_sam(get_config("tiny")))  # doctest: +SKIP
    """
    if config.encoder_family != "vit":
        raise ValueError(f"transformers' SamModel has a ViT image encoder only, got encoder_family "
                         f"{config.encoder_family!r}")
    if config.iou_head_depth < 2:
        raise ValueError(f"transformers needs iou_head_depth >= 2, got {config.iou_head_depth}")
    mlp_dim = int(config.encoder_embed_dim * config.encoder_mlp_ratio)
    return {
        "model_type": "sam",
        "vision_config": dict(
            hidden_size=config.encoder_embed_dim, output_channels=config.prompt_embed_dim,
            num_hidden_layers=config.encoder_depth, num_attention_heads=config.encoder_num_heads,
            image_size=config.image_size, patch_size=config.patch_size, mlp_ratio=config.encoder_mlp_ratio,
            mlp_dim=mlp_dim, window_size=config.encoder_window_size,
            global_attn_indexes=list(config.encoder_global_attn_indexes), num_pos_feats=config.prompt_embed_dim // 2,
        ),
        "prompt_encoder_config": dict(hidden_size=config.prompt_embed_dim, image_size=config.image_size,
                                      patch_size=config.patch_size, mask_input_channels=config.mask_in_chans),
        "mask_decoder_config": dict(
            hidden_size=config.prompt_embed_dim, mlp_dim=config.decoder_mlp_dim,
            num_hidden_layers=config.decoder_depth, num_attention_heads=config.decoder_num_heads,
            num_multimask_outputs=config.num_multimask_outputs, iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
    }
