"""Moved: the segment-everything writers live in :mod:`samkit.pipelines.everything.writers`."""
from .everything.writers import write_coco_instances, write_sa1b_json

__all__ = ["write_coco_instances", "write_sa1b_json"]
