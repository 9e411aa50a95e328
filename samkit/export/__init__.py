"""ONNX export for browsers and production runtimes (``pip install samkit[onnx]``).

* :func:`export_decoder` - prompt encoder + mask decoder with Meta's I/O contract
  (:mod:`samkit.export.onnx_decoder`), so Meta's ONNX clients run it unchanged; an HQ-SAM
  model's decoder takes the encoder's early features too (:mod:`samkit.export.onnx_hq`);
* :func:`export_encoder` - the image encoder of any registered family (ViT, TinyViT), optionally
  with the preprocessing inside (:mod:`samkit.export.onnx_encoder`);
* :func:`export_onnx` - both into one folder (``decoder.onnx``, ``encoder.onnx``);
* :func:`quantize_onnx` - a uint8-weight copy (onnxruntime dynamic quantization);
* :func:`write_embedding` / :func:`read_embedding` - ``.npy`` embeddings for client-side decoders;
* :func:`read_metadata` - what a file says about itself (family, samkit version, opset, sizes).

Example:
    >>> import samkit
    >>> from samkit.export import export_onnx
    >>> export_onnx(samkit.load_model("vit_b"), "onnx/")  # doctest: +SKIP
    {'decoder': PosixPath('onnx/decoder.onnx'), 'encoder': PosixPath('onnx/encoder.onnx')}
"""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .embedding import read_embedding, write_embedding
from .metadata import check_decoder, check_model
from .decoder_file import export_decoder
from .onnx_decoder import DECODER_INPUTS, DECODER_OUTPUTS, OnnxDecoder
from .onnx_encoder import OnnxEncoder, UnsupportedExportError, export_encoder
from .onnx_graph import DEFAULT_OPSET, read_metadata
from .quantize import quantize_onnx

__all__ = ["DECODER_INPUTS", "DECODER_OUTPUTS", "DEFAULT_OPSET", "OnnxDecoder", "OnnxEncoder",
           "UnsupportedExportError", "export_decoder", "export_encoder", "export_onnx", "quantize_onnx",
           "read_embedding", "read_metadata", "write_embedding"]

DECODER_FILE = "decoder.onnx"
ENCODER_FILE = "encoder.onnx"
QUANTIZED_DECODER_FILE = "decoder.quant.onnx"
QUANTIZED_ENCODER_FILE = "encoder.quant.onnx"


def export_onnx(model: nn.Module, folder: str | os.PathLike, *, decoder: bool = True, encoder: bool = True,
                quantize: bool = False, single_mask: bool = False, preprocess: bool = False,
                opset: int = DEFAULT_OPSET, hq_token_only: bool | None = None) -> dict[str, Path]:
    """Export ``model`` into ``folder``: ``decoder.onnx``, ``encoder.onnx`` and their ``.quant.onnx`` copies.

    Args:
        model: a samkit SAM model.
        folder: output folder (created when absent; an existing file there is an error).
        decoder: write ``decoder.onnx``.
        encoder: write ``encoder.onnx``.
        quantize: also write a uint8-weight copy of each file written: ``decoder.quant.onnx``,
            ``encoder.quant.onnx`` (:func:`quantize_onnx`; measured in the README: the vit_b
            encoder's copy is 3.3x smaller and 1.27x faster in onnxruntime on a CPU).
        single_mask: the decoder returns one mask per call (Meta's ``return_single_mask``; for
            HQ-SAM see :func:`~samkit.export.export_decoder`).
        preprocess: the encoder takes an (H, W, 3) uint8 image (see :mod:`samkit.export.onnx_encoder`).
        opset: ONNX opset (>= 18).
        hq_token_only: HQ-SAM only: the decoder returns the HQ mask alone (see
            :func:`~samkit.export.export_decoder`); None: the default.

    Returns:
        ``{"decoder": path, "encoder": path, "decoder_quantized": path, "encoder_quantized": path}``
        for what was written.
    """
    if not (decoder or encoder):
        raise ValueError("export_onnx needs decoder=True or encoder=True; got neither")
    if decoder:  # checked before anything is written
        check_decoder(model)
    else:
        check_model(model)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"ONNX output folder {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if decoder:
        written["decoder"] = export_decoder(model, folder / DECODER_FILE, single_mask=single_mask, opset=opset,
                                            hq_token_only=hq_token_only)
        if quantize:
            written["decoder_quantized"] = quantize_onnx(written["decoder"], folder / QUANTIZED_DECODER_FILE)
    if encoder:
        written["encoder"] = export_encoder(model, folder / ENCODER_FILE, preprocess=preprocess, opset=opset)
        if quantize:
            written["encoder_quantized"] = quantize_onnx(written["encoder"], folder / QUANTIZED_ENCODER_FILE)
    return written
