"""Label Studio brush masks and region coordinates.

Label Studio stores a brush region as a run-length code over the region's RGBA image, flattened
row by row (``H * W * 4`` byte values, a mask pixel is 255 in every channel, the alpha channel is
what counts). The code is a bit stream, most significant bit first, packed into bytes:

* header: 32 bits value count, 5 bits ``word size - 1`` (8-bit values here), then four 4-bit
  fields ``run-length width - 1`` (the four widths a chunk's length field can have);
* chunks until the count is reached: 1 bit kind (1: one value repeated, 0: literal values),
  2 bits choosing one of the four widths, that many bits ``length - 1``, then one value (a
  repeat) or ``length`` values (literals), each ``word size`` bits.

The encoder writes repeats only (every pixel is four equal bytes, so runs are long); the decoder
reads both kinds, as Label Studio's editor writes them. ``label_studio_converter.brush.decode_rle``
reads our output (tested). Region coordinates in Label Studio are percent of the image's
``original_width`` / ``original_height``; :func:`keypoint_to_pixels` and
:func:`rectangle_to_pixels` turn them into XY pixels and XYXY pixel boxes.

    >>> mask = np.zeros((2, 3), bool); mask[1, 1:] = True
    >>> rle = mask_to_brush_rle(mask)
    >>> bool((brush_rle_to_mask(rle, 2, 3) == mask).all())
    True
"""
from __future__ import annotations

import math
import uuid
from typing import Any, Mapping

import numpy as np

from samkit.formats.rle import as_bool_masks

__all__ = ["BRUSH_RUN_WIDTHS", "brush_result", "brush_rle_to_mask", "decode_brush_values", "encode_brush_values",
           "keypoint_to_pixels", "mask_to_brush_rle", "rectangle_to_pixels"]

