"""Snapshot of the public API: removing or renaming a public name must be a deliberate change here."""
from __future__ import annotations

import subprocess
import sys

import pytest

import samkit
import samkit.adapters
import samkit.pipelines

PUBLIC = {
    samkit: {"Prompts", "Segmentation", "Segmenter", "ImageEmbedding", "SamConfig", "build_sam", "get_config",
             "load_model", "save_checkpoint", "infer_config"},
    samkit.adapters: {"YOLODetector", "ZeroShotDetector", "ClosedSetDetector", "ClipModel", "GazeAdapter",
                      "detect_fixations", "fixations_to_prompts", "as_prompt_source", "boxes_to_prompts",
                      "from_supervision_detections"},
    samkit.pipelines: {"DetectThenSegment", "GazeToMask", "SegmentEverything", "TextToMask", "lift_to_3d",
                       "MasksTo3D", "write_ply", "read_ply", "to_coco_instances", "to_yolo_seg",
                       "write_sa1b_json", "write_coco_instances", "edge_map"},
}


@pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)
def test_public_names_exist(module):
    missing = sorted(name for name in PUBLIC[module] if not hasattr(module, name))
    assert not missing, f"{module.__name__} lost public names: {missing}"
    assert PUBLIC[module] <= set(module.__all__)
    unresolvable = [name for name in module.__all__ if not hasattr(module, name)]
    assert not unresolvable, unresolvable


def test_segmenter_api_names():
    for name in ("encode", "encode_batch", "segment", "decode", "clear_cache"):
        assert callable(getattr(samkit.Segmenter, name))
    for name in ("best", "to_rle", "to_coco", "to_polygons", "to_records", "to_supervision", "from_supervision",
                 "boxes", "areas", "empty", "concat"):
        assert callable(getattr(samkit.Segmentation, name))


def test_import_pulls_in_no_heavy_optional_library():
    code = ("import sys, samkit, samkit.adapters, samkit.pipelines; "
            "print(','.join(m for m in ('ultralytics', 'transformers', 'open_clip', 'gradio', 'supervision', 'cv2') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing samkit imported optional libraries: {out}"
