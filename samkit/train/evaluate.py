"""Validation: mIoU of single-point and box prompts through the inference path.

Every ground-truth mask is prompted twice through :class:`samkit.Segmenter` (so the image
transforms and mask upscaling are exactly those users get), and the IoU is measured at the
original image resolution:

* **point**: one foreground click at the mask's deepest interior pixel
  (:func:`samkit.train.geometry.interior_points`, the "centre" click of SAM's evaluations),
  multimask output, the highest-scoring mask kept (``point_miou``); ``point_oracle_miou`` keeps
  the best of the three instead (the paper's "oracle");
* **box**: the tight ground-truth box (pixel-edge XYXY), single-mask output (``box_miou``),
  as boxes are trained (see :mod:`samkit.train.interactive`).

Example:
    >>> metrics = evaluate(model, SyntheticScenes(50, seed=1))   # doctest: +SKIP
    >>> metrics["point_miou"], metrics["box_miou"]               # doctest: +SKIP
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from .geometry import interior_points, mask_boxes

__all__ = ["evaluate", "masks_iou"]

logger = logging.getLogger(__name__)


def masks_iou(predicted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """IoU of (N, ..., H, W) bool predictions against (N, H, W) bool targets, broadcast over the middle axes.

    Returns:
        float64 array of shape (N, ...); 1.0 where both masks are empty.
    """
    targets = targets.reshape(targets.shape[0], *([1] * (predicted.ndim - 3)), *targets.shape[-2:])
    inter = (predicted & targets).sum(axis=(-2, -1))
    union = (predicted | targets).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def evaluate(model: torch.nn.Module, dataset: Sequence[tuple[np.ndarray, np.ndarray]], *,
             max_images: int | None = None, area_bins: Sequence[int] = (300, 1000, 2500)) -> dict[str, Any]:
    """Mean IoU over every mask of ``dataset`` with one point and with one box.

    Args:
        model: a SAM model; it is put in eval mode and left there.
        dataset: items ``(image (H, W, 3) uint8, masks (M, H, W) bool)``.
        max_images: evaluate the first ``max_images`` items only.
        area_bins: mask-area edges in pixels for the breakdown in ``by_area``.

    Returns:
        ``{"point_miou", "point_oracle_miou", "box_miou": float, "num_masks", "num_images": int,
        "by_area": [{"min_area", "max_area", "num_masks", "point_miou", "box_miou"}, ...]}``
        (``max_area`` None for the last bin); mIoUs are NaN where there is no mask.
    """
    from samkit.segmenter import Segmenter

    segmenter = Segmenter(model.eval(), cache_size=0)
    point, oracle, box, areas = [], [], [], []
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    for i in range(count):
        image, masks = dataset[i]
        masks = np.asarray(masks, dtype=bool)
        masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
        if len(masks) == 0:
            continue
        areas.append(masks.reshape(len(masks), -1).sum(axis=1))
        embedding = segmenter.encode(image)
        clicks = interior_points(masks) - 0.5  # pixel centres -> pixel indices (XY)
        out = segmenter.segment(embedding, points=clicks[:, None], labels=np.ones((len(masks), 1)),
                                multimask=True, return_logits=False)
        ious = masks_iou(out.masks, masks)  # (M, K)
        point.append(ious[np.arange(len(masks)), out.scores.argmax(axis=1)])
        oracle.append(ious.max(axis=1))
        out = segmenter.segment(embedding, boxes=mask_boxes(masks), multimask=False, return_logits=False)
        box.append(masks_iou(out.masks, masks)[:, 0])
    mean = (lambda parts: float(np.concatenate(parts).mean()) if parts else float("nan"))
    metrics = {"point_miou": mean(point), "point_oracle_miou": mean(oracle), "box_miou": mean(box),
               "num_masks": int(sum(len(p) for p in point)), "num_images": count, "by_area": []}
    all_areas, all_point, all_box = (np.concatenate(parts) if parts else np.zeros(0) for parts in (areas, point, box))
    edges = [0, *sorted(area_bins), None]
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (all_areas >= low) & (all_areas < high if high is not None else True)
        metrics["by_area"].append({
            "min_area": low, "max_area": high, "num_masks": int(inside.sum()),
            "point_miou": float(all_point[inside].mean()) if inside.any() else float("nan"),
            "box_miou": float(all_box[inside].mean()) if inside.any() else float("nan")})
    logger.info("evaluation: %s", metrics)
    return metrics