#: The four bit widths of a chunk's length field that :func:`encode_brush_values` declares.
BRUSH_RUN_WIDTHS = (3, 4, 8, 16)
_WORD_BITS = 8
_HEADER_BITS = 32 + 5 + 4 * 4


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The bits (uint8 0/1, most significant first) of each value in its width, concatenated."""
    values = values.astype(np.uint64)
    widest = int(widths.max()) if widths.size else 0
    shifts = np.arange(widest - 1, -1, -1, dtype=np.uint64)  # column k holds bit (widest - 1 - k)
    table = ((values[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8)
    keep = np.arange(widest)[None, :] >= (widest - widths)[:, None]  # the low `width` bits of each row
    return table[keep]


def encode_brush_values(values: Any) -> list[int]:
    """Run-length code (Label Studio's brush format) of a flat sequence of uint8 values.

    Args:
        values: 1-D array of integers in [0, 255] (for a mask: the flattened RGBA image).

    Returns:
        The code as a list of byte values (ints in [0, 255]), as Label Studio's JSON holds it.
    """
    flat = np.asarray(values)
    if flat.ndim != 1:
        raise ValueError(f"values must be a 1-D array, got shape {flat.shape}")
    if flat.size and (not np.issubdtype(flat.dtype, np.integer) or flat.min() < 0 or flat.max() > 255):
        raise ValueError("values must be integers in [0, 255] (8-bit words)")
    if flat.size >= 2 ** 32:
        raise ValueError(f"the brush format counts values in 32 bits; got {flat.size} values")
    flat = flat.astype(np.uint8)
    # Runs of equal values, each split into pieces no longer than the widest length field allows.
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]]) if flat.size else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, flat.size])
    longest = 2 ** BRUSH_RUN_WIDTHS[-1]
    pieces = -(-lengths // longest)
    run_values = np.repeat(flat[starts], pieces)
    piece_lengths = np.full(int(pieces.sum()), longest, dtype=np.int64)
    last = np.cumsum(pieces) - 1
    piece_lengths[last] = lengths - (pieces - 1) * longest
    # Each piece: kind bit 1, the index of the narrowest width that fits, length - 1, the value.
    limits = 2 ** np.asarray(BRUSH_RUN_WIDTHS)
    width_index = np.searchsorted(limits, piece_lengths, side="left")
    length_bits = np.asarray(BRUSH_RUN_WIDTHS)[width_index]
    code = (((np.int64(1) << (2 + length_bits)) | (width_index << length_bits) | (piece_lengths - 1))
            << _WORD_BITS) | run_values.astype(np.int64)
    header = np.array([flat.size, _WORD_BITS - 1, *[w - 1 for w in BRUSH_RUN_WIDTHS]], dtype=np.int64)
    header_widths = np.array([32, 5, 4, 4, 4, 4])
    stream = np.concatenate([_bits(header, header_widths), _bits(code, 3 + length_bits + _WORD_BITS)])
    return np.packbits(stream).tolist()  # zero bits pad the last byte


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.position = 0

    def read(self, width: int) -> int:
        end = self.position + width
        if end > self.bits.size:
            raise ValueError(f"brush RLE ends early: needs bit {end}, has {self.bits.size} bits")
        value = 0
        for bit in self.bits[self.position:end].tolist():
            value = (value << 1) | bit
        self.position = end
        return value

    def read_words(self, count: int, width: int) -> np.ndarray:
        end = self.position + count * width
        if end > self.bits.size:
            raise ValueError(f"brush RLE ends early: needs bit {end}, has {self.bits.size} bits")
        block = self.bits[self.position:end].reshape(count, width).astype(np.uint64)
        self.position = end
        return (block << np.arange(width - 1, -1, -1, dtype=np.uint64)).sum(axis=1)


def _as_bytes(rle: Any) -> bytes:
    if isinstance(rle, (bytes, bytearray)):
        return bytes(rle)
    if isinstance(rle, np.ndarray):
        rle = rle.tolist()
    if not isinstance(rle, (list, tuple)):
        raise TypeError(f"brush RLE must be a list of byte values (ints in [0, 255]), got {type(rle).__name__}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rle):
        raise ValueError("brush RLE must be a list of byte values (ints in [0, 255]), got other items")
    return bytes(rle)


def decode_brush_values(rle: Any, *, max_values: int | None = None) -> np.ndarray:
    """The flat values a Label Studio brush code stands for (both chunk kinds, any word size <= 8).

    Args:
        rle: the code: a list of byte values (Label Studio's ``value.rle``) or bytes.
        max_values: refuse codes announcing more values than this (guards memory).

    Returns:
        uint8 (N,) array.

    Raises:
        ValueError: a truncated or inconsistent code, or one announcing too many values.
    """
    reader = _BitReader(_as_bytes(rle))
    total = reader.read(32)
    word = reader.read(5) + 1
    if word > 8:
        raise ValueError(f"brush RLE with {word}-bit words cannot hold uint8 images (expected <= 8)")
    if max_values is not None and total > max_values:
        raise ValueError(f"brush RLE announces {total} values, more than the {max_values} expected")
    widths = [reader.read(4) + 1 for _ in range(4)]
    out = np.zeros(total, dtype=np.uint8)
    i = 0
    while i < total:
        repeat = reader.read(1)
        j = i + 1 + reader.read(widths[reader.read(2)])
        if j > total:
            raise ValueError(f"brush RLE chunk runs past the announced {total} values (to {j})")
        if repeat:
            out[i:j] = reader.read(word)
        else:
            out[i:j] = reader.read_words(j - i, word)
        i = j
    return out


def mask_to_brush_rle(mask: Any) -> list[int]:
    """A (H, W) bool or 0/1 mask as Label Studio brush RLE (RGBA, 255 where the mask is set)."""
    array = as_bool_masks(mask, "mask")
    if array.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {array.shape}")
    return encode_brush_values(np.repeat(array.ravel().astype(np.uint8) * 255, 4))


def brush_rle_to_mask(rle: Any, height: int, width: int, *, threshold: int = 128) -> np.ndarray:
    """A Label Studio brush RLE as a bool (H, W) mask: alpha >= ``threshold``.

    Raises:
        ValueError: the code does not hold ``height * width * 4`` values (both counts named).
    """
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    values = decode_brush_values(rle, max_values=height * width * 4)
    if values.size != height * width * 4:
        raise ValueError(f"brush RLE holds {values.size} values; an RGBA image of {height} x {width} needs "
                         f"{height * width * 4}")
    return values.reshape(height, width, 4)[:, :, 3] >= threshold


def brush_result(mask: Any, *, from_name: str, to_name: str, label: str | None = None,
                 score: float | None = None, region_id: str | None = None) -> dict[str, Any]:
    """A Label Studio ``brushlabels`` result (one region) for a (H, W) mask.

    Args:
        mask: bool or 0/1 (H, W) array; ``original_height`` / ``original_width`` are its shape.
        from_name: the ``<BrushLabels name=...>`` of the label config.
        to_name: the ``<Image name=...>`` it labels.
        label: the label value (``<Label value=...>``); None leaves ``brushlabels`` empty.
        score: the model's confidence, when the region is a prediction.
        region_id: the region's id (default a random ``samkit-...`` id).
    """
    array = as_bool_masks(mask, "mask")
    if array.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {array.shape}")
    result: dict[str, Any] = {
        "id": region_id or f"samkit-{uuid.uuid4().hex[:10]}",
        "type": "brushlabels", "from_name": str(from_name), "to_name": str(to_name),
        "original_width": int(array.shape[1]), "original_height": int(array.shape[0]), "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_brush_rle(array), "brushlabels": [] if label is None else [label]},
        "readonly": False,
    }
    if score is not None:
        result["score"] = float(score)
    return result


def _percent(value: Mapping[str, Any], key: str, *, positive: bool = False) -> float:
    if key not in value:
        raise ValueError(f"region value needs {key!r} (percent of the image), got keys {sorted(value)}")
    number = value[key]
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ValueError(f"region {key!r} must be a finite number (percent), got {number!r}")
    if not 0.0 <= number <= 100.0 or (positive and number <= 0.0):
        bound = "(0, 100]" if positive else "[0, 100]"
        raise ValueError(f"region {key!r} must be a percent in {bound}, got {number!r}")
    return float(number)


def _size(width: Any, height: Any) -> tuple[int, int]:
    for name, v in (("original_width", width), ("original_height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 1 or v != int(v):
            raise ValueError(f"{name} must be a whole number of pixels >= 1, got {v!r}")
    return int(width), int(height)


def keypoint_to_pixels(value: Mapping[str, Any], width: int, height: int) -> tuple[float, float]:
    """A keypoint region's ``x`` / ``y`` (percent) as XY pixels of a ``width`` x ``height`` image."""
    width, height = _size(width, height)
    if not isinstance(value, Mapping):
        raise TypeError(f"region value must be an object, got {type(value).__name__}")
    return _percent(value, "x") * width / 100.0, _percent(value, "y") * height / 100.0


def rectangle_to_pixels(value: Mapping[str, Any], width: int, height: int) -> tuple[float, float, float, float]:
    """A rectangle region (``x``, ``y``, ``width``, ``height`` in percent, optional ``rotation``
    in degrees clockwise about the top-left corner) as an XYXY pixel box; a rotated rectangle
    gives the box around it, clipped to the image."""
    width, height = _size(width, height)
    if not isinstance(value, Mapping):
        raise TypeError(f"region value must be an object, got {type(value).__name__}")
    x, y = _percent(value, "x"), _percent(value, "y")
    w, h = _percent(value, "width", positive=True), _percent(value, "height", positive=True)
    tolerance = 1e-6
    if x + w > 100.0 + tolerance or y + h > 100.0 + tolerance:
        raise ValueError(f"rectangle must lie inside the image: x + width = {x + w:g}, y + height = {y + h:g} "
                         "(percent, expected <= 100)")
    rotation = value.get("rotation", 0) or 0
    if isinstance(rotation, bool) or not isinstance(rotation, (int, float)) or not math.isfinite(rotation):
        raise ValueError(f"rectangle 'rotation' must be a finite number of degrees, got {rotation!r}")
    x0, y0, bw, bh = x * width / 100.0, y * height / 100.0, w * width / 100.0, h * height / 100.0
    if rotation % 360 == 0:
        return x0, y0, min(x0 + bw, float(width)), min(y0 + bh, float(height))
    angle = math.radians(rotation)
    corners = np.array([[0.0, 0.0], [bw, 0.0], [bw, bh], [0.0, bh]])
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = corners @ turn.T + [x0, y0]
    lo = np.clip(points.min(axis=0), 0.0, [width, height])
    hi = np.clip(points.max(axis=0), 0.0, [width, height])
    if hi[0] <= lo[0] or hi[1] <= lo[1]:
        raise ValueError("rotated rectangle lies outside the image")
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

