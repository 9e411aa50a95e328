"""Mask encodings: COCO run-length encoding (RLE) and boxes, in pure numpy.

Conventions used throughout this module:

* A mask is a boolean array ``(H, W)`` indexed ``mask[row, column]``; a batch is ``(N, H, W)``.
* **RLE** follows COCO / pycocotools exactly: pixels are read in column-major (Fortran)
  order, ``counts`` alternate runs of 0 and 1 starting with the run of zeros (so a mask whose
  first pixel is set starts with ``0``), and ``size`` is ``[H, W]``. *Uncompressed* counts
  are a ``list[int]``; *compressed* counts are pycocotools' compact ``str``.
* **Boxes** use pixel-edge coordinates: pixel ``(row r, column c)`` covers the square
  ``[c, c + 1] x [r, r + 1]``. XYXY boxes are therefore ``[min_col, min_row, max_col + 1,
  max_row + 1]`` and XYWH boxes ``[min_col, min_row, width, height]`` with
  ``width = max_col - min_col + 1`` (as ``pycocotools.mask.toBbox``). Empty masks give zeros.
  (segment_anything and supervision report the inclusive ``max_col`` instead: one less.)
* **Polygons** (:mod:`samkit.formats.polygons`) trace the pixel borders in the same pixel-edge
  coordinates (vertices are pixel corners), so they enclose exactly the mask pixels.

Example:
    >>> mask = np.zeros((3, 4), dtype=bool); mask[1, 1:3] = True
    >>> masks_to_rle(mask)[0]
    {'size': [3, 4], 'counts': [4, 1, 2, 1, 4]}
    >>> compress_counts([4, 1, 2, 1, 4])
    '41202'
    >>> masks_to_boxes(mask).tolist()
    [1.0, 1.0, 3.0, 2.0]
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from samkit.arrays import to_numpy

__all__ = [
    "as_bool_masks",
    "compress_counts",
    "decompress_counts",
    "masks_to_boxes",
    "masks_to_coco_rle",
    "masks_to_rle",
    "rle_area",
    "rle_to_bbox",
    "rle_to_mask",
    "to_coco_rle",
]

# Masks are encoded in chunks of at most this many pixels to bound the temporary memory.
_CHUNK_PIXELS = 1 << 26


def as_bool_masks(masks: Any, name: str = "masks") -> np.ndarray:
    """Return ``masks`` as a numpy bool array, accepting bool, 0/1 numbers and torch tensors.

    Raises:
        TypeError: if the values are not numeric.
        ValueError: if numeric values other than 0 and 1 are present.
    """
    arr = np.asarray(to_numpy(masks))
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be boolean (or 0/1 numbers), got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(
            f"{name} must be boolean (or 0/1 numbers), got dtype {arr.dtype} with values outside "
            "{0, 1}; threshold logits first, e.g. logits > 0"
        )
    return arr.astype(bool)


def _as_batch(masks: Any) -> np.ndarray:
    arr = as_bool_masks(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"masks must have shape (H, W) or (N, H, W), got {tuple(arr.shape)}")
    return arr


# -- run-length encoding ----------------------------------------------------------------------
def masks_to_rle(masks: Any) -> list[dict[str, Any]]:
    """Encode masks as uncompressed COCO RLE, vectorised across the batch.

    Args:
        masks: bool (N, H, W) or (H, W) (0/1 numbers and torch tensors are accepted).

    Returns:
        N dicts ``{"size": [H, W], "counts": [int, ...]}``; counts in column-major order,
        starting with the run of zeros (identical to pycocotools' uncompressed RLE).

    Example:
        >>> masks_to_rle(np.ones((2, 2), dtype=bool))
        [{'size': [2, 2], 'counts': [0, 4]}]
    """
    batch = _as_batch(masks)
    n, h, w = batch.shape
    num_pixels = h * w
    if num_pixels == 0:
        return [{"size": [h, w], "counts": [0]} for _ in range(n)]
    out: list[dict[str, Any]] = []
    step = max(1, _CHUNK_PIXELS // num_pixels)
    for begin in range(0, n, step):
        chunk = batch[begin:begin + step]
        m = chunk.shape[0]
        flat = chunk.transpose(0, 2, 1).reshape(m, num_pixels)  # column-major pixel order
        rows, cols = np.nonzero(flat[:, 1:] != flat[:, :-1])
        starts_set = np.flatnonzero(flat[:, 0])
        # Run boundaries per mask: 0 when the first pixel is set (empty zero run), every
        # change, then the end. Concatenation order + stable sort keeps them ascending.
        owner = np.concatenate([starts_set, rows, np.arange(m)])
        bounds = np.concatenate([np.zeros(len(starts_set), np.int64), cols + 1,
                                 np.full(m, num_pixels, np.int64)])
        order = np.argsort(owner, kind="stable")
        owner, bounds = owner[order], bounds[order]
        previous = np.empty_like(bounds)
        previous[0] = 0
        previous[1:] = bounds[:-1]
        first = np.ones(len(owner), dtype=bool)
        first[1:] = owner[1:] != owner[:-1]
        previous[first] = 0
        counts = (bounds - previous).tolist()
        ends = np.cumsum(np.bincount(owner, minlength=m)).tolist()
        start = 0
        for end in ends:
            out.append({"size": [h, w], "counts": counts[start:end]})
            start = end
    return out


def compress_counts(counts: Sequence[int]) -> str:
    """Encode uncompressed RLE counts as pycocotools' compact string.

    Each value (``counts[i] - counts[i - 2]`` for ``i > 2``) is written as 5-bit groups, least
    significant first; bit ``0x20`` marks "more groups follow", bit ``0x10`` of the last group is
    the sign, and every group is offset by 48 to land on printable ASCII. The result equals
    ``pycocotools.mask.encode(np.asfortranarray(mask))["counts"].decode()``.

    Example:
        >>> compress_counts([0, 4])
        '04'
    """
    values = np.asarray(counts, dtype=np.int64).reshape(-1)
    if values.size == 0:
        return ""
    deltas = values.copy()
    deltas[3:] -= values[1:-2]
    chars, emitted = [], []
    active = np.ones(values.size, dtype=bool)
    remaining = deltas
    while active.any():
        group = remaining & 0x1F
        remaining = remaining >> 5  # arithmetic shift keeps the sign
        more = np.where(group & 0x10, remaining != -1, remaining != 0)
        chars.append(group | (more.astype(np.int64) << 5))
        emitted.append(active)
        active = active & more
    table = np.stack(chars, axis=1)[np.stack(emitted, axis=1)] + 48
    return table.astype(np.uint8).tobytes().decode("ascii")


def decompress_counts(s: str | bytes) -> list[int]:
    """Decode pycocotools' compact RLE string back to a list of counts.

    Raises:
        ValueError: on characters outside the encoding or a truncated last value.

    Example:
        >>> decompress_counts("41202")
        [4, 1, 2, 1, 4]
    """
    raw = s.encode("ascii") if isinstance(s, str) else bytes(s)
    codes = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return []
    if codes.min() < 0 or codes.max() > 0x3F:
        raise ValueError("compressed RLE counts must use characters '0'..'o' (48..111), got "
                         f"{raw[:40]!r}")
    last = (codes & 0x20) == 0
    if not last[-1]:
        raise ValueError(f"compressed RLE counts end in the middle of a value: {raw[-40:]!r}")
    group_start = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    value_id = np.cumsum(np.concatenate([[0], last[:-1]]))
    shift = 5 * (np.arange(codes.size) - group_start[value_id])
    values = np.add.reduceat((codes & 0x1F) << shift, group_start)
    negative = (codes[last] & 0x10) != 0
    values[negative] |= -1 << (shift[last][negative] + 5)
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])
    counts[2::2] = np.cumsum(values[2::2])
    return counts.tolist()


def masks_to_coco_rle(masks: Any) -> list[dict[str, Any]]:
    """Encode masks as compressed COCO RLE with ``str`` counts (ready for ``json.dump``).

    Args:
        masks: bool (N, H, W) or (H, W).

    Returns:
        N dicts ``{"size": [H, W], "counts": str}``, byte-identical to pycocotools' counts.
    """
    return [{"size": r["size"], "counts": compress_counts(r["counts"])} for r in masks_to_rle(masks)]


def to_coco_rle(segmentation: Any) -> dict[str, Any]:
    """A mask or an RLE of either counts form as COCO RLE with ``str`` counts.

    Args:
        segmentation: bool (H, W) mask, or ``{"size": [H, W], "counts": list[int] | str | bytes}``.

    Returns:
        ``{"size": [H, W], "counts": str}`` (the same mask; ready for ``json.dump``).
    """
    if isinstance(segmentation, dict):
        _counts_of(segmentation)  # checks the keys
        counts = segmentation["counts"]
        if isinstance(counts, (bytes, bytearray)):
            counts = bytes(counts).decode("ascii")
        elif not isinstance(counts, str):
            counts = compress_counts([int(c) for c in counts])
        return {"size": [int(v) for v in segmentation["size"]], "counts": counts}
    mask = as_bool_masks(segmentation, "segmentation")
    if mask.ndim != 2:
        raise ValueError(f"segmentation must be an RLE dict or a mask of shape (H, W), got shape {mask.shape}")
    return masks_to_coco_rle(mask)[0]


def _counts_of(rle: dict[str, Any]) -> list[int]:
    try:
        counts, size = rle["counts"], rle["size"]
    except (KeyError, TypeError):
        raise ValueError(f"RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}"
                         f" {list(rle) if isinstance(rle, dict) else ''}") from None
    if len(size) != 2:
        raise ValueError(f"RLE size must be [H, W], got {size!r}")
    if isinstance(counts, (str, bytes, bytearray)):
        return decompress_counts(counts)
    return [int(c) for c in counts]


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode one COCO RLE (uncompressed list counts or compressed str/bytes counts).

    Returns:
        bool (H, W), C-contiguous.

    Raises:
        ValueError: if counts are negative or do not add up to ``H * W``.
    """
    counts = _counts_of(rle)
    h, w = (int(v) for v in rle["size"])
    runs = np.asarray(counts, dtype=np.int64)
    if runs.size and runs.min() < 0:
        raise ValueError(f"RLE counts must be >= 0, got {int(runs.min())}")
    if int(runs.sum()) != h * w:
        raise ValueError(f"RLE counts must add up to H * W = {h * w} for size {[h, w]}, "
                         f"got {int(runs.sum())}")
    flat = np.repeat(np.arange(runs.size) % 2 == 1, runs)
    return np.ascontiguousarray(flat.reshape(w, h).T)


def rle_area(rle: dict[str, Any]) -> int:
    """Number of set pixels of a COCO RLE (either counts form)."""
    return int(sum(_counts_of(rle)[1::2]))


def rle_to_bbox(rle: dict[str, Any]) -> list[float]:
    """Bounding box of a COCO RLE as XYWH floats, like ``pycocotools.mask.toBbox``.

    ``[min_col, min_row, max_col - min_col + 1, max_row - min_row + 1]``; zeros when empty.
    """
    counts = np.asarray(_counts_of(rle), dtype=np.int64)
    h = int(rle["size"][0])
    ends = np.cumsum(counts)
    starts = ends - counts
    ones = (np.arange(counts.size) % 2 == 1) & (counts > 0)
    if not ones.any():
        return [0.0, 0.0, 0.0, 0.0]
    first, last = starts[ones], ends[ones] - 1  # column-major pixel indices of each run of ones
    x0, x1 = int(first.min() // h), int(last.max() // h)
    spans_columns = (first // h) != (last // h)
    if spans_columns.any():  # a run crossing a column border touches row H - 1 and row 0
        y0, y1 = 0, h - 1
    else:
        y0, y1 = int((first % h).min()), int((last % h).max())
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


def masks_to_boxes(masks: Any) -> np.ndarray:
    """Tight boxes around masks, XYXY in pixel-edge coordinates.

    Args:
        masks: bool (..., H, W), e.g. (N, H, W) or (N, K, H, W).

    Returns:
        float32 (..., 4) ``[min_col, min_row, max_col + 1, max_row + 1]``; zeros for empty masks.

    Example:
        >>> masks_to_boxes(np.eye(3, dtype=bool)[None]).tolist()
        [[0.0, 0.0, 3.0, 3.0]]
    """
    arr = as_bool_masks(masks)
    if arr.ndim < 2:
        raise ValueError(f"masks must have shape (..., H, W), got {tuple(arr.shape)}")
    h, w = arr.shape[-2:]
    cols, rows = arr.any(axis=-2), arr.any(axis=-1)  # (..., W), (..., H)
    present = cols.any(axis=-1)
    x0 = np.argmax(cols, axis=-1)
    x1 = w - np.argmax(cols[..., ::-1], axis=-1)
    y0 = np.argmax(rows, axis=-1)
    y1 = h - np.argmax(rows[..., ::-1], axis=-1)
    boxes = np.stack([x0, y0, x1, y1], axis=-1).astype(np.float32)
    boxes[~present] = 0.0
    return boxes
