"""Values made JSON-ready: numpy and tensor values become Python numbers and lists.

Example:
    >>> to_python(np.float32(0.5)), to_python(np.arange(3))
    (0.5, [0, 1, 2])
"""
from __future__ import annotations

from typing import Any

import numpy as np

from samkit.arrays import to_numpy

__all__ = ["json_default", "to_python"]


def to_python(value: Any) -> Any:
    """A numpy scalar as a Python number, a numpy array or tensor as (nested) lists; anything
    else unchanged (containers are not walked: use :func:`json_default` with ``json.dump``)."""
    value = to_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def json_default(value: Any) -> Any:
    """``default=`` for :func:`json.dump`: numpy and tensor values as Python values.

    Raises:
        TypeError: for anything else, naming its type.
    """
    converted = to_python(value)
    if converted is value:
        raise TypeError(f"cannot write {type(value).__name__} to JSON")
    return converted
