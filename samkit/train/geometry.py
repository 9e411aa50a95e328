"""Mask geometry shared by the training modules: polygon rasterising, boxes, interior points.

Coordinates follow :mod:`samkit.rle`: pixel ``(row r, column c)`` covers ``[c, c + 1] x [r, r + 1]``;
points are XY, boxes XYXY in pixel-edge coordinates.
"""
from __future__ import annotations

import numpy as np

__all__ = ["polygon_mask", "mask_boxes", "interior_points"]


def polygon_mask(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise one polygon by the even-odd rule at pixel centres.

    Args:
        vertices: (V, 2) float XY vertices in pixel-edge coordinates (as COCO polygons).
        height: mask rows H.
        width: mask columns W.

    Returns:
        bool (H, W): True where the pixel centre ``(c + 0.5, r + 0.5)`` lies inside.

    Example:
        >>> polygon_mask([[1, 1], [3, 1], [3, 2], [1, 2]], 3, 4).astype(int).tolist()
        [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    if v.shape[0] < 3:
        return np.zeros((height, width), dtype=bool)
    ys = np.arange(height, dtype=np.float64) + 0.5
    xs = np.arange(width, dtype=np.float64) + 0.5
    inside = np.zeros((height, width), dtype=bool)
    x0, y0 = v[:, 0], v[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1):
        if ay == by:
            continue
        rows = (ys >= min(ay, by)) & (ys < max(ay, by))  # half-open: each vertex counted once
        if not rows.any():
            continue
        x_at = ax + (ys[rows] - ay) * (bx - ax) / (by - ay)  # where the edge crosses each row
        inside[rows] ^= xs[None, :] < x_at[:, None]
    return inside


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes of (N, H, W) bool masks, pixel-edge coordinates, float32 (N, 4); zeros if empty."""
    masks = np.asarray(masks, dtype=bool)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    out = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i in range(masks.shape[0]):
        r, c = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if r.size:
            out[i] = (c[0], r[0], c[-1] + 1, r[-1] + 1)
    return out


def interior_points(masks: np.ndarray) -> np.ndarray:
    """One point per mask, deepest inside it: the standard "centre" click of SAM evaluations.

    Erodes each mask (4-neighbourhood, image border counts as outside) until one more step would
    empty it, then takes the remaining pixel closest to the centroid of that last non-empty set.

    Args:
        masks: (N, H, W) bool.

    Returns:
        (N, 2) float32 XY pixel centres; NaN for empty masks.
    """
    masks = np.asarray(masks, dtype=bool)
    out = np.full((masks.shape[0], 2), np.nan, dtype=np.float32)
    for i, mask in enumerate(masks):
        current = mask
        while True:
            padded = np.pad(current, 1)
            eroded = (current & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
            if not eroded.any():
                break
            current = eroded
        rows, cols = np.nonzero(current)
        if rows.size == 0:
            continue
        k = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        out[i] = (cols[k] + 0.5, rows[k] + 0.5)
    return out
