"""Hugging Face transformers detectors -> box :class:`~samkit.prompts.Prompts`.

Needs ``pip install samkit[transformers]``; transformers is imported only when a model is
loaded from a folder or hub id here.

* :class:`ZeroShotDetector`: open-vocabulary detection from text queries with
  ``AutoModelForZeroShotObjectDetection``: OWL-ViT, OWLv2, Grounding DINO, MM Grounding DINO.
* :class:`ClosedSetDetector`: a fixed label set with ``AutoModelForObjectDetection`` (DETR,
  Conditional/Deformable DETR, RT-DETR, ...); class names from ``config.id2label``.

Boxes come back in original-image pixels (XYXY) for every model, using the processor's own
post-processing with ``target_sizes=(H, W)``: OWLv2 pads images to a square (bottom/right)
before resizing, and its post-processing scales by ``max(H, W)``; OWL-ViT stretches images to a
square and DETR-style models predict boxes relative to the unpadded image, so theirs scale by
``(W, H)``. Boxes are then clipped to the image; boxes that clipping leaves without area or
thinner than one pixel (OWLv2 boxes lying in the padding) are dropped.

Grounding DINO reads one string of lower-case, period-separated phrases (``"a cat. a dog."``).
The queries are joined that way here, and each box is mapped back to the query whose tokens
score highest for it (meta ``label`` is the query as given, ``class_id`` its index); the phrase
that transformers decodes from the tokens above ``text_threshold`` is kept as meta ``phrase``.

Example:
    >>> detector = ZeroShotDetector("google/owlv2-base-patch16-ensemble", queries=["a cat", "a remote"])  # doctest: +SKIP
    >>> prompts = detector(image)             # (H, W, 3) uint8 RGB        # doctest: +SKIP
    >>> prompts.meta[0]["label"], prompts.meta[0]["score"]                  # doctest: +SKIP
    ('a cat', 0.71)
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Sequence

import numpy as np

from samkit.arrays import to_numpy
from samkit.prompts import Prompts
from samkit.transforms import to_rgb_uint8

from .boxes import boxes_to_prompts

__all__ = ["ZeroShotDetector", "ClosedSetDetector", "detect_zero_shot", "detect_closed_set",
           "load_hf_detector", "grounding_text", "is_transformers_detector", "ZERO_SHOT_MODEL_TYPES"]

logger = logging.getLogger(__name__)

_INSTALL = "pip install samkit[transformers]"
#: model_type -> how queries are given: one query list per image, or one grounding string.
ZERO_SHOT_MODEL_TYPES = {"owlvit": "query_list", "owlv2": "query_list",
                         "grounding-dino": "grounding_text", "mm-grounding-dino": "grounding_text"}


def is_transformers_detector(obj: Any) -> bool:
    """Whether ``obj`` is used as a transformers model (duck-typed: callable, ``.config.model_type``)."""
    return callable(obj) and hasattr(getattr(obj, "config", None), "model_type")


def _check_threshold(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def load_hf_detector(model: str | os.PathLike | Any, *, processor: Any = None, zero_shot: bool = True,
                     device: str | None = None) -> tuple[Any, Any]:
    """(model, processor) from a local folder, a hub id or as given; the model in eval mode.

    Args:
        model: a folder written by ``save_pretrained``, a hub id (downloaded by transformers, online
            only) or a built ``PreTrainedModel``.
        processor: required with a built model; loaded with the model from a folder or hub id.
        zero_shot: ``AutoModelForZeroShotObjectDetection`` + ``AutoProcessor`` when True, else
            ``AutoModelForObjectDetection`` + ``AutoImageProcessor``.
        device: move the model there (None: leave it where it is).
    """
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        try:
            import transformers
        except ImportError:
            raise ImportError(f"loading {name!r} needs transformers: {_INSTALL}") from None
        model_cls = (transformers.AutoModelForZeroShotObjectDetection if zero_shot
                     else transformers.AutoModelForObjectDetection)
        processor_cls = transformers.AutoProcessor if zero_shot else transformers.AutoImageProcessor
        if os.path.isfile(name):
            raise ValueError(f"a transformers detector is a folder written by save_pretrained or a hub id, got the "
                             f"file {name!r}")
        safe = {"trust_remote_code": False}  # a folder's or hub repo's own Python code is never run
        try:
            if zero_shot:
                model_type = transformers.AutoConfig.from_pretrained(name, **safe).model_type
                if model_type not in ZERO_SHOT_MODEL_TYPES:
                    raise ValueError(f"zero-shot detection supports model types {sorted(ZERO_SHOT_MODEL_TYPES)}, "
                                     f"got {model_type!r} from {name!r}")
            processor = processor if processor is not None else processor_cls.from_pretrained(name, **safe)
            model = model_cls.from_pretrained(name, weights_only=True, **safe)  # pickled .bin: tensors only
        except OSError as exc:
            raise OSError(f"cannot load detector {name!r}: {exc}. Offline, pass a local folder written by "
                          "save_pretrained (config.json, the weights and the processor files).") from None
    elif processor is None:
        raise ValueError(f"a built model ({type(model).__name__}) needs processor=..., got None")
    if not is_transformers_detector(model):
        raise TypeError(f"model must be a transformers detection model, got {type(model).__name__}")
    model.eval()
    if device is not None:
        model.to(device)
    return model, processor


def _check_queries(queries: Sequence[str]) -> list[str]:
    if isinstance(queries, str) or not isinstance(queries, Sequence) or not len(queries):
        raise ValueError(f"queries must be a non-empty list of strings, got {queries!r}")
    bad = [q for q in queries if not isinstance(q, str) or not q.strip()]
    if bad:
        raise ValueError(f"queries must be non-empty strings, got {bad[0]!r}")
    return list(queries)


def grounding_text(queries: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join queries Grounding-DINO style and return ``(text, character span of each query)``.

    Example:
        >>> grounding_text(["A cat", "dog."])
        ('a cat. dog.', [(0, 5), (7, 10)])
    """
    phrases = [q.strip().lower().rstrip(".").strip() for q in _check_queries(queries)]
    inner = [q for q, p in zip(queries, phrases) if "." in p or not p]
    if inner:
        raise ValueError(f"Grounding DINO queries are separated by periods; a query may not contain one, got {inner[0]!r}")
    if len(set(phrases)) != len(phrases):
        raise ValueError(f"queries must be distinct after lower-casing, got {list(queries)}")
    spans, pos = [], 0
    for p in phrases:
        spans.append((pos, pos + len(p)))
        pos += len(p) + 2
    return ". ".join(phrases) + ".", spans


