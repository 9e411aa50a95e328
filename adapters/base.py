"""The :class:`PromptSource` protocol and :func:`as_prompt_source`, which makes one from any detector.

A *prompt source* turns one image into :class:`~samkit.prompts.Prompts`. Detector adapters
(:mod:`samkit.adapters.ultralytics`, :mod:`samkit.adapters.hf_detectors`) are prompt sources;
:func:`as_prompt_source` makes one from the other things users already have: a plain function
returning boxes, a function returning ``supervision.Detections``, or an ``ultralytics.YOLO``.
Detections become box prompts through :func:`~samkit.adapters.boxes.boxes_to_prompts` (its
docstring lists the meta keys); it is re-exported here.

Example:
    >>> detect = as_prompt_source(lambda image: ([[10, 20, 110, 220]], [0.9], ["cat"]))
    >>> detect(np.zeros((240, 240, 3), np.uint8)).meta[0]["label"]
    'cat'
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from samkit.prompts import Prompts

from .boxes import boxes_to_prompts, resolve_class_names
from .supervision import from_supervision_detections, is_detections_like
from .ultralytics import YOLODetector, is_yolo_like

__all__ = ["PromptSource", "CallableSource", "boxes_to_prompts", "as_prompt_source", "resolve_class_names"]

logger = logging.getLogger(__name__)


@runtime_checkable
class PromptSource(Protocol):
    """Anything that turns one image into prompts.

    ``__call__(image)`` takes an (H, W, 3) uint8 RGB array and returns :class:`Prompts` whose
    coordinates are XY pixels of that image (boxes XYXY).
    """

    def __call__(self, image: np.ndarray) -> Prompts: ...


class CallableSource:
    """Wraps ``image -> Prompts | Detections | (boxes, scores, labels)`` into a PromptSource."""

    open_vocabulary = False

    def __init__(self, function: Callable[[np.ndarray], Any], *, class_names: Any = None,
                 source: str | None = None) -> None:
        self.function = function
        self.class_names = class_names
        self.source = source or getattr(function, "__name__", type(function).__name__)

    @property
    def categories(self) -> list[dict[str, Any]]:
        """COCO categories ``[{"id": class_id, "name": name}]`` of ``class_names`` (empty without them)."""
        return [{"id": k, "name": v} for k, v in sorted((resolve_class_names(self.class_names) or {}).items())]

    def __call__(self, image: np.ndarray) -> Prompts:
        return _normalize_output(self.function(image), class_names=self.class_names, source=self.source)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Prompts]:
        """The wrapped ``detect_batch`` when it has one (outputs checked alike), else one call per image."""
        if not hasattr(self.function, "detect_batch"):
            return [self(image) for image in images]
        outputs = list(self.function.detect_batch(images))
        if len(outputs) != len(images):
            raise ValueError(f"detector {self.source!r} returned {len(outputs)} results for {len(images)} images")
        return [_normalize_output(o, class_names=self.class_names, source=self.source) for o in outputs]

    def __repr__(self) -> str:
        return f"as_prompt_source({self.function!r})"


def _normalize_output(output: Any, *, class_names: Any = None, source: str = "detector") -> Prompts:
    # what a detector callable returned -> Prompts (see as_prompt_source)
    if isinstance(output, Prompts):
        return output
    if is_detections_like(output):
        return from_supervision_detections(output, class_names=class_names, source=source)
    if isinstance(output, (tuple, list)) and len(output) == 3:
        boxes, scores, labels = output
        try:
            return boxes_to_prompts(boxes, scores, labels, class_names=class_names, source=source)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"detector {source!r} returned invalid detections: {exc}") from None
    kind = f"{type(output).__name__} of length {len(output)}" if isinstance(output, (tuple, list)) \
        else type(output).__name__
    raise TypeError(f"a detector callable must return Prompts, supervision.Detections or a "
                    f"(boxes_xyxy (N, 4), scores (N,), labels (N,)) tuple, got {kind}")


def as_prompt_source(obj: Any, *, class_names: Sequence[str] | Mapping[int, str] | None = None,
                     source: str | None = None) -> PromptSource:
    """Make a :class:`PromptSource` from a detector in any supported form.

    Accepted:

    * an ``ultralytics.YOLO``-like object (duck-typed: has ``.predict`` and ``.names``): wrapped
      in :class:`samkit.adapters.ultralytics.YOLODetector` with its default settings;
    * a samkit adapter or any callable ``image -> Prompts`` (returned prompts pass through);
    * a callable ``image -> (boxes_xyxy (N, 4), scores (N,), labels (N,))`` (numpy, torch or
      lists; ``scores`` / ``labels`` may be None; labels are ids or names, see
      :func:`boxes_to_prompts`);
    * a callable ``image -> supervision.Detections``.

    The callable receives an (H, W, 3) uint8 RGB image. Its output is checked on every call:
    wrong shapes, NaN boxes or unknown class names raise errors naming the detector.

    Args:
        obj: the detector.
        class_names: names for integer labels returned by a plain callable.
        source: meta ``source`` for a plain callable (default: its ``__name__``).

    Example:
        >>> detect = as_prompt_source(lambda image: ([[0, 0, 4, 4]], [0.8], ["cat"]))
        >>> detect(np.zeros((8, 8, 3), np.uint8)).meta[0]["label"]
        'cat'
    """
    if isinstance(obj, CallableSource):
        return obj
    if is_yolo_like(obj):
        return YOLODetector(obj)
    if not callable(obj):
        raise TypeError("detector must be a samkit adapter, an ultralytics.YOLO-like object (.predict and "
                        "a .names mapping) or a callable image -> Prompts | Detections | "
                        f"(boxes, scores, labels); got {type(obj).__name__}")
    return CallableSource(obj, class_names=class_names, source=source)
