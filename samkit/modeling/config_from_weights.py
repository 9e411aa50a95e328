"""What a Meta-format SAM state dict says about its architecture, and whether a config agrees.

The image encoder's fields come from its family (:mod:`samkit.modeling.families`, picked by
the keys); the prompt encoder's and mask decoder's from shapes every family shares. A field
is *implied* when a tensor shape fixes it; the decoder's head count is in no shape and is
*assumed* (SAM's 8, or the largest count up to 8 that divides half the width).

:func:`config_differences` compares a config with the implied fields, and
:func:`exceeded_limits` bounds the sizes a checkpoint may ask for, and
:func:`check_architecture` runs both and compares keys and shapes with a model built on the
``meta`` device, so :func:`samkit.load_model` refuses a crafted or mismatched config before
allocating anything.

Example:
    >>> fields = infer_fields(build_sam(get_config("tiny")).state_dict())   # doctest: +SKIP
    >>> fields["encoder_family"], fields["image_size"]                         # doctest: +SKIP
    ('vit', 128)
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from samkit.errors import CheckpointError

from .encoder_family import EncoderFamily, block_indexes
from .families import FAMILIES, family_of, get_family

if TYPE_CHECKING:  # annotations only
    from .config import SamConfig

__all__ = ["LIMITS", "check_architecture", "config_differences", "exceeded_limits", "implied_fields",
           "infer_fields", "key_listing"]

logger = logging.getLogger(__name__)

DEFAULT_FAMILY = "vit"

# Largest value load_model accepts per field: far above every released SAM (vit_h: width 1280,
# depth 32, image 1024), far below sizes that could not be allocated.
LIMITS: dict[str, float] = {
    "image_size": 8192, "patch_size": 8192, "encoder_embed_dim": 16384, "encoder_depth": 256,
    "encoder_num_heads": 1024, "encoder_window_size": 8192, "encoder_mlp_ratio": 64.0,
    "prompt_embed_dim": 16384, "mask_in_chans": 16384, "decoder_depth": 256, "decoder_num_heads": 1024,
    "decoder_mlp_dim": 65536, "num_multimask_outputs": 64, "iou_head_depth": 256, "iou_head_hidden_dim": 65536,
    "embedding_prompt_dim": 65536, "embedding_prompt_hidden_dim": 65536,
}


def _decoder_fields(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Prompt-encoder, mask-decoder and embedding-prompt fields implied by their shapes."""
    keys = list(state_dict)

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"not a SAM state dict: expected key {key!r}, got keys like {keys[:5]}")
        return tuple(state_dict[key].shape)

    width = shape("prompt_encoder.no_mask_embed.weight")[1]
    found = dict(
        prompt_embed_dim=width, mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
        decoder_depth=len(block_indexes(keys, r"mask_decoder\.transformer\.layers\.(\d+)\.")),
        decoder_mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        num_multimask_outputs=shape("mask_decoder.mask_tokens.weight")[0] - 1,
        iou_head_depth=len(block_indexes(keys, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.")),
        iou_head_hidden_dim=shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
        embedding_prompt_dim=0,
        # HQ-SAM's decoder adds an HQ output token (and its fusion layers) to SAM's.
        decoder_kind="hq" if "mask_decoder.hf_token.weight" in state_dict else "sam",
    )
    if "embedding_prompt.proj.layers.0.weight" in state_dict:
        hidden, found["embedding_prompt_dim"] = shape("embedding_prompt.proj.layers.0.weight")
        found["embedding_prompt_hidden_dim"] = 0 if hidden == width else hidden
    return found


def _family_for(state_dict: Mapping[str, Any]) -> EncoderFamily:
    family = family_of(state_dict)
    if family is not None:
        return family
    try:  # no family recognises the keys: the default one says which key it misses
        get_family(DEFAULT_FAMILY).infer(state_dict)
    except CheckpointError as error:
        encoder_keys = sorted(k for k in state_dict if k.startswith("image_encoder."))
        unmatched = (_listing("image-encoder keys none of them matched", encoder_keys) if encoder_keys
                     else f"\n  no image_encoder.* keys; got keys like {list(state_dict)[:5]}")
        raise CheckpointError(f"no registered encoder family {sorted(FAMILIES)} recognises these keys; "
                              f"as {DEFAULT_FAMILY}: {error}{unmatched}") from None
    return get_family(DEFAULT_FAMILY)


def implied_fields(state_dict: Mapping[str, Any], family: EncoderFamily | None = None) -> dict[str, Any]:
    """SamConfig fields fixed by the tensor shapes of a Meta-format SAM state dict.

    Args:
        state_dict: parameter name -> tensor (meta tensors are fine: only shapes are read).
        family: the encoder family to read the encoder with; default: the one whose
            ``matches`` accepts the keys.

    Raises:
        CheckpointError: a key SAM needs is missing or shapes are inconsistent.
    """
    family = family or _family_for(state_dict)
    found = dict(_decoder_fields(state_dict), **family.infer(state_dict))
    found["encoder_family"] = family.name
    return found


def infer_fields(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The implied fields plus the assumed decoder head count: keyword arguments of a SamConfig."""
    found = implied_fields(state_dict)
    half = found["prompt_embed_dim"] // 2
    found["decoder_num_heads"] = 8 if half % 8 == 0 else max(h for h in range(1, 9) if half % h == 0)
    return found


def _same(field: str, configured: Any, implied: Any, config: "SamConfig") -> bool:
    if field == "embedding_prompt_hidden_dim" and configured == config.prompt_embed_dim:
        configured = 0  # 0 means "as wide as the prompt tokens"
    if configured is None or implied is None:
        return configured is implied
    if isinstance(configured, float) or isinstance(implied, float):
        return math.isclose(float(configured), float(implied), rel_tol=1e-3)
    return configured == implied


def config_differences(config: "SamConfig", state_dict: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Fields where ``config`` disagrees with the tensors: ``(field, config's value, implied value)``.

    The encoder is read with ``config``'s family; tensors whose keys match another family give
    one difference on ``encoder_family``. A part whose keys are missing is skipped (the key
    comparison of :func:`samkit.weights.check_architecture` lists them).
    """
    family = get_family(config.encoder_family)
    other = family_of(state_dict)
    if other is not None and other is not family:
        return [("encoder_family", config.encoder_family, other.name)]
    implied: dict[str, Any] = {}
    for part in (_decoder_fields, family.infer):
        try:
            implied.update(part(state_dict))
        except CheckpointError:
            logger.debug("config check: %s cannot read these tensors", getattr(part, "__name__", part))
    out = []
    for field, value in implied.items():
        if field == "encoder_options":
            options = dict(config.encoder_options)
            out += [(f"encoder_options[{name!r}]", options.get(name), wanted) for name, wanted in value.items()
                    if not _same(field, options.get(name), wanted, config)]
        elif not _same(field, getattr(config, field), value, config):
            out.append((field, getattr(config, field), value))
    return out


def exceeded_limits(config: "SamConfig") -> list[str]:
    """``"field=value (limit L)"`` for each field of ``config`` above :data:`LIMITS`."""
    return [f"{field}={getattr(config, field)} (limit {limit:g})" for field, limit in LIMITS.items()
            if getattr(config, field) > limit]


def check_architecture(config: "SamConfig", state_dict: Mapping[str, Any],
                       builder: Callable[["SamConfig"], nn.Module], *,
                       origin: str = "checkpoint", claim: str | None = "the config") -> None:
    """Raise CheckpointError unless ``builder(config)`` would take ``state_dict`` exactly; builds
    nothing in memory (the comparison model is built on the ``meta`` device).

    Checked in order: the fields the shapes imply (each difference named with both values), the
    size limits, then every key and shape of the meta-built model.
    """
    differences = [f"{field}: {claim or 'config'} says {mine!r}, the tensors imply {implied!r}"
                   for field, mine, implied in config_differences(config, state_dict)]
    over = exceeded_limits(config)
    listing = _listing("fields that differ", differences)
    if over:
        raise CheckpointError(f"{origin}: refused to build {claim or 'the architecture'}: sizes above the limits "
                              f"{over}" + listing)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in builder(config).state_dict().items()}
    listing += key_listing(expected, state_dict)
    if listing:
        where = f" ({claim})" if claim else ""
        raise CheckpointError(f"{origin} does not match the architecture {config}{where}; pass config= matching the "
                              "weights (or none, to infer it)" + listing)


def _listing(title: str, items: list[str]) -> str:
    more = f" ... and {len(items) - 20} more" if len(items) > 20 else ""
    return f"\n  {title} ({len(items)}): {', '.join(items[:20])}{more}" if items else ""


def key_listing(expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, Any]) -> str:
    """Missing keys, unexpected keys and shape mismatches of ``state_dict`` against ``expected``."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [f"{k}: expected {shape}, got {tuple(state_dict[k].shape)}"
                  for k, shape in expected.items() if k in state_dict and shape != tuple(state_dict[k].shape)]
    return (_listing("missing keys", missing) + _listing("unexpected keys", unexpected)
            + _listing("shape mismatches", mismatched))
