"""Detect-then-segment: detector boxes -> SAM masks, with labels that stay aligned.

The pipeline is preprocess -> detect -> encode (once per image) -> segment (all boxes of the
image in one decoder call, chunked only beyond ``batch_size``) -> optional refinement ->
postprocess (filters that keep metadata aligned).

Refinement is the iteration of the SAM paper: each mask's low-resolution logits go back to the
decoder as ``mask_input`` together with the same box, single-mask output.

Every result row carries its detection's meta (``label``, ``class_id``, ``score`` from the
detector, ``source``, ``box``) plus ``predicted_iou`` (the mask's predicted IoU, also in
``Segmentation.scores``). Filtering uses :class:`~samkit.results.Segmentation` indexing, so a
dropped mask takes its label with it (ultralytics' ``auto_annotate`` once dropped empty masks
but kept every class id, shifting labels onto the wrong masks).

Example:
    >>> pipeline = DetectThenSegment(YOLO("yolov8n.pt"), Segmenter(model), refine_iterations=1)  # doctest: +SKIP
    >>> result = pipeline(image)                     # Segmentation, masks (N, 1, H, W)         # doctest: +SKIP
    >>> [m["label"] for m in result.meta]                                                      # doctest: +SKIP
    ['person', 'dog']
    >>> to_yolo_seg(result, "labels/0001.txt")                                                 # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from samkit.adapters.base import as_prompt_source
from samkit.formats.coco import coco_dataset, normalize_categories
from samkit.formats.yolo_seg import MULTIPART, write_yolo_seg
from samkit.prompts import Prompts
from samkit.results import Segmentation
from samkit.transforms import to_rgb_uint8

from .checks import check_score

__all__ = ["DetectThenSegment", "detect_then_segment", "segment_detections", "filter_detections",
           "to_coco_instances", "to_yolo_seg"]

logger = logging.getLogger(__name__)


def filter_detections(prompts: Prompts, *, min_score: float | None = None,
                      class_filter: Iterable[str | int] | None = None) -> Prompts:
    """Keep prompts whose meta ``score >= min_score`` and whose ``label`` or ``class_id`` is in
    ``class_filter`` (names and ids may be mixed). Prompts without a score pass ``min_score``."""
    keep = np.ones(len(prompts), dtype=bool)
    if min_score is not None:
        keep &= np.array([m.get("score") is None or m["score"] >= min_score for m in prompts.meta], dtype=bool)
    if class_filter is not None:
        wanted = set([class_filter] if isinstance(class_filter, (str, int)) else class_filter)
        names = {c for c in wanted if isinstance(c, str)}
        ids = {int(c) for c in wanted if not isinstance(c, str)}
        keep &= np.array([m.get("label") in names or m.get("class_id") in ids for m in prompts.meta], dtype=bool)
    return prompts if keep.all() else prompts[keep]


def segment_detections(segmenter: Any, embedding: Any, prompts: Prompts, *, multimask: bool = False,
                       refine_iterations: int = 0, batch_size: int = 64) -> Segmentation:
    """Segment box prompts on one encoded image; K = 1 per prompt.

    Args:
        segmenter: a :class:`samkit.Segmenter`.
        embedding: ``segmenter.encode(image)``.
        prompts: N prompts (usually boxes) with their meta.
        multimask: decode three masks per prompt and keep the best-scoring one (meta
            ``output_index``); False decodes the single-mask output.
        refine_iterations: times to feed each mask's low-res logits back as ``mask_input``
            with the same prompt (single-mask output).
        batch_size: prompts per ``segment`` call (all at once when N <= batch_size).

    Returns:
        :class:`Segmentation` with masks (N, 1, H, W), scores (N, 1) predicted IoU, logits, and
        meta = the prompts' meta + ``predicted_iou``.
    """
    if refine_iterations < 0 or batch_size < 1:
        raise ValueError(f"refine_iterations must be >= 0 and batch_size >= 1, got {refine_iterations}, {batch_size}")

    def run(p: Prompts, multi: bool) -> Segmentation:
        parts = [segmenter.segment(embedding, prompts=chunk, multimask=multi) for chunk in p.chunks(batch_size)]
        return parts[0] if len(parts) == 1 else Segmentation.concat(parts)

    result = run(prompts, multimask)
    if multimask:
        result = result.best()
    for _ in range(refine_iterations):
        if result.logits is None:
            raise ValueError("refinement needs the segmenter to return low-res logits, got logits=None")
        again = Prompts(points=prompts.points, labels=prompts.labels, boxes=prompts.boxes,
                        mask_inputs=result.logits[:, :1], embeddings=prompts.embeddings, meta=result.meta)
        result = run(again, False)
    for meta, score in zip(result.meta, result.scores[:, 0].tolist()):
        meta["predicted_iou"] = float(score)
    return result


def detect_then_segment(image: Any, detector: Any, segmenter: Any, *, multimask: bool = False,
                        refine_iterations: int = 0, min_score: float | None = None,
                        min_mask_score: float | None = None, class_filter: Iterable[str | int] | None = None,
                        drop_empty: bool = False, batch_size: int = 64, prompts: Prompts | None = None
                        ) -> Segmentation:
    """Detect objects in one image and segment each detection's box.

    Args:
        image: anything :func:`samkit.transforms.to_rgb_uint8` accepts (arrays are RGB).
        detector: anything :func:`samkit.adapters.base.as_prompt_source` accepts (a samkit
            adapter, an ``ultralytics.YOLO``, a callable returning boxes or Detections).
        segmenter: a :class:`samkit.Segmenter`.
        multimask, refine_iterations, batch_size: see :func:`segment_detections`.
        min_score: drop detections whose detector score is lower (before segmenting).
        min_mask_score: drop masks whose predicted IoU is lower (after segmenting).
        class_filter: keep only detections with these class names or ids.
        drop_empty: drop masks with no pixel set.
        prompts: detections already computed for this image (the detector is then not run).

    Returns:
        :class:`Segmentation` with masks (N, 1, H, W) in image pixels and aligned meta
        (module docstring); ``Segmentation.empty((H, W))`` when nothing is left.
    """
    min_score = check_score("min_score", min_score)
    min_mask_score = check_score("min_mask_score", min_mask_score)
    rgb = to_rgb_uint8(image)
    if prompts is None:
        prompts = as_prompt_source(detector)(rgb)
    if not isinstance(prompts, Prompts):
        raise TypeError(f"the detector must return samkit.Prompts, got {type(prompts).__name__}")
    prompts = filter_detections(prompts, min_score=min_score, class_filter=class_filter)
    if len(prompts) == 0:
        return Segmentation.empty(rgb.shape[:2], num_outputs=1)
    embedding = segmenter.encode(rgb)
    result = segment_detections(segmenter, embedding, prompts, multimask=multimask,
                                refine_iterations=refine_iterations, batch_size=batch_size)
    keep = np.ones(len(result), dtype=bool)
    if min_mask_score is not None:
        keep &= result.scores[:, 0] >= min_mask_score
    if drop_empty:
        keep &= result.areas()[:, 0] > 0
    if not keep.all():
        logger.debug("dropped %d of %d masks", int((~keep).sum()), len(result))
        result = result[keep] if keep.any() else Segmentation.empty(rgb.shape[:2], num_outputs=1)
    return result


class DetectThenSegment:
    """Settings for :func:`detect_then_segment`; same defaults.

    Args:
        detector: anything :func:`samkit.adapters.base.as_prompt_source` accepts.
        segmenter: a :class:`samkit.Segmenter`.
        multimask, refine_iterations, min_score, min_mask_score, class_filter, drop_empty,
            batch_size: see :func:`detect_then_segment`.
    """

    def __init__(self, detector: Any, segmenter: Any, *, multimask: bool = False, refine_iterations: int = 0,
                 min_score: float | None = None, min_mask_score: float | None = None,
                 class_filter: Iterable[str | int] | None = None, drop_empty: bool = False,
                 batch_size: int = 64) -> None:
        if refine_iterations < 0 or batch_size < 1:
            raise ValueError(f"refine_iterations must be >= 0 and batch_size >= 1, got {refine_iterations}, {batch_size}")
        self.detector = as_prompt_source(detector)
        self.segmenter = segmenter
        self.multimask, self.refine_iterations, self.batch_size = multimask, refine_iterations, batch_size
        self.min_score = check_score("min_score", min_score)
        self.min_mask_score = check_score("min_mask_score", min_mask_score)
        self.drop_empty = drop_empty
        self.class_filter = None if class_filter is None else (
            [class_filter] if isinstance(class_filter, (str, int)) else list(class_filter))

    def _settings(self) -> dict[str, Any]:
        return {"multimask": self.multimask, "refine_iterations": self.refine_iterations,
                "min_score": self.min_score, "min_mask_score": self.min_mask_score,
                "class_filter": self.class_filter, "drop_empty": self.drop_empty, "batch_size": self.batch_size}

    def __call__(self, image: Any) -> Segmentation:
        """Masks (N, 1, H, W) with aligned detection meta for one image."""
        return detect_then_segment(image, self.detector, self.segmenter, **self._settings())

    def batch(self, images: Iterable[Any]) -> list[Segmentation]:
        """One :class:`Segmentation` per image; batched detection when the detector has ``detect_batch``."""
        rgb = [to_rgb_uint8(im) for im in images]
        if hasattr(self.detector, "detect_batch"):
            detections = self.detector.detect_batch(rgb)
        else:
            detections = [self.detector(im) for im in rgb]
        return [detect_then_segment(im, self.detector, self.segmenter, prompts=p, **self._settings())
                for im, p in zip(rgb, detections)]


# -- exports ------------------------------------------------------------------------------------
def to_coco_instances(results: Sequence[Segmentation], image_infos: Sequence[Mapping[str, Any] | int],
                      categories: Sequence[str] | Sequence[Mapping[str, Any]] | Mapping[int, str]) -> dict[str, Any]:
    """A COCO instance-segmentation dataset (JSON-ready dict) from per-image results.

    Args:
        results: one :class:`Segmentation` per image (the best output of each prompt is used).
        image_infos: one per result: a COCO image dict with at least ``"id"`` (``height`` and
            ``width`` are filled from the result, and must match it when given), or an image id.
        categories: ``[{"id", "name"}, ...]``, a list of names (ids 1..K in order) or
            ``{id: name}`` (e.g. a YOLO ``model.names``).

    Returns:
        ``{"images", "annotations", "categories"}``. Each annotation's ``category_id`` follows
        the rule of :mod:`samkit.formats.coco` (meta ``category_id``, else the category named by
        meta ``label``, else meta ``class_id``); ``segmentation`` is compressed RLE (``str``
        counts); ``bbox`` XYWH; ``score`` is the detector score when known, else the predicted IoU.

    Raises:
        ValueError: lengths differ, sizes disagree, or a mask has no known category.
    """
    if len(results) != len(image_infos):
        raise ValueError(f"need one image info per result, got {len(image_infos)} infos for {len(results)} results")
    cats = normalize_categories(categories)
    images, annotations = [], []
    for result, info in zip(results, image_infos):
        if not isinstance(result, Segmentation):
            raise TypeError(f"results must hold Segmentation, got {type(result).__name__}")
        h, w = result.image_size
        info = {"id": info} if not isinstance(info, Mapping) else dict(info)
        if "id" not in info:
            raise ValueError(f"image info needs an 'id', got keys {sorted(info)}")
        if (info.setdefault("height", h), info.setdefault("width", w)) != (h, w):
            raise ValueError(f"image {info['id']!r} is {info['height']}x{info['width']} in image_infos but "
                             f"{h}x{w} in its result")
        images.append(info)
        annotations += result.to_coco(info["id"], category_id=None, categories=cats, score_key="score")
    return coco_dataset(images, annotations, cats)


def to_yolo_seg(result: Segmentation, path: str | os.PathLike, *, multipart: str = "largest") -> int:
    """Write a YOLO segmentation label file: ``class x1 y1 x2 y2 ...`` per line, normalized.

    The format is :mod:`samkit.formats.yolo_seg`'s: outer-ring polygon vertices divided by the
    image width and height. The class is the meta ``class_id`` (0-based, as YOLO datasets
    count). Empty masks write no line.

    Args:
        result: the masks (the best output of each prompt is used).
        path: the ``.txt`` file to write (its folder must exist).
        multipart: for masks with several parts, ``"largest"`` writes the largest ring,
            ``"all"`` one line per ring (each then counts as its own instance).

    Returns:
        The number of lines written.
    """
    if multipart not in MULTIPART:
        raise ValueError(f"multipart must be one of {MULTIPART}, got {multipart!r}")
    best = result.best()
    missing = [i for i, m in enumerate(best.meta) if not isinstance(m.get("class_id"), (int, np.integer))]
    if missing:
        raise ValueError(f"to_yolo_seg needs an integer meta 'class_id' for every mask; mask {missing[0]} has "
                         f"{best.meta[missing[0]].get('class_id')!r}")
    return write_yolo_seg(path, best.masks[:, 0], [m["class_id"] for m in best.meta], multipart=multipart)
