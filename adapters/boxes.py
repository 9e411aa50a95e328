"""Detections -> box :class:`~samkit.prompts.Prompts`: the normalisation every detector adapter shares.

Every detection becomes one box prompt whose meta holds:

=============  ==============================================================================
key            value
=============  ==============================================================================
``label``      class name (str) when known, else None
``class_id``   integer class id when known, else None
``score``      detector confidence (float) or None
``source``     which system produced the box (str)
``box``        the XYXY box in original-image pixels (list of 4 floats)
=============  ==============================================================================

Example:
    >>> p = boxes_to_prompts([[10, 20, 110, 220]], [0.9], [1], class_names=["cat", "dog"])
    >>> p.meta[0]["label"], p.meta[0]["class_id"], p.boxes.tolist()
    ('dog', 1, [[10.0, 20.0, 110.0, 220.0]])
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from samkit.arrays import to_numpy
from samkit.prompts import Prompts

__all__ = ["boxes_to_prompts", "resolve_class_names"]


def resolve_class_names(class_names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str] | None:
    """Class names as ``{class_id: name}``: a sequence is indexed from 0, a mapping is kept.

    ``ultralytics`` models expose ``{0: "person", ...}``; ``transformers`` configs ``id2label``.
    """
    if class_names is None:
        return None
    if isinstance(class_names, str):
        raise TypeError(f"class_names must be a sequence or mapping of names, got the string {class_names!r}")
    if isinstance(class_names, Mapping):
        items = class_names.items()
    elif isinstance(class_names, Sequence):
        items = enumerate(class_names)
    else:
        raise TypeError(f"class_names must be a sequence or mapping of names, got {type(class_names).__name__}")
    out: dict[int, str] = {}
    for key, name in items:
        try:
            out[int(key)] = str(name)
        except (TypeError, ValueError):
            raise TypeError(f"class_names keys must be integer class ids, got {key!r}") from None
    return out


def _labels_to_ids_and_names(labels: Any, n: int, names: dict[int, str] | None
                             ) -> tuple[list[int | None], list[str | None]]:
    if labels is None:
        return [None] * n, [None] * n
    labels = to_numpy(labels)
    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise TypeError(f"labels must be a sequence of N class ids or names, got {type(labels).__name__}")
    shape = np.shape(labels) if isinstance(labels, np.ndarray) else (len(labels),)
    if shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},) to match the boxes, got {tuple(shape)}")
    values = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
    if all(isinstance(v, str) for v in values):
        if names is None:
            return [None] * n, list(values)
        by_name = {name: cid for cid, name in names.items()}
        unknown = sorted({v for v in values if v not in by_name})
        if unknown:
            raise ValueError(f"labels hold class names not in class_names: {unknown}; "
                             f"known names are {sorted(by_name)}")
        return [by_name[v] for v in values], list(values)
    ids: list[int | None] = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not np.isfinite(v) or float(v) != int(v):
            raise TypeError(f"labels must be all integer class ids or all class-name strings, got {v!r} "
                            f"({type(v).__name__})")
        ids.append(int(v))
    if names is None:
        return ids, [None] * n
    unknown_ids = sorted({i for i in ids if i not in names})
    if unknown_ids:
        raise ValueError(f"labels hold class ids not in class_names: {unknown_ids}; known ids are "
                         f"{sorted(names)}")
    return ids, [names[i] for i in ids]


def boxes_to_prompts(boxes_xyxy: Any, scores: Any = None, labels: Any = None, *,
                     class_names: Sequence[str] | Mapping[int, str] | None = None,
                     source: str = "detector") -> Prompts:
    """Turn detections into one box prompt per detection, with aligned metadata.

    Args:
        boxes_xyxy: (N, 4) XYXY boxes in original-image pixels (numpy, torch or nested lists).
        scores: (N,) detector confidences, or None.
        labels: (N,) integer class ids or class-name strings, or None.
        class_names: names of the class ids (a sequence indexed from 0 or ``{id: name}``).
            With integer ``labels`` they give meta ``label``; with string ``labels`` they give
            ``class_id``. A label missing from them is an error.
        source: stored as meta ``source`` in every prompt.

    Returns:
        :class:`Prompts` with ``boxes`` float32 (N, 4) and meta ``label``, ``class_id``,
        ``score``, ``source``, ``box`` (see the module table); ``Prompts.empty()`` when N = 0.

    Raises:
        ValueError: wrong shapes, non-finite or inverted boxes, non-finite scores, unknown labels.
        TypeError: non-numeric boxes or scores, mixed label types.
    """
    boxes = to_numpy(boxes_xyxy)
    try:
        boxes = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"boxes must be numeric (N, 4) XYXY, got {type(boxes_xyxy).__name__}") from None
    if boxes.shape in ((0,), (0, 0)):  # an empty list or array: no detections
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as XYXY pixels, got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if not np.all(np.isfinite(boxes)):
        bad = int(np.flatnonzero(~np.isfinite(boxes).all(axis=1))[0])
        raise ValueError(f"boxes must be finite, got box {bad}: {boxes[bad].tolist()}")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        bad = int(np.flatnonzero(inverted)[0])
        raise ValueError(f"boxes must be XYXY with x1 >= x0 and y1 >= y0, got box {bad}: {boxes[bad].tolist()}")
    if scores is None:
        score_list: list[float | None] = [None] * n
    else:
        try:
            score_arr = np.asarray(to_numpy(scores), dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"scores must be numeric (N,), got {type(scores).__name__}") from None
        if score_arr.shape != (n,):
            raise ValueError(f"scores must have shape (N,) = ({n},) to match the boxes, got {tuple(score_arr.shape)}")
        if not np.all(np.isfinite(score_arr)):
            raise ValueError("scores must be finite, got NaN or infinite values")
        score_list = score_arr.tolist()
    class_ids, names = _labels_to_ids_and_names(labels, n, resolve_class_names(class_names))
    if n == 0:
        return Prompts.empty()
    boxes32 = boxes.astype(np.float32)  # meta "box" holds exactly the prompt's box
    meta = [{"label": names[i], "class_id": class_ids[i], "score": score_list[i], "source": source,
             "box": boxes32[i].tolist()} for i in range(n)]
    return Prompts.from_boxes(boxes32, meta=meta)
