"""Stages of automatic mask generation ("segment everything") as plain functions.

Each function reproduces one step of ``segment_anything``'s ``SamAutomaticMaskGenerator``
exactly (same numbers, same tie-breaking) unless its docstring says otherwise; the pipeline in
:mod:`samkit.pipelines.everything` chains them.

Conventions:

* Points are XY pixels; grids are normalised to [0, 1] (multiply by (W, H)).
* Crop boxes are XYXY ints with an exclusive end: ``image[y0:y1, x0:x1]``.
* Mask boxes follow the reference: XYXY with the *inclusive* last column/row
  (``[min_col, min_row, max_col, max_row]``), ``[0, 0, 0, 0]`` for an empty mask.
* Masks are bool ``(..., H, W)`` indexed ``[row, column]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from .edges import edge_nms, sobel_magnitude  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from samkit.segmenter import ImageEmbedding, Segmenter

__all__ = [
    "PackedMask", "box_nms", "build_point_grid", "build_layer_point_grids", "crop_boxes_for_layers",
    "decode_selected", "edge_nms", "mask_boxes", "near_crop_edge", "remove_small_regions", "sobel_magnitude",
    "stability_score",
]

_MASK_HEAD_CHUNK = 16  # prompts per call of the decoder's mask head (bounds its memory)


# -- prompts and crops --------------------------------------------------------------------------
def build_point_grid(points_per_side: int) -> np.ndarray:
    """Cell centres of a ``points_per_side`` square grid over the unit square.

    Returns:
        float64 (points_per_side ** 2, 2) XY in [0, 1], row by row (x varies fastest).

    Example:
        >>> build_point_grid(2).tolist()
        [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    """
    half_cell = 1 / (2 * points_per_side)
    ticks = np.linspace(half_cell, 1 - half_cell, points_per_side)
    xs, ys = np.meshgrid(ticks, ticks)  # (rows, cols): x along columns
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def build_layer_point_grids(points_per_side: int, crop_n_layers: int, downscale_factor: int) -> list[np.ndarray]:
    """One grid per crop layer; layer ``i`` has ``int(points_per_side / downscale_factor ** i)`` per side."""
    return [build_point_grid(int(points_per_side / downscale_factor ** layer)) for layer in range(crop_n_layers + 1)]


def crop_boxes_for_layers(image_size: tuple[int, int], crop_n_layers: int,
                          overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Overlapping crops: the whole image, then ``(2 ** i) ** 2`` crops for layer ``i = 1..n``.

    Layer ``i`` has ``n = 2 ** i`` crops per side overlapping by
    ``int(overlap_ratio * short_side * 2 / n)`` pixels. Crops are listed column by column
    (x0 outer, y0 inner), as in the reference.

    Args:
        image_size: (H, W).
        crop_n_layers: number of layers below the whole image.
        overlap_ratio: overlap of the first layer as a fraction of the short side.

    Returns:
        XYXY int crop boxes (exclusive end) and the layer index of each. Crops left without a
        pixel (images only a few pixels high or wide) are not listed.

    Example:
        >>> crop_boxes_for_layers((100, 200), 1, 0.5)[0]
        [[0, 0, 200, 100], [0, 0, 125, 75], [0, 25, 125, 100], [75, 0, 200, 75], [75, 25, 200, 100]]
    """
    height, width = image_size
    boxes, layers = [[0, 0, width, height]], [0]
    for layer in range(1, crop_n_layers + 1):
        per_side = 2 ** layer
        overlap = int(overlap_ratio * min(height, width) * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + width) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + height) / per_side))
        for i in range(per_side):
            x0 = int((crop_w - overlap) * i)
            for j in range(per_side):
                y0 = int((crop_h - overlap) * j)
                box = [x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)]
                if box[2] > box[0] and box[3] > box[1]:
                    boxes.append(box)
                    layers.append(layer)
    return boxes, layers


# -- decoding -----------------------------------------------------------------------------------
_SPLIT_DECODER = ("run_transformer", "masks_from_tokens", "iou_prediction_head", "output_selection", "iou_token",
                  "num_mask_tokens")


