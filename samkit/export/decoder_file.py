"""Writing a decoder file: the graph of the model's decoder kind, traced and stamped with metadata.

SAM's decoder (``decoder_kind="sam"``) gets Meta's contract (:mod:`samkit.export.onnx_decoder`),
HQ-SAM's (``"hq"``) that contract plus the early features (:mod:`samkit.export.onnx_hq`); a
mask decoder the exporter cannot rebuild is refused with
:class:`~samkit.export.metadata.UnsupportedExportError`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .metadata import check_decoder, model_metadata, plain_copy
from .onnx_decoder import DECODER_INPUTS, DECODER_OUTPUTS, OnnxDecoder, decoder_example_inputs
from .onnx_graph import DEFAULT_OPSET, to_onnx
from .onnx_hq import HQ_DECODER_INPUTS, OnnxHQDecoder, hq_example_inputs

__all__ = ["export_decoder"]


def export_decoder(model: nn.Module, path: str | os.PathLike, *, single_mask: bool = False,
                   opset: int = DEFAULT_OPSET, extra_metadata: dict[str, Any] | None = None,
                   fast_decoder: bool = True, hq_token_only: bool | None = None) -> Path:
    """Write ``model``'s prompt encoder + mask decoder to ``path`` with Meta's contract.

    The graph is rebuilt from ``model``'s config with its weights, in float32, whatever
    ``model`` was built or cast to. An HQ-SAM model (``decoder_kind="hq"``) gets one more input,
    ``interm_embeddings``, and one output mask (:mod:`samkit.export.onnx_hq`).

    Args:
        model: a samkit SAM model (from :func:`samkit.load_model` or :func:`samkit.modeling.build_sam`).
        path: the ``.onnx`` file to write.
        single_mask: Meta's ``return_single_mask`` (one mask per call). For HQ-SAM: pair the HQ
            mask with SAM's output 0 instead of the best ambiguity output.
        opset: ONNX opset (>= 18).
        extra_metadata: more ``metadata_props`` (e.g. the model's source).
        fast_decoder: trace the fast decoder modules (:mod:`samkit.modeling.fast_decoder`,
            absorbed projections: fewer operations on the image tokens, equal to float
            rounding); False: the plain modules.
        hq_token_only: HQ-SAM only: the HQ mask alone; None: the decoder's default (False).

    Raises:
        UnsupportedExportError: the model's mask decoder is not one the exporter rebuilds.

    Returns:
        ``path``.

    Example:
        >>> from samkit.modeling import build_sam, get_config
        >>> export_decoder(build_sam(get_config("tiny")), "decoder.onnx")  # doctest: +SKIP
    """
    kind = check_decoder(model)
    if hq_token_only is not None and kind != "hq":
        raise ValueError(f"hq_token_only applies to HQ-SAM decoders; this model's decoder_kind is {kind!r}")
    plain = plain_copy(model, fast_decoder=fast_decoder)
    num_points = torch.export.Dim("num_points", min=1, max=1024)
    metadata = dict(model_metadata(plain, part="decoder", opset=opset), single_mask=str(single_mask).lower(),
                    fast_decoder=str(fast_decoder).lower())
    if kind == "hq":
        wrapper: nn.Module = OnnxHQDecoder(plain, multimask=not single_mask, hq_token_only=hq_token_only).eval()
        example, names = hq_example_inputs(plain), HQ_DECODER_INPUTS
        dynamic: tuple = ({}, {0: torch.export.Dim("interm_layers", min=1, max=64)}, {1: num_points},
                          {1: num_points}, {}, {}, {})
        metadata.update(num_mask_outputs="1", hq_token_only=str(wrapper.hq_token_only).lower(),
                        multimask=str(not single_mask).lower())
    else:
        wrapper = OnnxDecoder(plain, single_mask=single_mask).eval()
        example, names = decoder_example_inputs(plain), DECODER_INPUTS
        dynamic = ({}, {1: num_points}, {1: num_points}, {}, {}, {})
        metadata["num_mask_outputs"] = str(1 if single_mask else plain.mask_decoder.num_mask_tokens)
    metadata.update(inputs=list(names), **(extra_metadata or {}))
    return to_onnx(wrapper, example, path, input_names=names, output_names=DECODER_OUTPUTS,
                   dynamic_shapes=dynamic, opset=opset, metadata=metadata, unfused_layer_norm=True)