def _token_queries(tokenizer: Any, text: str, spans: list[tuple[int, int]], input_ids: list[int]) -> np.ndarray:
    """(L,) index of the query each token belongs to, -1 for special tokens and periods."""
    enc = tokenizer(text, return_offsets_mapping=True)
    if list(enc["input_ids"]) != list(input_ids[:len(enc["input_ids"])]):
        raise RuntimeError("the tokenizer's ids differ from the processor's input_ids; cannot map tokens to queries")
    owner = np.full(len(input_ids), -1, dtype=np.int64)
    for t, (a, b) in enumerate(enc["offset_mapping"]):
        for k, (s, e) in enumerate(spans):
            if b > a and s <= a and b <= e:
                owner[t] = k
    missing = [k for k in range(len(spans)) if not np.any(owner == k)]
    if missing:
        raise ValueError(f"query {missing[0]} has no tokens inside the model's text length; use fewer queries")
    return owner


def _clip(boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Clip XYXY boxes to the image; keep those with area left that clipping did not cut to a
    sliver under one pixel (a box already that thin before clipping is kept)."""
    h, w = size
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    sides, before = clipped[:, 2:] - clipped[:, :2], boxes[:, 2:] - boxes[:, :2]
    keep = np.all((sides > 0) & (sides >= np.minimum(before, 1.0)), axis=1)
    return clipped, keep


def _finish(boxes: Any, scores: Any, class_ids: np.ndarray, names: Any, size: tuple[int, int], clip_boxes: bool,
            source: str, extra: dict[str, list[Any]]) -> Prompts:
    boxes = np.asarray(to_numpy(boxes), dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(to_numpy(scores), dtype=np.float64).reshape(-1)
    keep = np.ones(len(boxes), dtype=bool)
    if clip_boxes:
        boxes, keep = _clip(boxes, size)
        if not keep.all():
            logger.debug("dropped %d boxes lying outside the image", int((~keep).sum()))
    prompts = boxes_to_prompts(boxes[keep], scores[keep], class_ids[keep], class_names=names, source=source)
    rows = np.flatnonzero(keep).tolist()
    for key, values in extra.items():
        for meta, i in zip(prompts.meta, rows):
            meta[key] = values[i]
    return prompts


def _inputs_to(inputs: Any, model: Any) -> dict[str, Any]:
    import torch

    device, dtype = model.device, model.dtype
    return {k: (v.to(device, dtype) if torch.is_floating_point(v) else v.to(device)) if hasattr(v, "to") else v
            for k, v in inputs.items()}


def _prepare(images: Iterable[Any], batch_size: int) -> tuple[list[list[Any]], list[list[tuple[int, int]]]]:
    from PIL import Image

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rgb = [to_rgb_uint8(im) for im in images]
    pil = [Image.fromarray(im) for im in rgb]  # unambiguous RGB channels-last for any processor
    sizes = [im.shape[:2] for im in rgb]
    return ([pil[i:i + batch_size] for i in range(0, len(pil), batch_size)],
            [sizes[i:i + batch_size] for i in range(0, len(sizes), batch_size)])


def detect_zero_shot(model: Any, processor: Any, images: Iterable[Any], queries: Sequence[str], *,
                     threshold: float = 0.1, text_threshold: float = 0.25, clip_boxes: bool = True,
                     batch_size: int = 4) -> list[Prompts]:
    """Open-vocabulary detection of ``queries`` in RGB images; one :class:`Prompts` per image.

    Args:
        model: a zero-shot detection model (model_type in :data:`ZERO_SHOT_MODEL_TYPES`).
        processor: its processor (``AutoProcessor``).
        images: RGB images (anything :func:`samkit.transforms.to_rgb_uint8` accepts).
        queries: text queries, e.g. ``["a cat", "a remote control"]``.
        threshold: minimum box score.
        text_threshold: Grounding DINO only: token score for the decoded meta ``phrase``.
        clip_boxes: clip boxes to the image and drop those clipped to under one pixel.
        batch_size: images per forward pass.

    Returns:
        Box prompts (XYXY original pixels) with meta ``label`` (the query), ``class_id`` (its
        index), ``score``, ``source`` (the model type), ``box``; Grounding DINO adds
        ``phrase`` and ``query_score`` (the best token score of the matched query).
    """
    import torch

    queries = _check_queries(queries)
    threshold = _check_threshold("threshold", threshold)
    text_threshold = _check_threshold("text_threshold", text_threshold)
    model_type = getattr(model.config, "model_type", None)
    family = ZERO_SHOT_MODEL_TYPES.get(model_type)
    if family is None:
        raise ValueError(f"zero-shot detection supports model types {sorted(ZERO_SHOT_MODEL_TYPES)}, got {model_type!r}")
    if family == "grounding_text":
        text, spans = grounding_text(queries)
    out: list[Prompts] = []
    batches, size_batches = _prepare(images, batch_size)
    for pil, sizes in zip(batches, size_batches):
        if family == "query_list":
            inputs = processor(text=[queries] * len(pil), images=pil, return_tensors="pt")
        else:
            inputs = processor(images=pil, text=[text] * len(pil), return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**_inputs_to(inputs, model))
        if family == "query_list":
            results = processor.post_process_grounded_object_detection(
                outputs, threshold=threshold, target_sizes=sizes, text_labels=[queries] * len(pil))
            for r, size in zip(results, sizes):
                ids = r["labels"].cpu().numpy().astype(np.int64)
                out.append(_finish(r["boxes"], r["scores"], ids, queries, size, clip_boxes, model_type, {}))
            continue
        input_ids = inputs["input_ids"]
        results = processor.post_process_grounded_object_detection(
            outputs, input_ids, threshold=threshold, text_threshold=text_threshold, target_sizes=sizes)
        probs = outputs.logits.float().sigmoid().cpu().numpy()  # (B, Q, L_max)
        owner = _token_queries(processor.tokenizer, text, spans, input_ids[0].tolist())  # same text per image
        for b, (r, size) in enumerate(zip(results, sizes)):
            ids, query_scores = _match_queries(probs[b], owner, threshold, len(queries), len(r["scores"]))
            extra = {"phrase": list(r["text_labels"]), "query_score": query_scores}
            out.append(_finish(r["boxes"], r["scores"], ids, queries, size, clip_boxes, model_type, extra))
    return out


def _match_queries(probs: np.ndarray, owner: np.ndarray, threshold: float, num_queries: int,
                   num_kept: int) -> tuple[np.ndarray, list[float]]:
    """For the boxes Grounding DINO's post-processing kept: the query whose tokens score highest
    (int64 (M,)) and that score. ``probs`` (Q, L_max) token probabilities of one image."""
    keep = probs.max(axis=-1) > threshold  # the processor's own selection, in its order
    if int(keep.sum()) != num_kept:
        raise RuntimeError(f"transformers kept {num_kept} boxes, expected {int(keep.sum())}; "
                           "its grounded post-processing changed")
    kept = probs[keep][:, :len(owner)]
    per_query = np.zeros((len(kept), num_queries))
    for k in range(num_queries):
        per_query[:, k] = kept[:, owner == k].max(axis=1, initial=0.0)
    ids = per_query.argmax(axis=1).astype(np.int64)
    return ids, per_query[np.arange(len(ids)), ids].tolist()


def _id2label(model: Any) -> dict[int, str]:
    return {int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()}


def _closed_set_class_ids(classes: Sequence[int | str] | None, names: dict[int, str]) -> np.ndarray | None:
    if classes is None:
        return None
    if isinstance(classes, (str, int)):
        classes = [classes]
    by_name = {v: k for k, v in names.items()}
    ids = []
    for c in classes:
        if isinstance(c, str) and c in by_name:
            ids.append(by_name[c])
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and int(c) in names:
            ids.append(int(c))
        else:
            raise ValueError(f"classes holds {c!r}, which the model does not know; its classes are "
                             f"{sorted(by_name)[:20]}{' ...' if len(by_name) > 20 else ''} (ids 0..{max(names, default=-1)})")
    return np.asarray(ids, dtype=np.int64)


def detect_closed_set(model: Any, processor: Any, images: Iterable[Any], *, threshold: float = 0.5,
                      classes: Sequence[int | str] | None = None, clip_boxes: bool = True,
                      batch_size: int = 4) -> list[Prompts]:
    """Detection with a fixed label set (``AutoModelForObjectDetection``); one Prompts per image.

    Args:
        model, processor: the detector and its image processor.
        images: RGB images.
        threshold: minimum score.
        classes: keep only these class ids or names (``config.id2label``); None keeps all.
        clip_boxes: clip boxes to the image and drop those clipped to under one pixel.
        batch_size: images per forward pass.

    Returns:
        Box prompts with meta ``label`` (from ``id2label``), ``class_id``, ``score``,
        ``source`` (the model type), ``box``.
    """
    import torch

    threshold = _check_threshold("threshold", threshold)
    names = _id2label(model)
    keep_ids = _closed_set_class_ids(classes, names)
    out: list[Prompts] = []
    model_type = getattr(model.config, "model_type", "detector")
    batches, size_batches = _prepare(images, batch_size)
    for pil, sizes in zip(batches, size_batches):
        inputs = processor(images=pil, return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**_inputs_to(inputs, model))
        results = processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=sizes)
        for r, size in zip(results, sizes):
            ids = r["labels"].cpu().numpy().astype(np.int64)
            sel = np.ones(len(ids), bool) if keep_ids is None else np.isin(ids, keep_ids)
            out.append(_finish(r["boxes"][torch.as_tensor(sel)], r["scores"][torch.as_tensor(sel)], ids[sel],
                               names or None, size, clip_boxes, model_type, {}))
    return out


class ZeroShotDetector:
    """Settings for :func:`detect_zero_shot`; same defaults. A :class:`PromptSource`.

    Args:
        model: a local folder, a hub id or a built model (then also ``processor``).
        queries: the text queries; None leaves them to be set (``detector.queries = [...]``)
            before the first image.
        threshold, text_threshold, clip_boxes, batch_size: see :func:`detect_zero_shot`.
        processor: the processor for a built model.
        device: where to run the model.
    """

    open_vocabulary = True

    def __init__(self, model: str | os.PathLike | Any, queries: Sequence[str] | None = None, *,
                 threshold: float = 0.1, text_threshold: float = 0.25, clip_boxes: bool = True, batch_size: int = 4,
                 processor: Any = None, device: str | None = None) -> None:
        self.queries = None if queries is None else _check_queries(queries)
        self.model, self.processor = load_hf_detector(model, processor=processor, zero_shot=True, device=device)
        model_type = getattr(self.model.config, "model_type", None)
        if model_type not in ZERO_SHOT_MODEL_TYPES:
            raise ValueError(f"ZeroShotDetector supports model types {sorted(ZERO_SHOT_MODEL_TYPES)}, got {model_type!r}")
        if self.queries is not None and ZERO_SHOT_MODEL_TYPES[model_type] == "grounding_text":
            grounding_text(self.queries)  # bad queries fail here, not at the first image
        self.threshold = _check_threshold("threshold", threshold)
        self.text_threshold = _check_threshold("text_threshold", text_threshold)
        self.clip_boxes, self.batch_size = clip_boxes, batch_size

    @property
    def categories(self) -> list[dict[str, Any]]:
        """COCO categories ``[{"id": i + 1, "name": query}]`` of the queries (empty without queries)."""
        return [{"id": i + 1, "name": q} for i, q in enumerate(self.queries or [])]

    def detect_batch(self, images: Iterable[Any]) -> list[Prompts]:
        """One :class:`Prompts` per RGB image."""
        if self.queries is None:
            raise ValueError("this ZeroShotDetector has no queries; set detector.queries = ['a cat', ...] first")
        return detect_zero_shot(self.model, self.processor, images, self.queries, threshold=self.threshold,
                                text_threshold=self.text_threshold, clip_boxes=self.clip_boxes,
                                batch_size=self.batch_size)

    def __call__(self, image: Any) -> Prompts:
        """Box prompts for one (H, W, 3) uint8 RGB image."""
        return self.detect_batch([image])[0]


class ClosedSetDetector:
    """Settings for :func:`detect_closed_set`; same defaults. A :class:`PromptSource`.

    Args:
        model: a local folder, a hub id or a built model (then also ``processor``).
        threshold, classes, clip_boxes, batch_size: see :func:`detect_closed_set`.
        processor: the image processor for a built model.
        device: where to run the model.
    """

    open_vocabulary = False

    def __init__(self, model: str | os.PathLike | Any, *, threshold: float = 0.5,
                 classes: Sequence[int | str] | None = None, clip_boxes: bool = True, batch_size: int = 4,
                 processor: Any = None, device: str | None = None) -> None:
        self.model, self.processor = load_hf_detector(model, processor=processor, zero_shot=False, device=device)
        _closed_set_class_ids(classes, _id2label(self.model))  # unknown classes fail here, not at the first image
        self.threshold, self.classes = _check_threshold("threshold", threshold), classes
        self.clip_boxes, self.batch_size = clip_boxes, batch_size

    @property
    def categories(self) -> list[dict[str, Any]]:
        """COCO categories ``[{"id": class_id, "name": label}]`` from ``config.id2label``, by id."""
        return [{"id": k, "name": v} for k, v in sorted(_id2label(self.model).items())]

    def detect_batch(self, images: Iterable[Any]) -> list[Prompts]:
        """One :class:`Prompts` per RGB image."""
        return detect_closed_set(self.model, self.processor, images, threshold=self.threshold,
                                 classes=self.classes, clip_boxes=self.clip_boxes, batch_size=self.batch_size)

    def __call__(self, image: Any) -> Prompts:
        """Box prompts for one (H, W, 3) uint8 RGB image."""
        return self.detect_batch([image])[0]
