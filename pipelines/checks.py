"""Checks of the numeric settings pipelines accept (scores, thresholds)."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["check_score"]


def check_score(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf) -> float | None:
    """``value`` as a finite float in ``[low, high]``, or None when None.

    A NaN would compare False with every score and silently drop everything, so it is an error.

    Raises:
        TypeError: not a number.
        ValueError: NaN, infinite or outside ``[low, high]``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        expected = "a finite number" if math.isinf(low) and math.isinf(high) else f"a number in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be None or {expected}, got {value!r}")
    return number
