"""Segment everything: automatic mask generation, object proposals and edge maps (SAM paper, sec. 7).

A grid of single foreground points prompts SAM on the whole image (and optionally on zoomed
crops); masks are filtered by predicted IoU and stability, de-duplicated by box NMS and
optionally cleaned of small holes and islands. With equal settings the output matches
``segment_anything.SamAutomaticMaskGenerator`` (same masks, scores, boxes and order, up to the
float rounding of the decoder; ``tests/test_everything.py`` states the tolerances):

    >>> everything = SegmentEverything(Segmenter(model))          # doctest: +SKIP
    >>> result = everything(image)        # Segmentation, K = 1    # doctest: +SKIP
    >>> records = everything.generate(image)  # like the reference  # doctest: +SKIP
    >>> SegmentEverything.preset("sa1b", Segmenter(model))(image)  # doctest: +SKIP

It is faster with identical results because it filters by predicted IoU before any mask is
computed (the decoder's mask head runs only for prompts with a surviving output), upscales only
surviving masks (cropping the padding at low resolution first) and keeps survivors as bit-packed
box patches: memory is bounded by ``points_per_batch`` (on CPU at most 16 prompts are decoded
at once: as fast, a third of the memory) and the survivors' box areas, never by a number of
full-size masks (only the returned result holds full masks). ``fast=True`` also computes the
stability score on the low-res logits, which changes results slightly.

Per-mask metadata (``Segmentation.meta``): ``point_coords`` ``[[x, y]]`` (the prompt, image
pixels), ``stability_score``, ``crop_box`` (XYWH, as the reference's records), ``bbox`` (XYWH
with the reference's inclusive ``w = max_col - min_col``) and ``area``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch

from samkit.results import OUTPUT_MODES, Segmentation
from samkit.segmenter import ImageEmbedding, Segmenter
from samkit.transforms import to_rgb_uint8, upscale_masks

from . import ops
from .settings import PRESETS, EverythingSettings

logger = logging.getLogger(__name__)

__all__ = ["SegmentEverything", "edge_map", "segment_everything"]

Progress = Callable[[int, int], None]
_UPSCALE_CHUNK = 32  # masks upscaled to full size at once
_CPU_DECODE_CHUNK = 16  # prompts per decoder call on CPU


@dataclasses.dataclass
class _Proposals:
    """Surviving masks, compact. Boxes: reference XYXY (inclusive max), image frame like the masks."""

    masks: list[ops.PackedMask]
    boxes: np.ndarray  # int64 (n, 4)
    scores: np.ndarray  # float32 (n,) predicted IoU
    stability: np.ndarray  # float32 (n,)
    points: np.ndarray  # float64 (n, 2) XY image pixels
    crop: np.ndarray  # int64 (n,) index into the crop boxes
    prompt: np.ndarray  # int64 (n, 2): point index in the crop's grid, decoder output

    @classmethod
    def empty(cls) -> "_Proposals":
        return cls([], np.zeros((0, 4), np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros((0, 2), np.int64))

    @classmethod
    def concat(cls, parts: Sequence["_Proposals"]) -> "_Proposals":
        parts = [cls.empty(), *parts]
        return cls([m for p in parts for m in p.masks],
                   *(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)[1:]))

    def select(self, index: np.ndarray) -> "_Proposals":
        index = np.asarray(index, dtype=np.int64)
        return _Proposals([self.masks[i] for i in index.tolist()],
                          *(getattr(self, f.name)[index] for f in dataclasses.fields(self)[1:]))


# -- forward: one prompt batch, one crop, all crops ---------------------------------------------
def _propose_batch(segmenter: Segmenter, embedding: ImageEmbedding, points: np.ndarray, crop_box: list[int],
                   image_box: list[int], s: EverythingSettings) -> _Proposals:
    """Decode a batch of points of one crop; filter, threshold, box and pack (crop frame)."""
    threshold = segmenter.model.mask_threshold

    def select(iou: torch.Tensor) -> torch.Tensor:
        return iou > s.pred_iou_thresh if s.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)

    # On CPU, decoding 16 prompts at a time is as fast as 64 and needs a third of the memory.
    step = min(s.points_per_batch, _CPU_DECODE_CHUNK) if segmenter.device.type == "cpu" else s.points_per_batch
    decoded = [ops.decode_selected(segmenter, embedding, points[i:i + step], select)
               for i in range(0, len(points), step)]
    scores = torch.cat([d[0] for d in decoded])
    pairs = torch.cat([d[1] + torch.tensor([i * step, 0], device=d[1].device) for i, d in enumerate(decoded)])
    low_res = torch.cat([d[2] for d in decoded]).float()
    if s.fast and len(pairs):  # approximate: stability of the low-res logits inside the image
        factor = segmenter.image_size // low_res.shape[-1]
        rows, cols = (-(-n // factor) for n in embedding.input_size)
        low_stability = ops.stability_score(low_res[:, :rows, :cols], threshold, s.stability_score_offset)
        if s.stability_score_thresh > 0:
            stable = low_stability >= s.stability_score_thresh
            pairs, low_res, low_stability = pairs[stable], low_res[stable], low_stability[stable]
    parts = []
    for start in range(0, len(pairs), _UPSCALE_CHUNK):
        part = slice(start, start + _UPSCALE_CHUNK)
        logits = upscale_masks(low_res[part, None], input_size=embedding.input_size,
                               original_size=embedding.original_size, image_size=segmenter.image_size)[:, 0]
        stability = low_stability[part] if s.fast else ops.stability_score(logits, threshold, s.stability_score_offset)
        chosen = pairs[part]
        if s.stability_score_thresh > 0:
            stable = stability >= s.stability_score_thresh
            logits, stability, chosen = logits[stable], stability[stable], chosen[stable]
        boxes = ops.mask_boxes(logits, threshold)
        inside = ~ops.near_crop_edge(boxes, crop_box, image_box)
        masks = (logits[inside] > threshold).cpu().numpy()
        boxes, chosen = boxes[inside].cpu().numpy(), chosen[inside]
        parts.append(_Proposals([ops.PackedMask.pack(m, b) for m, b in zip(masks, boxes)], boxes,
                                scores[chosen[:, 0], chosen[:, 1]].float().cpu().numpy(),
                                stability[inside].cpu().numpy(), points[chosen[:, 0].cpu().numpy()],
                                np.zeros(len(boxes), np.int64), chosen.cpu().numpy()))
    return _Proposals.concat(parts)


def _propose_in_crop(segmenter: Segmenter, image: np.ndarray, crop_index: int, crop_box: list[int],
                     grid: np.ndarray, s: EverythingSettings, report: Callable[[int], None]) -> _Proposals:
    """Masks of one crop after NMS within it, moved to the image frame."""
    x0, y0, x1, y1 = crop_box
    embedding = segmenter.encode(image[y0:y1, x0:x1])
    points = grid * np.array([[x1 - x0, y1 - y0]])
    parts = []
    for start in range(0, len(points), s.points_per_batch):
        batch = _propose_batch(segmenter, embedding, points[start:start + s.points_per_batch], crop_box,
                               [0, 0, image.shape[1], image.shape[0]], s)
        batch.prompt[:, 0] += start
        parts.append(batch)
        report(min(start + s.points_per_batch, len(points)))
    found = _Proposals.concat(parts)
    found = found.select(ops.box_nms(found.boxes, found.scores, s.box_nms_thresh))
    found.masks = [dataclasses.replace(m, top=m.top + y0, left=m.left + x0) for m in found.masks]
    found.boxes = found.boxes + np.array([x0, y0, x0, y0])
    found.points = found.points + np.array([x0, y0])
    found.crop[:] = crop_index
    return found


def _propose(segmenter: Segmenter, image: np.ndarray, s: EverythingSettings,
             progress: Progress | None) -> tuple[_Proposals, list[list[int]]]:
    """All crops, then NMS between crops preferring masks from smaller crops."""
    grids = s.grids()
    crop_boxes, layers = ops.crop_boxes_for_layers(image.shape[:2], s.crop_n_layers, s.crop_overlap_ratio)
    total = sum(len(grids[layer]) for layer in layers)
    parts, done = [], 0
    for index, (box, layer) in enumerate(zip(crop_boxes, layers)):
        def report(n: int, base: int = done) -> None:
            if progress is not None:
                progress(base + n, total)

        parts.append(_propose_in_crop(segmenter, image, index, box, grids[layer], s, report))
        done += len(grids[layer])
    found = _Proposals.concat(parts)
    if len(crop_boxes) > 1:
        areas = np.array([(b[2] - b[0]) * (b[3] - b[1]) for b in crop_boxes], dtype=np.float32)
        found = found.select(ops.box_nms(found.boxes, np.float32(1) / areas[found.crop], s.crop_nms_thresh))
    return found, crop_boxes


# -- postprocess ---------------------------------------------------------------------------------
def _remove_small_regions(found: _Proposals, image_size: tuple[int, int], min_area: int,
                          nms_thresh: float) -> _Proposals:
    """Fill small holes, drop small islands, then NMS preferring unchanged masks (as the reference)."""
    masks, boxes, unchanged = [], [], []
    for packed in found.masks:
        mask = packed.paste(np.zeros(image_size, dtype=bool))
        mask, filled = ops.remove_small_regions(mask, min_area, "holes")
        mask, cut = ops.remove_small_regions(mask, min_area, "islands")
        boxes.append(ops.mask_boxes(torch.from_numpy(mask)).numpy())
        unchanged.append(not (filled or cut))
        masks.append(packed if unchanged[-1] else ops.PackedMask.pack(mask, boxes[-1]))
    keep = ops.box_nms(np.stack(boxes), np.asarray(unchanged, dtype=np.float32), nms_thresh)
    out = found.select(keep)
    out.masks, out.boxes = [masks[i] for i in keep.tolist()], np.stack(boxes)[keep]
    return out


def _run(segmenter: Segmenter, image: Any, s: EverythingSettings,
         progress: Progress | None) -> tuple[_Proposals, list[list[int]], np.ndarray]:
    """preprocess -> forward -> postprocess; returns the compact survivors, crop boxes and the RGB image."""
    if not isinstance(segmenter, Segmenter):
        raise TypeError(f"segmenter must be a samkit.Segmenter, got {type(segmenter).__name__}")
    rgb = to_rgb_uint8(image)
    with torch.inference_mode():
        found, crop_boxes = _propose(segmenter, rgb, s, progress)
    if s.min_mask_region_area > 0 and len(found.masks):
        found = _remove_small_regions(found, rgb.shape[:2], s.min_mask_region_area,
                                      max(s.box_nms_thresh, s.crop_nms_thresh))
    if s.max_area_fraction is not None:
        areas = np.array([m.area for m in found.masks], dtype=np.int64)
        found = found.select(np.flatnonzero(areas < s.max_area_fraction * rgb.shape[0] * rgb.shape[1]))
    if s.max_masks is not None and len(found.masks) > s.max_masks:
        found = found.select(np.argsort(-found.scores, kind="stable")[:s.max_masks])
    logger.debug("segment everything: %d masks from %d crops", len(found.masks), len(crop_boxes))
    return found, crop_boxes, rgb


def segment_everything(segmenter: Segmenter, image: Any, *, progress: Progress | None = None,
                       **settings: Any) -> Segmentation:
    """Automatic mask generation on one image.

    Args:
        segmenter: the :class:`Segmenter` to prompt.
        image: (H, W, 3) uint8 RGB array, PIL image, path, ... (see :func:`samkit.transforms.to_rgb_uint8`).
        progress: called with (prompts done, prompts total) after each prompt batch.
        **settings: the keyword arguments of :class:`SegmentEverything` (same defaults).

    Returns:
        :class:`Segmentation` with K = 1: masks bool (N, 1, H, W), predicted IoU (N, 1) and the
        metadata of the module docstring, in the reference's order.
    """
    found, crop_boxes, rgb = _run(segmenter, image, EverythingSettings(**settings), progress)
    if not found.masks:
        return Segmentation.empty(rgb.shape[:2])
    masks = np.zeros((len(found.masks), 1, *rgb.shape[:2]), dtype=bool)
    meta = []
    for i, packed in enumerate(found.masks):
        packed.paste(masks[i, 0])
        x0, y0, x1, y1 = found.boxes[i].tolist()
        cx0, cy0, cx1, cy1 = crop_boxes[int(found.crop[i])]
        meta.append({"point_coords": [found.points[i].tolist()], "stability_score": float(found.stability[i]),
                     "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0], "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": packed.area})
    return Segmentation(masks, found.scores[:, None], None, meta)


def edge_map(segmenter: Segmenter, image: Any, *, progress: Progress | None = None, **settings: Any) -> np.ndarray:
    """Zero-shot edge map (paper appendix D.2) from the masks of :func:`segment_everything`.

    The surviving masks' unthresholded probability maps (sigmoid of the upscaled logits, decoded
    again for the survivors only) are Sobel-filtered, the magnitudes maxed over masks, then
    thinned by edge NMS along the gradient direction (:func:`~samkit.pipelines.everything.edges.edge_nms`).

    Returns:
        float32 (H, W) in [0, 1].
    """
    s = EverythingSettings(**settings)
    found, crop_boxes, rgb = _run(segmenter, image, s, progress)
    strength = torch.zeros(rgb.shape[:2], device=segmenter.device)
    grids = s.grids()
    layers = ops.crop_boxes_for_layers(rgb.shape[:2], s.crop_n_layers, s.crop_overlap_ratio)[1]
    with torch.inference_mode():
        for crop in np.unique(found.crop).tolist():
            x0, y0, x1, y1 = crop_boxes[crop]
            embedding = segmenter.encode(rgb[y0:y1, x0:x1])
            wanted = found.prompt[found.crop == crop]
            points = np.unique(wanted[:, 0])
            for batch in np.array_split(points, -(-len(points) // s.points_per_batch)):
                want = torch.zeros((len(batch), segmenter.model.mask_decoder.num_multimask_outputs), dtype=torch.bool)
                in_batch = np.isin(wanted[:, 0], batch)
                want[np.searchsorted(batch, wanted[in_batch, 0]), wanted[in_batch, 1]] = True
                xy = grids[layers[crop]][batch] * np.array([[x1 - x0, y1 - y0]])
                low_res = ops.decode_selected(segmenter, embedding, xy, lambda iou: want.to(iou.device))[2]
                for part in low_res.float().split(_UPSCALE_CHUNK):
                    logits = upscale_masks(part[:, None], input_size=embedding.input_size,
                                           original_size=embedding.original_size, image_size=segmenter.image_size)
                    magnitude = ops.sobel_magnitude(torch.sigmoid(logits)).amax(dim=(0, 1))
                    region = strength[y0:y1, x0:x1]
                    torch.maximum(region, magnitude, out=region)
    return ops.edge_nms(strength).cpu().numpy().astype(np.float32)


class SegmentEverything:
    """Automatic mask generation with a :class:`Segmenter`: the reference's parameters and defaults.

    Args:
        segmenter: the :class:`Segmenter` to prompt.
        points_per_side: grid points per side on the whole image (None when ``point_grids`` is given).
        points_per_batch: prompts decoded together; bounds the working memory.
        pred_iou_thresh: keep masks with predicted IoU ``>`` this (no filter when ``<= 0``).
        stability_score_thresh: keep masks with stability ``>=`` this (no filter when ``<= 0``).
        stability_score_offset: logit offset of the stability score's two thresholds.
        box_nms_thresh: box IoU above which a lower-scoring mask of the same crop is dropped.
        crop_n_layers: zoomed crop layers; layer ``i`` has ``(2 ** i) ** 2`` crops.
        crop_nms_thresh: box IoU for de-duplicating across crops (masks of smaller crops win).
        crop_overlap_ratio: overlap of first-layer crops, as a fraction of the short side.
        crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor ** i`` points per side.
        point_grids: explicit (P, 2) grids normalised to [0, 1], one per crop layer.
        min_mask_region_area: fill holes and drop islands smaller than this many pixels (0: off).
        output_mode: ``"binary_mask"``, ``"uncompressed_rle"`` or ``"coco_rle"`` for :meth:`generate`.
        max_area_fraction: drop masks covering at least this fraction of the image (None: off).
        max_masks: keep the highest predicted-IoU masks, at most this many, by score (None: all).
        fast: stability score from the low-res logits: fewer full-size upscales, slightly
            different stability scores (and so a few different masks near the threshold).
        progress: called with (prompts done, prompts total) after each prompt batch.
    """

    def __init__(self, segmenter: Segmenter, *, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids: Sequence[np.ndarray] | None = None,
                 min_mask_region_area: int = 0, output_mode: str = "binary_mask",
                 max_area_fraction: float | None = None, max_masks: int | None = None, fast: bool = False,
                 progress: Progress | None = None) -> None:
        if not isinstance(segmenter, Segmenter):
            raise TypeError(f"segmenter must be a samkit.Segmenter, got {type(segmenter).__name__}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be a callable (done, total) or None, got {type(progress).__name__}")
        self.segmenter, self.output_mode, self.progress = segmenter, output_mode, progress
        self.settings = EverythingSettings(
            points_per_side=points_per_side, points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh, crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio, crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids, min_mask_region_area=min_mask_region_area,
            max_area_fraction=max_area_fraction, max_masks=max_masks, fast=fast)

    @classmethod
    def preset(cls, name: str, segmenter: Segmenter, **overrides: Any) -> "SegmentEverything":
        """Settings of the paper (:data:`PRESETS`: ``"sa1b"``, ``"proposals"``, ``"edges"``), then overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(segmenter, **dict(PRESETS[name], **overrides))

    def _kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)}

    def __call__(self, image: Any) -> Segmentation:
        """Masks of one image; see :func:`segment_everything`."""
        return segment_everything(self.segmenter, image, progress=self.progress, **self._kwargs())

    def generate(self, image: Any) -> list[dict[str, Any]]:
        """Records like ``SamAutomaticMaskGenerator.generate``, segmentations in :attr:`output_mode`."""
        return self(image).to_records(self.output_mode)

    def edges(self, image: Any) -> np.ndarray:
        """float32 (H, W) edge map in [0, 1]; see :func:`edge_map`."""
        return edge_map(self.segmenter, image, progress=self.progress, **self._kwargs())
