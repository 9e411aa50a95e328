"""Settings of segment everything: validated :class:`EverythingSettings` and the paper's presets."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from . import ops

__all__ = ["PRESETS", "EverythingSettings"]

#: Paper settings (arXiv 2304.02643): SA-1B's fully automatic stage (sec. 4: crops of 2x2 and
#: 4x4 with 16x16 and 8x8 grids, masks covering >= 95% of the image dropped), object proposals
#: (appendix D.3) and zero-shot edge detection (appendix D.2).
PRESETS: dict[str, dict[str, Any]] = {
    "sa1b": dict(points_per_side=32, crop_n_layers=2, crop_n_points_downscale_factor=2, pred_iou_thresh=0.88,
                 stability_score_thresh=0.95, min_mask_region_area=100, max_area_fraction=0.95),
    "proposals": dict(points_per_side=64, box_nms_thresh=0.9, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                      max_masks=1000),
    "edges": dict(points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.0),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class EverythingSettings:
    """Validated settings of :class:`SegmentEverything` (same names and defaults; see there).

    Raises:
        ValueError: naming the setting, what was expected and what was given.
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: Sequence[np.ndarray] | None = None
    min_mask_region_area: int = 0
    max_area_fraction: float | None = None
    max_masks: int | None = None
    fast: bool = False

    def __post_init__(self) -> None:
        for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh",
                     "crop_nms_thresh", "crop_overlap_ratio", "min_mask_region_area"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or value != value:
                raise ValueError(f"expected {name} to be a number, got {value!r}")
        checks = [  # (ok, expectation, value got)
            ((self.points_per_side is None) != (self.point_grids is None),
             "exactly one of points_per_side and point_grids", "both" if self.point_grids is not None else "neither"),
            (self.points_per_side is None or (_is_int(self.points_per_side) and self.points_per_side >= 1),
             "points_per_side to be an int >= 1", self.points_per_side),
            (_is_int(self.points_per_batch) and self.points_per_batch >= 1, "points_per_batch to be an int >= 1",
             self.points_per_batch),
            (_is_int(self.crop_n_layers) and self.crop_n_layers >= 0, "crop_n_layers to be an int >= 0",
             self.crop_n_layers),
            (_is_int(self.crop_n_points_downscale_factor) and self.crop_n_points_downscale_factor >= 1,
             "crop_n_points_downscale_factor to be an int >= 1", self.crop_n_points_downscale_factor),
            (0.0 <= self.box_nms_thresh <= 1.0, "box_nms_thresh in [0, 1]", self.box_nms_thresh),
            (0.0 <= self.crop_nms_thresh <= 1.0, "crop_nms_thresh in [0, 1]", self.crop_nms_thresh),
            (0.0 <= self.crop_overlap_ratio < 1.0, "crop_overlap_ratio in [0, 1)", self.crop_overlap_ratio),
            (self.stability_score_offset >= 0.0, "stability_score_offset >= 0", self.stability_score_offset),
            (self.stability_score_thresh <= 1.0, "stability_score_thresh <= 1", self.stability_score_thresh),
            (self.min_mask_region_area >= 0, "min_mask_region_area >= 0", self.min_mask_region_area),
            (self.max_area_fraction is None or 0.0 < self.max_area_fraction <= 1.0,
             "max_area_fraction None or in (0, 1]", self.max_area_fraction),
            (self.max_masks is None or (_is_int(self.max_masks) and self.max_masks >= 1),
             "max_masks None or an int >= 1", self.max_masks),
        ]
        for ok, expected, got in checks:
            if not ok:
                raise ValueError(f"expected {expected}, got {got!r}")
        if self.points_per_side is not None:
            sides = [int(self.points_per_side / self.crop_n_points_downscale_factor ** i)
                     for i in range(self.crop_n_layers + 1)]
            if min(sides) < 1:
                raise ValueError("expected points_per_side / crop_n_points_downscale_factor ** crop_n_layers >= 1 "
                                 f"(grid points per side of each crop layer), got {sides}")
            return
        grids = [np.asarray(g, dtype=np.float64) for g in self.point_grids]
        if len(grids) < self.crop_n_layers + 1:
            raise ValueError(f"expected point_grids with one grid per crop layer ({self.crop_n_layers + 1}), "
                             f"got {len(grids)}")
        for g in grids:
            if g.ndim != 2 or g.shape[1] != 2 or g.shape[0] < 1 or not np.all((g >= 0) & (g <= 1)):
                raise ValueError(f"expected each point grid of shape (P, 2) in [0, 1], got shape {g.shape}"
                                 f"{'' if g.size == 0 else f' in [{g.min():g}, {g.max():g}]'}")
        object.__setattr__(self, "point_grids", tuple(grids))

    def grids(self) -> list[np.ndarray]:
        """One normalised (P, 2) grid per crop layer."""
        if self.point_grids is not None:
            return list(self.point_grids)
        return ops.build_layer_point_grids(self.points_per_side, self.crop_n_layers,
                                           self.crop_n_points_downscale_factor)
