"""Reading checkpoint files safely: torch pickles with ``weights_only=True``, safetensors.

A pickle that names a Python object (which could run code when unpickled) is refused with a
:class:`~samkit.errors.CheckpointError` naming that object; damaged files are CheckpointErrors too.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from samkit.errors import CheckpointError

__all__ = ["read_safetensors", "read_torch"]


def read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL (\S+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"refused to load {path}: it holds a pickled Python object ({unsafe.group(1)}) that could run code "
                "when unpickled; expected only tensors and plain containers (torch.load weights_only=True). If you "
                "trust the file, load it yourself and pass its state dict.") from error
        raise CheckpointError(f"cannot read {path}: not a valid torch checkpoint (corrupt or truncated?)") from error
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError... on damaged files
        raise CheckpointError(f"cannot read {path}: not a valid torch checkpoint (corrupt or truncated?): "
                              f"{type(error).__name__}: {str(error)[:200]}") from error


def read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        from safetensors import safe_open
    except ImportError as error:
        raise ImportError("reading .safetensors needs the safetensors package: pip install samkit[transformers]"
                          ) from error
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own SafetensorError on damaged files
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file (corrupt or truncated?): "
                              f"{str(error)[:200]}") from error
