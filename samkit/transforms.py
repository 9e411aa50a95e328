"""Image conversion, resizing, normalisation and coordinate mapping.

This module is the only place where coordinates move between *original image* pixels
(what users and results use: XY order, boxes XYXY) and *model input* pixels (the image
resized so its longest side equals the model's ``image_size``, then padded bottom/right).

Image conversion rules (:func:`to_rgb_uint8`), applied to arrays, tensors, PIL images and files:

==========================  ====================================================================
input                       conversion
==========================  ====================================================================
(H, W, 3) uint8             used as is (RGB)
(H, W) or (H, W, 1)         grayscale, replicated to three channels
(H, W, 4)                   RGBA: the alpha channel is dropped (not composited)
uint16                      ``round(value / 257)`` -> uint8 (full 16-bit range to 8-bit)
float16/32/64               must lie in [0, 1]; ``round(value * 255)``
other integer dtypes        must lie in [0, 255]
bool, complex, NaN/inf      rejected with ``TypeError`` / ``ValueError``
bfloat16/float16 tensors    converted to float32 first, then the float rule
PIL image                   palette/CMYK/LA/... converted by PIL to RGB; 16-bit and float modes
                            follow the array rules above
path                        opened with PIL, EXIF orientation applied, then the PIL rules
==========================  ====================================================================
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .arrays import is_tensor, to_numpy

__all__ = [
    "to_rgb_uint8", "load_image", "preprocess_shape", "resize_longest_side", "normalize_and_pad",
    "CoordinateMap", "upscale_masks", "upscale_masks_binary",
]


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into an (H, W, 3) uint8 RGB array (see the module rules)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image file {path!r}: {exc}") from None
    except ImportError as exc:
        # Once ultralytics is imported it wraps PIL.Image.open and, on a file Pillow cannot
        # identify, tries to import (or pip-install) a HEIF plugin; without it the error is an
        # ImportError that says nothing about the file.
        raise ValueError(f"cannot read image file {path!r}: Pillow cannot identify it "
                         f"(and an image-format plugin failed to load: {exc})") from None
    return _pil_to_rgb_uint8(img)


def _pil_to_rgb_uint8(img: Any) -> np.ndarray:
    mode = img.mode
    if mode in ("RGB", "L", "RGBA") or mode.startswith("I;16") or mode in ("I", "F"):
        return _array_to_rgb_uint8(np.array(img))
    return _array_to_rgb_uint8(np.array(img.convert("RGB")))


def _array_to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        hint = " (channels-first? use (H, W, C))" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}{hint}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image must be at least 1x1 pixels, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"image dtype must be uint8, uint16, another integer or float type, got {arr.dtype}")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError("float image contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float images must lie in [0, 1], got values in [{lo:g}, {hi:g}]")
        out = np.round(arr.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{arr.dtype} images must lie in [0, 255] (or use uint16), got values in [{lo}, {hi}]")
        out = arr.astype(np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Convert an array, tensor, PIL image or path to an (H, W, 3) uint8 RGB array.

    See the module docstring for the conversion table.

    Example:
        >>> to_rgb_uint8(np.zeros((4, 5), np.uint16)).shape
        (4, 5, 3)
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, np.ndarray):
        return _array_to_rgb_uint8(image)
    if is_tensor(image):
        return _array_to_rgb_uint8(to_numpy(image))
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image, duck-typed
        return _pil_to_rgb_uint8(image)
    raise TypeError(
        "image must be a numpy array (H, W, 3), a torch tensor, a PIL image or a file path, "
        f"got {type(image).__name__}"
    )


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Size (h, w) after scaling (height, width) so that the longer side equals ``long_side``.

    Each side is rounded to the nearest pixel and kept at least 1 pixel, so very elongated
    images (e.g. 20000 x 20) still have a non-empty short side.

    Example:
        >>> preprocess_shape(1, 3000, 1024)
        (1, 1024)
    """
    scale = long_side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image so its longest side is ``long_side`` (PIL bilinear)."""
    from PIL import Image

    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    if (h, w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def normalize_and_pad(image: np.ndarray, *, image_size: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                      device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h, w, 3) uint8 resized image -> (1, 3, image_size, image_size) normalised, zero-padded tensor."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).to(device).permute(2, 0, 1)
    x = (x - pixel_mean.to(x.device)) / pixel_std.to(x.device)
    h, w = x.shape[1:]
    x = F.pad(x, (0, image_size - w, 0, image_size - h))
    return x.unsqueeze(0).to(dtype)


@dataclass(frozen=True)
class CoordinateMap:
    """Maps XY coordinates between an original image and the resized model input.

    Attributes:
        original_size: (H, W) of the original image.
        input_size: (h, w) of the resized image before padding.
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @classmethod
    def for_image(cls, original_size: tuple[int, int], image_size: int) -> "CoordinateMap":
        return cls(tuple(original_size), preprocess_shape(original_size[0], original_size[1], image_size))

    @property
    def scale_xy(self) -> np.ndarray:
        return np.array([self.input_size[1] / self.original_size[1], self.input_size[0] / self.original_size[0]])

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) XY original pixels -> model input pixels (float32)."""
        pts = np.asarray(points, dtype=np.float64)
        return (pts * self.scale_xy).astype(np.float32)

    def boxes_to_model(self, boxes: np.ndarray) -> np.ndarray:
        """(..., 4) XYXY original pixels -> model input pixels (float32)."""
        b = np.asarray(boxes, dtype=np.float64)
        return self.points_to_model(b.reshape(*b.shape[:-1], 2, 2)).reshape(b.shape)


def _low_res_crop(side: int, image_size: int, input_size: tuple[int, int]) -> tuple[int, int, int]:
    """Upsampling factor and the low-res rows/cols that cover ``input_size`` (one extra for the
    bilinear neighbour at the crop edge)."""
    factor = image_size // side
    return factor, min(side, -(-input_size[0] // factor) + 1), min(side, -(-input_size[1] // factor) + 1)


def upscale_masks(low_res: torch.Tensor, *, input_size: tuple[int, int], original_size: tuple[int, int],
                  image_size: int) -> torch.Tensor:
    """Low-res logits (B, K, s, s) -> logits (B, K, H, W) at the original image size.

    Equivalent to upsampling to the padded ``image_size`` square, cropping the padding and
    resizing to ``original_size`` (bilinear, align_corners=False), but the padding is cropped
    at low resolution first (exactly: every kept output pixel reads the same inputs).
    """
    factor, rows, cols = _low_res_crop(low_res.shape[-1], image_size, input_size)
    x = low_res[..., :rows, :cols]
    x = F.interpolate(x, size=(rows * factor, cols * factor), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    if tuple(input_size) != tuple(original_size):
        x = F.interpolate(x, size=tuple(original_size), mode="bilinear", align_corners=False)
    return x


def upscale_masks_binary(low_res: torch.Tensor, *, input_size: tuple[int, int], original_size: tuple[int, int],
                         image_size: int, threshold: float = 0.0, chunk: int = 4) -> torch.Tensor:
    """Like :func:`upscale_masks` followed by ``> threshold``, a few masks at a time.

    Returns bool (B, K, H, W). Only ``chunk`` full-size float masks exist at once (at least 32
    on a GPU), so memory stays at the size of the boolean output instead of 4x it. When the
    image needs no second resize (its longer side is ``image_size``),
    :func:`_binary_upsample_integer` decides every output block whose low-res neighbourhood has
    one sign without interpolating it.
    """
    b, k = low_res.shape[:2]
    flat = low_res.reshape(b * k, 1, *low_res.shape[-2:])
    if tuple(input_size) == tuple(original_size) and image_size % low_res.shape[-1] == 0:
        factor, rows, cols = _low_res_crop(low_res.shape[-1], image_size, input_size)
        fast = _binary_upsample_integer(flat[:, 0, :rows, :cols], factor, threshold)
        if fast is not None:
            out = fast[:, : input_size[0], : input_size[1]]
            return out.contiguous().view(b, k, *original_size)
    out = torch.empty((b * k, *original_size), dtype=torch.bool, device=low_res.device)
    if low_res.device.type != "cpu":
        chunk = max(chunk, 32)  # on a GPU each chunk costs launches, and memory is plentiful
    for start in range(0, b * k, chunk):
        logits = upscale_masks(flat[start:start + chunk], input_size=input_size, original_size=original_size,
                               image_size=image_size)
        torch.gt(logits[:, 0], threshold, out=out[start:start + chunk])
    return out.view(b, k, *original_size)


# Above this fraction of low-res pixels with a mixed-sign neighbourhood, plain interpolation is faster.
_MIXED_FRACTION_LIMIT = 0.25


def _block_weights(factor: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(9, factor*factor) bilinear weights (align_corners=False) of a low-res pixel's 3x3
    neighbourhood on its factor x factor output block, taken from F.interpolate itself."""
    basis = torch.eye(9, dtype=dtype, device=device).view(9, 1, 3, 3)
    up = F.interpolate(basis, scale_factor=factor, mode="bilinear", align_corners=False)
    return up[:, 0, factor:2 * factor, factor:2 * factor].reshape(9, factor * factor)


