"""Pipelines: adapters + Segmenter + post-processing (installed as ``samkit.pipelines``)."""
from .detect_segment import (
    DetectThenSegment,
    detect_then_segment,
    filter_detections,
    segment_detections,
    to_coco_instances,
    to_yolo_seg,
)
from .gaze_to_mask import GazeMaskSequence, GazeToMask, gaze_to_mask, iter_frames, list_image_files, read_video, segment_fixation
from .lift3d import MasksTo3D, PointCloud, lift_to_3d, read_ply, voxel_downsample, write_ply

__all__ = [
    "DetectThenSegment", "detect_then_segment", "filter_detections", "segment_detections", "to_coco_instances",
    "to_yolo_seg", "GazeMaskSequence", "GazeToMask", "gaze_to_mask", "iter_frames", "list_image_files", "read_video",
    "segment_fixation", "MasksTo3D", "PointCloud", "lift_to_3d", "read_ply", "voxel_downsample", "write_ply",
]
