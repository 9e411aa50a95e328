"""Grounded text-to-mask: an open-vocabulary detector finds boxes for the phrases, SAM segments them.

Detectors, all asked for every phrase of a call at once:

* a :class:`~samkit.adapters.hf_detectors.ZeroShotDetector`, or a folder / hub id of an
  OWL-ViT, OWLv2 or (MM) Grounding DINO model (``pip install samkit[transformers]``); its
  queries are replaced by the phrases of each call, images go through in batches;
* a YOLO-World model (``ultralytics``, an ``ultralytics.YOLO``, a ``YOLODetector`` or a
  ``.pt`` path; ``pip install samkit[ultralytics]``, AGPL-3.0): ``set_classes(phrases)`` is
  called when the phrases change (it embeds them with ultralytics' CLIP, which needs its
  weights);
* a callable ``(image, phrases) -> Prompts | (boxes_xyxy (N, 4), scores (N,), labels (N,))``
  where ``labels`` are phrase indices or the phrases themselves (None when there is one phrase).

Meta per mask: the detection's ``label``, ``class_id``, ``score``, ``source``, ``box`` (see
:mod:`samkit.adapters.base`), ``predicted_iou`` (SAM's), ``phrase``, ``phrase_index``,
``strategy="grounded"`` and ``text_score`` = the detector's score (1.0 when it gives none).
Grounding DINO's decoded token phrase is kept as ``detector_phrase``.

Example:
    >>> strategy = GroundedStrategy("google/owlv2-base-patch16-ensemble", threshold=0.2)   # doctest: +SKIP
    >>> result = strategy(segmenter, image, ["a wheel", "a grille"])                     # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import numpy as np

from samkit.adapters.base import boxes_to_prompts
from samkit.prompts import Prompts
from samkit.results import Segmentation

from ..everything.ops import box_nms
from ..detect_segment import segment_detections
from .strategies import StrategyBase, as_images, check_phrases, drop_small, empty_like, label_masks, \
    order_by_phrase

__all__ = ["GroundedStrategy", "as_phrase_detector", "grounded_text_to_mask"]

logger = logging.getLogger(__name__)

PhraseDetector = Callable[[list[np.ndarray], list[str]], list[Prompts]]


class _HFPhraseDetector:
    """A transformers zero-shot detector whose queries are the phrases of each call."""

    def __init__(self, model: Any, processor: Any, *, threshold: float, text_threshold: float, clip_boxes: bool,
                 batch_size: int) -> None:
        self.model, self.processor = model, processor
        self.threshold, self.text_threshold = threshold, text_threshold
        self.clip_boxes, self.batch_size = clip_boxes, batch_size

    def __call__(self, images: list[np.ndarray], phrases: list[str]) -> list[Prompts]:
        from samkit.adapters.hf_detectors import detect_zero_shot

        return detect_zero_shot(self.model, self.processor, images, phrases, threshold=self.threshold,
                                text_threshold=self.text_threshold, clip_boxes=self.clip_boxes,
                                batch_size=self.batch_size)

    def __repr__(self) -> str:
        return f"{type(self.model).__name__}(threshold={self.threshold})"


class _WorldPhraseDetector:
    """A YOLO-World detector; ``set_classes`` is called only when the phrases change."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def __call__(self, images: list[np.ndarray], phrases: list[str]) -> list[Prompts]:
        if self.detector.prompts != phrases:
            self.detector.model.set_classes(list(phrases))
            self.detector.prompts = list(phrases)
        return self.detector.detect_batch(images)

    def __repr__(self) -> str:
        return repr(self.detector)


