"""Segment everything: point grids over the image and its crops, filtered masks, edges.

* :mod:`.settings`: :class:`EverythingSettings` and the paper's :data:`PRESETS`;
* :mod:`.ops`: the grid, crop, scoring, NMS and small-region operations;
* :mod:`.edges`: Sobel strength and edge thinning for the edge-detection preset;
* :mod:`.segment`: :class:`SegmentEverything` / :func:`segment_everything` and :func:`edge_map`;
* writers (COCO instances, SA-1B JSON) live in :mod:`samkit.pipelines.everything.writers`.
"""
from .writers import write_coco_instances, write_sa1b_json
from .segment import SegmentEverything, edge_map, segment_everything
from .settings import PRESETS, EverythingSettings

__all__ = ["PRESETS", "EverythingSettings", "SegmentEverything", "edge_map", "segment_everything",
           "write_coco_instances", "write_sa1b_json"]
