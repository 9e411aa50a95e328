"""Moved: overlays to :mod:`samkit.visualize`, mask files to :mod:`samkit.formats.png`; this module
re-exports them so ``from samkit.cli_overlay import ...`` keeps working."""
from samkit.formats.png import mask_png_bytes, save_mask_png, save_masks_zip  # noqa: F401
from samkit.visualize import PALETTE, draw_overlay, overlay_segmentation  # noqa: F401

__all__ = ["PALETTE", "draw_overlay", "overlay_segmentation", "mask_png_bytes", "save_mask_png", "save_masks_zip"]
