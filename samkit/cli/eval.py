"""``samkit eval points|proposals|instances|edges``: the paper's zero-shot protocols on a COCO-format dataset.

    samkit eval points --dataset val.json --images val/ --model vit_b --clicks 9 --out points.json
    samkit eval proposals --dataset lvis_val.json --images val2017/ --model vit_h --out ar.json
    samkit eval instances --dataset val.json --images val/ --model vit_h --detections vitdet.json --out ap.json
    samkit eval edges --dataset val.json --images val/ --model vit_b --out edges.json

Each prints a table, writes ``{"protocol", "model", "dataset", "metrics", "per_image", "problems"}``
to ``--out`` and, for points and edges, a PNG plot beside it when matplotlib is installed.
Images that cannot be evaluated are listed in ``problems`` and the run goes on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from samkit.cli.common import Progress, UsageError, comma_list, load_segmenter, positive_int, source_id, unit_float

__all__ = ["add_commands", "run_eval"]

PROTOCOLS = ("points", "proposals", "instances", "edges")


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``eval`` and its protocol sub-commands on the ``samkit`` sub-parsers."""
    group = commands.add_parser("eval", parents=parents, help="zero-shot evaluation protocols on a COCO dataset",
                                description="The paper's zero-shot protocols on a COCO-format dataset "
                                            "(instances JSON + image folder; LVIS-style JSON accepted).")
    protocols = group.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    helps = {"points": "mIoU of 1 -> N center clicks (most confident and oracle), by object area",
             "proposals": "category-agnostic average recall of segment-everything proposals",
             "instances": "mask AP of SAM masks from detector boxes, a detections JSON or ground-truth boxes",
             "edges": "BSDS-style ODS / OIS / AP of segment-everything edge maps against mask boundaries"}
    for name in PROTOCOLS:
        p = protocols.add_parser(name, parents=parents, help=helps[name], description=helps[name] + ".")
        p.add_argument("--dataset", required=True, metavar="ANN.json", help="COCO (or LVIS) instances JSON")
        p.add_argument("--images", metavar="DIR", help="image folder (default: the JSON's folder)")
        p.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
        p.add_argument("--out", required=True, metavar="METRICS.json", help="where to write the metrics")
        p.add_argument("--max-images", type=positive_int, default=None, metavar="N", help="first N images only")
        p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
        p.set_defaults(func=run_eval, parser=p)
        if name == "points":
            p.add_argument("--clicks", type=positive_int, default=9, metavar="N", help="clicks per object (default: 9)")
            p.add_argument("--multimask", choices=("first", "always", "never"), default="first",
                           help="three-mask output for the first click only (default), always or never")
            p.add_argument("--next-click", choices=("area", "depth"), default="area",
                           help="larger error region by pixel count (default) or by depth (RITM)")
            p.add_argument("--no-mask-input", action="store_true",
                           help="prompt the clicks alone, without the previous logits as mask input")
        if name in ("proposals", "edges"):
            p.add_argument("--points-per-side", type=positive_int, default=None, metavar="N",
                           help="grid points per side (default: the preset's, 64 proposals / 16 edges)")
        if name == "proposals":
            p.add_argument("--max-proposals", default="10,100,1000", metavar="A,B,C",
                           help="proposal counts of the AR columns (default: 10,100,1000)")
        if name == "edges":
            p.add_argument("--thresholds", type=positive_int, default=99, metavar="N", help="BSDS thresholds (99)")
        if name == "instances":
            boxes = p.add_mutually_exclusive_group(required=True)
            boxes.add_argument("--detections", metavar="DETS.json", help="COCO detections JSON (bbox XYWH, score)")
            boxes.add_argument("--gt-boxes", action="store_true", help="the dataset's own boxes (oracle detector)")
            boxes.add_argument("--detector", metavar="PATH|NAME", help="a detector samkit can load (YOLO, DETR, ...)")
            p.add_argument("--conf", type=unit_float, default=None, metavar="C", help="minimum detector score")
            p.add_argument("--score", choices=("detection", "mask", "product"), default="detection",
                           help="mask score for AP: detector score (default), predicted IoU or their product")
            p.add_argument("--max-detections", type=positive_int, default=100, metavar="N",
                           help="detections per image COCOeval keeps (COCO 100, LVIS 300)")


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in comma_list(text, "--max-proposals") or []]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UsageError(f"--max-proposals expects comma-separated counts >= 1, got {text!r}")
    return values


def _run_protocol(args: argparse.Namespace, dataset: Any, progress: Any) -> Any:
    import samkit.eval as evaluation

    if args.protocol == "points":
        return evaluation.evaluate_points(load_segmenter(args), dataset, clicks=args.clicks, multimask=args.multimask,
                                          next_click=args.next_click, mask_input=not args.no_mask_input,
                                          progress=progress)
    if args.protocol in ("proposals", "edges"):
        from samkit.pipelines import SegmentEverything

        overrides = {} if args.points_per_side is None else {"points_per_side": args.points_per_side}
        everything = SegmentEverything.preset(args.protocol, load_segmenter(args), **overrides)
        if args.protocol == "edges":
            return evaluation.evaluate_edges(everything.edges, dataset, thresholds=args.thresholds, progress=progress)
        return evaluation.evaluate_proposals(everything, dataset, max_proposals=_counts(args.max_proposals),
                                             progress=progress)
    options = {"score": args.score, "max_detections": args.max_detections, "progress": progress}
    if args.detector is None:
        if args.conf is not None:
            raise UsageError("--conf applies to --detector only")
        detections = evaluation.ground_truth_detections(dataset) if args.gt_boxes else args.detections
        return evaluation.evaluate_instances(load_segmenter(args), dataset, detections=detections, **options)
    from samkit.adapters.registry import load_detector
    from samkit.pipelines import DetectThenSegment

    detector = load_detector(args.detector, threshold=args.conf, device=args.device)
    return evaluation.evaluate_instances(DetectThenSegment(detector, load_segmenter(args)), dataset, **options)


def run_eval(args: argparse.Namespace) -> int:
    from samkit.atomic import write_json_atomic
    from samkit.eval import CocoDataset, format_table, save_plot

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out must be a JSON file path, got the folder {args.out!r}")
    dataset = CocoDataset(args.dataset, args.images, max_images=args.max_images)
    bar = Progress(len(dataset), f"eval {args.protocol}", enabled=not args.quiet)
    result = _run_protocol(args, dataset, lambda done, total: bar.step())
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result.to_dict(model=source_id(args.model_source), dataset=source_id(args.dataset)),
                      indent=1)
    print(format_table(result))
    plot = None if args.no_plot else save_plot(result, out.with_suffix(".png"))
    if not args.quiet:
        for problem in result.problems[:10]:
            sys.stderr.write(f"samkit: left out {problem}\n")
        if len(result.problems) > 10:
            sys.stderr.write(f"samkit: ... and {len(result.problems) - 10} more (see {out})\n")
        print(f"wrote {out}" + (f" and {plot}" if plot else ""))
    return 0
