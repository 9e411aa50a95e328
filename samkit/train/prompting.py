"""Simulated interactive prompting (SAM paper, appendix A, "Training algorithm").

For each ground-truth mask the first prompt is, with equal probability, a foreground point
sampled uniformly inside the mask or the mask's box with noise (std 10% of the box side per
coordinate, at most 20 pixels). Each later iteration adds one point sampled uniformly from the
error region between the previous prediction and the ground truth: foreground where the model
missed the object (false negative), background where it spilled over (false positive). The
previous iteration's unthresholded low-resolution logits are always given as the mask prompt.
The paper runs 11 iterations: the first prompt, 8 sampled points, and 2 iterations that add no
point (one at a random place among the point iterations, one at the end), so the model learns
to refine its own mask.

Everything works on masks in *model input* pixels, (M, S, S) bool tensors, and returns XY
coordinates of pixel indices (a point ``(x, y)`` means pixel ``mask[y, x]``), the convention
of :class:`samkit.modeling.PromptEncoder`. Boxes are XYXY in pixel-edge coordinates (see
:mod:`samkit.train.geometry`).

Example:
    >>> masks = torch.zeros(1, 8, 8, dtype=torch.bool); masks[0, 2:5, 3:7] = True
    >>> pts = sample_points_in_masks(masks, torch.Generator().manual_seed(0))
    >>> bool(masks[0, int(pts[0, 1]), int(pts[0, 0])])
    True
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PromptSimulation", "sample_points_in_masks", "noisy_boxes", "sample_error_points", "masks_to_boxes",
           "point_schedule"]


def _uniform_pixel(regions: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random True pixel per (M, H, W) region: (M, 2) XY and (M,) found flags.

    Draws one number per region: its rank among the region's True pixels (in raster order),
    then finds that pixel through per-row counts (one pass over the masks, (M, H) and (M, W)
    temporaries; no (M, H*W) noise, which at 1024 px and 64 masks would be 256 MB per draw).
    """
    m, h, w = regions.shape
    # Row counts summed as int16 (exact below 32768 columns): 4x faster than a bool sum on the CPU.
    small = torch.int16 if w < 2 ** 15 else torch.int32
    row_counts = regions.view(torch.uint8).sum(dim=2, dtype=small)
    cum_rows = row_counts.cumsum(dim=1, dtype=torch.int64)  # (M, H): True pixels up to and including each row
    counts = cum_rows[:, -1]
    found = counts > 0
    u = torch.rand(m, generator=generator, dtype=torch.float64, device="cpu").to(regions.device)
    rank = torch.minimum((u * counts).long(), (counts - 1).clamp(min=0))  # 0-based, uniform over the True pixels
    row = torch.searchsorted(cum_rows, (rank + 1)[:, None], side="left")[:, 0].clamp(max=h - 1)
    before = torch.where(row > 0, cum_rows.gather(1, (row - 1).clamp(min=0)[:, None])[:, 0], 0)
    cum_cols = regions[torch.arange(m, device=regions.device), row].cumsum(dim=1)  # (M, W)
    col = torch.searchsorted(cum_cols, (rank - before + 1)[:, None], side="left")[:, 0].clamp(max=w - 1)
    xy = torch.stack([col, row], dim=1).float()
    return xy, found


