"""Adapters: turn other systems' outputs into samkit Prompts (installed as ``samkit.adapters``).

Heavy libraries (ultralytics, transformers, open_clip) are imported only inside the adapter
that needs them, so ``import samkit.adapters`` stays light.
"""
from .clip import ClipModel
from .base import PromptSource, as_prompt_source, boxes_to_prompts, resolve_class_names
from .gaze import DEFAULT_DISPERSION, DEFAULT_VELOCITY, Fixations, GazeAdapter, detect_fixations, fixations_to_prompts
from .hf_detectors import (
    ZERO_SHOT_MODEL_TYPES,
    ClosedSetDetector,
    ZeroShotDetector,
    detect_closed_set,
    detect_zero_shot,
    grounding_text,
    load_hf_detector,
)
from .registry import DETECTOR_FAMILIES, DetectorFamily, detector_families, detector_family, load_detector
from .supervision import from_supervision_detections
from .ultralytics import YOLODetector, detect_with_yolo, load_yolo, yolo_result_to_prompts

__all__ = [
    "ClipModel",
    "PromptSource", "as_prompt_source", "boxes_to_prompts", "resolve_class_names",
    "Fixations", "GazeAdapter", "detect_fixations", "fixations_to_prompts", "DEFAULT_DISPERSION", "DEFAULT_VELOCITY",
    "ZERO_SHOT_MODEL_TYPES", "ClosedSetDetector", "ZeroShotDetector", "detect_closed_set", "detect_zero_shot",
    "grounding_text", "load_hf_detector", "from_supervision_detections",
    "YOLODetector", "detect_with_yolo", "load_yolo", "yolo_result_to_prompts",
    "DETECTOR_FAMILIES", "DetectorFamily", "detector_families", "detector_family", "load_detector",
]
