"""Ultralytics YOLO adapter: detections -> box :class:`~samkit.prompts.Prompts`.

Needs ``pip install samkit[ultralytics]``. Ultralytics is AGPL-3.0: it is imported only when a
model is loaded from a file here, never when samkit (or this module) is imported. A ``YOLO``
object built by the caller is used duck-typed.

Colour order: ultralytics reads numpy arrays as BGR (OpenCV's order). samkit images are RGB,
so they are flipped to BGR before ``predict``; the network then sees the correct RGB tensor.

YOLO-World: ``YOLODetector(model, prompts=["cat", "red car"])`` calls
``model.set_classes(prompts)``; the class names then are the prompts. ``set_classes`` embeds
the prompts with CLIP: it needs ultralytics' CLIP package and weights (downloaded on first use).

Example:
    >>> detector = YOLODetector("yolov8n.pt", conf=0.3, classes=["person", "dog"])  # doctest: +SKIP
    >>> prompts = detector(image)              # image: (H, W, 3) uint8 RGB   # doctest: +SKIP
    >>> prompts.boxes.shape, prompts.meta[0]["label"]                          # doctest: +SKIP
    ((3, 4), 'person')
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from samkit.prompts import Prompts
from samkit.transforms import to_rgb_uint8

from .boxes import boxes_to_prompts, resolve_class_names
from .safe_files import check_yolo_file

__all__ = ["YOLODetector", "load_yolo", "detect_with_yolo", "yolo_result_to_prompts", "is_yolo_like"]

logger = logging.getLogger(__name__)

_INSTALL = "pip install samkit[ultralytics]"
_SUFFIXES = (".pt", ".yaml", ".yml")


def is_yolo_like(obj: Any) -> bool:
    """Whether ``obj`` is used as an ``ultralytics.YOLO`` (duck-typed: ``.predict`` and ``.names``)."""
    return hasattr(obj, "predict") and hasattr(obj, "names")


def _offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _official_names() -> frozenset[str]:
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return frozenset(GITHUB_ASSETS_NAMES)


def load_yolo(model: str | os.PathLike | Any, *, trust_file: bool = False) -> Any:
    """An ``ultralytics.YOLO`` from a ``.pt`` file, a ``.yaml`` (random weights) or as given.

    A local file is checked before ultralytics opens it (:mod:`samkit.adapters.safe_files`):
    a ``.pt`` holding Python objects other than YOLO layers, or a ``.yaml`` whose activation or
    layer names are not torch layers, is refused, because ultralytics would run code from it.
    A name that is not a local file must be one of ultralytics' official assets (e.g.
    ``"yolov8n.pt"``, downloaded by ultralytics, never with ``YOLO_OFFLINE=1``) or one of its
    packaged model configs (``"yolov8n.yaml"``).

    Args:
        model: a path or name ending in ``.pt``, ``.yaml`` or ``.yml``, or a ``YOLO``-like object.
        trust_file: skip the check of a local file. Only for files you trust: loading one made
            to attack you runs its code.

    Raises:
        ImportError: ultralytics is not installed (``pip install samkit[ultralytics]``).
        FileNotFoundError: a local path that does not exist, a ``.pt`` name that is not an
            official asset, or any missing ``.pt`` while ``YOLO_OFFLINE=1``.
        CheckpointError: the local file is unreadable or could run code (see ``trust_file``).
    """
    if not isinstance(model, (str, os.PathLike)):
        if not is_yolo_like(model):
            raise TypeError("model must be a path to a .pt / .yaml file or an ultralytics.YOLO-like object "
                            f"(with .predict and .names), got {type(model).__name__}")
        return model
    path = os.fspath(model)
    if not path.lower().endswith(_SUFFIXES):
        raise ValueError(f"a YOLO model file must end in {', '.join(_SUFFIXES)}, got {path!r}; for other "
                         "export formats build ultralytics.YOLO yourself and pass the object")
    try:
        from ultralytics import YOLO
    except ImportError:
        raise ImportError(f"loading a YOLO model from {path!r} needs ultralytics: {_INSTALL}") from None
    if os.path.isfile(path):
        if not trust_file:
            check_yolo_file(path)
    elif os.path.exists(path):
        raise ValueError(f"expected a YOLO model file, got the folder {path!r}")
    elif os.path.dirname(path):
        raise FileNotFoundError(f"YOLO model file not found: {path}")
    elif path.lower().endswith(".pt"):
        if _offline():
            raise FileNotFoundError(f"YOLO model file not found: {path}; it is not a local file and YOLO_OFFLINE=1 "
                                    "forbids downloading it")
        if path not in _official_names():
            raise FileNotFoundError(f"YOLO model file not found: {path}; it is not a local file nor an official "
                                    "ultralytics model name (e.g. yolov8n.pt), so nothing can be downloaded")
    return YOLO(path)


def _class_ids(classes: Sequence[int | str] | None, names: dict[int, str]) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, int)):
        classes = [classes]
    by_name = {name: cid for cid, name in names.items()}
    ids = []
    for c in classes:
        if isinstance(c, str):
            if c not in by_name:
                raise ValueError(f"classes holds {c!r}, which the model does not know; its classes are "
                                 f"{sorted(by_name)[:20]}{' ...' if len(by_name) > 20 else ''}")
            ids.append(by_name[c])
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if int(c) not in names:
                raise ValueError(f"classes holds id {int(c)}, expected ids in 0..{max(names, default=-1)}")
            ids.append(int(c))
        else:
            raise TypeError(f"classes must hold class ids (int) or names (str), got {c!r}")
    return ids


def yolo_result_to_prompts(result: Any, class_names: Sequence[str] | Mapping[int, str] | None = None, *,
                           source: str = "ultralytics") -> Prompts:
    """One ``ultralytics.engine.results.Results`` -> box prompts.

    Reads ``result.boxes.xyxy`` (N, 4) original-image pixels, ``.conf`` (N,) and ``.cls`` (N,);
    names come from ``class_names`` or ``result.names``.
    """
    boxes = getattr(result, "boxes", None)
    if boxes is None:
        task = "oriented boxes (OBB)" if getattr(result, "obb", None) is not None else "no boxes"
        raise ValueError(f"expected a detection or segmentation result with .boxes, got {task}; "
                         "classification, pose-only and OBB models are not box detectors")
    names = class_names if class_names is not None else getattr(result, "names", None)
    return boxes_to_prompts(boxes.xyxy, boxes.conf, boxes.cls, class_names=names, source=source)


def detect_with_yolo(model: Any, images: Iterable[Any], *, conf: float = 0.25, iou: float = 0.7,
                     classes: Sequence[int | str] | None = None, max_det: int = 300, imgsz: int | None = None,
                     device: str | None = None, batch_size: int = 16) -> list[Prompts]:
    """Detect objects in RGB images with a YOLO model; one :class:`Prompts` per image.

    Args:
        model: an ``ultralytics.YOLO``-like object (see :func:`load_yolo`).
        images: RGB images (anything :func:`samkit.transforms.to_rgb_uint8` accepts).
        conf: minimum confidence.
        iou: NMS IoU threshold.
        classes: keep only these class ids or names (None keeps all).
        max_det: at most this many boxes per image.
        imgsz: inference size (None: the model's default).
        device: e.g. ``"cpu"``, ``"cuda:0"`` (None: ultralytics' choice).
        batch_size: images per ``predict`` call.

    Returns:
        A list of :class:`Prompts` (boxes XYXY in each image's pixels, meta ``label``,
        ``class_id``, ``score``, ``source="ultralytics"``, ``box``); empty prompts for images
        without detections.
    """
    if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
        raise ValueError(f"conf and iou must lie in [0, 1], got conf={conf}, iou={iou}")
    if max_det < 1 or batch_size < 1:
        raise ValueError(f"max_det and batch_size must be >= 1, got {max_det}, {batch_size}")
    names = resolve_class_names(model.names)
    kwargs: dict[str, Any] = {"conf": conf, "iou": iou, "max_det": max_det, "verbose": False,
                              "classes": _class_ids(classes, names)}
    if imgsz is not None:
        kwargs["imgsz"] = imgsz
    if device is not None:
        kwargs["device"] = device
    bgr = [np.ascontiguousarray(to_rgb_uint8(im)[:, :, ::-1]) for im in images]
    out: list[Prompts] = []
    for start in range(0, len(bgr), batch_size):
        chunk = bgr[start:start + batch_size]
        results = list(model.predict(chunk, **kwargs))
        if len(results) != len(chunk):
            raise RuntimeError(f"YOLO predict returned {len(results)} results for {len(chunk)} images")
        out += [yolo_result_to_prompts(r, names) for r in results]
    return out


class YOLODetector:
    """Settings for :func:`detect_with_yolo`; same defaults. A :class:`PromptSource`.

    Args:
        model: a local ``.pt``, a ``.yaml`` (random weights) or an already-built ``YOLO``.
        trust_file: skip the safety check of a local file (see :func:`load_yolo`).
        conf, iou, classes, max_det, imgsz, device, batch_size: see :func:`detect_with_yolo`.
        prompts: YOLO-World text prompts; ``model.set_classes(prompts)`` is called once here.

    Example:
        >>> detector = YOLODetector("yolov8s-worldv2.pt", prompts=["cup", "spoon"])  # doctest: +SKIP
        >>> detector(image).meta[0]["label"]                                        # doctest: +SKIP
        'cup'
    """

    def __init__(self, model: str | os.PathLike | Any, *, conf: float = 0.25, iou: float = 0.7,
                 classes: Sequence[int | str] | None = None, max_det: int = 300, imgsz: int | None = None,
                 device: str | None = None, batch_size: int = 16, prompts: Sequence[str] | None = None,
                 trust_file: bool = False) -> None:
        self.model = load_yolo(model, trust_file=trust_file)
        if prompts is not None:
            if isinstance(prompts, str) or not all(isinstance(p, str) and p.strip() for p in prompts) \
                    or not len(prompts):
                raise ValueError(f"prompts must be a non-empty list of non-empty strings, got {prompts!r}")
            if not hasattr(self.model, "set_classes"):
                raise TypeError(f"prompts need a YOLO-World model (with set_classes), got {type(self.model).__name__}")
            self.model.set_classes(list(prompts))
        self.prompts = None if prompts is None else list(prompts)
        self.conf, self.iou, self.max_det, self.imgsz, self.device = conf, iou, max_det, imgsz, device
        self.batch_size = batch_size
        self.classes = None if classes is None else list(classes) if not isinstance(classes, (str, int)) \
            else [classes]
        _class_ids(self.classes, self.class_names)  # unknown names fail here, not at the first image

    @property
    def class_names(self) -> dict[int, str]:
        """``{class_id: name}`` of the model (the prompts for YOLO-World)."""
        return resolve_class_names(self.model.names)

    @property
    def open_vocabulary(self) -> bool:
        """True for YOLO-World models, whose classes are set from text (``set_classes``)."""
        return hasattr(self.model, "set_classes")

    @property
    def categories(self) -> list[dict[str, Any]]:
        """COCO categories ``[{"id": class_id, "name": name}]`` of the model's classes, by id."""
        return [{"id": int(k), "name": v} for k, v in sorted(self.class_names.items())]

    def detect_batch(self, images: Iterable[Any]) -> list[Prompts]:
        """One :class:`Prompts` per RGB image."""
        return detect_with_yolo(self.model, images, conf=self.conf, iou=self.iou, classes=self.classes,
                                max_det=self.max_det, imgsz=self.imgsz, device=self.device,
                                batch_size=self.batch_size)

    def __call__(self, image: Any) -> Prompts:
        """Box prompts for one (H, W, 3) uint8 RGB image."""
        return self.detect_batch([image])[0]

    def __repr__(self) -> str:
        return (f"YOLODetector({type(self.model).__name__}, conf={self.conf}, iou={self.iou}, "
                f"classes={self.classes}, max_det={self.max_det})")
