"""Segmentation: the one validated result type of samkit.

A :class:`Segmentation` holds ``K`` candidate masks for each of ``N`` prompts on one image,
with a score per mask, optional low-resolution logits and one metadata dict per prompt (class
name, detector score, track id, ...). Selecting, sorting or filtering keeps the metadata
aligned with the masks. Exports: RLE, polygons, COCO annotations, segment_anything-style
records and ``supervision.Detections``; the encodings live in :mod:`samkit.formats`.

Coordinates are original-image pixels, XY order. Boxes use pixel-edge coordinates: XYXY is
``[min_col, min_row, max_col + 1, max_row + 1]`` and COCO XYWH has ``w = max_col - min_col + 1``
(segment_anything and supervision use the inclusive ``max_col``: one pixel less).

Example:
    >>> masks = np.zeros((2, 3, 4, 5), dtype=bool); masks[:, :, 1:3, 1:4] = True
    >>> scores = np.array([[0.5, 0.9, 0.1], [0.8, 0.2, 0.3]])
    >>> seg = Segmentation(masks, scores, meta=[{"label": "cat"}, {"label": "dog"}])
    >>> seg
    Segmentation(n=2, k=3, image_size=(4, 5), logits=None)
    >>> best = seg.best()
    >>> [m["output_index"] for m in best.meta], best.boxes()[0, 0].tolist()
    ([1, 0], [1.0, 1.0, 4.0, 3.0])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from samkit.arrays import to_numpy
from samkit.formats.coco import Categories, coco_annotations
from samkit.formats.jsonable import to_python
from samkit.formats.polygons import mask_to_polygons
from samkit.formats.rle import (
    as_bool_masks,
    compress_counts,
    masks_to_boxes,
    masks_to_coco_rle,
    masks_to_rle,
    rle_to_mask,
)

__all__ = ["OUTPUT_MODES", "Segmentation"]

# Mask encodings of to_records / segment-everything output, as segment_anything names them.
OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
_OUTPUT_MODES = OUTPUT_MODES


def _numeric(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(to_numpy(value))
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def _column(values: list[Any]) -> Any:  # a supervision data column: an array when regular
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged
        return list(values)
    return list(values) if arr.dtype == object else arr


@dataclass(eq=False)
class Segmentation:
    """Masks for ``N`` prompts with ``K`` outputs each, on one image.

    Attributes:
        masks: bool (N, K, H, W) at the original image size. (N, H, W) is accepted as K = 1;
            0/1 numbers are converted, other values are rejected (threshold logits first).
        scores: float32 (N, K) predicted IoU or another score; (N,) is accepted when K = 1.
        logits: float32 (N, K, h, w) low-resolution mask logits, or None.
        meta: one dict per prompt; ``[]`` (or None) means N empty dicts, one dict is repeated.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        masks = as_bool_masks(self.masks, "masks")
        if masks.ndim == 3:
            masks = masks[:, None]
        if masks.ndim != 4:
            raise ValueError(f"masks must have shape (N, K, H, W) or (N, H, W), got {tuple(masks.shape)}")
        n, k = masks.shape[:2]
        scores = _numeric("scores", self.scores)
        if scores.shape == (n,) and k == 1:
            scores = scores[:, None]
        if scores.shape != (n, k):
            raise ValueError(f"scores must have shape (N, K) = {(n, k)} to match masks "
                             f"{tuple(masks.shape)}, got {tuple(scores.shape)}")
        if not np.isfinite(scores).all():
            raise ValueError("scores must be finite, got NaN or infinite values")
        logits = self.logits
        if logits is not None:
            logits = _numeric("logits", logits)
            if logits.ndim == 3 and k == 1:
                logits = logits[:, None]
            if logits.ndim != 4 or logits.shape[:2] != (n, k):
                raise ValueError(f"logits must have shape (N, K, h, w) with (N, K) = {(n, k)}, "
                                 f"got {tuple(logits.shape)}")
        meta = [] if self.meta is None else self.meta
        if isinstance(meta, dict):
            meta = [meta] * n
        elif not isinstance(meta, (list, tuple)):
            raise TypeError(f"meta must be a list of dicts (one per prompt), got {type(meta).__name__}")
        bad = [m for m in meta if not isinstance(m, dict)]
        if bad:
            raise TypeError(f"meta must hold dicts, got {type(bad[0]).__name__}")
        meta = [dict(m) for m in meta] or [{} for _ in range(n)]
        if len(meta) != n:
            raise ValueError(f"meta must hold one dict per prompt ({n}), got {len(meta)}")
        self.masks, self.scores, self.logits, self.meta = masks, scores, logits, meta

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, image_size: Sequence[int], num_outputs: int = 1) -> "Segmentation":
        """No masks (N = 0) for an image of ``image_size`` (H, W)."""
        h, w = (int(v) for v in image_size)
        return cls(np.zeros((0, num_outputs, h, w), dtype=bool),
                   np.zeros((0, num_outputs), dtype=np.float32))

    @classmethod
    def concat(cls, items: Sequence["Segmentation"]) -> "Segmentation":
        """Join results for the same image; all must agree on (H, W), K and logits."""
        items = list(items)
        if not items:
            raise ValueError("concat needs at least one Segmentation (to know the image size), "
                             "got none; use Segmentation.empty(image_size)")
        bad = [x for x in items if not isinstance(x, Segmentation)]
        if bad:
            raise TypeError(f"concat expects Segmentation items, got {type(bad[0]).__name__}")
        head = items[0]
        for x in items[1:]:
            if (x.image_size, x.num_outputs) != (head.image_size, head.num_outputs):
                raise ValueError("concat needs equal image_size and num_outputs, got "
                                 f"{(head.image_size, head.num_outputs)} and {(x.image_size, x.num_outputs)}")
        parts = [x for x in items if len(x)] or [head]  # empty items impose no logits
        if len({None if x.logits is None else x.logits.shape[2:] for x in parts}) > 1:
            raise ValueError("concat needs logits on all non-empty items (of one size) or on none, got "
                             f"{[None if x.logits is None else x.logits.shape[2:] for x in parts]}")
        logits = None if parts[0].logits is None else np.concatenate([x.logits for x in parts])
        return cls(np.concatenate([x.masks for x in parts]), np.concatenate([x.scores for x in parts]),
                   logits, [m for x in parts for m in x.meta])

    @classmethod
    def from_rle(cls, rles: Sequence[Any], scores: Any = None, *,
                 meta: Sequence[dict] | None = None) -> "Segmentation":
        """Build from COCO RLE dicts (either counts form).

        Args:
            rles: N dicts (K = 1) or N lists of K dicts, as written by :meth:`to_rle`.
            scores: (N, K) or (N,); None gives scores of 1.0.
            meta: one dict per prompt, or None.
        """
        rows = [list(r) if isinstance(r, (list, tuple)) else [r] for r in rles]
        if not rows:
            raise ValueError("from_rle needs at least one RLE (to know the image size), got none; "
                             "use Segmentation.empty(image_size)")
        sizes = {tuple(int(v) for v in r["size"]) for row in rows for r in row}
        if len(sizes) != 1 or len({len(row) for row in rows}) != 1:
            raise ValueError("from_rle needs N lists of K RLEs of one size, got sizes "
                             f"{sorted(sizes)} and K {sorted({len(row) for row in rows})}")
        masks = np.stack([np.stack([rle_to_mask(r) for r in row]) for row in rows])
        scores = np.ones(masks.shape[:2], dtype=np.float32) if scores is None else scores
        return cls(masks, scores, None, list(meta or []))

    @classmethod
    def from_supervision(cls, detections: Any) -> "Segmentation":
        """Build from a ``supervision.Detections`` (duck-typed; supervision is not imported).

        Reads ``.mask`` (N, H, W) bool, required; ``.confidence`` (N,) -> scores (1.0 when None);
        ``.class_id`` and ``.tracker_id`` -> meta ``"class_id"`` / ``"tracker_id"``; ``.xyxy``
        -> meta ``"box"``; each ``.data[key]`` column -> meta ``key``. Gives K = 1.
        """
        mask = getattr(detections, "mask", None)
        if mask is None:
            raise ValueError("from_supervision needs detections with masks (.mask of shape (N, H, W)), "
                             "got mask=None; segment their boxes first")
        masks = as_bool_masks(mask, "detections.mask")
        if masks.ndim != 3:
            raise ValueError(f"detections.mask must have shape (N, H, W), got {tuple(masks.shape)}")
        n = masks.shape[0]
        columns: dict[str, Any] = {}
        for name, key in (("class_id", "class_id"), ("tracker_id", "tracker_id"), ("xyxy", "box")):
            if getattr(detections, name, None) is not None:
                columns[key] = getattr(detections, name)
        columns.update(getattr(detections, "data", None) or {})
        meta: list[dict[str, Any]] = [{} for _ in range(n)]
        for key, values in columns.items():
            if len(values) != n:
                raise ValueError(f"detections field {key!r} must have one value per mask ({n}), "
                                 f"got {len(values)}")
            for i in range(n):
                meta[i][key] = to_python(values[i])
        confidence = getattr(detections, "confidence", None)
        scores = np.ones(n, dtype=np.float32) if confidence is None else confidence
        return cls(masks[:, None], _numeric("detections.confidence", scores).reshape(-1), None, meta)

    # -- access -------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the original image."""
        return int(self.masks.shape[2]), int(self.masks.shape[3])

    @property
    def num_outputs(self) -> int:
        """K, the number of masks per prompt."""
        return int(self.masks.shape[1])

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def __getitem__(self, index: Any) -> "Segmentation":
        """Select prompts by int (kept as N = 1), slice, integer array or boolean (N,) array."""
        n = len(self)
        if isinstance(index, bool):
            raise TypeError("index must be an int, slice, integer array or boolean array, got bool")
        if isinstance(index, (int, np.integer)):
            if not -n <= index < n:
                raise IndexError(f"index {index} is out of range for {n} prompts")
            rows = np.array([int(index) % n])
        elif isinstance(index, slice):
            rows = np.arange(n)[index]
        else:
            arr = np.asarray(to_numpy(index))
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise IndexError(f"boolean index must have shape ({n},), got {arr.shape}")
                rows = np.flatnonzero(arr)
            elif arr.size == 0 or np.issubdtype(arr.dtype, np.integer):
                if arr.ndim > 1:
                    raise IndexError(f"integer index must have shape (M,), got {arr.shape}")
                rows = np.arange(n)[arr.astype(np.int64).reshape(-1)]
            else:
                raise TypeError("index must be an int, slice, integer array or boolean array, "
                                f"got dtype {arr.dtype}")
        logits = None if self.logits is None else self.logits[rows]
        return Segmentation(self.masks[rows], self.scores[rows], logits, [self.meta[i] for i in rows.tolist()])

    def areas(self) -> np.ndarray:
        """int64 (N, K): set pixels per mask."""
        return self.masks.sum(axis=(2, 3), dtype=np.int64)

    def boxes(self) -> np.ndarray:
        """float32 (N, K, 4) XYXY pixel-edge boxes; zeros for empty masks."""
        return masks_to_boxes(self.masks)

    def _best_index(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1) if self.num_outputs > 1 else np.zeros(len(self), np.int64)

    def best(self) -> "Segmentation":
        """K = 1: the highest-scoring output per prompt, its index stored as meta ``"output_index"``.

        When K is already 1, an existing ``"output_index"`` is kept (0 otherwise).
        """
        if self.num_outputs == 1:
            meta = [{"output_index": 0, **m} for m in self.meta]
            return Segmentation(self.masks, self.scores, self.logits, meta)
        choice = self._best_index()
        rows = np.arange(len(self))
        logits = None if self.logits is None else self.logits[rows, choice][:, None]
        meta = [dict(m, output_index=int(c)) for m, c in zip(self.meta, choice.tolist())]
        return Segmentation(self.masks[rows, choice][:, None], self.scores[rows, choice][:, None], logits, meta)

    def sorted(self, by: str = "score", descending: bool = True) -> "Segmentation":
        """Reorder prompts (stable) by ``"score"``, ``"area"`` or a meta key.

        Score and area are those of the best-scoring output of each prompt.
        """
        rows = np.arange(len(self))
        if by == "score":
            keys = self.scores[rows, self._best_index()].tolist()
        elif by == "area":
            keys = self.areas()[rows, self._best_index()].tolist()
        else:
            missing = [i for i, m in enumerate(self.meta) if by not in m]
            if missing:
                raise KeyError(f"sorted(by={by!r}) expects 'score', 'area' or a meta key present in every "
                               f"prompt; prompt {missing[0]} has meta keys {sorted(self.meta[missing[0]])}")
            keys = [m[by] for m in self.meta]
        order = sorted(range(len(self)), key=keys.__getitem__, reverse=descending)
        return self[np.asarray(order, dtype=np.int64)]

    def filter(self, keep: Any = None, *, min_score: float | None = None,
               min_area: int | None = None) -> "Segmentation":
        """Keep prompts where ``keep`` (bool (N,)) is True and whose best-scoring output has
        ``score >= min_score`` and ``area >= min_area`` (criteria left as None are ignored)."""
        n = len(self)
        selected = np.ones(n, dtype=bool)
        if keep is not None:
            arr = np.asarray(to_numpy(keep))
            if arr.dtype != bool or arr.shape != (n,):
                raise ValueError(f"keep must be a boolean array of shape ({n},), got {arr.dtype} {arr.shape}")
            selected &= arr
        rows, choice = np.arange(n), self._best_index()
        if min_score is not None:
            selected &= self.scores[rows, choice] >= min_score
        if min_area is not None:
            selected &= self.areas()[rows, choice] >= min_area
        return self[selected]

    # -- exports ------------------------------------------------------------------------------
    def to_rle(self, compressed: bool = True) -> list[list[dict[str, Any]]]:
        """N lists of K COCO RLE dicts; ``str`` counts when compressed, ``list[int]`` otherwise."""
        n, k = self.masks.shape[:2]
        rles = masks_to_rle(self.masks.reshape(n * k, *self.image_size))
        if compressed:
            rles = [{"size": r["size"], "counts": compress_counts(r["counts"])} for r in rles]
        return [rles[i * k:(i + 1) * k] for i in range(n)]

    def to_polygons(self, holes: bool = True) -> list[list[list[np.ndarray]]]:
        """N lists of K lists of rings, float32 (M, 2) XY pixel-edge coordinates.

        See :func:`samkit.formats.polygons.mask_to_polygons`: outer rings have positive signed area, holes
        negative. (COCO polygons cannot express holes; prefer RLE for COCO files.)
        """
        return [[mask_to_polygons(m, holes=holes) for m in per_prompt] for per_prompt in self.masks]

    def _best_xywh(self) -> tuple["Segmentation", np.ndarray]:
        best = self.best()
        xyxy = best.boxes()[:, 0].astype(np.float64)
        return best, np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)

    def to_coco(self, image_id: Any, *, category_id: int | None = 1, start_id: int = 1,
                categories: Categories | None = None, score_key: str | None = None) -> list[dict[str, Any]]:
        """COCO annotation dicts, one per prompt, from its best-scoring output.

        Built by :func:`samkit.formats.coco.coco_annotations`, whose category rule applies: meta
        ``"category_id"``, else (with ``categories``) the category named by meta ``"label"``,
        else meta ``"class_id"``, else ``category_id``, else the only category. Ids count up
        from ``start_id``; ``segmentation`` is compressed RLE with ``str`` counts; ``bbox`` is
        XYWH as ``pycocotools.mask.toBbox``; ``score`` is the predicted IoU, or meta
        ``score_key`` when given and present.
        """
        best = self.best()
        return coco_annotations(best.masks[:, 0], best.scores[:, 0], best.meta, image_id, categories=categories,
                                category_id=category_id, start_id=start_id, score_key=score_key)

    def to_records(self, output_mode: str = "binary_mask") -> list[dict[str, Any]]:
        """Records shaped like ``SamAutomaticMaskGenerator.generate`` output, one per prompt.

        Keys: ``segmentation`` (bool (H, W) copy for ``"binary_mask"``, else an RLE dict for
        ``"uncompressed_rle"`` / ``"coco_rle"``), ``area`` (int), ``bbox`` (XYWH: meta ``"bbox"``
        when present — :class:`~samkit.pipelines.SegmentEverything` stores the reference's
        inclusive convention there — else the COCO convention), ``predicted_iou`` (best score), and from meta when present
        ``point_coords``, ``stability_score`` (None otherwise) and ``crop_box`` (the whole image
        ``[0, 0, W, H]`` otherwise). The best-scoring output of each prompt is used.
        """
        if output_mode not in _OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {_OUTPUT_MODES}, got {output_mode!r}")
        best, xywh = self._best_xywh()
        masks = best.masks[:, 0]
        if output_mode == "binary_mask":
            segmentations: list[Any] = [m.copy() for m in masks]
        elif output_mode == "uncompressed_rle":
            segmentations = masks_to_rle(masks)
        else:
            segmentations = masks_to_coco_rle(masks)
        h, w = self.image_size
        areas = best.areas()[:, 0].tolist()
        out = []
        for i, meta in enumerate(best.meta):
            stability = meta.get("stability_score")
            bbox = to_python(meta["bbox"]) if meta.get("bbox") is not None else xywh[i].tolist()
            out.append({"segmentation": segmentations[i], "area": areas[i], "bbox": bbox,
                        "predicted_iou": float(best.scores[i, 0]),
                        "point_coords": to_python(meta.get("point_coords")),
                        "stability_score": None if stability is None else float(stability),
                        "crop_box": to_python(meta.get("crop_box", [0, 0, w, h]))})
        return out

    def to_supervision(self) -> Any:
        """``supervision.Detections`` of the best output per prompt.

        ``xyxy`` float32 (N, 4) pixel-edge boxes, ``mask`` bool (N, H, W), ``confidence``
        float32 (N,), ``class_id`` int (N,) from meta ``"class_id"`` (or ``"category_id"``)
        when every prompt has one, and ``data`` holding the other meta keys shared by all.

        Raises:
            ImportError: when supervision is not installed.
        """
        try:
            import supervision as sv
        except ImportError:
            raise ImportError("Segmentation.to_supervision needs the supervision package: "
                              "pip install supervision") from None
        best = self.best()
        class_id = None
        for key in ("class_id", "category_id"):
            if best.meta and all(m.get(key) is not None for m in best.meta):
                class_id = np.array([int(m[key]) for m in best.meta], dtype=int)
                break
        shared = set.intersection(*(set(m) for m in best.meta)) if best.meta else set()
        shared -= {"class_id", "category_id"} if class_id is not None else set()
        data = {key: _column([m[key] for m in best.meta]) for key in sorted(shared)}
        return sv.Detections(xyxy=best.boxes()[:, 0], mask=best.masks[:, 0].copy(),
                             confidence=best.scores[:, 0].copy(), class_id=class_id, data=data)

    def __repr__(self) -> str:
        logits = None if self.logits is None else tuple(self.logits.shape[2:])
        return (f"Segmentation(n={len(self)}, k={self.num_outputs}, image_size={self.image_size}, "
                f"logits={logits})")
