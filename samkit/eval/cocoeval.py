"""Object proposals (average recall) and instance segmentation (mask AP), scored by pycocotools.

Both protocols run the thing to evaluate on every image of a COCO-format dataset, turn its masks
into COCO results and hand them to ``pycocotools.cocoeval.COCOeval`` (``iouType="segm"``) with
the dataset's ground truth, restricted to the images that loaded. Crowd regions are COCO's
``iscrowd`` (detections on them are neither hits nor misses).

* :func:`evaluate_proposals` (paper sec. 7.3, LVIS): category-agnostic (``useCats=0``) average
  recall over IoU 0.50:0.95 at 10 / 100 / 1000 proposals, overall and by COCO area; when the
  categories carry LVIS's ``frequency``, also AR at the largest count for frequent / common /
  rare objects (ground truth restricted to those categories, every proposal kept).
* :func:`evaluate_instances` (sec. 7.4): mask AP, AP50, AP75 and AP by area, per category, of
  masks from boxes: either a detect-then-segment callable, or a :class:`samkit.Segmenter`
  prompted with the boxes of a COCO detections list (e.g. ViTDet's, as in the paper, or
  :func:`ground_truth_detections`).

Needs pycocotools (``pip install samkit[eval]``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from samkit.formats.coco import category_of, normalize_categories

from .dataset import EvalSample
from .metrics import area_range
from .result import EvaluationResult, Progress, run_per_image

__all__ = ["FREQUENCY_GROUPS", "SCORE_MODES", "evaluate_instances", "evaluate_proposals", "ground_truth_detections",
           "load_detections"]

#: LVIS category ``frequency`` values by group name.
FREQUENCY_GROUPS = {"frequent": "f", "common": "c", "rare": "r"}
#: How an instance mask is scored for AP: the detector's score, SAM's predicted IoU, or both multiplied.
SCORE_MODES = ("detection", "mask", "product")


def _pycocotools() -> tuple[Any, Any, Any]:
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("the proposal and instance protocols are scored by pycocotools: pip install samkit[eval]"
                          ) from None
    return COCO, COCOeval, mask_utils


def _quiet(function: Callable[..., Any], *args: Any) -> Any:
    """Call a pycocotools function without its progress lines on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def _encode(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO RLEs (pycocotools' bytes counts) of bool (N, H, W) masks."""
    mask_utils = _pycocotools()[2]
    if not len(masks):
        return []
    return mask_utils.encode(np.asfortranarray(np.moveaxis(np.asarray(masks, dtype=np.uint8), 0, -1)))


def _best_outputs(result: Any, sample: EvalSample) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """(masks (N, H, W), scores (N,), meta) of a Segmentation-like result, best output per prompt."""
    masks, scores = np.asarray(getattr(result, "masks", None)), np.asarray(getattr(result, "scores", None))
    if masks.ndim != 4 or scores.shape != masks.shape[:2]:
        raise TypeError(f"expected a Segmentation (masks (N, K, H, W), scores (N, K)), got {type(result).__name__}")
    if masks.shape[2:] != sample.image.shape[:2]:
        raise ValueError(f"the masks are {masks.shape[2:]} (H, W), the image is {sample.image.shape[:2]}")
    best = scores.argmax(axis=1) if scores.size else np.zeros(0, dtype=np.int64)
    rows = np.arange(len(best))
    meta = list(getattr(result, "meta", None) or [{} for _ in rows])
    return masks[rows, best].astype(bool), scores[rows, best].astype(np.float64), meta


def _objects(sample: EvalSample, detected: list[dict[str, Any]], dt_categories: Sequence[int] | None
             ) -> list[dict[str, Any]]:
    """Per ground-truth object (crowd left out): its best mask IoU with a detection (of its category)."""
    mask_utils = _pycocotools()[2]
    keep = [i for i, o in enumerate(sample.objects) if not o.iscrowd]
    ious = np.zeros((len(detected), len(keep)))
    if detected and keep:
        ious = np.asarray(mask_utils.iou(detected, _encode(sample.masks[keep]), [0] * len(keep))).reshape(ious.shape)
    out = []
    for j, i in enumerate(keep):
        obj = sample.objects[i]
        column = ious[:, j]
        if dt_categories is not None:
            column = column[np.asarray(dt_categories, dtype=np.int64) == obj.category_id]
        out.append({"annotation_id": obj.annotation_id, "category_id": obj.category_id, "area": obj.area,
                    "area_range": area_range(obj.area), "best_iou": float(column.max()) if column.size else 0.0})
    return out


def _run_cocoeval(ground_truth: Mapping[str, Any], results: list[dict[str, Any]], image_ids: list[Any], *,
                  use_categories: bool, max_detections: Sequence[int]) -> Any:
    """An evaluated and accumulated COCOeval, or None when there is no result to score."""
    COCO, COCOeval, _ = _pycocotools()
    gt = COCO()
    gt.dataset = dict(ground_truth)
    _quiet(gt.createIndex)
    if not results or not image_ids:
        return None
    dt = _quiet(gt.loadRes, [dict(r) for r in results])  # loadRes adds fields to the dicts it gets
    run = COCOeval(gt, dt, iouType="segm")
    run.params.imgIds = list(image_ids)
    run.params.useCats = int(use_categories)
    run.params.maxDets = sorted(int(m) for m in max_detections)
    _quiet(run.evaluate)
    _quiet(run.accumulate)
    return run


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _present(ground_truth: Mapping[str, Any]) -> set[str]:
    """The area groups (``"all"`` included) holding a non-crowd ground-truth object."""
    found = {area_range(float(a["area"])) for a in ground_truth["annotations"] if not a.get("iscrowd")}
    return found | {"all"} if found else set()


def _average_recall(run: Any, ground_truth: Mapping[str, Any], max_detections: Sequence[int]) -> dict[str, Any]:
    """``{"AR@m": {"all", "small", "medium", "large"}}`` from an accumulated category-agnostic
    COCOeval (None: no result at all, so recall 0 wherever there are objects)."""
    if run is None:
        present = _present(ground_truth)
        return {f"AR@{m}": {a: 0.0 if a in present else None for a in ("all", "small", "medium", "large")}
                for m in sorted(max_detections)}
    recall = run.eval["recall"]  # (T, K, A, M)
    out = {}
    for k, m in enumerate(run.params.maxDets):
        out[f"AR@{m}"] = {label: _mean_valid(recall[:, :, a, k])
                          for a, label in enumerate(run.params.areaRngLbl)}
    return out


def _keep_results(results: list[dict[str, Any]], per_image: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ok = {r["image_id"] for r in per_image if not r["error"]}
    return [r for r in results if r["image_id"] in ok]


def evaluate_proposals(generator: Callable[[np.ndarray], Any], dataset: Any, *,
                       max_proposals: Sequence[int] = (10, 100, 1000), progress: Progress | None = None
                       ) -> EvaluationResult:
    """Category-agnostic average recall of mask proposals (module docstring).

    Args:
        generator: image (H, W, 3) uint8 -> :class:`~samkit.Segmentation` of proposals, e.g.
            ``SegmentEverything.preset("proposals", segmenter)``; with K > 1 outputs per prompt
            the highest-scoring one counts. Proposals are ranked by score.
        dataset: a :class:`~samkit.eval.CocoDataset` (or any dataset with ``coco_dict``).
        max_proposals: the proposal counts of the AR columns.
        progress: called with (images done, images total).

    Returns:
        :class:`~samkit.eval.EvaluationResult`; ``metrics``: ``{"AR@10": {"all", "small", "medium",
        "large"}, ..., "by_frequency": {"frequent", "common", "rare"} (LVIS only), "num_images",
        "num_failed_images"}`` (None where no object falls in a group); per-image records give
        ``num_proposals`` and, per object, ``best_iou`` among the top ``max(max_proposals)``.
    """
    counts = sorted({int(m) for m in max_proposals})
    if not counts or counts[0] < 1:
        raise ValueError(f"max_proposals must be counts >= 1, got {list(max_proposals)}")
    results: list[dict[str, Any]] = []

    def measure(sample: EvalSample) -> dict[str, Any]:
        masks, scores, _ = _best_outputs(generator(sample.image), sample)
        order = np.argsort(-scores, kind="stable")[:counts[-1]]
        rles = _encode(masks[order])
        results.extend({"image_id": sample.image_id, "category_id": 1, "segmentation": rle, "score": float(s)}
                       for rle, s in zip(rles, scores[order]))
        return {"num_proposals": len(order), "objects": _objects(sample, rles, None)}

    per_image, problems = run_per_image(dataset, measure, progress)
    ok = [r["image_id"] for r in per_image if not r["error"]]
    results = _keep_results(results, per_image)
    gt = dataset.coco_dict(ok)
    metrics: dict[str, Any] = _average_recall(
        _run_cocoeval(gt, results, ok, use_categories=False, max_detections=counts), gt, counts)
    frequency = {c["id"]: c.get("frequency") for c in gt["categories"]}
    if any(frequency.values()):
        metrics["by_frequency"] = {}
        for group, code in FREQUENCY_GROUPS.items():
            part = dict(gt, annotations=[a for a in gt["annotations"] if frequency.get(a["category_id"]) == code])
            run = _run_cocoeval(part, results, ok, use_categories=False, max_detections=counts)
            value = (0.0 if _present(part) else None) if run is None else _mean_valid(run.eval["recall"][:, :, 0, -1])
            metrics["by_frequency"][group] = {f"AR@{counts[-1]}": value}
    metrics.update(num_images=len(ok), num_failed_images=len(per_image) - len(ok))
    return EvaluationResult("proposals", metrics, per_image, problems)


# -- instances -------------------------------------------------------------------------------------
def load_detections(detections: str | os.PathLike | Iterable[Mapping[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """COCO detection results (``image_id``, ``category_id``, ``bbox`` XYWH, ``score``), from a JSON
    file or a list, grouped by image id."""
    if isinstance(detections, (str, os.PathLike)):
        with open(detections, encoding="utf-8") as file:
            try:
                detections = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(f"{os.fspath(detections)} is not a COCO detections JSON: {error}") from None
    if not isinstance(detections, list):
        raise ValueError(f"COCO detections are a list of dicts, got {type(detections).__name__}")
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for i, d in enumerate(detections):
        if not isinstance(d, Mapping) or not {"image_id", "category_id", "bbox"} <= set(d) or len(d["bbox"]) != 4:
            raise ValueError(f"detection {i} needs image_id, category_id and bbox [x, y, w, h], got {d!r:.120}")
        grouped[d["image_id"]].append({"category_id": int(d["category_id"]), "bbox": [float(v) for v in d["bbox"]],
                                       "score": float(d.get("score", 1.0))})
    return dict(grouped)


def ground_truth_detections(dataset: Any) -> list[dict[str, Any]]:
    """The dataset's own non-crowd objects as COCO detections (score 1): boxes of an oracle detector."""
    COCO = _pycocotools()[0]
    gt = COCO()
    gt.dataset = dataset.coco_dict()
    _quiet(gt.createIndex)
    mask_utils = _pycocotools()[2]
    out = []
    for ann in gt.dataset["annotations"]:
        if ann.get("iscrowd"):
            continue
        box = ann.get("bbox") or mask_utils.toBbox(gt.annToRLE(ann)).tolist()
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": list(box), "score": 1.0})
    return out


def _score(mode: str, detection: float | None, mask: float) -> float:
    if mode == "mask" or detection is None:
        return mask
    return detection if mode == "detection" else detection * mask


def _segment_boxes(segmenter: Any, sample: EvalSample, boxes: list[dict[str, Any]]) -> Any:
    if not boxes:
        return None
    xywh = np.asarray([b["bbox"] for b in boxes], dtype=np.float64)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return segmenter.segment(segmenter.encode(sample.image), boxes=xyxy, multimask=False,
                             meta=[{"category_id": b["category_id"], "score": b["score"]} for b in boxes],
                             return_logits=False)


def evaluate_instances(model: Any, dataset: Any, *, detections: Any = None, score: str = "detection",
                       max_detections: int = 100, progress: Progress | None = None) -> EvaluationResult:
    """Mask AP of instance segmentation from boxes (module docstring).

    Args:
        model: without ``detections``, image -> :class:`~samkit.Segmentation` whose meta names each
            mask's category (``category_id``, a ``label`` matching a category name, or
            ``class_id``; see :mod:`samkit.formats.coco`) and may hold the detector's ``score``,
            e.g. a ``DetectThenSegment``. With ``detections``, a :class:`samkit.Segmenter`.
        dataset: a :class:`~samkit.eval.CocoDataset`.
        detections: COCO detections (JSON path, list, or :func:`load_detections`' dict); each
            box is segmented with the single-mask output and keeps its category.
        score: ``"detection"`` (the detector's score; SAM's predicted IoU where none),
            ``"mask"`` (predicted IoU) or ``"product"``.
        max_detections: the detections per image COCOeval keeps (COCO: 100, LVIS: 300).
        progress: called with (images done, images total).

    Returns:
        :class:`~samkit.eval.EvaluationResult`; ``metrics``: ``{"AP", "AP50", "AP75", "AP_small",
        "AP_medium", "AP_large", "per_category": {category id: AP}, "num_images",
        "num_failed_images", "num_detections"}`` in [0, 1] (None without ground truth); per-image
        records give ``num_detections`` and, per object, ``best_iou`` with a mask of its category.
    """
    if score not in SCORE_MODES:
        raise ValueError(f"score must be one of {SCORE_MODES}, got {score!r}")
    if detections is not None and not isinstance(detections, dict):
        detections = load_detections(detections)
    if detections is None and not callable(model):
        raise TypeError(f"model must be a callable image -> Segmentation, got {type(model).__name__}")
    categories = normalize_categories(dataset.categories) if dataset.categories else None
    results: list[dict[str, Any]] = []

    def measure(sample: EvalSample) -> dict[str, Any]:
        if detections is not None:
            out = _segment_boxes(model, sample, detections.get(sample.image_id, []))
        else:
            out = model(sample.image)
        if out is None:
            masks, scores, meta = np.zeros((0, *sample.image.shape[:2]), bool), np.zeros(0), []
        else:
            masks, scores, meta = _best_outputs(out, sample)
        found = []
        for mask_score, info in zip(scores, meta):
            category = category_of(info, categories, None if categories else 1)
            found.append((category, _score(score, info.get("score"), float(mask_score))))
        rles = _encode(masks)
        results.extend({"image_id": sample.image_id, "category_id": c, "segmentation": rle, "score": s}
                       for rle, (c, s) in zip(rles, found))
        return {"num_detections": len(rles), "objects": _objects(sample, rles, [c for c, _ in found])}

    per_image, problems = run_per_image(dataset, measure, progress)
    ok = [r["image_id"] for r in per_image if not r["error"]]
    results = _keep_results(results, per_image)
    gt = dataset.coco_dict(ok)
    run = _run_cocoeval(gt, results, ok, use_categories=True, max_detections=(1, 10, max_detections))
    metrics = _average_precision(run, gt)
    metrics.update(num_images=len(ok), num_failed_images=len(per_image) - len(ok), num_detections=len(results),
                   settings={"score": score, "max_detections": max_detections})
    return EvaluationResult("instances", metrics, per_image, problems)


def _average_precision(run: Any, ground_truth: Mapping[str, Any]) -> dict[str, Any]:
    """COCO's AP numbers (as ``COCOeval.summarize``'s first six) and AP per category."""
    names = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    if run is None:  # no detection at all: AP 0 wherever there is ground truth
        present = _present(ground_truth)
        groups = ("all", "all", "all", "small", "medium", "large")
        out: dict[str, Any] = {n: 0.0 if g in present else None for n, g in zip(names, groups)}
        out["per_category"] = {}
        return out
    precision = run.eval["precision"]  # (T, R, K, A, M)
    thresholds = np.asarray(run.params.iouThrs)
    areas = list(run.params.areaRngLbl)
    top = len(run.params.maxDets) - 1

    def ap(t: Any = slice(None), a: str = "all", k: Any = slice(None)) -> float | None:
        return _mean_valid(precision[t, :, k, areas.index(a), top])

    out = {"AP": ap(), "AP50": ap(int(np.argmin(np.abs(thresholds - 0.5)))),
           "AP75": ap(int(np.argmin(np.abs(thresholds - 0.75)))),
           "AP_small": ap(a="small"), "AP_medium": ap(a="medium"), "AP_large": ap(a="large")}
    out["per_category"] = {int(c): ap(k=i) for i, c in enumerate(run.params.catIds)}
    return out
