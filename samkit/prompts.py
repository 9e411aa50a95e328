"""Prompts: the one input currency of :class:`samkit.Segmenter`.

A :class:`Prompts` holds ``N`` prompts. Each prompt may combine points (with
foreground/background labels), one box, one low-resolution mask input and one
embedding vector (CLIP text or image embedding, used by models trained with the
embedding prompt path). Per-prompt metadata (class name, detector score, track id,
source, ...) travels with the prompt into the :class:`~samkit.results.Segmentation`.

Coordinates are always original-image pixels, XY order; boxes are XYXY.
Points outside the image are valid prompts (the reference accepts them too); NaN,
infinite, complex or huge coordinates (beyond +-``MAX_COORDINATE`` = 1e6 pixels) are not.
Mask-input logits and embedding values must lie within +-1e6 as well.

Example:
    >>> p = Prompts.from_boxes([[10, 20, 110, 220], [5, 5, 50, 60]], meta=[{"label": "cat"}, {"label": "dog"}])
    >>> len(p)
    2
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .arrays import to_numpy

__all__ = ["Prompts", "MAX_COORDINATE"]


# Largest coordinate magnitude accepted, in original-image pixels. Points may lie outside the
# image, but values beyond this bound are input errors, and mapping them to the model input
# could overflow float32.
MAX_COORDINATE = 1e6
# Largest magnitude accepted for mask-input logits and embedding values (real ones are far smaller).
MAX_VALUE = 1e6


def _format_values(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"{float(v):g}" for v in values.ravel()[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"


def _as_float_array(name: str, value: Any, *, bound: float | None = None) -> np.ndarray:
    """``value`` as float32, rejecting non-numeric, complex, NaN/inf and values beyond ``bound``."""
    value = to_numpy(value)
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like numbers, got {type(value).__name__}: {exc}") from None
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real numbers, got complex dtype {arr.dtype}")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    wide = arr.astype(np.float64)  # checked before narrowing, so huge values are reported as given
    if not np.all(np.isfinite(wide)):
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    limit = float(np.finfo(np.float32).max) if bound is None else bound
    too_big = np.abs(wide) > limit
    if np.any(too_big):
        raise ValueError(f"{name} must lie within +-{limit:g}, got {_format_values(wide[too_big])}")
    return wide.astype(np.float32)


def _normalize_meta(meta: Any, n: int) -> list[dict[str, Any]]:
    """None, one mapping (copied to every prompt) or a sequence of mappings/None -> list of dicts."""
    if meta is None:
        return []
    if isinstance(meta, Mapping):
        return [dict(meta) for _ in range(n)]
    if isinstance(meta, (str, bytes)) or not isinstance(meta, Iterable):
        raise TypeError(f"meta must be a mapping or a sequence of mappings (one per prompt), "
                        f"got {type(meta).__name__}")
    out = []
    for i, m in enumerate(meta):
        if m is not None and not isinstance(m, Mapping):
            raise TypeError(f"meta must be a sequence of mappings (one per prompt), got {type(m).__name__} "
                            f"at index {i}: {m!r:.60}")
        out.append({} if m is None else dict(m))
    return out


def _normalize_points(points: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    pts = _as_float_array("points", points, bound=MAX_COORDINATE)
    if pts.ndim == 2 and pts.shape[-1] == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] != 2:
        raise ValueError(f"points must have shape (P, 2) or (N, P, 2), got {tuple(pts.shape)}")
    if pts.shape[1] == 0:
        raise ValueError("points must hold at least one point per prompt, got shape "
                         f"{tuple(pts.shape)}; pass points=None for no points")
    if labels is None:
        lab = np.ones(pts.shape[:2], dtype=np.int64)
    else:
        lab_f = _as_float_array("labels", labels)
        if lab_f.ndim == 1 and pts.shape[0] == 1:
            lab_f = lab_f[None]
        if lab_f.shape != pts.shape[:2]:
            raise ValueError(
                f"labels must have shape {pts.shape[:2]} to match points {tuple(pts.shape)}, "
                f"got {tuple(lab_f.shape)}"
            )
        bad = np.setdiff1d(np.unique(lab_f), [-1, 0, 1])
        if bad.size:
            raise ValueError(
                f"labels must be 1 (foreground), 0 (background) or -1 (padding), got {_format_values(bad)}"
            )
        lab = lab_f.astype(np.int64)
    return pts, lab


def _normalize_boxes(boxes: Any) -> np.ndarray:
    b = _as_float_array("boxes", boxes, bound=MAX_COORDINATE)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (4,) or (N, 4) as XYXY, got {tuple(b.shape)}")
    if b.shape[0] and np.any((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])):
        i = int(np.nonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[0][0])
        raise ValueError(f"boxes must be XYXY with x1 >= x0 and y1 >= y0, got box {i}: {b[i].tolist()}")
    return b


def _normalize_masks(mask_inputs: Any) -> np.ndarray:
    m = _as_float_array("mask_input", mask_inputs, bound=MAX_VALUE)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None] if m.shape[0] != 1 else m[None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ValueError(f"mask_input must have shape (N, 1, h, w) (low-res logits), got {tuple(m.shape)}")
    return m


def _normalize_embeddings(embeddings: Any) -> np.ndarray:
    e = _as_float_array("embeddings", embeddings, bound=MAX_VALUE)
    if e.ndim == 1:
        e = e[None]
    if e.ndim != 2:
        raise ValueError(f"embeddings must have shape (D,) or (N, D), got {tuple(e.shape)}")
    return e


@dataclass
class Prompts:
    """A batch of ``N`` prompts for one image.

    Attributes:
        points: float32 (N, P, 2) XY pixel coordinates in the original image, or None.
        labels: int64 (N, P): 1 foreground, 0 background, -1 padding (ignored point), or None.
        boxes: float32 (N, 4) XYXY pixels, or None.
        mask_inputs: float32 (N, 1, h, w) low-res mask logits (h = w = 256 for the paper's models), or None.
        embeddings: float32 (N, D) prompt embeddings (CLIP text/image) for models with the
            embedding prompt path, or None.
        meta: one dict per prompt, copied into the result's metadata.

    Build with the constructor (shapes are validated and broadcast) or the ``from_*`` helpers.
    A single prompt given without the leading N axis (points (P, 2), a box (4,)) becomes N = 1.
    When only some fields are given with N > 1 and another with N = 1, the single one is
    repeated: ``Prompts(points=[[x, y]], boxes=many_boxes)`` adds the same point to every box.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    mask_inputs: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.meta, Mapping):
            self.meta = _normalize_meta(self.meta, 0)
        if self.points is not None:
            self.points, self.labels = _normalize_points(self.points, self.labels)
        elif self.labels is not None:
            raise ValueError("labels were given without points")
        if self.boxes is not None:
            self.boxes = _normalize_boxes(self.boxes)
        if self.mask_inputs is not None:
            self.mask_inputs = _normalize_masks(self.mask_inputs)
        if self.embeddings is not None:
            self.embeddings = _normalize_embeddings(self.embeddings)
        counts = {name: getattr(self, name).shape[0] for name in self._FIELDS if getattr(self, name) is not None}
        n = max(counts.values(), default=0 if isinstance(self.meta, Mapping) else len(self.meta))
        for name, c in counts.items():
            if c == n:
                continue
            if c == 1:
                arr = getattr(self, name)
                setattr(self, name, np.repeat(arr, n, axis=0))
                if name == "points":
                    self.labels = np.repeat(self.labels, n, axis=0)
            else:
                raise ValueError(
                    f"prompt fields must agree on N (or have N = 1), got {counts}"
                )
        if isinstance(self.meta, Mapping):
            self.meta = _normalize_meta(self.meta, n)
        if not self.meta:
            self.meta = [{} for _ in range(n)]
        if len(self.meta) != n:
            raise ValueError(f"meta must hold one dict per prompt ({n}), got {len(self.meta)}")

    _FIELDS = ("points", "boxes", "mask_inputs", "embeddings")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_points(cls, points: Any, labels: Any = None, *, meta: Sequence[dict] | None = None) -> "Prompts":
        """One prompt per point: ``points`` (N, 2) XY pixels, ``labels`` (N,) (default all 1)."""
        pts = _as_float_array("points", points, bound=MAX_COORDINATE)
        if pts.ndim != 2 or pts.shape[-1] != 2:
            raise ValueError(f"points must have shape (N, 2), got {tuple(pts.shape)}")
        lab = None if labels is None else _as_float_array("labels", labels).reshape(-1, 1)
        return cls(points=pts[:, None, :], labels=lab, meta=list(meta or []))

    @classmethod
    def from_boxes(cls, boxes: Any, *, meta: Sequence[dict] | None = None) -> "Prompts":
        """One prompt per box: ``boxes`` (N, 4) XYXY pixels."""
        b = _normalize_boxes(boxes)
        return cls(boxes=b, meta=list(meta or []))

    @classmethod
    def empty(cls) -> "Prompts":
        """No prompts at all (segmenting it returns an empty result)."""
        return cls(meta=[])

    @classmethod
    def concat(cls, items: Sequence["Prompts"]) -> "Prompts":
        """Join several prompt batches; all must carry the same kinds of fields."""
        items = [p for p in items if len(p)]
        if not items:
            return cls.empty()
        kinds = {tuple(getattr(p, f) is not None for f in cls._FIELDS) for p in items}
        if len(kinds) > 1:
            raise ValueError("cannot concat prompts with different fields (e.g. points and boxes-only)")
        out: dict[str, Any] = {}
        for f in cls._FIELDS:
            if getattr(items[0], f) is None:
                continue
            if f == "points":
                p = max(x.points.shape[1] for x in items)
                pts, labs = [], []
                for x in items:
                    pad = p - x.points.shape[1]
                    pts.append(np.pad(x.points, ((0, 0), (0, pad), (0, 0))))
                    labs.append(np.pad(x.labels, ((0, 0), (0, pad)), constant_values=-1))
                out["points"], out["labels"] = np.concatenate(pts), np.concatenate(labs)
            else:
                out[f] = np.concatenate([getattr(x, f) for x in items])
        return cls(**out, meta=[m for x in items for m in x.meta])

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, index: Any) -> "Prompts":
        """Select prompts by int, slice, integer array or boolean mask; metadata stays aligned."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        kw = {f: (None if getattr(self, f) is None else getattr(self, f)[idx]) for f in self._FIELDS}
        kw["labels"] = None if self.labels is None else self.labels[idx]
        return Prompts(**kw, meta=[self.meta[i] for i in idx.tolist()]) if len(idx) else Prompts.empty()

    def chunks(self, size: int) -> Iterator["Prompts"]:
        """Yield consecutive batches of at most ``size`` prompts."""
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        for start in range(0, len(self), size):
            yield self[start:start + size]

    def __repr__(self) -> str:
        parts = [f"{f}={tuple(getattr(self, f).shape)}" for f in self._FIELDS if getattr(self, f) is not None]
        return f"Prompts(n={len(self)}, {', '.join(parts)})"