def sample_points_in_masks(masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One point per mask, uniform over its pixels.

    Args:
        masks: (M, H, W) bool, none of them empty.
        generator: torch RNG (CPU) for reproducibility.

    Returns:
        (M, 2) float32 XY pixel indices, on ``masks.device``.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (M, H, W), got {tuple(masks.shape)}")
    xy, found = _uniform_pixel(masks.bool(), generator)
    if not bool(found.all()):
        raise ValueError(f"masks must not be empty, got empty masks at rows {(~found).nonzero().flatten().tolist()}")
    return xy


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of (M, H, W) bool masks in pixel-edge coordinates, float32 (M, 4); zeros if empty."""
    m, h, w = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, w).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(masks.flatten(1).any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def noisy_boxes(masks: torch.Tensor, generator: torch.Generator | None = None, *, noise_fraction: float = 0.1,
                max_noise: float = 20.0, bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """Ground-truth boxes with Gaussian noise on each coordinate.

    Args:
        masks: (M, H, W) bool.
        generator: torch RNG (CPU).
        noise_fraction: noise std as a fraction of the box side (width for x, height for y).
        max_noise: the noise on each coordinate is clipped to +-``max_noise`` pixels.
        bounds: (width, height) the boxes are clipped to, one pair for all or (M, 2) per box
            (e.g. the resized image inside its padding); default the mask's (W, H).

    Returns:
        (M, 4) float32 XYXY boxes, ``x0 <= x1`` and ``y0 <= y1``.
    """
    boxes = masks_to_boxes(masks)
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).repeat(1, 2)
    noise = torch.randn(boxes.shape, generator=generator, device="cpu").to(boxes.device)
    noise = (noise * noise_fraction * side).clamp(-max_noise, max_noise)
    out = boxes + noise
    if bounds is None:
        bounds = (masks.shape[2], masks.shape[1])
    limit = torch.as_tensor(bounds, dtype=out.dtype, device=out.device).reshape(-1, 2).repeat(1, 2)
    out = torch.minimum(out.clamp(min=0), limit)
    lo = torch.minimum(out[:, :2], out[:, 2:])
    hi = torch.maximum(out[:, :2], out[:, 2:])
    return torch.cat([lo, hi], dim=1)


def sample_error_points(predicted: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None,
                        *, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per mask, uniform over the error region.

    Args:
        predicted: (M, H, W) bool previous prediction.
        targets: (M, H, W) bool ground truth.
        generator: torch RNG (CPU).
        valid: optional (M, H, W) or (H, W) bool region clicks may fall in (e.g. the image
            without its padding).

    Returns:
        points (M, 2) float32 XY and labels (M,) int64: 1 (false negative: the point lies in the
        object), 0 (false positive), or -1 with point (0, 0) when there is no error to correct.
    """
    if predicted.shape != targets.shape or predicted.ndim != 3:
        raise ValueError(f"predicted and targets must both have shape (M, H, W), got {tuple(predicted.shape)} "
                         f"and {tuple(targets.shape)}")
    targets = targets.bool()
    error = predicted.bool() ^ targets
    if valid is not None:
        error = error & valid.bool()
    xy, found = _uniform_pixel(error, generator)
    rows = torch.arange(len(xy), device=xy.device)
    inside = targets[rows, xy[:, 1].long(), xy[:, 0].long()]
    labels = torch.where(found, inside.long(), torch.full_like(inside, -1, dtype=torch.long))
    xy = torch.where(found[:, None], xy, torch.zeros_like(xy))
    return xy, labels


def point_schedule(num_iterations: int, num_mask_only: int, generator: torch.Generator | None = None
                   ) -> list[bool]:
    """Which iterations add a corrective point.

    Iteration 0 gives the first prompt (False here). When ``num_mask_only >= 1``, the last
    iteration adds no point and the other ``num_mask_only - 1`` point-free iterations fall at
    random among iterations 1 .. n-2, as in the paper (11 iterations, 2 without a point).

    Returns:
        ``num_iterations`` flags, True where a point is sampled from the error region.
    """
    if num_iterations < 1 or not 0 <= num_mask_only <= num_iterations - 1:
        raise ValueError(f"need num_iterations >= 1 and 0 <= num_mask_only <= num_iterations - 1, got "
                         f"{num_iterations} and {num_mask_only}")
    flags = [False] + [True] * (num_iterations - 1)
    if num_mask_only:
        flags[-1] = False
        middle = torch.randperm(max(num_iterations - 2, 0), generator=generator)[:num_mask_only - 1] + 1
        for i in middle.tolist():
            flags[i] = False
    return flags


@dataclass(frozen=True)
class PromptSimulation:
    """Settings of the simulated interactive prompting (defaults: the paper's).

    Attributes:
        num_iterations: prompting rounds per mask, including the first prompt and the rounds that
            add only the mask prompt (11 in the paper).
        num_mask_only: rounds that add no point (2 in the paper; one random, one last).
        box_probability: chance the first prompt is a noisy box instead of a point (0.5).
        box_noise_fraction: box noise std as a fraction of the box side (0.1).
        box_noise_max: clip of the box noise, in model input pixels (20).
        embedding_probability: chance a mask that has a CLIP crop embedding gets it as its first
            prompt (the embedding prompt path); the others fall back to point or box.
        mask_prompt: feed the previous iteration's logits as the mask prompt (True, as the paper).
    """

    num_iterations: int = 11
    num_mask_only: int = 2
    box_probability: float = 0.5
    box_noise_fraction: float = 0.1
    box_noise_max: float = 20.0
    embedding_probability: float = 0.5
    mask_prompt: bool = True

    def __post_init__(self) -> None:
        point_schedule(self.num_iterations, self.num_mask_only)  # validates the pair
        for name in ("box_probability", "embedding_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
