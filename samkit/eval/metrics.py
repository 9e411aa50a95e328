"""Mask IoU and COCO's area ranges, shared by the protocols of :mod:`samkit.eval`.

Masks are bool arrays in original-image pixels, (H, W) per mask. Areas are in pixels.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["AREA_RANGES", "area_range", "mask_iou", "masks_iou", "mean_or_none"]

#: COCO's object sizes by area in pixels: small < 32², medium < 96², large otherwise
#: (``[low, high)``; COCOeval's ranges are closed, so an area of exactly 32² or 96² counts in
#: both neighbours there; here it counts in the upper one).
AREA_RANGES: dict[str, tuple[float, float]] = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
                                               "large": (96.0 ** 2, math.inf)}


def area_range(area: float) -> str:
    """The :data:`AREA_RANGES` name of an area in pixels: ``"small"``, ``"medium"`` or ``"large"``."""
    for name, (low, high) in AREA_RANGES.items():
        if low <= area < high:
            return name
    raise ValueError(f"area must be a number >= 0, got {area!r}")


def mask_iou(predicted: Any, target: Any) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty.

    Example:
        >>> a = np.zeros((4, 4), bool); a[:2] = True
        >>> mask_iou(a, np.ones((4, 4), bool))
        0.5
    """
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape != target.shape or predicted.ndim != 2:
        raise ValueError(f"masks must both have shape (H, W), got {predicted.shape} and {target.shape}")
    return float(masks_iou(predicted[None], target[None])[0])


def masks_iou(predicted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """IoU of (N, ..., H, W) bool predictions against (N, H, W) bool targets, broadcast over the middle axes.

    Args:
        predicted: bool (N, H, W) or (N, K, H, W) (e.g. a :class:`~samkit.Segmentation`'s ``masks``).
        targets: bool (N, H, W), one target per prediction row.

    Returns:
        float64 array of shape (N, ...); 1.0 where both masks are empty.
    """
    predicted, targets = np.asarray(predicted, dtype=bool), np.asarray(targets, dtype=bool)
    if targets.ndim != 3 or predicted.ndim < 3 or predicted.shape[0] != targets.shape[0] \
            or predicted.shape[-2:] != targets.shape[-2:]:
        raise ValueError(f"expected predictions (N, ..., H, W) and targets (N, H, W) with equal N, H, W, got "
                         f"{predicted.shape} and {targets.shape}")
    targets = targets.reshape(targets.shape[0], *([1] * (predicted.ndim - 3)), *targets.shape[-2:])
    inter = (predicted & targets).sum(axis=(-2, -1))
    union = (predicted | targets).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mean_or_none(values: Iterable[float] | Sequence[float]) -> float | None:
    """The mean of ``values`` as a float, None when there are none (JSON ``null``)."""
    values = np.asarray(list(values), dtype=np.float64)
    return float(values.mean()) if values.size else None
