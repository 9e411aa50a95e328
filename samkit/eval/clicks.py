"""Where the simulated user clicks: a mask's centre and the next click in the error region.

**Centre rule.** A region's centre is the pixel farthest from the region's outside, by the
exact Euclidean distance transform; pixels beyond the image border count as outside (a region
touching the border is not deepest there). When several pixels share the largest distance, the
one closest to the mean position of those pixels wins, and remaining ties go to the first in
row-major order (smallest row, then smallest column). Clicks are XY pixel indices
``(column, row)``, the convention of :meth:`samkit.Segmenter.segment`.

**Next click** (interactive segmentation as in RITM, arXiv 2102.06583): with the false
negatives ``FN = target & ~predicted`` and false positives ``FP = predicted & ~target``, the
click goes to the centre of the larger of the two error sets, as foreground (label 1) in FN or
background (label 0) in FP. ``rule="area"`` compares their pixel counts; ``rule="depth"``
compares their largest distances to the outside (RITM's own comparison). Ties go to FN. A
prediction with no error gets no click.

Needs scipy (``pip install samkit[eval]``) for the distance transform.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NEXT_CLICK_RULES", "mask_centers", "next_clicks", "region_depth"]

NEXT_CLICK_RULES = ("area", "depth")


def _distance_transform() -> Any:
    try:
        from scipy.ndimage import distance_transform_edt
    except ImportError:
        raise ImportError("the click simulation needs scipy's distance transform: pip install samkit[eval]") from None
    return distance_transform_edt


def region_depth(mask: np.ndarray) -> np.ndarray:
    """float64 (H, W) Euclidean distance of each pixel of a bool (H, W) mask to the nearest
    pixel outside it (the image border counts as outside); 0 outside the mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    depth = np.zeros(mask.shape, dtype=np.float64)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return depth
    # Inside the bounding box padded by one outside pixel the distances are exact: the nearest
    # outside pixel, clamped onto the padding ring, is no farther.
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[r0:r1, c0:c1], 1)
    depth[r0:r1, c0:c1] = _distance_transform()(crop)[1:-1, 1:-1]
    return depth


def _deepest(depth: np.ndarray) -> tuple[int, int, float]:
    """(column, row, depth) of the centre of a depth map, with the module's tie-break."""
    top = depth.max()
    rows, cols = np.nonzero(depth == top)
    gap = (rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2
    k = int(np.argmin(gap))  # argmin keeps the first minimum: row-major order among ties
    return int(cols[k]), int(rows[k]), float(top)


def mask_centers(masks: Any) -> np.ndarray:
    """The centre click of each mask (module docstring).

    Args:
        masks: bool (N, H, W).

    Returns:
        float32 (N, 2) XY pixel indices; NaN for an empty mask.

    Example:
        >>> masks = np.zeros((1, 5, 7), bool); masks[0, 1:4, 1:6] = True
        >>> mask_centers(masks).tolist()
        [[3.0, 2.0]]
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {masks.shape}")
    out = np.full((len(masks), 2), np.nan, dtype=np.float32)
    for i, mask in enumerate(masks):
        if mask.any():
            out[i] = _deepest(region_depth(mask))[:2]
    return out


def next_clicks(predicted: Any, targets: Any, *, rule: str = "area") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The next click for each of N predictions against its target (module docstring).

    Args:
        predicted: bool (N, H, W) current predictions.
        targets: bool (N, H, W) ground truth, row for row.
        rule: ``"area"`` or ``"depth"``: how the larger error set is chosen.

    Returns:
        ``(points, labels, has_error)``: float32 (N, 2) XY pixel indices (NaN where no error),
        int64 (N,) labels 1 foreground / 0 background (-1 where no error), bool (N,).
    """
    if rule not in NEXT_CLICK_RULES:
        raise ValueError(f"rule must be one of {NEXT_CLICK_RULES}, got {rule!r}")
    predicted, targets = np.asarray(predicted, dtype=bool), np.asarray(targets, dtype=bool)
    if predicted.ndim != 3 or predicted.shape != targets.shape:
        raise ValueError(f"predicted and targets must both have shape (N, H, W), got {predicted.shape} "
                         f"and {targets.shape}")
    n = len(predicted)
    points = np.full((n, 2), np.nan, dtype=np.float32)
    labels = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        missed, extra = targets[i] & ~predicted[i], predicted[i] & ~targets[i]
        if not (missed.any() or extra.any()):
            continue
        depths = [region_depth(missed), region_depth(extra)]
        if rule == "area":
            size = [int(missed.sum()), int(extra.sum())]
        else:
            size = [float(d.max()) for d in depths]
        chosen = 0 if size[0] >= size[1] else 1
        x, y, _ = _deepest(depths[chosen])
        points[i], labels[i] = (x, y), 1 - chosen
    return points, labels, labels >= 0
