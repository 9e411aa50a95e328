"""What every exported file says about itself, and the checks a model passes before export.

The ``metadata_props`` of each file (all strings; lists JSON-encoded):

================  ==============================================================================
key               value
================  ==============================================================================
samkit_part       ``decoder`` or ``encoder``
samkit_version    the samkit version that wrote the file
encoder_family    the model's encoder family (:mod:`samkit.modeling.families`)
decoder_kind      ``sam`` (SAM's mask decoder) or ``hq`` (HQ-SAM's; see :mod:`samkit.export.onnx_hq`)
opset             the ONNX opset
image_size        S, the side of the square model input (1024 for the paper's models)
embedding_shape   ``[1, C, g, g]``, the encoder's output and the decoder's ``image_embeddings``
mask_input_size   4g, the side of ``mask_input`` / ``low_res_masks``
pixel_mean/std    the RGB normalisation on the 0-255 scale
config            the model's :class:`~samkit.modeling.SamConfig` as JSON
================  ==============================================================================
"""
from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

__all__ = ["UnsupportedExportError", "check_decoder", "check_model", "model_metadata", "plain_copy"]


class UnsupportedExportError(ValueError):
    """A model (its encoder family or its mask decoder) cannot be exported to ONNX."""


def check_model(model: Any) -> Any:
    """``model``'s :class:`~samkit.modeling.SamConfig`, checked to name a registered family.

    Raises:
        TypeError: ``model`` is not a samkit SAM model.
        ValueError: it carries no config (assembled by hand) or its family is not registered.
    """
    from samkit.modeling.families import FAMILIES

    if not isinstance(model, nn.Module) or not all(hasattr(model, part) for part in
                                                   ("image_encoder", "prompt_encoder", "mask_decoder")):
        raise TypeError("expected a samkit SAM model (samkit.load_model or samkit.modeling.build_sam), "
                        f"got {type(model).__name__}")
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("the model carries no SamConfig (model.config is None: assembled by hand?); export "
                         "needs it to rebuild the decoder, build the model with samkit.modeling.build_sam or "
                         "samkit.load_model")
    if config.encoder_family not in FAMILIES:
        raise ValueError(f"encoder family {config.encoder_family!r} of this model is not registered; "
                         f"expected one of {sorted(FAMILIES)}")
    return config


def check_decoder(model: nn.Module) -> str:
    """``model``'s decoder kind (``"sam"`` or ``"hq"``), checked to be a mask decoder the exporter rebuilds.

    Raises:
        UnsupportedExportError: the model's ``mask_decoder`` is not samkit's SAM or HQ decoder (a
            module swapped in by hand), or does not match ``config.decoder_kind``.
    """
    from samkit.modeling.hq_decoder import MaskDecoderHQ
    from samkit.modeling.mask_decoder import MaskDecoder

    config = check_model(model)
    decoder = model.mask_decoder
    kind = "hq" if isinstance(decoder, MaskDecoderHQ) else "sam" if isinstance(decoder, MaskDecoder) else None
    if kind is None:
        raise UnsupportedExportError(
            f"the mask decoder {type(decoder).__name__} cannot be exported to ONNX: the exporter rebuilds SAM's "
            "MaskDecoder or HQ-SAM's MaskDecoderHQ (samkit.modeling) from the config; got another module")
    if kind != config.decoder_kind:
        raise UnsupportedExportError(f"the model's mask decoder is a {kind!r} decoder but its config says "
                                     f"decoder_kind={config.decoder_kind!r}; expected them to agree")
    return kind


def plain_copy(model: nn.Module, *, fast_decoder: bool = False) -> nn.Module:
    """A float32 model with ``model``'s weights and the plain decoder modules (``fast_decoder=False``),
    or the fast ones (:mod:`samkit.modeling.fast_decoder`, the same state dict).

    Built on the meta device and given ``model``'s tensors (no second random initialisation,
    no copy of the image encoder's weights).
    """
    from samkit.modeling import build_sam

    config = check_model(model)
    with torch.device("meta"):
        plain = build_sam(config, fast_decoder=fast_decoder)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.prompt_encoder.float().cpu()
    plain.mask_decoder.float().cpu()
    if plain.embedding_prompt is not None:
        plain.embedding_prompt.float().cpu()
    return plain.eval()


def model_metadata(model: nn.Module, *, part: str, opset: int) -> dict[str, str]:
    """The ``metadata_props`` of the module docstring for one exported ``part``."""
    import samkit

    config = check_model(model)
    grid = config.embedding_size
    return {
        "samkit_part": part,
        "samkit_version": samkit.__version__,
        "encoder_family": config.encoder_family,
        "decoder_kind": config.decoder_kind,
        "opset": str(opset),
        "image_size": str(config.image_size),
        "embedding_shape": json.dumps([1, config.prompt_embed_dim, grid, grid]),
        "mask_input_size": str(4 * grid),
        "pixel_mean": json.dumps(list(config.pixel_mean)),
        "pixel_std": json.dumps(list(config.pixel_std)),
        "config": json.dumps(config.to_dict()),
    }
