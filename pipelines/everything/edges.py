"""Edge thinning for SAM's zero-shot edge maps (paper appendix D.2): Sobel magnitude of mask
probabilities and structured-edges style non-maximum suppression along the gradient direction."""
from __future__ import annotations

import torch

__all__ = ["edge_nms", "sobel_magnitude"]


def sobel_magnitude(probabilities: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of (B, 1, H, W) maps in [0, 1]: Sobel / 4 (a 0 -> 1 step gives 1), clamped to [0, 1]."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=probabilities.device) / 4
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None].to(probabilities.dtype)
    padded = torch.nn.functional.pad(probabilities, (1, 1, 1, 1), mode="replicate")
    gradient = torch.nn.functional.conv2d(padded, kernels)
    return gradient.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_(max=1.0)


def _smooth_triangle(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable triangle filter of (H, W) with the given radius (replicate borders)."""
    ramp = torch.arange(1, radius + 2, dtype=image.dtype, device=image.device)
    kernel = torch.cat([ramp, ramp[:-1].flip(0)]) / (radius + 1) ** 2
    x = torch.nn.functional.pad(image[None, None], (radius, radius, radius, radius), mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1))[0, 0]


def _central_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d/dx and d/dy of (H, W): central differences inside, one-sided at the borders; zero along
    a side of one pixel."""
    def along(dim: int) -> torch.Tensor:
        return torch.gradient(image, dim=dim)[0] if image.shape[dim] > 1 else torch.zeros_like(image)

    return along(1), along(0)


def edge_nms(strength: torch.Tensor, *, radius: int = 1, border: int = 5, multiplier: float = 1.01,
             smoothing: int = 4) -> torch.Tensor:
    """Thin an edge-strength map (H, W) along the gradient direction (structured-edges style NMS).

    The edge normal comes from second derivatives of the triangle-smoothed map,
    ``O = atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)) mod pi``; a pixel is zeroed when
    ``multiplier`` times its value is below the bilinearly sampled value at distance
    ``1..radius`` along the normal on either side. Values within ``border`` pixels of the image
    border are scaled down linearly (they are unreliable).

    Returns:
        (H, W) same dtype, values in [0, max(strength)].
    """
    height, width = strength.shape
    x = strength.float()
    gx, gy = _central_gradient(_smooth_triangle(x, smoothing))
    gxx, _ = _central_gradient(gx)
    gxy, gyy = _central_gradient(gy)
    angle = torch.remainder(torch.atan(gyy * torch.sign(-gxy) / (gxx + 1e-5)), torch.pi)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cols = torch.arange(width, dtype=x.dtype, device=x.device)[None, :].expand(height, width)
    rows = torch.arange(height, dtype=x.dtype, device=x.device)[:, None].expand(height, width)
    keep = torch.ones_like(x, dtype=torch.bool)
    for step in [d for d in range(-radius, radius + 1) if d]:
        grid = torch.stack([(cols + step * cos) / max(width - 1, 1) * 2 - 1,
                            (rows + step * sin) / max(height - 1, 1) * 2 - 1], dim=-1)
        neighbour = torch.nn.functional.grid_sample(x[None, None], grid[None], mode="bilinear",
                                                    padding_mode="border", align_corners=True)[0, 0]
        keep &= x * multiplier >= neighbour
    out = x * keep
    s = min(border, width // 2, height // 2)
    if s > 0:
        ramp = torch.arange(s, dtype=x.dtype, device=x.device) / s
        out[:, :s] *= ramp
        out[:, width - s:] *= ramp.flip(0)
        out[:s, :] *= ramp[:, None]
        out[height - s:, :] *= ramp.flip(0)[:, None]
    return out.to(strength.dtype)