def decode_selected(segmenter: "Segmenter", embedding: "ImageEmbedding", points: np.ndarray,
                    select: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode one foreground point per prompt; run the mask head only for selected outputs.

    The predicted IoU comes from the decoder's IoU token, so it is known before the costly mask
    head (upscaling convolutions and hypernetworks) runs; ``select`` sees it and picks the
    outputs whose masks are needed. Same numbers (to float rounding) as :meth:`Segmenter.decode` with
    ``multimask=True`` (``MaskDecoder.predict_masks`` split after the IoU head: ``run_transformer`` then ``masks_from_tokens``).

    Args:
        points: float (B, 2) XY pixels of the embedded image.
        select: (B, K) predicted IoU -> bool (B, K), K = 3 multimask outputs.

    Returns:
        predicted IoU (B, K), selected (prompt, output) pairs int64 (M, 2) in row-major order and
        their low-res logits (M, s, s), on the model's device and dtype.
    """
    model, device = segmenter.model, segmenter.device
    decoder = model.mask_decoder
    points = np.asarray(points, dtype=np.float64)
    if not all(hasattr(decoder, name) for name in _SPLIT_DECODER):  # unknown decoder: decode everything
        from samkit.prompts import Prompts

        low_res, scores = segmenter.decode(embedding, Prompts(points=points[:, None]), multimask=True)
        pairs = select(scores).nonzero()
        return scores, pairs, low_res[pairs[:, 0], pairs[:, 1]]
    dtype = decoder.iou_token.weight.dtype  # the decoder may run in another dtype than the encoder
    coords = torch.as_tensor(embedding.coordinate_map.points_to_model(points[:, None, :]), device=device)
    labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=device)
    sparse, dense = model.prompt_encoder((coords, labels), None, None)
    pe = model.prompt_encoder.get_dense_pe().to(dtype)
    hs, keys, grid = decoder.run_transformer(embedding.features.to(dtype), pe, sparse.to(dtype), dense[:1].to(dtype))
    outputs = range(decoder.num_mask_tokens)[decoder.output_selection(True)]
    scores = decoder.iou_prediction_head(hs[:, 0])[:, outputs.start:outputs.stop]
    keep = select(scores)
    rows = keep.any(dim=1).nonzero()[:, 0]
    chunks = [keys.new_zeros((0, 4 * grid[0], 4 * grid[1]))]
    for r in rows.split(_MASK_HEAD_CHUNK):
        masks = decoder.masks_from_tokens(keys[r], hs[r, 1:1 + decoder.num_mask_tokens], grid, outputs)
        chunks.append(masks[keep[r]])
    return scores, keep.nonzero(), torch.cat(chunks)


# -- per-mask statistics ------------------------------------------------------------------------
def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks ``logits > threshold + offset`` and ``logits > threshold - offset``.

    The first mask lies inside the second, so the IoU is the ratio of their areas.

    Args:
        logits: (..., H, W) float mask logits.

    Returns:
        float32 (...,); NaN where both masks are empty (as the reference).
    """
    inner = (logits > threshold + offset).sum(dim=(-2, -1), dtype=torch.int32)
    outer = (logits > threshold - offset).sum(dim=(-2, -1), dtype=torch.int32)
    return inner.float() / outer.float()


def mask_boxes(masks: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Boxes around masks (..., H, W): int64 (..., 4) XYXY, inclusive max, zeros if empty.

    Args:
        masks: bool masks, or float logits when ``threshold`` is given (the mask is
            ``logits > threshold``; reading the logits is faster than thresholding first).
    """
    height, width = masks.shape[-2:]
    if threshold is None:
        rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (..., H), (..., W)
    else:
        rows, cols = masks.amax(dim=-1) > threshold, masks.amax(dim=-2) > threshold
    rows, cols = rows.to(torch.uint8), cols.to(torch.uint8)
    top = rows.argmax(dim=-1)
    bottom = height - 1 - rows.flip(-1).argmax(dim=-1)
    left = cols.argmax(dim=-1)
    right = width - 1 - cols.flip(-1).argmax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return boxes * (cols.amax(dim=-1, keepdim=True) > 0)


def near_crop_edge(boxes: torch.Tensor, crop_box: list[int], image_box: list[int],
                   tolerance: float = 20.0) -> torch.Tensor:
    """Boxes (in crop coordinates) within ``tolerance`` px of a crop side that is not an image side.

    Args:
        boxes: (N, 4) XYXY in the crop's frame.
        crop_box: XYXY of the crop in the image.
        image_box: ``[0, 0, W, H]``.

    Returns:
        bool (N,).
    """
    offset = torch.tensor(crop_box[:2] * 2, dtype=torch.float32, device=boxes.device)
    placed = boxes.float() + offset
    crop = torch.tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.tensor(image_box, dtype=torch.float32, device=boxes.device)
    at_crop = (placed - crop).abs() <= tolerance
    at_image = (placed - image).abs() <= tolerance
    return (at_crop & ~at_image).any(dim=1)


# -- duplicate removal --------------------------------------------------------------------------
def box_nms(boxes: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression of XYXY boxes.

    Boxes are visited by decreasing score (ties in index order); a box is dropped when its IoU
    with a kept box is strictly above ``iou_threshold``. Arithmetic is float32 as in
    ``torchvision.ops.nms``, so the kept set is identical (pairs with a zero union, i.e. empty
    boxes, have NaN IoU and never suppress each other).

    Returns:
        int64 indices of the kept boxes, by decreasing score.

    Example:
        >>> box_nms(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), np.array([0.9, 0.8, 0.7]), 0.5)
        array([0, 2])
    """
    b = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float32)
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float32)
    if b.ndim != 2 or b.shape[1] != 4 or s.shape != (b.shape[0],):
        raise ValueError(f"boxes must have shape (N, 4) and scores (N,), got {b.shape} and {s.shape}")
    order = np.argsort(-s, kind="stable")
    x0, y0, x1, y1 = (b[order, i] for i in range(4))
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    zero = np.float32(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        for pos in range(len(order)):
            if suppressed[pos]:
                continue
            kept.append(order[pos])
            rest = slice(pos + 1, None)
            w = np.maximum(zero, np.minimum(x1[pos], x1[rest]) - np.maximum(x0[pos], x0[rest]))
            h = np.maximum(zero, np.minimum(y1[pos], y1[rest]) - np.maximum(y0[pos], y0[rest]))
            inter = w * h
            iou = inter / (areas[pos] + areas[rest] - inter)
            suppressed[rest] |= iou.astype(np.float64) > iou_threshold
    return np.asarray(kept, dtype=np.int64)


# -- compact storage ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PackedMask:
    """A bool mask kept as the bit-packed patch inside its box (about 1 bit per box pixel).

    Attributes:
        top, left: position of the patch in the frame it was packed in (pixels).
        height, width: patch size (1 x 1 for an empty mask).
        bits: uint8, ``np.packbits`` of the row-major patch.
        area: number of set pixels.
    """

    top: int
    left: int
    height: int
    width: int
    bits: np.ndarray
    area: int

    @classmethod
    def pack(cls, mask: np.ndarray, box: np.ndarray | list[int]) -> "PackedMask":
        """Pack bool (H, W) ``mask`` whose set pixels lie inside inclusive XYXY ``box``."""
        x0, y0, x1, y1 = (int(v) for v in box)
        patch = mask[y0:y1 + 1, x0:x1 + 1]
        return cls(y0, x0, patch.shape[0], patch.shape[1], np.packbits(patch), int(np.count_nonzero(patch)))

    def patch(self) -> np.ndarray:
        """The bool (height, width) patch."""
        return np.unpackbits(self.bits, count=self.height * self.width).view(bool).reshape(self.height, self.width)

    def paste(self, canvas: np.ndarray, offset_xy: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Write the patch into bool ``canvas`` (H, W), shifted by ``offset_xy``; returns canvas."""
        top, left = self.top + offset_xy[1], self.left + offset_xy[0]
        canvas[top:top + self.height, left:left + self.width] = self.patch()
        return canvas


# -- small regions (pure numpy connected components, 8-connectivity) ----------------------------
def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of set pixels in raster order: row, start column, end column (exclusive)."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def _run_components(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Component id of each run (8-connectivity), numbered by first pixel in raster order."""
    n = rows.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    stride = width + 2
    start_key, end_key = rows * stride + starts, rows * stride + ends
    # Runs of the next row touching run a (diagonals included): end >= start_a, start <= end_a.
    first = np.searchsorted(end_key, (rows + 1) * stride + starts, side="left")
    last = np.searchsorted(start_key, (rows + 1) * stride + ends, side="right")
    count = np.maximum(last - first, 0)
    a = np.repeat(np.arange(n), count)
    b = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + np.repeat(first, count)
    parent = np.arange(n)
    while True:  # hook roots to the smaller root, then compress paths, until no edge joins two roots
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        low = np.minimum(ra[differ], rb[differ])
        np.minimum.at(parent, ra[differ], low)
        np.minimum.at(parent, rb[differ], low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    # Roots are the smallest run index of each component, i.e. its first run in raster order.
    _, component = np.unique(parent, return_inverse=True)
    return component


def _paint(shape: tuple[int, int], rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    height, width = shape
    size = height * width
    marks = (np.bincount(rows * width + starts, minlength=size + 1)
             - np.bincount(rows * width + ends, minlength=size + 1))
    return (np.cumsum(marks[:size]) > 0).reshape(height, width)


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes or drop islands smaller than ``min_area`` pixels (8-connected regions).

    Same results as the reference's OpenCV-based ``remove_small_regions``, in pure numpy:

    * ``"holes"``: unset regions with fewer than ``min_area`` pixels are set.
    * ``"islands"``: set regions with fewer than ``min_area`` pixels are cleared; if every region
      is small, the largest one is kept (the first in raster order on ties; OpenCV's block scan
      may order exact ties differently).

    Args:
        mask: bool (H, W).

    Returns:
        the new mask and whether anything changed (the input is returned when nothing did).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    fill_holes = mode == "holes"
    working = ~mask if fill_holes else mask
    rows, starts, ends = _runs(working)
    component = _run_components(rows, starts, ends, mask.shape[1])
    sizes = np.bincount(component, weights=ends - starts).astype(np.int64) if component.size else np.zeros(0, np.int64)
    small = sizes < min_area
    if not small.any():
        return mask, False
    if fill_holes:
        pick = small[component]
        return mask | _paint(mask.shape, rows[pick], starts[pick], ends[pick]), True
    keep = ~small
    if not keep.any():
        keep[int(np.argmax(sizes))] = True
    pick = keep[component]
    return _paint(mask.shape, rows[pick], starts[pick], ends[pick]), True
