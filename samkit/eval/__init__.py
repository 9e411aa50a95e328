"""The paper's zero-shot protocols (arXiv 2304.02643, sec. 7) on any COCO-format dataset.

==============================  ================================================================
protocol                        what it measures
==============================  ================================================================
:func:`evaluate_points`         mIoU of 1 -> N clicks, most confident and oracle, by COCO area
:func:`evaluate_proposals`      category-agnostic AR@10/100/1000 by area (and LVIS frequency)
:func:`evaluate_instances`      mask AP / AP50 / AP75 of masks from detector or given boxes
:func:`evaluate_edges`          BSDS-style ODS / OIS / AP of edge maps
==============================  ================================================================

Each takes the thing to evaluate as an argument (a :class:`samkit.Segmenter`, or a callable such
as a ``SegmentEverything`` or ``DetectThenSegment`` from :mod:`samkit.pipelines`) and a dataset
(:class:`CocoDataset` for a JSON and image folder, :class:`ArrayDataset` for in-memory arrays),
and returns an :class:`EvaluationResult`; :func:`format_table` prints it. The command line is
``samkit eval points|proposals|instances|edges``. Needs ``pip install samkit[eval]`` (pycocotools,
scipy, scikit-image); plots need matplotlib.

Example:
    >>> data = CocoDataset("val/instances.json", "val/images")             # doctest: +SKIP
    >>> result = evaluate_points(samkit.Segmenter(model), data, clicks=9)   # doctest: +SKIP
    >>> print(format_table(result))                                         # doctest: +SKIP
"""
from .clicks import mask_centers, next_clicks, region_depth
from .cocoeval import evaluate_instances, evaluate_proposals, ground_truth_detections, load_detections
from .dataset import ArrayDataset, CocoDataset, EvalObject, EvalSample, SampleError, write_coco_folder
from .edges import edge_counts, edge_scores, evaluate_edges, mask_boundaries, match_pixels
from .metrics import AREA_RANGES, area_range, mask_iou, masks_iou
from .points import evaluate_points
from .report import format_table, save_plot
from .result import EvaluationResult

__all__ = [
    "evaluate_points", "evaluate_proposals", "evaluate_instances", "evaluate_edges",
    "CocoDataset", "ArrayDataset", "EvalSample", "EvalObject", "SampleError", "EvaluationResult", "write_coco_folder",
    "format_table", "save_plot", "ground_truth_detections", "load_detections",
    "mask_centers", "next_clicks", "region_depth", "AREA_RANGES", "area_range", "mask_iou", "masks_iou",
    "edge_counts", "edge_scores", "mask_boundaries", "match_pixels",
]
