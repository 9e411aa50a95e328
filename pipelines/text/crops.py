"""Batched crops around masks for CLIP: one tensor (M, 3, S, S) for all masks of an image.

Each crop is the mask's box grown by ``padding`` (a fraction of the box side on each side),
made square by default (CLIP's preprocessing would centre-crop a non-square one), sampled at
S x S with area averaging (``torchvision.ops.roi_align``: no aliasing when a large box shrinks).
Parts of the crop outside the image are CLIP's mean grey. Pixels outside the mask become:

* ``"blur"``: the crop blurred (Gaussian, sigma = S / 16), so context stays but the object
  stands out (default);
* ``"grey"``: CLIP's mean grey (zero after normalisation);
* ``"none"``: left as they are (the whole box, context included).

There is no Python loop over masks: boxes, crops, mask sampling and compositing are batched.

Example:
    >>> image = np.zeros((40, 60, 3), np.uint8); masks = np.zeros((2, 40, 60), bool)
    >>> masks[0, 5:15, 5:25] = True; masks[1, 20:38, 30:50] = True
    >>> mask_crop_batch(image, masks, size=16).shape
    torch.Size([2, 3, 16, 16])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from samkit.formats.rle import as_bool_masks, masks_to_boxes
from samkit.transforms import to_rgb_uint8

__all__ = ["BACKGROUNDS", "crop_boxes", "mask_crop_batch"]

BACKGROUNDS = ("blur", "grey", "none")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


def crop_boxes(masks: np.ndarray, *, padding: float = 0.1, square: bool = True) -> np.ndarray:
    """float32 (M, 4) XYXY crop boxes: each mask's tight box grown by ``padding`` of its side
    on each side, made square (around the same centre) when ``square``; at least 1 pixel wide."""
    boxes = masks_to_boxes(masks).astype(np.float32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
    if square:
        sides = np.repeat(sides.max(axis=1, keepdims=True), 2, axis=1)
    half = sides * (0.5 + padding)
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1)  # (C, k)
    channels = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:  # tiny crops: reflect padding cannot exceed the size; fall back to replicate
        x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    else:
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel[:, None, None, :], groups=channels)
    return F.conv2d(x, kernel[:, None, :, None], groups=channels)


def _sample_masks(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-pixel samples of each mask at the S x S bin centres of its box: bool (M, S, S)."""
    m, h, w = masks.shape
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # (S,)
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (M, S)
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    xi, yi = torch.floor(xs).long(), torch.floor(ys).long()
    inside = ((yi >= 0) & (yi < h))[:, :, None] & ((xi >= 0) & (xi < w))[:, None, :]
    rows = torch.arange(m)[:, None, None]
    sampled = masks[rows, yi.clamp(0, h - 1)[:, :, None], xi.clamp(0, w - 1)[:, None, :]]
    return sampled & inside


def mask_crop_batch(image: Any, masks: Any, *, size: int = 224, padding: float = 0.1, background: str = "blur",
                    square: bool = True, fill: Sequence[float] = CLIP_MEAN, boxes: np.ndarray | None = None
                    ) -> torch.Tensor:
    """Crops around masks, ready for :meth:`samkit.adapters.clip.ClipModel.encode_pixels`.

    Args:
        image: (H, W, 3) uint8 RGB (anything :func:`samkit.transforms.to_rgb_uint8` accepts).
        masks: bool (M, H, W) at the image's size.
        size: S, the side of each crop in pixels (CLIP's input size).
        padding: context around the mask's box, as a fraction of the box side per side.
        background: ``"blur"``, ``"grey"`` or ``"none"`` (module docstring).
        square: square crops (True) or the padded box stretched to S x S.
        fill: RGB in [0, 1] for the grey background and for areas outside the image.
        boxes: (M, 4) XYXY crop boxes instead of those :func:`crop_boxes` computes.

    Returns:
        float32 (M, 3, S, S) RGB in [0, 1].
    """
    try:
        from torchvision.ops import roi_align
    except ImportError:
        raise ImportError("mask crops need torchvision (installed with open_clip): pip install samkit[clip]") from None
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if size < 1 or padding < 0:
        raise ValueError(f"size must be >= 1 and padding >= 0, got {size}, {padding}")
    rgb = to_rgb_uint8(image)
    bool_masks = as_bool_masks(masks, "masks")
    if bool_masks.ndim != 3 or bool_masks.shape[1:] != rgb.shape[:2]:
        raise ValueError(f"masks must have shape (M, H, W) = (M, {rgb.shape[0]}, {rgb.shape[1]}), "
                         f"got {tuple(bool_masks.shape)}")
    if boxes is None:
        boxes = crop_boxes(bool_masks, padding=padding, square=square)
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    if len(boxes_t) != len(bool_masks):
        raise ValueError(f"boxes must have shape ({len(bool_masks)}, 4), got {tuple(boxes_t.shape)}")
    if not len(boxes_t):
        return torch.zeros((0, 3, size, size), dtype=torch.float32)
    fill_t = torch.tensor(fill, dtype=torch.float32).view(1, 3, 1, 1)
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0 - fill_t  # outside the image -> fill
    rois = torch.cat([torch.zeros(len(boxes_t), 1), boxes_t], dim=1)
    crops = roi_align(pixels, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1,
                      aligned=True) + fill_t
    if background == "none":
        return crops.clamp_(0.0, 1.0)
    inside = _sample_masks(torch.from_numpy(bool_masks), boxes_t, size)[:, None].float()  # (M, 1, S, S)
    if background == "grey":
        behind = fill_t.expand_as(crops)
    else:
        behind = _gaussian_blur(crops, sigma=max(size / 16.0, 0.5))
    return (inside * crops + (1.0 - inside) * behind).clamp_(0.0, 1.0)
