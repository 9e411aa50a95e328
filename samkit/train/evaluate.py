"""Validation: mIoU of single-point and box prompts through the inference path.

Every ground-truth mask is prompted twice through :class:`samkit.Segmenter` (so the image
transforms and mask upscaling are exactly those users get), and the IoU is measured at the
original image resolution:

* **point**: :func:`samkit.eval.evaluate_points` with one click, at the mask's deepest interior
  pixel by erosion (:func:`samkit.train.geometry.interior_points`, which needs no scipy; the
  evaluation suite's default centre is the Euclidean distance-transform maximum), multimask
  output, the highest-scoring mask kept (``point_miou``); ``point_oracle_miou`` keeps the best
  of the three instead (the paper's "oracle");
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

from samkit.eval.dataset import ArrayDataset
from samkit.eval.metrics import masks_iou
from samkit.eval.points import evaluate_points

from .geometry import interior_points, mask_boxes

__all__ = ["evaluate", "masks_iou"]

logger = logging.getLogger(__name__)


def _erosion_centres(masks: np.ndarray) -> np.ndarray:
    return interior_points(masks) - 0.5  # pixel centres -> pixel indices (XY)


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

    Raises:
        ValueError: an item cannot be evaluated (its index and the reason).
    """
    from samkit.segmenter import Segmenter

    segmenter = Segmenter(model.eval(), cache_size=0)
    data = ArrayDataset(dataset, max_images=max_images)
    points = evaluate_points(segmenter, data, clicks=1, center=_erosion_centres)
    if points.problems:
        raise ValueError(points.problems[0])
    objects = [o for r in points.per_image for o in r["objects"]]
    point = np.asarray([o["iou"][0] for o in objects], dtype=np.float64)
    oracle = np.asarray([o["oracle_iou"][0] for o in objects], dtype=np.float64)
    areas = np.asarray([o["area"] for o in objects], dtype=np.float64)
    box = []
    for info in data.images:
        sample = data.load(info)
        masks = sample.masks[sample.evaluated()]
        if len(masks):
            out = segmenter.segment(segmenter.encode(sample.image), boxes=mask_boxes(masks), multimask=False,
                                    return_logits=False)
            box.append(masks_iou(out.masks, masks)[:, 0])
    box_iou = np.concatenate(box) if box else np.zeros(0)
    mean = (lambda values: float(values.mean()) if values.size else float("nan"))
    metrics = {"point_miou": mean(point), "point_oracle_miou": mean(oracle), "box_miou": mean(box_iou),
               "num_masks": int(point.size), "num_images": len(data), "by_area": []}
    edges = [0, *sorted(area_bins), None]
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (areas >= low) & (areas < high if high is not None else True)
        metrics["by_area"].append({
            "min_area": low, "max_area": high, "num_masks": int(inside.sum()),
            "point_miou": mean(point[inside]), "box_miou": mean(box_iou[inside])})
    logger.info("evaluation: %s", metrics)
    return metrics