class _CallablePhraseDetector:
    """``(image, phrases) -> Prompts | (boxes, scores, labels)``, checked on every call."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.source = getattr(function, "__name__", type(function).__name__)

    def __call__(self, images: list[np.ndarray], phrases: list[str]) -> list[Prompts]:
        return [self._one(self.function(image, list(phrases)), phrases) for image in images]

    def _one(self, output: Any, phrases: list[str]) -> Prompts:
        if isinstance(output, Prompts):
            missing = [i for i, m in enumerate(output.meta) if m.get("class_id") is None and m.get("label") is None]
            if missing and len(phrases) > 1:
                raise ValueError(f"detector {self.source!r} returned prompts without meta 'class_id' or 'label' "
                                 f"(prompt {missing[0]}); with several phrases each box needs its phrase")
            return output
        if not (isinstance(output, (tuple, list)) and len(output) == 3):
            raise TypeError(f"a phrase detector must return Prompts or (boxes_xyxy (N, 4), scores (N,), labels (N,)), "
                            f"got {type(output).__name__}")
        boxes, scores, labels = output
        if labels is None:
            if len(phrases) > 1:
                raise ValueError(f"detector {self.source!r} returned labels=None for {len(phrases)} phrases; "
                                 "return phrase indices or the phrases themselves")
            labels = [0] * len(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        try:
            return boxes_to_prompts(boxes, scores, labels, class_names=phrases, source=self.source)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"detector {self.source!r} returned invalid detections: {exc}") from None

    def __repr__(self) -> str:
        return f"phrase detector {self.source}"


def as_phrase_detector(detector: Any, *, threshold: float | None = None, text_threshold: float | None = None
                       ) -> PhraseDetector:
    """Make ``(images, phrases) -> list[Prompts]`` from any detector form of the module docstring.

    Names, paths and model objects are loaded by :func:`samkit.adapters.registry.load_detector`
    with ``open_vocabulary=True``, so a closed-set detector is refused there.

    Args:
        detector: a ZeroShotDetector, a transformers folder or hub id, a YOLO-World model,
            ``YOLODetector`` or ``.pt``/``.yaml`` path, or a callable ``(image, phrases) -> ...``.
        threshold: minimum box score (None: the detector's own, or its family's default: 0.1 for
            transformers models, 0.25 for YOLO-World).
        text_threshold: Grounding DINO's token threshold for ``detector_phrase`` (None: 0.25 or
            the detector's).
    """
    from samkit.adapters.hf_detectors import ZeroShotDetector, is_transformers_detector
    from samkit.adapters.registry import load_detector
    from samkit.adapters.ultralytics import YOLODetector, is_yolo_like

    if isinstance(detector, (_HFPhraseDetector, _WorldPhraseDetector, _CallablePhraseDetector)):
        return detector
    if isinstance(detector, (ZeroShotDetector, YOLODetector)):
        if threshold is not None and isinstance(detector, YOLODetector):
            detector.conf = threshold
        adapter = load_detector(detector, open_vocabulary=True)
    elif isinstance(detector, (str, os.PathLike)) or is_yolo_like(detector) or is_transformers_detector(detector):
        adapter = load_detector(detector, threshold=threshold, open_vocabulary=True)
    elif callable(detector):
        return _CallablePhraseDetector(detector)
    else:
        raise TypeError("detector must be a ZeroShotDetector, a transformers folder or hub id, a YOLO-World model or "
                        f"path, or a callable (image, phrases) -> detections; got {type(detector).__name__}")
    if isinstance(adapter, YOLODetector):
        return _WorldPhraseDetector(adapter)
    return _HFPhraseDetector(adapter.model, adapter.processor,
                             threshold=adapter.threshold if threshold is None else threshold,
                             text_threshold=adapter.text_threshold if text_threshold is None else text_threshold,
                             clip_boxes=adapter.clip_boxes, batch_size=adapter.batch_size)


def _phrase_ids(prompts: Prompts, phrases: list[str]) -> np.ndarray:
    by_name = {p: i for i, p in enumerate(phrases)}
    ids = []
    for m in prompts.meta:
        cid, label = m.get("class_id"), m.get("label")
        if cid is not None and 0 <= int(cid) < len(phrases) and (label is None or label == phrases[int(cid)]):
            ids.append(int(cid))
        elif label in by_name:
            ids.append(by_name[label])
        elif len(phrases) == 1 and cid is None and label is None:
            ids.append(0)
        else:
            raise ValueError(f"a detection has label {label!r} / class_id {cid!r}, which match none of the phrases "
                             f"{phrases}")
    return np.asarray(ids, dtype=np.int64)


def _select(prompts: Prompts, ids: np.ndarray, scores: np.ndarray, nms_threshold: float | None,
            max_per_phrase: int | None) -> np.ndarray:
    """Indices of the detections kept by per-phrase NMS and top-k, in their original order."""
    keep = np.arange(len(prompts))
    if nms_threshold is not None and len(keep) > 1:
        boxes = prompts.boxes.astype(np.float64)
        offset = (boxes.max() + 1.0) * ids[:, None]  # phrases never overlap: one NMS call for all
        keep = np.sort(box_nms(boxes + offset, scores, nms_threshold))
    if max_per_phrase is not None and len(keep):
        order = keep[np.lexsort((-scores[keep], ids[keep]))]
        first = np.searchsorted(ids[order], ids[order], side="left")
        keep = np.sort(order[np.arange(len(order)) - first < max_per_phrase])
    return keep


def grounded_text_to_mask(segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str,
                          detector: PhraseDetector, *, nms_threshold: float | None = 0.5,
                          max_per_phrase: int | None = None, multimask: bool = False, refine_iterations: int = 0,
                          min_area: int = 1, batch_size: int = 64) -> list[Segmentation]:
    """Detect the phrases in each image, then segment every box with SAM.

    Args:
        segmenter: a :class:`samkit.Segmenter`.
        images: RGB images.
        phrases: one phrase or a list (all detected in one detector pass per image batch).
        detector: from :func:`as_phrase_detector`.
        nms_threshold: per-phrase box NMS IoU (OWL models return overlapping boxes); None: off.
        max_per_phrase: keep at most this many boxes per phrase, best first; None: all.
        multimask, refine_iterations, batch_size: see
            :func:`samkit.pipelines.detect_segment.segment_detections`.
        min_area: drop masks with fewer pixels (the default drops empty masks; 0 keeps them).

    Returns:
        One :class:`Segmentation` per image (module docstring for meta), K = 1.
    """
    phrases = check_phrases(phrases)
    rgb = as_images(images)
    detections = detector(rgb, phrases)
    if len(detections) != len(rgb):
        raise ValueError(f"the detector returned {len(detections)} results for {len(rgb)} images")
    selected = []
    for prompts in detections:
        ids = _phrase_ids(prompts, phrases)
        scores = np.array([1.0 if m.get("score") is None else float(m["score"]) for m in prompts.meta])
        keep = _select(prompts, ids, scores, nms_threshold, max_per_phrase)
        selected.append((prompts[keep] if len(keep) else Prompts.empty(), ids[keep], scores[keep]))
    todo = [i for i, (p, _, _) in enumerate(selected) if len(p)]
    embeddings = dict(zip(todo, segmenter.encode_batch([rgb[i] for i in todo]))) if todo else {}
    out = []
    for i, (prompts, ids, scores) in enumerate(selected):
        if i not in embeddings:
            out.append(empty_like(rgb[i]))
            continue
        masks = segment_detections(segmenter, embeddings[i], prompts, multimask=multimask,
                                   refine_iterations=refine_iterations, batch_size=batch_size)
        result = drop_small(label_masks(masks, ids, scores, phrases, "grounded"), min_area)
        out.append(order_by_phrase(result))
    return out


class GroundedStrategy(StrategyBase):
    """Settings for :func:`grounded_text_to_mask`; same defaults. A text strategy.

    Args:
        detector: see :func:`as_phrase_detector` (loaded once, here).
        threshold, text_threshold: detector thresholds (None: the detector's own).
        nms_threshold, max_per_phrase, multimask, refine_iterations, min_area, batch_size: see
            :func:`grounded_text_to_mask`.
    """

    name = "grounded"

    def __init__(self, detector: Any, *, threshold: float | None = None, text_threshold: float | None = None,
                 nms_threshold: float | None = 0.5, max_per_phrase: int | None = None, multimask: bool = False,
                 refine_iterations: int = 0, min_area: int = 1, batch_size: int = 64) -> None:
        for name, value in (("threshold", threshold), ("text_threshold", text_threshold),
                            ("nms_threshold", nms_threshold)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be None or in [0, 1], got {value}")
        if max_per_phrase is not None and max_per_phrase < 1:
            raise ValueError(f"max_per_phrase must be None or >= 1, got {max_per_phrase}")
        if refine_iterations < 0 or batch_size < 1:
            raise ValueError(f"refine_iterations must be >= 0 and batch_size >= 1, got {refine_iterations}, "
                             f"{batch_size}")
        self.detector = as_phrase_detector(detector, threshold=threshold, text_threshold=text_threshold)
        self.nms_threshold, self.max_per_phrase = nms_threshold, max_per_phrase
        self.multimask, self.refine_iterations = multimask, refine_iterations
        self.min_area, self.batch_size = min_area, batch_size

    def batch(self, segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str) -> list[Segmentation]:
        """One :class:`Segmentation` per image."""
        self.check(segmenter)
        return grounded_text_to_mask(segmenter, images, phrases, self.detector, nms_threshold=self.nms_threshold,
                                     max_per_phrase=self.max_per_phrase, multimask=self.multimask,
                                     refine_iterations=self.refine_iterations, min_area=self.min_area,
                                     batch_size=self.batch_size)

    def __repr__(self) -> str:
        return f"GroundedStrategy({self.detector!r})"
