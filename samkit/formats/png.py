"""Masks as PNG files: one 8-bit grayscale image per mask (255 inside, 0 outside), or many in a zip.

Example:
    >>> mask = np.zeros((4, 6), dtype=bool); mask[1:3, 2:5] = True
    >>> mask_png_bytes(mask)[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from samkit.formats.rle import as_bool_masks

__all__ = ["mask_png_bytes", "read_mask_png", "save_mask_png", "save_masks_zip"]


def mask_png_bytes(mask: Any) -> bytes:
    """A bool (H, W) mask as an 8-bit grayscale PNG: 255 inside, 0 outside."""
    from PIL import Image

    mask = as_bool_masks(mask, "mask")
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def save_mask_png(mask: Any, path: str | os.PathLike) -> Path:
    """Write :func:`mask_png_bytes` to ``path`` (its folder must exist); returns the path."""
    path = Path(path)
    path.write_bytes(mask_png_bytes(mask))
    return path


def read_mask_png(source: str | os.PathLike | bytes) -> np.ndarray:
    """A mask PNG (a path or the file's bytes) as bool (H, W): pixels > 0 are inside."""
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return np.asarray(image.convert("L")) > 0


def save_masks_zip(masks: Any, path: str | os.PathLike, *, names: Sequence[str] | None = None) -> Path:
    """Write bool (M, H, W) masks as PNG files inside one zip archive.

    Args:
        masks: the masks.
        path: the ``.zip`` to write.
        names: file names inside the archive; default ``mask_000.png``, ``mask_001.png``, ...
    """
    masks = as_bool_masks(masks, "masks")
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (M, H, W), got {masks.shape}")
    names = list(names) if names is not None else [f"mask_{i:03d}.png" for i in range(len(masks))]
    if len(names) != len(masks):
        raise ValueError(f"names must hold one name per mask ({len(masks)}), got {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"names must differ, got {sorted({n for n in names if names.count(n) > 1})} twice")
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, mask in zip(names, masks):
            archive.writestr(name, mask_png_bytes(mask))  # PNG is compressed already
    return path
