"""Array conversion shared by every module that accepts tensors or arrays from callers.

samkit never imports a tensor library to recognise its values: anything with ``detach`` and
``cpu`` (a ``torch.Tensor``) is moved to the CPU and converted; everything else goes through
:func:`numpy.asarray`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_tensor", "to_numpy"]


def is_tensor(value: Any) -> bool:
    """True for torch-like tensors (duck-typed: has ``detach`` and ``cpu``)."""
    return hasattr(value, "detach") and hasattr(value, "cpu")


def to_numpy(value: Any, *, upcast_low_precision: bool = True) -> Any:
    """``value`` as a NumPy array when it is a tensor; other values are returned unchanged.

    Tensors are detached and copied to the CPU. bfloat16 and float16 tensors become float32
    (NumPy has no bfloat16) unless ``upcast_low_precision`` is False.
    """
    if not is_tensor(value):
        return value
    value = value.detach().cpu()
    if upcast_low_precision and getattr(value, "is_floating_point", lambda: False)() and value.element_size() < 4:
        value = value.float()
    return value.numpy()
