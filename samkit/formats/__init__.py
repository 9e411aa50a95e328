"""Interchange formats for masks, one module per format.

=================  ============================================================================
module             format
=================  ============================================================================
:mod:`.rle`        COCO run-length encoding (both counts forms), boxes
:mod:`.polygons`   mask borders as polygons (rings of pixel corners)
:mod:`.coco`       COCO instances (annotations, datasets) and results, with the one category rule
:mod:`.coco_read`  reading COCO instances: the one validating parser and segmentation decoder
:mod:`.sa1b`       SA-1B per-image JSON
:mod:`.yolo_seg`   YOLO segmentation label files
:mod:`.png`        mask PNGs and zips of them
:mod:`.jsonable`   numpy and tensor values made JSON-ready
=================  ============================================================================

:mod:`.label_studio` reads and writes Label Studio brush RLE and ``brushlabels`` results and turns
its percent region coordinates into pixels.

The modules take masks as bool (M, H, W) arrays (0/1 numbers and torch tensors accepted) and
plain metadata; they never import :mod:`samkit.results` (a ``Segmentation`` is duck-typed where
accepted), so results, pipelines and front ends all build on them.
"""
from samkit.formats.coco import (
    category_of,
    coco_annotations,
    coco_dataset,
    coco_results,
    normalize_categories,
    write_coco_json,
)
from samkit.formats.coco_read import (
    CocoAnnotation,
    CocoAnnotationError,
    CocoImage,
    CocoInstancesFile,
    load_coco_json,
    parse_coco_instances,
    read_coco_instances,
    segmentation_to_mask,
)
from samkit.formats.jsonable import json_default, to_python
from samkit.formats.label_studio import (
    brush_result,
    brush_rle_to_mask,
    decode_brush_values,
    encode_brush_values,
    keypoint_to_pixels,
    mask_to_brush_rle,
    rectangle_to_pixels,
)
from samkit.formats.png import mask_png_bytes, read_mask_png, save_mask_png, save_masks_zip
from samkit.formats.polygons import mask_to_polygons, polygon_signed_area
from samkit.formats.rle import (
    compress_counts,
    decompress_counts,
    masks_to_boxes,
    masks_to_coco_rle,
    masks_to_rle,
    rle_area,
    rle_to_bbox,
    rle_to_mask,
    to_coco_rle,
)
from samkit.formats.sa1b import read_sa1b_json, sa1b_dict, write_sa1b_json
from samkit.formats.yolo_seg import read_yolo_seg, write_yolo_seg, yolo_seg_lines

__all__ = [
    "category_of", "coco_annotations", "coco_dataset", "coco_results", "normalize_categories", "write_coco_json",
    "CocoAnnotation", "CocoAnnotationError", "CocoImage", "CocoInstancesFile", "load_coco_json", "parse_coco_instances",
    "read_coco_instances", "segmentation_to_mask",
    "json_default", "to_python",
    "brush_result", "brush_rle_to_mask", "decode_brush_values", "encode_brush_values", "keypoint_to_pixels",
    "mask_to_brush_rle", "rectangle_to_pixels",
    "mask_png_bytes", "read_mask_png", "save_mask_png", "save_masks_zip",
    "compress_counts", "decompress_counts", "mask_to_polygons", "masks_to_boxes", "masks_to_coco_rle", "masks_to_rle",
    "polygon_signed_area", "rle_area", "rle_to_bbox", "rle_to_mask", "to_coco_rle",
    "read_sa1b_json", "sa1b_dict", "write_sa1b_json",
    "read_yolo_seg", "write_yolo_seg", "yolo_seg_lines",
]
