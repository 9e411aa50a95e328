"""Point-prompt segmentation: the paper's single-point and 1 -> 9 click protocols (sec. 7.1).

For every object of every image (crowd regions and empty masks left out) a simulated user
clicks the object's centre (:func:`~samkit.eval.clicks.mask_centers`), then up to ``clicks - 1``
more times at the centre of the larger error region of the current prediction
(:func:`~samkit.eval.clicks.next_clicks`). Each step prompts all clicks so far, with the
previous step's low-resolution logits as mask input (``mask_input=False``: without).

At each step the model returns three masks (``multimask="always"``), one (``"never"``), or
three for the first click and one afterwards (``"first"``, the default: SAM answers one point
ambiguously and several points with its single-mask output). The *most confident* mask (highest
predicted IoU) is the prediction the next click corrects; the *oracle* is the best of the
outputs by true IoU. Their IoUs against the ground truth, at the original image size, are
averaged over objects: ``miou[k]`` and ``oracle_miou[k]`` for ``k + 1`` clicks. An object whose
prediction is exact gets no more clicks and keeps its IoU.

Speed: one encoder pass per image; each step is one ``segment`` call for all the image's objects
(the Segmenter chunks them by its ``prompt_batch_size``).

Example:
    >>> result = evaluate_points(samkit.Segmenter(model), CocoDataset("ann.json", "images/"))  # doctest: +SKIP
    >>> result.metrics["miou"][0], result.metrics["oracle_miou"][0]                             # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .clicks import NEXT_CLICK_RULES, mask_centers, next_clicks
from .dataset import EvalSample
from .metrics import AREA_RANGES, area_range, masks_iou
from .result import EvaluationResult, Progress, run_per_image

__all__ = ["MULTIMASK_MODES", "evaluate_points"]

MULTIMASK_MODES = ("first", "always", "never")


def _check(segmenter: Any, clicks: int, multimask: str, rule: str) -> None:
    if not (callable(getattr(segmenter, "encode", None)) and callable(getattr(segmenter, "segment", None))):
        raise TypeError(f"segmenter must have encode(image) and segment(embedding, ...) like samkit.Segmenter, "
                        f"got {type(segmenter).__name__}")
    if isinstance(clicks, bool) or not isinstance(clicks, (int, np.integer)) or clicks < 1:
        raise ValueError(f"clicks must be an int >= 1, got {clicks!r}")
    if multimask not in MULTIMASK_MODES:
        raise ValueError(f"multimask must be one of {MULTIMASK_MODES}, got {multimask!r}")
    if rule not in NEXT_CLICK_RULES:
        raise ValueError(f"next_click must be one of {NEXT_CLICK_RULES}, got {rule!r}")


def _simulate(segmenter: Any, sample: EvalSample, clicks: int, multimask: str, rule: str,
              center: Callable[[np.ndarray], np.ndarray], feed_logits: bool) -> dict[str, Any]:
    """The per-image record: ``objects`` with their clicks and IoUs per step."""
    keep = sample.evaluated()
    targets = sample.masks[keep]
    m = len(keep)
    best_iou, oracle_iou = np.full((m, clicks), np.nan), np.full((m, clicks), np.nan)
    history: list[list[list[float]]] = [[] for _ in range(m)]
    if m:
        embedding = segmenter.encode(sample.image)
        points = np.asarray(center(targets), dtype=np.float32).reshape(m, 1, 2)
        labels = np.ones((m, 1), dtype=np.int64)
        active = np.arange(m)
        predicted = np.zeros_like(targets)
        logits = None
        for step in range(clicks):
            if step:
                xy, label, wrong = next_clicks(predicted[active], targets[active], rule=rule)
                active, points, labels = active[wrong], points[wrong], labels[wrong]
                if not len(active):
                    continue
                points = np.concatenate([points, xy[wrong][:, None]], axis=1)
                labels = np.concatenate([labels, label[wrong][:, None]], axis=1)
                logits = logits[wrong]
            several = multimask == "always" or (multimask == "first" and step == 0)
            out = segmenter.segment(embedding, points=points, labels=labels, multimask=several,
                                    mask_input=logits if feed_logits else None, return_logits=True)
            ious = masks_iou(out.masks, targets[active])  # (A, K)
            rows = np.arange(len(active))
            chosen = np.asarray(out.scores).argmax(axis=1)
            best_iou[active, step], oracle_iou[active, step] = ious[rows, chosen], ious.max(axis=1)
            predicted[active] = out.masks[rows, chosen]
            logits = np.asarray(out.logits)[rows, chosen][:, None]
            for j, i in enumerate(active):
                history[i] = [[float(x), float(y), int(v)] for (x, y), v in zip(points[j], labels[j])]
    for step in range(1, clicks):  # an exact prediction keeps its IoU for the clicks it did not need
        for table in (best_iou, oracle_iou):
            unset = np.isnan(table[:, step])
            table[unset, step] = table[unset, step - 1]
    objects = []
    for j, i in enumerate(keep):
        obj = sample.objects[i]
        objects.append({"annotation_id": obj.annotation_id, "category_id": obj.category_id, "area": obj.area,
                        "area_range": area_range(obj.area), "clicks": history[j],
                        "iou": best_iou[j].tolist(), "oracle_iou": oracle_iou[j].tolist()})
    return {"objects": objects}


def _summary(objects: list[dict[str, Any]], clicks: int) -> dict[str, Any]:
    def curves(group: list[dict[str, Any]]) -> dict[str, Any]:
        if not group:
            return {"num_objects": 0, "miou": [None] * clicks, "oracle_miou": [None] * clicks}
        return {"num_objects": len(group),
                "miou": np.mean([o["iou"] for o in group], axis=0).tolist(),
                "oracle_miou": np.mean([o["oracle_iou"] for o in group], axis=0).tolist()}

    metrics = curves(objects)
    metrics["by_area"] = {name: curves([o for o in objects if o["area_range"] == name]) for name in AREA_RANGES}
    return metrics


def evaluate_points(segmenter: Any, dataset: Any, *, clicks: int = 9, multimask: str = "first",
                    next_click: str = "area", mask_input: bool = True,
                    center: Callable[[np.ndarray], np.ndarray] = mask_centers,
                    progress: Progress | None = None) -> EvaluationResult:
    """mIoU of point prompts per click count, most confident and oracle, overall and by area.

    Args:
        segmenter: a :class:`samkit.Segmenter` (anything with its ``encode`` and ``segment``).
        dataset: a :class:`~samkit.eval.CocoDataset` or :class:`~samkit.eval.ArrayDataset`.
        clicks: clicks per object (the paper: 1 and 1 -> 9).
        multimask: ``"first"``, ``"always"`` or ``"never"`` (module docstring).
        next_click: ``"area"`` or ``"depth"``: how the larger error region is chosen
            (:mod:`samkit.eval.clicks`).
        mask_input: give the previous step's logits back as the mask prompt (the paper; False
            prompts the clicks alone, for models not trained with mask prompts).
        center: bool (M, H, W) masks -> (M, 2) XY first clicks; the default is the distance
            transform centre.
        progress: called with (images done, images total).

    Returns:
        :class:`~samkit.eval.EvaluationResult` with ``metrics`` ``{"miou", "oracle_miou": [clicks
        floats] (index 0 = 1 click), "num_objects", "num_images", "num_failed_images", "by_area":
        {"small"|"medium"|"large": {"miou", "oracle_miou", "num_objects"}}}`` (None where a group
        has no object) and per-image records whose ``objects`` hold ``clicks`` ([x, y, label] per
        click), ``iou`` and ``oracle_iou`` per step, ``area`` and ``area_range``.
    """
    _check(segmenter, clicks, multimask, next_click)
    records, problems = run_per_image(
        dataset, lambda sample: _simulate(segmenter, sample, int(clicks), multimask, next_click, center, mask_input),
        progress)
    objects = [o for r in records for o in r.get("objects", [])]
    metrics = _summary(objects, int(clicks))
    metrics.update(num_images=sum(1 for r in records if not r["error"]),
                   num_failed_images=sum(1 for r in records if r["error"]),
                   settings={"clicks": int(clicks), "multimask": multimask, "next_click": next_click,
                             "mask_input": bool(mask_input)})
    return EvaluationResult("points", metrics, records, problems)
