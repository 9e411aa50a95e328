"""YOLO segmentation labels: one text line per instance, ``class x1 y1 x2 y2 ...``.

Coordinates are the vertices of the mask's outer ring (pixel-edge XY,
:func:`samkit.formats.rle.mask_to_polygons`) divided by the image width and height, so they lie
in [0, 1], written with 6 decimals (an error below 1e-6 of the image size). Classes are
0-based integers, as YOLO datasets count.

Example:
    >>> mask = np.zeros((4, 8), dtype=bool); mask[1:3, 2:6] = True
    >>> yolo_seg_lines(mask[None], [3])
    ['3 0.250000 0.250000 0.750000 0.250000 0.750000 0.750000 0.250000 0.750000']
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from samkit.formats.polygons import mask_to_polygons, polygon_signed_area
from samkit.formats.rle import as_bool_masks

__all__ = ["MULTIPART", "read_yolo_seg", "write_yolo_seg", "yolo_seg_lines"]

#: How a mask with several parts is written: its largest ring, or one line per ring.
MULTIPART = ("largest", "all")


def yolo_seg_lines(masks: Any, class_ids: Sequence[int], *, multipart: str = "largest") -> list[str]:
    """The label lines of bool (M, H, W) masks with one class id each; empty masks give no line.

    Args:
        masks: bool (M, H, W).
        class_ids: M non-negative integers.
        multipart: ``"largest"`` writes the largest ring of a mask with several parts, ``"all"``
            one line per ring (each then counts as its own instance).
    """
    if multipart not in MULTIPART:
        raise ValueError(f"multipart must be one of {MULTIPART}, got {multipart!r}")
    masks = as_bool_masks(masks, "masks")
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (M, H, W), got {masks.shape}")
    ids = list(class_ids)
    if len(ids) != len(masks):
        raise ValueError(f"class_ids must hold one id per mask ({len(masks)}), got {len(ids)}")
    bad = [c for c in ids if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or c < 0]
    if bad:
        raise ValueError(f"class_ids must be integers >= 0, got {bad[0]!r}")
    h, w = masks.shape[1:]
    scale = np.array([w, h], dtype=np.float64)
    lines = []
    for mask, class_id in zip(masks, ids):
        rings = mask_to_polygons(mask, holes=False)
        if multipart == "largest" and rings:
            rings = [max(rings, key=polygon_signed_area)]
        for ring in rings:
            coords = (ring.astype(np.float64) / scale).reshape(-1)
            lines.append(f"{int(class_id)} " + " ".join(f"{v:.6f}" for v in coords))
    return lines


def write_yolo_seg(path: str | os.PathLike, masks: Any, class_ids: Sequence[int], *,
                   multipart: str = "largest") -> int:
    """Write :func:`yolo_seg_lines` to ``path`` (its folder must exist); returns the line count."""
    lines = yolo_seg_lines(masks, class_ids, multipart=multipart)
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def read_yolo_seg(path: str | os.PathLike, image_size: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """Read a label file back as ``(class_id, float64 (V, 2) XY pixel polygon)`` per line.

    Args:
        image_size: (H, W) of the image the labels belong to.

    Raises:
        ValueError: a line that is not a class followed by an even number (>= 6) of numbers.
    """
    h, w = (int(v) for v in image_size)
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            class_id, values = int(parts[0]), np.array([float(v) for v in parts[1:]], dtype=np.float64)
        except ValueError:
            values = np.zeros(1)
            class_id = -1
        if class_id < 0 or values.size < 6 or values.size % 2:
            raise ValueError(f"{path}, line {number}: expected a class id and x y pairs (at least 3), got {line!r}")
        out.append((class_id, values.reshape(-1, 2) * np.array([w, h], dtype=np.float64)))
    return out
