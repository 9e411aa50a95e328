"""Job tasks: small picklable specs that build their models inside each worker.

A task is a frozen dataclass with

* ``describe() -> dict``: what produces the results (JSON-able); its hash is stored in every
  output, so a rerun with other settings is refused instead of mixing results;
* ``check()``: cheap validation in the driver, before anything is written or started;
* ``build(device=None) -> runner``: loads the model (and detector) once, in the worker; the
  runner's ``run(image, *, image_id, file_name) -> (payload, n_masks)`` turns one (H, W, 3)
  uint8 RGB image into its JSON-able output.

Outputs: :class:`EverythingTask` writes SA-1B per-image JSON (``{"image": {image_id,
file_name, height, width}, "annotations": [{id, segmentation (COCO RLE, str counts), bbox
(XYWH, the reference's inclusive width), area, predicted_iou, stability_score, crop_box,
point_coords}]}``); :class:`DetectTask` and :class:`TextTask` write per-image COCO
(``{"image": {id, file_name, height, width}, "annotations": [COCO annotation + "label"],
"categories": [...] | None}``) with the category rule of :mod:`samkit.formats.coco`.

``model`` is a checkpoint path, Hugging Face folder or known name for
:func:`samkit.load_model`, or a built model (pickled to each worker).

Example:
    >>> EverythingTask("weights/sam_vit_b.pth", preset="sa1b").describe()["task"]  # doctest: +SKIP
    'everything'
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from .detectors import check_detector, describe_detector, detector_categories, load_detector

__all__ = ["DetectTask", "EverythingTask", "TextTask", "check_task", "describe_value"]

_MODEL_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


# -- shared pieces --------------------------------------------------------------------------------
def describe_value(value: Any) -> Any:
    """``default=`` for the settings JSON: callables and objects by qualified name, arrays as lists."""
    from samkit.formats import to_python

    if isinstance(value, os.PathLike):
        return os.fspath(value)
    converted = to_python(value)
    if converted is not value:
        return converted
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return describe_detector(value)


def _describe_model(model: Any) -> Any:
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if os.path.isfile(path):
            return {"path": os.path.abspath(path), "bytes": os.path.getsize(path)}
        return os.path.abspath(path) if os.path.exists(path) else path
    from samkit.segmenter import model_fingerprint

    return {"fingerprint": model_fingerprint(model)}


def _check_model(model: Any, *, optional: bool = False) -> None:
    if model is None and optional:
        return
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        looks_like_path = os.sep in path or "/" in path or path.lower().endswith(_MODEL_SUFFIXES)
        if looks_like_path and not path.startswith("hf-hub:") and not os.path.exists(path):
            raise FileNotFoundError(f"model not found: {path}")
        return
    if not hasattr(model, "image_encoder"):
        raise TypeError(f"model must be a checkpoint path, folder, known name or a SAM model, "
                        f"got {type(model).__name__}")


def _segmenter(model: Any, device: str | None, dtype: Any, cache_size: int) -> Any:
    from samkit import Segmenter, load_model

    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, device=device, dtype=dtype)
    elif device is not None:
        model = model.to(device)
    return Segmenter(model, cache_size=cache_size)


def _plain(settings: Any, what: str) -> dict[str, Any]:
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    if not isinstance(settings, Mapping):
        raise TypeError(f"{what} must be a mapping of keyword arguments, got {type(settings).__name__}")
    return dict(settings)


def check_task(task: Any) -> None:
    """Raise TypeError unless ``task`` has ``describe``, ``check`` and ``build``; then ``task.check()``."""
    missing = [name for name in ("describe", "check", "build") if not callable(getattr(task, name, None))]
    if missing:
        raise TypeError(f"task must be an EverythingTask, DetectTask, TextTask or an object with describe(), check() "
                        f"and build(); {type(task).__name__} lacks {missing}")
    task.check()


def _coco_payload(result: Any, image_id: int, file_name: str, categories: list[dict[str, Any]] | None,
                  score_key: str | None) -> dict[str, Any]:
    h, w = result.image_size
    annotations = result.to_coco(image_id, category_id=None if categories else 1, categories=categories,
                                 score_key=score_key)
    for annotation, meta in zip(annotations, result.best().meta):
        annotation["label"] = meta.get("label")
        if "predicted_iou" in meta:
            annotation["predicted_iou"] = float(meta["predicted_iou"])
    return {"image": {"id": image_id, "file_name": file_name, "height": h, "width": w},
            "annotations": annotations, "categories": categories}


# -- segment everything ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EverythingTask:
    """Segment everything with a preset of :data:`samkit.pipelines.PRESETS` and/or settings.

    Args:
        model: see the module docstring.
        preset: ``"sa1b"``, ``"proposals"``, ``"edges"`` or None (the reference's defaults).
        settings: :class:`samkit.pipelines.EverythingSettings` or its keyword arguments
            (override the preset's).
        dtype: image-encoder dtype for :func:`samkit.load_model` (``"bf16"``, ...).
    """

    model: Any
    preset: str | None = None
    settings: Any = dataclasses.field(default_factory=dict)
    dtype: Any = None

    kind = "everything"

    def resolved(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~samkit.pipelines.SegmentEverything`: preset, then settings."""
        from samkit.pipelines import PRESETS

        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {sorted(PRESETS)} or None")
        return dict(PRESETS.get(self.preset, {}), **_plain(self.settings, "settings"))

    def check(self) -> None:
        from samkit.pipelines import EverythingSettings

        _check_model(self.model)
        EverythingSettings(**self.resolved())

    def describe(self) -> dict[str, Any]:
        from samkit.pipelines import EverythingSettings

        settings = EverythingSettings(**self.resolved())
        return {"task": self.kind, "model": _describe_model(self.model), "dtype": str(self.dtype),
                "settings": _plain(settings, "settings")}

    def build(self, device: str | None = None, cache_size: int = 4) -> "_EverythingRunner":
        from samkit.pipelines import SegmentEverything

        segmenter = _segmenter(self.model, device, self.dtype, cache_size)
        return _EverythingRunner(segmenter, SegmentEverything(segmenter, **self.resolved()))


class _EverythingRunner:
    def __init__(self, segmenter: Any, pipeline: Any) -> None:
        self.segmenter, self.pipeline = segmenter, pipeline

    def run(self, image: Any, *, image_id: int, file_name: str) -> tuple[dict[str, Any], int]:
        from samkit.formats import sa1b_dict

        result = self.pipeline(image)
        h, w = result.image_size
        info = {"image_id": image_id, "file_name": file_name, "height": h, "width": w}
        return sa1b_dict(info, result), len(result)


# -- detect then segment --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DetectTask:
    """Detect then segment with any detector spec (:mod:`samkit.engine.detectors`).

    Args:
        model: see the module docstring.
        detector: name, path or picklable detector object/callable.
        detector_options: keyword arguments of the detector adapter (``conf``, ``queries``, ...).
        settings: keyword arguments of :class:`~samkit.pipelines.DetectThenSegment`
            (``refine_iterations``, ``min_mask_score``, ...).
        categories: COCO categories for the output (default: the detector's class names or
            queries; for a plain callable, the labels found, at merge time).
        dtype: image-encoder dtype.
    """

    model: Any
    detector: Any
    detector_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    categories: Sequence[Mapping[str, Any]] | None = None
    dtype: Any = None

    kind = "detect-segment"

    def check(self) -> None:
        _check_model(self.model)
        check_detector(self.detector)
        _plain(self.detector_options, "detector_options")
        _plain(self.settings, "settings")

    def describe(self) -> dict[str, Any]:
        return {"task": self.kind, "model": _describe_model(self.model), "dtype": str(self.dtype),
                "detector": describe_detector(self.detector), "detector_options": dict(self.detector_options),
                "settings": dict(self.settings), "categories": self.categories}

    def build(self, device: str | None = None, cache_size: int = 4) -> "_CocoRunner":
        from samkit.pipelines import DetectThenSegment

        detector = load_detector(self.detector, device=device, **self.detector_options)
        categories = [dict(c) for c in self.categories] if self.categories is not None else \
            detector_categories(detector)
        segmenter = _segmenter(self.model, device, self.dtype, cache_size)
        pipeline = DetectThenSegment(detector, segmenter, **self.settings)
        return _CocoRunner(segmenter, lambda image: pipeline(image), categories, "score")


# -- text to mask ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TextTask:
    """Text to mask with a strategy of :data:`samkit.pipelines.STRATEGIES` and fixed phrases.

    Args:
        model: see the module docstring (None for ``"sam3"``).
        phrases: ``"a wheel"`` or ``["wheel", "grille"]``; they are the COCO categories (ids 1..K).
        strategy: a strategy name.
        strategy_settings: the strategy's settings (``detector=``, ``clip=``, ``threshold=``, ...;
            objects must be picklable).
        min_text_score, max_masks: see :class:`~samkit.pipelines.TextToMask`.
        dtype: image-encoder dtype.
    """

    model: Any
    phrases: Sequence[str] | str
    strategy: str = "grounded"
    strategy_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    min_text_score: float | None = None
    max_masks: int | None = None
    dtype: Any = None

    kind = "text"

    def _phrases(self) -> list[str]:
        phrases = [self.phrases] if isinstance(self.phrases, str) else list(self.phrases)
        cleaned = [p.strip() for p in phrases if isinstance(p, str)]
        if not cleaned or len(cleaned) != len(phrases) or not all(cleaned) or len(set(cleaned)) != len(cleaned):
            raise ValueError(f"phrases must be a non-empty list of distinct, non-empty strings, got {self.phrases!r}")
        return cleaned

    def check(self) -> None:
        from samkit.pipelines import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {self.strategy!r}")
        _check_model(self.model, optional=self.strategy == "sam3")
        self._phrases()
        _plain(self.strategy_settings, "strategy_settings")

    def describe(self) -> dict[str, Any]:
        return {"task": self.kind, "model": _describe_model(self.model), "dtype": str(self.dtype),
                "strategy": self.strategy, "phrases": self._phrases(),
                "strategy_settings": dict(self.strategy_settings), "min_text_score": self.min_text_score,
                "max_masks": self.max_masks}

    def build(self, device: str | None = None, cache_size: int = 4) -> "_CocoRunner":
        from samkit.pipelines import TextToMask

        segmenter = None if self.model is None else _segmenter(self.model, device, self.dtype, cache_size)
        pipeline = TextToMask(segmenter, strategy=self.strategy, min_text_score=self.min_text_score,
                              max_masks=self.max_masks, **self.strategy_settings)
        phrases = self._phrases()

        def run(image: Any) -> Any:
            result = pipeline(image, phrases)
            for meta in result.meta:
                meta["label"] = meta.get("phrase")
            return result

        return _CocoRunner(segmenter, run, [{"id": i + 1, "name": p} for i, p in enumerate(phrases)], None)



class _CocoRunner:
    def __init__(self, segmenter: Any, pipeline: Any, categories: list[dict[str, Any]] | None,
                 score_key: str | None) -> None:
        self.segmenter, self.pipeline, self.categories, self.score_key = segmenter, pipeline, categories, score_key

    def run(self, image: Any, *, image_id: int, file_name: str) -> tuple[dict[str, Any], int]:
        result = self.pipeline(image)
        return _coco_payload(result, image_id, file_name, self.categories, self.score_key), len(result)
