"""The one function that turns a module into an ONNX file, and the metadata every file carries.

Every graph samkit exports (decoder, encoder) goes through :func:`to_onnx`, which uses torch's
current exporter, ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript). It
handles both graphs, including the decoder's data-dependent output size (the masks come out at
``orig_im_size``, an input *value*), so the legacy TorchScript exporter is not used anywhere;
should a future family need it, it belongs behind this function only.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OPSET", "EXTERNAL_DATA_BYTES", "read_metadata", "require_onnx", "sums_before_layer_norm",
           "to_onnx"]

#: The opset written when none is asked for (the lowest the dynamo exporter implements natively).
DEFAULT_OPSET = 18
#: Above this many bytes of weights the tensors go to a side file ``<name>.onnx.data`` (protobuf's
#: 2 GB limit on one message; vit_h's encoder is 2.5 GB in fp32).
EXTERNAL_DATA_BYTES = 1_800_000_000


def require_onnx() -> None:
    """Import-check the exporter's dependencies; ImportError naming the extra otherwise."""
    missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: pip install samkit[onnx]")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def to_onnx(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: str | os.PathLike, *,
            input_names: Sequence[str], output_names: Sequence[str], dynamic_shapes: Any = None,
            opset: int = DEFAULT_OPSET, metadata: Mapping[str, Any] | None = None,
            unfused_layer_norm: bool = False) -> Path:
    """Export ``module(*args)`` to ``path`` with the dynamo exporter and stamp ``metadata`` on it.

    Args:
        module: the module to export (eval mode, float32).
        args: example inputs; their shapes are fixed except where ``dynamic_shapes`` says.
        path: the ``.onnx`` file to write (its folder must exist).
        input_names: graph input names, in the order of ``args``.
        output_names: graph output names, in the order of the module's outputs.
        dynamic_shapes: ``torch.export`` dynamic shapes, one entry per input.
        opset: ONNX opset version (>= 18).
        metadata: string-valued ``metadata_props`` of the model (non-strings are JSON-encoded).
        unfused_layer_norm: write the additions that feed a LayerNormalization as ``Sum``
            (:func:`sums_before_layer_norm`; for graphs run on CPUs).

    Returns:
        ``path``. Weights past :data:`EXTERNAL_DATA_BYTES` go to ``<path>.data`` beside it.
    """
    require_onnx()
    if not isinstance(opset, int) or opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be an integer >= {DEFAULT_OPSET} (the exporter's lowest), got {opset!r}")
    path = Path(path)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    weight_bytes += sum(b.numel() * b.element_size() for b in module.buffers())
    with torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, input_names=list(input_names),
                                    output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                                    opset_version=opset, verbose=False)
    if program is None:
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    _stamp(program.model, metadata or {})
    if unfused_layer_norm:
        sums_before_layer_norm(program.model)
    external = weight_bytes > EXTERNAL_DATA_BYTES
    if path.exists():
        path.unlink()
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    program.save(str(path), external_data=external)
    logger.info("wrote %s (%.1f MB of weights%s)", path, weight_bytes / 1e6, ", external data" if external else "")
    return path


def sums_before_layer_norm(model: Any) -> int:
    """Turn every ``Add`` whose output only feeds ``LayerNormalization`` into a two-input ``Sum``.

    The same arithmetic (``Sum`` broadcasts as ``Add`` does), but onnxruntime's graph optimizer
    then leaves the pair alone instead of fusing it into its ``SkipLayerNormalization`` kernel,
    which on a CPU is slower than the two ops it replaces for the decoder's (1, 4096, 256)
    image tokens (onnxruntime 1.32, one thread; ``benchmarks/bench_web.py``). Works on an
    onnx_ir model (what ``ONNXProgram.model`` holds) in place; returns how many were changed.
    """
    changed = 0
    for node in model.graph:
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx"):
            continue
        users = [user for user, _ in node.outputs[0].uses()]
        if users and all(user.op_type == "LayerNormalization" for user in users):
            node.op_type = "Sum"
            changed += 1
    return changed


def _stamp(model: Any, metadata: Mapping[str, Any]) -> None:
    """Set ``metadata_props`` on an onnx_ir model (what ``ONNXProgram.model`` holds)."""
    for key, value in metadata.items():
        model.metadata_props[str(key)] = value if isinstance(value, str) else json.dumps(value)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict of strings (weights are not loaded)."""
    require_onnx()
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}
