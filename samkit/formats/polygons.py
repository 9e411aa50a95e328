"""Mask borders as polygons: rings of pixel corners that enclose exactly the mask's pixels.

Same conventions as :mod:`samkit.formats.rle`: a mask is ``(H, W)`` bool indexed
``mask[row, column]``; vertices are pixel corners in pixel-edge XY coordinates, so the pixel
``mask[r, c]`` is the unit square ``[c, c + 1] x [r, r + 1]``. Used by the YOLO-seg and COCO
polygon writers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from samkit.formats.rle import as_bool_masks

__all__ = ["mask_to_polygons", "polygon_signed_area"]


# -- polygons -------------------------------------------------------------------------------
# Directions on the corner lattice: 0 = +x, 1 = +y (down), 2 = -x, 3 = -y. Turning right as
# seen on screen (y down) is d -> (d + 1) % 4.
def mask_to_polygons(mask: Any, *, holes: bool = True) -> list[np.ndarray]:
    """Trace the pixel borders of a mask into closed polygons (rings).

    Vertices are pixel corners in pixel-edge XY coordinates: the pixel ``mask[r, c]`` is the
    unit square ``[c, c + 1] x [r, r + 1]``. Each ring is the border between set and unset
    pixels, so the rings together enclose exactly the set pixels under the even-odd rule.

    * Regions are 4-connected: pixels touching only at a corner belong to different regions,
      and each region gets exactly one outer ring (rings may touch at such corners).
    * Outer rings run clockwise on screen (x right, y down) and have positive
      :func:`polygon_signed_area`; hole rings run the other way and have negative area.
    * Rings are closed implicitly (the first vertex is not repeated), start at their top-most,
      then left-most vertex, hold no collinear vertices, and are ordered by that start vertex.

    Args:
        mask: bool (H, W).
        holes: also return the rings around holes; False keeps outer rings only.

    Returns:
        list of float32 (M, 2) XY arrays, M >= 4.

    Example:
        >>> mask_to_polygons(np.ones((2, 3), dtype=bool))[0].tolist()
        [[0.0, 0.0], [3.0, 0.0], [3.0, 2.0], [0.0, 2.0]]
    """
    m = as_bool_masks(mask, "mask")
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {tuple(m.shape)}")
    h, w = m.shape
    stride = w + 1  # vertex (x, y) has index y * stride + x
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = m
    # (direction, border pixels, start-vertex offset (dx, dy)); set pixels keep to the right.
    borders = (
        (0, m & ~padded[:-2, 1:-1], (0, 0)),  # top border, drawn left to right
        (1, m & ~padded[1:-1, 2:], (1, 0)),  # right border, drawn downwards
        (2, m & ~padded[2:, 1:-1], (1, 1)),  # bottom border, drawn right to left
        (3, m & ~padded[1:-1, :-2], (0, 1)),  # left border, drawn upwards
    )
    ids = []
    for direction, pixels, (dx, dy) in borders:
        rows, cols = np.nonzero(pixels)
        ids.append(((rows + dy) * stride + cols + dx) * 4 + direction)
    edge_id = np.sort(np.concatenate(ids))
    if edge_id.size == 0:
        return []
    start, direction = edge_id // 4, edge_id % 4
    end = start + np.array([1, stride, -1, -stride])[direction]
    exists = np.zeros((h + 1) * stride * 4, dtype=bool)
    exists[edge_id] = True
    right, straight = (direction + 1) % 4, direction
    # At a saddle corner both a right and a left turn exist; turning right keeps to the same
    # region, which is what makes regions 4-connected.
    turn = np.where(exists[end * 4 + right], right,
                    np.where(exists[end * 4 + straight], straight, (direction + 3) % 4))
    successor = np.searchsorted(edge_id, end * 4 + turn).tolist()
    corner = (turn != direction).tolist()
    end_list = end.tolist()
    visited = bytearray(len(successor))
    ring_vertices: list[int] = []  # all rings back to back, each rotated to its smallest vertex
    ring_lengths: list[int] = []
    for first in range(len(successor)):
        if visited[first]:
            continue
        vertices, edge = [], first
        while not visited[edge]:
            visited[edge] = 1
            if corner[edge]:
                vertices.append(end_list[edge])
            edge = successor[edge]
        k = vertices.index(min(vertices))
        ring_vertices += vertices[k:] + vertices[:k]
        ring_lengths.append(len(vertices))
    index = np.asarray(ring_vertices, dtype=np.int64)
    xy = np.stack([index % stride, index // stride], axis=1).astype(np.float32)
    offsets = np.cumsum([0] + ring_lengths[:-1])
    x, y = xy[:, 0].astype(np.int64), xy[:, 1].astype(np.int64)
    ring_id = np.repeat(np.arange(len(ring_lengths)), ring_lengths)
    following = np.arange(len(index)) + 1
    following[offsets[1:] - 1] = offsets[:-1]  # the last vertex of a ring wraps to its first
    following[-1] = offsets[-1]
    twice_area = np.bincount(ring_id, x * y[following] - x[following] * y)
    order = np.argsort(index[offsets], kind="stable")
    rings = np.split(xy, offsets[1:])
    return [rings[i] for i in order.tolist() if holes or twice_area[i] > 0]


def polygon_signed_area(ring: Any) -> float:
    """Shoelace area of a closed ring of XY vertices (M, 2), in pixels.

    Positive for rings running clockwise on screen (y down): the outer rings of
    :func:`mask_to_polygons`; negative for its hole rings.
    """
    pts = np.asarray(ring, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"ring must have shape (M, 2) as XY, got {tuple(pts.shape)}")
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
