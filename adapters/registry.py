"""Detector families and :func:`load_detector`: a name, path or object -> a detector adapter.

One entry per family holds what front ends would otherwise retype: its label, its default
score threshold, whether it detects text queries (open vocabulary), and how it recognises a spec.

===========  =======================================  =========  ==========================
family       spec                                     threshold  vocabulary
===========  =======================================  =========  ==========================
yolo-world   ``*world*.pt`` / ``.yaml``, a YOLO-World  0.25       open (``queries``)
yolo         ``.pt`` / ``.yaml`` / ``.yml``, a YOLO    0.25       closed (``classes``)
zero-shot    transformers folder / hub id (OWL-ViT,   0.1        open (``queries``)
             OWLv2, Grounding DINO)
detr         transformers folder / hub id (DETR,      0.5        closed (``classes``)
             RT-DETR, ...)
===========  =======================================  =========  ==========================

Rules: an existing local path is never taken for a hub id; a local folder's family comes from
its ``config.json`` ``model_type``; a hub id (``org/name``) is zero-shot when queries are given
(or ``open_vocabulary=True``), else DETR-style. A YOLO name that is not a local file downloads
only when it is an official ultralytics asset and ``YOLO_OFFLINE`` is unset.

Every adapter returned has ``.open_vocabulary`` (bool) and ``.categories`` (COCO categories
``[{"id": int, "name": str}]``) and is a :class:`~samkit.adapters.base.PromptSource`.

Example:
    >>> detector = load_detector("yolov8n.pt", threshold=0.3, classes=["person"])   # doctest: +SKIP
    >>> detector.open_vocabulary, detector.categories[0]                             # doctest: +SKIP
    (False, {'id': 0, 'name': 'person'})
    >>> load_detector("google/owlv2-base-patch16-ensemble", queries=["a cat"]).categories  # doctest: +SKIP
    [{'id': 1, 'name': 'a cat'}]
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .base import CallableSource, as_prompt_source
from .hf_detectors import ZERO_SHOT_MODEL_TYPES, ClosedSetDetector, ZeroShotDetector, is_transformers_detector
from .ultralytics import YOLODetector, is_yolo_like

__all__ = ["DetectorFamily", "DETECTOR_FAMILIES", "detector_families", "detector_family", "load_detector"]

_YOLO_SUFFIXES = (".pt", ".yaml", ".yml")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class DetectorFamily:
    """One kind of detector.

    Attributes:
        name: the key in :data:`DETECTOR_FAMILIES` (``family=`` of :func:`load_detector`).
        label: a name for UIs.
        default_threshold: the minimum score used when the caller gives none.
        open_vocabulary: detects free-text queries.
        needs_queries: cannot detect without queries.
        requires: the library it needs; ``install`` is the command that installs it.
        matches: ``spec -> bool``, whether a name, path or object is of this family.
        build: ``(spec, *, threshold, classes, queries, device, **options) -> adapter``.
    """

    name: str
    label: str
    default_threshold: float
    open_vocabulary: bool
    needs_queries: bool
    requires: str
    install: str
    matches: Callable[[Any], bool]
    build: Callable[..., Any]

    def installed(self) -> bool:
        """Whether :attr:`requires` can be imported."""
        return importlib.util.find_spec(self.requires) is not None


def _is_path(spec: Any) -> bool:
    return isinstance(spec, (str, os.PathLike))


def _yolo_file(spec: Any, world: bool) -> bool:
    if not _is_path(spec):
        return False
    path = os.fspath(spec)
    return path.lower().endswith(_YOLO_SUFFIXES) and not os.path.isdir(path) and \
        ("world" in os.path.basename(path).lower()) == world


def _folder_model_type(folder: str) -> str | None:
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        raise ValueError(f"detector folder {folder!r} has no config.json; expected a transformers detector folder "
                         "written by save_pretrained")
    try:
        with open(config, encoding="utf-8") as file:
            model_type = json.load(file).get("model_type")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise ValueError(f"cannot read the model type from {config}: {exc}") from None
    return model_type if isinstance(model_type, str) else None


def _transformers_spec(spec: Any, zero_shot: bool) -> bool:
    if is_transformers_detector(spec):
        return (getattr(spec.config, "model_type", None) in ZERO_SHOT_MODEL_TYPES) == zero_shot
    if not _is_path(spec):
        return False
    path = os.fspath(spec)
    if os.path.isdir(path):
        return (_folder_model_type(path) in ZERO_SHOT_MODEL_TYPES) == zero_shot
    return not os.path.exists(path) and _HUB_ID.fullmatch(path) is not None


def _build_yolo(spec: Any, *, threshold: float, classes: Any, queries: Any, device: Any, **options: Any) -> Any:
    return YOLODetector(spec, conf=threshold, classes=classes, device=device, prompts=queries, **options)


def _build_zero_shot(spec: Any, *, threshold: float, classes: Any, queries: Any, device: Any, **options: Any) -> Any:
    if classes is not None:
        raise ValueError("a zero-shot detector takes queries (the text to find), not classes")
    return ZeroShotDetector(spec, queries, threshold=threshold, device=device, **options)


def _build_detr(spec: Any, *, threshold: float, classes: Any, queries: Any, device: Any, **options: Any) -> Any:
    if queries is not None:
        raise ValueError("a DETR-style detector has a fixed label set and takes classes, not queries; for text "
                         "queries use a zero-shot model (OWL-ViT, OWLv2, Grounding DINO) or YOLO-World")
    return ClosedSetDetector(spec, threshold=threshold, classes=classes, device=device, **options)


#: name -> family, in matching order.
DETECTOR_FAMILIES: dict[str, DetectorFamily] = {f.name: f for f in (
    DetectorFamily("yolo-world", "YOLO-World, text queries (ultralytics)", 0.25, True, False, "ultralytics",
                   "pip install samkit[ultralytics]",
                   lambda s: _yolo_file(s, world=True) or (is_yolo_like(s) and hasattr(s, "set_classes")),
                   _build_yolo),
    DetectorFamily("yolo", "YOLO (ultralytics)", 0.25, False, False, "ultralytics", "pip install samkit[ultralytics]",
                   lambda s: _yolo_file(s, world=False) or (is_yolo_like(s) and not hasattr(s, "set_classes")),
                   _build_yolo),
    DetectorFamily("zero-shot", "Zero-shot, text queries (transformers)", 0.1, True, True, "transformers",
                   "pip install samkit[transformers]", lambda s: _transformers_spec(s, zero_shot=True),
                   _build_zero_shot),
    DetectorFamily("detr", "DETR-style (transformers)", 0.5, False, False, "transformers",
                   "pip install samkit[transformers]", lambda s: _transformers_spec(s, zero_shot=False),
                   _build_detr),
)}

_ADAPTERS = (YOLODetector, ZeroShotDetector, ClosedSetDetector, CallableSource)


def detector_families(installed_only: bool = True) -> list[DetectorFamily]:
    """The families of :data:`DETECTOR_FAMILIES` (only those whose library is installed)."""
    return [f for f in DETECTOR_FAMILIES.values() if f.installed() or not installed_only]


def detector_family(spec: Any, *, queries: Sequence[str] | None = None,
                    open_vocabulary: bool | None = None) -> DetectorFamily:
    """The family a name, path or model object belongs to (rules in the module docstring).

    Raises:
        FileNotFoundError: a path with a folder part that does not exist and is no hub id.
        ValueError: a local file or folder that is no detector, or an unrecognised spec.
    """
    if _is_path(spec):
        path = os.fspath(spec)
        if not path.strip():
            raise ValueError("detector must be a YOLO file, a transformers folder or hub id, got an empty string")
        if os.path.isfile(path) and not path.lower().endswith(_YOLO_SUFFIXES):
            raise ValueError(f"detector file {path!r} is neither a YOLO model ({', '.join(_YOLO_SUFFIXES)}) nor a "
                             "transformers folder; a local path is never read as a hub id")
    candidates = [f for f in DETECTOR_FAMILIES.values() if f.matches(spec)]
    if len(candidates) > 1:  # a hub id: zero-shot with queries, else DETR-style
        want_open = bool(queries) or bool(open_vocabulary)
        candidates = [f for f in candidates if f.open_vocabulary == want_open] or candidates
    if candidates:
        return candidates[0]
    if _is_path(spec):
        path = os.fspath(spec)
        if not os.path.exists(path) and os.path.dirname(path):
            raise FileNotFoundError(f"detector not found: {path}; expected a YOLO model file or a transformers "
                                    "detector folder written by save_pretrained")
        raise ValueError(f"detector {path!r} is not a YOLO file or name ending in {', '.join(_YOLO_SUFFIXES)}, "
                         "a transformers detector folder, or a hub id (org/name)")
    raise TypeError(f"cannot tell the detector family of {type(spec).__name__}; expected a path, hub id, "
                    "ultralytics.YOLO-like object or transformers detection model")


def _check_threshold(threshold: Any) -> None:
    if threshold is None:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1] or None, got {threshold!r}")


def load_detector(spec: Any, *, family: str | None = None, threshold: float | None = None,
                  classes: Sequence[int | str] | None = None, queries: Sequence[str] | None = None,
                  device: str | None = None, open_vocabulary: bool | None = None, **family_options: Any) -> Any:
    """A detector adapter from a name, path or object, with its family's defaults.

    Args:
        spec: a YOLO ``.pt`` / ``.yaml`` path or official name, a transformers folder or hub id,
            an ``ultralytics.YOLO``-like object, a transformers detection model (with
            ``processor=...``), a samkit detector adapter (returned as is, no options allowed),
            or a callable ``image -> Prompts | Detections | (boxes, scores, labels)`` (wrapped by
            :func:`~samkit.adapters.base.as_prompt_source`; ``classes`` are its class names).
        family: a key of :data:`DETECTOR_FAMILIES`, to skip recognising the spec.
        threshold: minimum detection score (None: the family's default).
        classes: keep only these class ids or names (closed-vocabulary families).
        queries: text queries (open-vocabulary families).
        device: where the detector runs.
        open_vocabulary: True requires a detector of text queries (and picks the zero-shot
            family for a hub id).
        family_options: passed to the adapter class (e.g. ``max_det``, ``imgsz``, ``iou`` for YOLO;
            ``text_threshold``, ``batch_size``, ``processor`` for transformers; ``trust_file``
            for YOLO files, see :func:`~samkit.adapters.ultralytics.load_yolo`).

    Returns:
        The adapter, with ``.open_vocabulary`` and ``.categories``.

    Raises:
        ValueError / TypeError: an unrecognised spec or options that do not fit its family.
        FileNotFoundError: a local path that does not exist; a YOLO name that cannot be fetched.
        CheckpointError: a local YOLO file that is unreadable or could run code.
    """
    _check_threshold(threshold)
    if isinstance(spec, _ADAPTERS):
        given = {k: v for k, v in dict(family=family, threshold=threshold, classes=classes, queries=queries,
                                       device=device, **family_options).items() if v is not None}
        if given:
            raise ValueError(f"options {sorted(given)} apply when a detector is loaded; got a built "
                             f"{type(spec).__name__}")
        adapter = spec
    elif family is None and not _is_path(spec) and not is_yolo_like(spec) and not is_transformers_detector(spec):
        if threshold is not None or queries is not None or device is not None or family_options:
            raise ValueError("a detector callable takes only classes (its class names), got other options")
        adapter = as_prompt_source(spec, class_names=classes)
    else:
        if family is not None:
            if family not in DETECTOR_FAMILIES:
                raise ValueError(f"family must be one of {sorted(DETECTOR_FAMILIES)}, got {family!r}")
            kind = DETECTOR_FAMILIES[family]
        else:
            kind = detector_family(spec, queries=queries, open_vocabulary=open_vocabulary)
        adapter = kind.build(spec, threshold=kind.default_threshold if threshold is None else float(threshold),
                             classes=classes, queries=None if queries is None else list(queries), device=device,
                             **family_options)
    if open_vocabulary and not adapter.open_vocabulary:
        model = getattr(adapter, "model", adapter)
        raise TypeError(f"an open-vocabulary detector is needed (YOLO-World, with set_classes, or a zero-shot "
                        f"transformers model); got {type(adapter).__name__} of {type(model).__name__}, which has a "
                        "fixed label set")
    return adapter
