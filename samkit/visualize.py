"""Pictures of results: masks tinted over the image, with the prompts marked.

Everything here takes the original image and a :class:`~samkit.results.Segmentation` (or plain
masks) and draws with numpy and Pillow only; the CLI and the Gradio demo use it. Coordinates
are original-image pixels, XY order; boxes are XYXY. (Mask files: :mod:`samkit.formats.png`.)

Example:
    >>> image = np.zeros((4, 6, 3), dtype=np.uint8)
    >>> masks = np.zeros((1, 4, 6), dtype=bool); masks[0, 1:3, 2:5] = True
    >>> draw_overlay(image, masks).shape
    (4, 6, 3)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from samkit.results import Segmentation
from samkit.transforms import to_rgb_uint8

__all__ = ["BOX_COLOR", "NEGATIVE_COLOR", "PALETTE", "POSITIVE_COLOR", "draw_overlay", "overlay_segmentation"]

#: Mask colours, RGB, cycled by mask index (distinct on photos, colour-blind friendly first).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (30, 144, 255), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (188, 189, 34), (23, 190, 207), (255, 215, 0), (0, 128, 128), (128, 0, 0),
)
POSITIVE_COLOR = (0, 220, 0)  # foreground points (label 1)
NEGATIVE_COLOR = (230, 0, 0)  # background points (label 0)
BOX_COLOR = (255, 255, 0)  # boxes that do not pair one-to-one with the masks


def _edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the inner outline)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def draw_overlay(image: Any, masks: Any, *, alpha: float = 0.5, colors: Sequence[tuple[int, int, int]] | None = None,
                 points: Any = None, labels: Any = None, boxes: Any = None,
                 captions: Sequence[str | None] | None = None, outline: bool = True) -> np.ndarray:
    """Tint masks over an image and mark the prompts.

    Args:
        image: (H, W, 3) uint8 RGB (anything :func:`samkit.transforms.to_rgb_uint8` accepts).
        masks: bool (M, H, W), drawn in order (later masks on top); may be empty.
        alpha: opacity of the mask tint in [0, 1].
        colors: one RGB colour per mask; default :data:`PALETTE` cycled.
        points: (P, 2) XY pixels, drawn as discs (green for label 1, red for label 0).
        labels: (P,) point labels; default all 1.
        boxes: (B, 4) XYXY pixels, drawn as rectangles (box ``i`` in mask ``i``'s colour when
            there are as many boxes as masks, else yellow).
        captions: text drawn at each box's top-left corner (same length as ``boxes``).
        outline: draw each mask's outline in its full colour.

    Returns:
        (H, W, 3) uint8 RGB: a new array.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = to_rgb_uint8(image)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or (len(masks) and masks.shape[1:] != rgb.shape[:2]):
        raise ValueError(f"masks must have shape (M, H, W) with (H, W) = {rgb.shape[:2]}, got {masks.shape}")
    palette = list(colors) if colors is not None else [PALETTE[i % len(PALETTE)] for i in range(len(masks))]
    if len(palette) < len(masks):
        raise ValueError(f"colors must hold one colour per mask ({len(masks)}), got {len(palette)}")
    out = rgb.astype(np.float32)
    for mask, color in zip(masks, palette):
        tint = np.asarray(color, dtype=np.float32)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * tint
        if outline:
            out[_edges(mask)] = tint
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if points is None and boxes is None:
        return out
    from PIL import Image, ImageDraw

    picture = Image.fromarray(out)
    draw = ImageDraw.Draw(picture)
    radius = max(3, round(0.012 * max(rgb.shape[:2])))
    width = max(1, round(0.004 * max(rgb.shape[:2])))
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        same = len(boxes) == len(masks)
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            color = tuple(palette[i]) if same else BOX_COLOR
            draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
            if captions is not None and i < len(captions) and captions[i]:
                draw.text((x0 + width + 1, y0 + width), str(captions[i]), fill=color)
    if points is not None:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labels = np.ones(len(points), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
        if len(labels) != len(points):
            raise ValueError(f"labels must hold one label per point ({len(points)}), got {len(labels)}")
        for (x, y), label in zip(points.tolist(), labels.tolist()):
            color = POSITIVE_COLOR if label == 1 else NEGATIVE_COLOR
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(255, 255, 255),
                         width=max(1, width // 2))
    return np.asarray(picture)


def overlay_segmentation(image: Any, result: Segmentation, *, output: Sequence[int] | None = None,
                         alpha: float = 0.5, points: Any = None, labels: Any = None, boxes: Any = None,
                         captions: Sequence[str | None] | None = None) -> np.ndarray:
    """Overlay one mask per prompt of ``result``: output ``output[i]`` of prompt ``i``, else its best.

    Args:
        image: the image ``result`` was computed on.
        result: masks (N, K, H, W).
        output: for each prompt, which of its K outputs to draw (None: the highest-scoring).
        alpha, points, labels, boxes, captions: see :func:`draw_overlay`.
    """
    if not isinstance(result, Segmentation):
        raise TypeError(f"result must be a samkit.Segmentation, got {type(result).__name__}")
    if output is None:
        chosen = result.best().masks[:, 0]
    else:
        if len(output) != len(result) or any(not 0 <= k < result.num_outputs for k in output):
            raise ValueError(f"output must hold one index in [0, {result.num_outputs}) per prompt "
                             f"({len(result)}), got {list(output)}")
        chosen = result.masks[np.arange(len(result)), np.asarray(output, dtype=np.int64)]
    return draw_overlay(image, chosen, alpha=alpha, points=points, labels=labels, boxes=boxes, captions=captions)