def _all_3x3(mask: torch.Tensor) -> torch.Tensor:
    """(N, h, w) bool: True where the 3x3 neighbourhood (borders replicated) is all True."""
    rows = mask.clone()
    rows[:, 1:] &= mask[:, :-1]
    rows[:, :-1] &= mask[:, 1:]
    out = rows.clone()
    out[:, :, 1:] &= rows[:, :, :-1]
    out[:, :, :-1] &= rows[:, :, 1:]
    return out


def _binary_upsample_integer(x: torch.Tensor, factor: int, threshold: float) -> torch.Tensor | None:
    """``F.interpolate(x, scale_factor=factor, bilinear, align_corners=False) > threshold`` for (N, h, w).

    Each output pixel of the factor x factor block of low-res pixel (i, j) is a convex
    combination of the 3x3 neighbourhood of (i, j) (borders replicated, as the interpolation
    clamps), so where that neighbourhood is entirely above (or entirely at/below) the threshold
    the whole block is True (False) without interpolating. Only mixed blocks are computed, from
    the same weights. Returns None when too many blocks are mixed for this to pay off (e.g. the
    noisy logits of random weights).
    """
    n, h, w = x.shape
    probe = x[:: max(1, n // 8)]  # a cheap look at a few maps first: noisy logits bail out early
    probe_above = probe > threshold
    probe_mixed = ~(_all_3x3(probe_above) | _all_3x3(~probe_above))
    if int(probe_mixed.sum()) > _MIXED_FRACTION_LIMIT * probe.numel():
        return None
    above = x > threshold
    all_above = _all_3x3(above)
    mixed = ~(all_above | _all_3x3(~above))
    where = mixed.nonzero(as_tuple=True)
    count = where[0].numel()
    if count > _MIXED_FRACTION_LIMIT * x.numel():
        return None
    out = torch.empty((n, h, factor, w * factor), dtype=torch.bool, device=x.device)
    # With factor 4 a block row is 4 bytes: write it as one int32 (0 or 0x01010101).
    packed = factor == 4 and x.device.type == "cpu"
    if packed:
        words = out.view(torch.uint8).view(torch.int32)  # (N, h, 4, w)
        words.copy_((all_above.to(torch.int32) * 0x01010101)[:, :, None, :].expand(n, h, 4, w))
    else:
        out.view(n, h, factor, w, factor).copy_(all_above[:, :, None, :, None].expand(n, h, factor, w, factor))
    if count:
        padded = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        stride = (h + 2) * (w + 2)
        base = where[0] * stride + where[1] * (w + 2) + where[2]
        offsets = torch.tensor([r * (w + 2) + c for r in range(3) for c in range(3)], device=x.device)
        neighbourhoods = padded.reshape(-1)[base[:, None] + offsets]  # (M, 9)
        values = (neighbourhoods @ _block_weights(factor, x.dtype, x.device)) > threshold  # (M, f*f)
        if packed:
            words[where[0], where[1], :, where[2]] = values.to(torch.uint8).view(torch.int32)  # (M, 4)
        else:
            out.view(n, h, factor, w, factor)[where[0], where[1], :, where[2], :] = values.view(-1, factor, factor)
    return out.view(n, h * factor, w * factor)
