"""Dynamic quantization of an exported ONNX file (onnxruntime; ``pip install samkit[onnx]``).

Weights of MatMul / Gemm / Conv are stored as uint8 with a scale and zero point per output
channel (per channel keeps the decoder's masks closer to float32 than Meta's per-tensor
setting: see ``benchmarks/bench_onnx.py``); activations are quantized at run time. The
file keeps its ``metadata_props`` and gains ``quantized = "uint8"``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["quantize_onnx"]


def quantize_onnx(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write a uint8-weight copy of the ONNX file ``source`` to ``target`` (a different path).

    Args:
        source: an exported ``.onnx`` file (e.g. :func:`samkit.export.export_decoder`'s).
        target: where to write the quantized file.

    Returns:
        ``target``.
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise ImportError(f"quantizing needs onnx and onnxruntime ({error.name} is missing): "
                          "pip install samkit[onnx]") from None
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise FileNotFoundError(f"ONNX file to quantize not found: {source}")
    if source.resolve() == target.resolve():
        raise ValueError(f"quantize_onnx writes a new file; target must differ from source, got {target} twice")
    metadata = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    external = source.with_name(source.name + ".data").is_file()  # vit_h's encoder: weights past 2 GB
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8, per_channel=True,
                     reduce_range=False, use_external_data_format=external)
    model = onnx.load(str(target))
    kept = {p.key for p in model.metadata_props}
    for key, value in dict(metadata, quantized="uint8").items():
        if key not in kept:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))
    logger.info("wrote %s (%.2f MB, from %.2f MB)", target, target.stat().st_size / 1e6, source.stat().st_size / 1e6)
    return target
