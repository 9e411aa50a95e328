"""Pipelines: adapters + Segmenter + post-processing (installed as ``samkit.pipelines``)."""
from .detect_segment import (
    DetectThenSegment,
    detect_then_segment,
    filter_detections,
    segment_detections,
    to_coco_instances,
    to_yolo_seg,
)
from .everything import (
    PRESETS,
    EverythingSettings,
    SegmentEverything,
    edge_map,
    segment_everything,
    write_coco_instances,
    write_sa1b_json,
)
from .gaze_to_mask import GazeMaskSequence, GazeToMask, gaze_to_mask, iter_frames, list_image_files, read_video, segment_fixation
from .lift3d import MasksTo3D, PointCloud, lift_to_3d, read_ply, voxel_downsample, write_ply
from .text import (
    STRATEGIES,
    ClipPromptStrategy,
    ClipRerankStrategy,
    GroundedStrategy,
    Sam3Strategy,
    TextStrategy,
    TextToMask,
    clip_prompt_to_mask,
    clip_rerank,
    grounded_text_to_mask,
    make_strategy,
    sam3_text_to_mask,
    text_to_mask,
)

__all__ = [
    "PRESETS", "EverythingSettings", "SegmentEverything", "edge_map", "segment_everything", "write_coco_instances",
    "write_sa1b_json",
    "DetectThenSegment", "detect_then_segment", "filter_detections", "segment_detections", "to_coco_instances",
    "to_yolo_seg", "GazeMaskSequence", "GazeToMask", "gaze_to_mask", "iter_frames", "list_image_files", "read_video",
    "segment_fixation", "TextToMask", "text_to_mask", "make_strategy", "STRATEGIES", "TextStrategy",
    "GroundedStrategy", "grounded_text_to_mask", "ClipRerankStrategy", "clip_rerank", "ClipPromptStrategy",
    "clip_prompt_to_mask", "Sam3Strategy", "sam3_text_to_mask", "MasksTo3D", "PointCloud", "lift_to_3d", "read_ply", "voxel_downsample", "write_ply",
]
