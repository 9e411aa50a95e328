"""supervision adapter: ``supervision.Detections`` -> box :class:`~samkit.prompts.Prompts`.

Duck-typed: supervision is never imported. Anything with ``.xyxy`` (N, 4) works; the optional
``.confidence`` (N,), ``.class_id`` (N,), ``.tracker_id`` (N,) and ``.data`` columns are read
when present. (The way back, masks -> Detections, is ``Segmentation.to_supervision()``.)

Example:
    >>> class Det:  # stands in for sv.Detections
    ...     xyxy = np.array([[1.0, 2.0, 30.0, 40.0]]); confidence = np.array([0.7])
    ...     class_id = np.array([0]); tracker_id = None; data = {"class_name": np.array(["cat"])}
    >>> p = from_supervision_detections(Det())
    >>> p.meta[0]["label"], p.meta[0]["class_id"], p.meta[0]["score"]
    ('cat', 0, 0.7)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from samkit.formats.jsonable import to_python
from samkit.prompts import Prompts

from .boxes import boxes_to_prompts, resolve_class_names

__all__ = ["from_supervision_detections", "is_detections_like"]

_RESERVED = ("label", "class_id", "score", "source", "box")


def is_detections_like(obj: Any) -> bool:
    """Whether ``obj`` is used as a ``supervision.Detections`` (duck-typed: ``.xyxy``,
    ``.confidence`` and ``.class_id``)."""
    return hasattr(obj, "xyxy") and hasattr(obj, "confidence") and hasattr(obj, "class_id")


def from_supervision_detections(detections: Any,
                                class_names: Sequence[str] | Mapping[int, str] | None = None, *,
                                source: str = "supervision") -> Prompts:
    """One box prompt per detection, with label, class id, score and tracker id in meta.

    Args:
        detections: a ``supervision.Detections`` (or any object with ``.xyxy`` (N, 4) XYXY
            pixels and optional ``.confidence``, ``.class_id``, ``.tracker_id``, ``.data``).
        class_names: names of the class ids (sequence from 0 or ``{id: name}``). Without them,
            the ``data["class_name"]`` column (which supervision fills when converting from
            ultralytics or transformers) gives meta ``label``.
        source: stored as meta ``source``.

    Returns:
        :class:`Prompts` as :func:`samkit.adapters.base.boxes_to_prompts` builds them, plus
        meta ``tracker_id`` when tracked and one key per extra ``data`` column.
    """
    if not hasattr(detections, "xyxy"):
        raise TypeError(f"detections must have .xyxy (N, 4) like supervision.Detections, "
                        f"got {type(detections).__name__}")
    xyxy = np.asarray(detections.xyxy, dtype=np.float64)
    if xyxy.size == 0:
        return Prompts.empty()
    n = xyxy.shape[0] if xyxy.ndim == 2 else -1
    class_id = getattr(detections, "class_id", None)
    data = dict(getattr(detections, "data", None) or {})
    names_column = data.pop("class_name", None)
    names = resolve_class_names(class_names)
    labels: Any = class_id
    if class_id is None and names_column is not None:
        labels = names_column  # names only: class ids come from class_names, when given
    prompts = boxes_to_prompts(xyxy, getattr(detections, "confidence", None), labels,
                               class_names=names, source=source)
    columns: dict[str, Any] = {}
    tracker_id = getattr(detections, "tracker_id", None)
    if tracker_id is not None:
        columns["tracker_id"] = tracker_id
    if names_column is not None and names is None:
        columns["label"] = names_column
    for key, values in data.items():
        columns[key if key not in _RESERVED else f"data_{key}"] = values
    for key, values in columns.items():
        if len(values) != n:
            raise ValueError(f"detections field {key!r} must have one value per box ({n}), got {len(values)}")
        for meta, value in zip(prompts.meta, values):
            meta[key] = to_python(value)
    return prompts
