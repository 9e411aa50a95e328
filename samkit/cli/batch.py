"""``samkit everything`` and ``samkit detect-segment``: batch commands over an image or a folder.

Both show a progress bar over images (``--quiet`` hides it) and are resumable: see
:mod:`samkit.cli.store` for the output layouts and what a rerun skips.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from samkit.cli.common import (
    Progress,
    UsageError,
    comma_list,
    count,
    everything_presets,
    load_segmenter,
    positive_int,
    precision_dtype_name,
    resolve_model_source,
    source_id,
    unit_float,
)
from samkit.cli.engine_options import add_engine_arguments, run_engine_job, uses_engine
from samkit.cli.store import COCOParts, SA1BFolder, file_sha256, image_files

__all__ = ["add_commands", "build_detector", "run_detect_segment", "run_everything"]

logger = logging.getLogger(__name__)

YOLO_SUFFIXES = (".pt", ".yaml", ".yml")


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``everything`` and ``detect-segment`` on the ``samkit`` sub-parsers."""
    p = commands.add_parser(
        "everything", parents=parents, help="segment everything in an image or a folder of images",
        description="Automatic mask generation (a grid of point prompts) over IMAGE or every image of DIR. "
                    "COCO output: one instances file; interrupted runs resume (rerun the same command).")
    p.add_argument("input", metavar="IMAGE|DIR")
    p.add_argument("--out", required=True, metavar="OUT.json",
                   help="COCO instances file; with --format sa1b a folder of per-image SA-1B files "
                        "(or one .json for one image)")
    p.add_argument("--format", choices=("coco", "sa1b"), default="coco", help="output format (default: coco)")
    p.add_argument("--preset", choices=everything_presets(), default=None,
                   help="paper settings: sa1b (SA-1B's automatic stage, with crops) or proposals (appendix D.3); "
                        "default: segment_anything's SamAutomaticMaskGenerator defaults")
    p.add_argument("--points-per-side", type=positive_int, default=None, metavar="N",
                   help="grid points per image side (overrides the preset)")
    p.add_argument("--points-per-batch", type=positive_int, default=64, metavar="N",
                   help="prompts decoded together; lower it to save memory (default: 64)")
    p.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
    p.add_argument("--restart", action="store_true", help="discard earlier results for --out and start over")
    add_engine_arguments(p)
    p.set_defaults(func=run_everything, parser=p)

    p = commands.add_parser(
        "detect-segment", parents=parents, help="detect objects, then segment each detection's box",
        description="Run a detector on IMAGE or every image of DIR and segment each box with SAM. Writes COCO "
                    "instances with the detector's class names; interrupted runs resume.")
    p.add_argument("input", metavar="IMAGE|DIR")
    p.add_argument("--detector", required=True, metavar="PATH|NAME",
                   help="an ultralytics YOLO .pt/.yaml (path or official name, e.g. yolov8n.pt), or a transformers "
                        "detector folder or hub id (DETR-style; OWL-ViT/OWLv2/Grounding DINO with --queries)")
    p.add_argument("--out", required=True, metavar="OUT.json", help="COCO instances file")
    p.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
    p.add_argument("--conf", type=unit_float, default=None, metavar="C",
                   help=f"minimum detector score (default: the detector family's: {_threshold_defaults()})")
    p.add_argument("--classes", default=None, metavar="A,B",
                   help="keep only these class names (comma-separated)")
    p.add_argument("--queries", default=None, metavar="A,B",
                   help="text queries for a zero-shot transformers detector (comma-separated)")
    p.add_argument("--imgsz", type=positive_int, default=None, metavar="N", help="YOLO inference size")
    p.add_argument("--max-det", type=positive_int, default=300, metavar="N", help="YOLO: at most N boxes per image")
    p.add_argument("--refine", type=int, choices=range(0, 6), default=0, metavar="N",
                   help="feed each mask back to SAM N times (0-5, default 0)")
    p.add_argument("--min-mask-score", type=unit_float, default=None, metavar="S",
                   help="drop masks whose predicted IoU is lower")
    p.add_argument("--restart", action="store_true", help="discard earlier results for --out and start over")
    add_engine_arguments(p)
    p.set_defaults(func=run_detect_segment, parser=p)


def _threshold_defaults() -> str:
    from samkit.adapters.registry import DETECTOR_FAMILIES

    return ", ".join(f"{f.default_threshold:g} {f.name}" for f in DETECTOR_FAMILIES.values())


# -- everything -----------------------------------------------------------------------------------
def run_everything(args: argparse.Namespace) -> int:
    from samkit.pipelines.everything import SegmentEverything
    from samkit.transforms import load_image

    if uses_engine(args):
        from samkit.engine import EverythingTask

        if args.format != "coco":
            raise UsageError("--engine writes SA-1B JSON per image already; drop --format")
        settings: dict[str, Any] = {"points_per_batch": args.points_per_batch}
        if args.points_per_side is not None:
            settings["points_per_side"] = args.points_per_side
        task = EverythingTask(resolve_model_source(args.model), preset=args.preset, settings=settings,
                              dtype=precision_dtype_name(args.precision))
        return run_engine_job(args, task)
    images = image_files(args.input)
    single = Path(args.input).is_file()
    out = Path(args.out)
    if args.format == "sa1b" and not single and out.suffix.lower() == ".json":
        raise UsageError("--format sa1b writes one JSON per image: for a folder, --out must be a folder, "
                         f"got {args.out!r}")
    segmenter = load_segmenter(args)
    overrides: dict[str, Any] = {"points_per_batch": args.points_per_batch}
    if args.points_per_side is not None:
        overrides["points_per_side"] = args.points_per_side
    if args.preset:
        everything = SegmentEverything.preset(args.preset, segmenter, **overrides)
    else:
        everything = SegmentEverything(segmenter, **overrides)
    settings = {"command": "everything", "model": source_id(args.model_source), "precision": args.precision,
                "preset": args.preset, "points_per_side": args.points_per_side}
    progress = Progress(len(images), "everything", enabled=not args.quiet)

    if args.format == "sa1b":
        folder = SA1BFolder(out, [name for _, name in images], settings, restart=args.restart,
                            single=single and out.suffix.lower() == ".json")
        total = 0
        for path, name in images:
            digest = file_sha256(path)
            if folder.is_done(name, digest):
                progress.step(name, skipped=True)
                continue
            result = everything(load_image(path))
            folder.save(name, digest, result)
            total += len(result)
            progress.step(f"{name}: {count(len(result), 'mask')}")
        removed = folder.finish()
        if not args.quiet:
            gone = f"; removed the files of {count(len(removed), 'image')} no longer in the input" if removed else ""
            print(f"wrote SA-1B JSON for {count(len(images), 'image')} ({total} new masks) to {out}{gone}")
        return 0

    store = COCOParts(out, settings, restart=args.restart)
    for path, name in images:
        if store.is_done(name):
            progress.step(name, skipped=True)
            continue
        image = load_image(path)
        result = everything(image)
        image_id = store.next_image_id()
        info = {"id": image_id, "file_name": name, "height": int(image.shape[0]), "width": int(image.shape[1])}
        store.save(info, result.to_coco(image_id))
        progress.step(f"{name}: {count(len(result), 'mask')}")
    coco = store.finish([{"id": 1, "name": "object"}], "samkit everything")
    if not args.quiet:
        print(f"wrote {len(coco['annotations'])} masks on {len(coco['images'])} images to {out}")
    return 0


# -- detect-segment -------------------------------------------------------------------------------
def build_detector(args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]]]:
    """The detector named by ``--detector`` (through the detector registry) and its COCO categories."""
    from samkit.adapters.registry import detector_family, load_detector

    classes = comma_list(args.classes, "--classes")
    queries = comma_list(args.queries, "--queries")
    try:
        family = detector_family(args.detector, queries=queries)
    except ValueError as error:
        raise UsageError(f"--detector expects a YOLO file or name ending in {', '.join(YOLO_SUFFIXES)}, or a "
                         f"transformers detector folder or hub id (org/name): {error}") from None
    options: dict[str, Any] = {}
    if family.name in ("yolo", "yolo-world"):
        if queries is not None and not family.open_vocabulary:
            raise UsageError("--queries needs a zero-shot detector (transformers or YOLO-World); a YOLO model "
                             "takes --classes")
        options = {"max_det": args.max_det, "imgsz": args.imgsz}
    elif args.imgsz is not None:
        raise UsageError("--imgsz applies to YOLO models only")
    if family.needs_queries and classes is not None:
        raise UsageError("a zero-shot detector takes --queries, not --classes")
    detector = load_detector(args.detector, family=family.name, threshold=args.conf, classes=classes,
                             queries=queries, device=args.device, **options)
    return detector, detector.categories


def _detect_with_engine(args: argparse.Namespace) -> int:
    from samkit.adapters.registry import detector_family
    from samkit.engine import DetectTask

    _, categories = build_detector(args)  # checks the spec and options here, once
    options: dict[str, Any] = {k: v for k, v in (("threshold", args.conf), ("classes", comma_list(args.classes, "--classes")),
                                                 ("queries", comma_list(args.queries, "--queries"))) if v is not None}
    if detector_family(args.detector, queries=options.get("queries")).name in ("yolo", "yolo-world"):
        options.update(max_det=args.max_det, **({"imgsz": args.imgsz} if args.imgsz else {}))
    task = DetectTask(resolve_model_source(args.model), args.detector, detector_options=options,
                      settings={"refine_iterations": args.refine, "min_mask_score": args.min_mask_score},
                      categories=categories, dtype=precision_dtype_name(args.precision))
    return run_engine_job(args, task)


def run_detect_segment(args: argparse.Namespace) -> int:
    from samkit.pipelines.detect_segment import DetectThenSegment, to_coco_instances
    from samkit.transforms import load_image

    if uses_engine(args):
        return _detect_with_engine(args)
    images = image_files(args.input)
    detector, categories = build_detector(args)
    segmenter = load_segmenter(args)
    pipeline = DetectThenSegment(detector, segmenter, refine_iterations=args.refine,
                                 min_mask_score=args.min_mask_score)
    settings = {"command": "detect-segment", "model": source_id(args.model_source), "precision": args.precision,
                "detector": source_id(args.detector), "conf": args.conf, "classes": args.classes,
                "queries": args.queries, "imgsz": args.imgsz, "max_det": args.max_det, "refine": args.refine,
                "min_mask_score": args.min_mask_score}
    store = COCOParts(args.out, settings, restart=args.restart)
    progress = Progress(len(images), "detect-segment", enabled=not args.quiet)
    for path, name in images:
        if store.is_done(name):
            progress.step(name, skipped=True)
            continue
        image = load_image(path)
        result = pipeline(image)
        image_id = store.next_image_id()
        coco = to_coco_instances([result], [{"id": image_id, "file_name": name}], categories)
        store.save(coco["images"][0], coco["annotations"])
        labels = sorted({str(m.get("label")) for m in result.meta})
        progress.step(f"{name}: {count(len(result), 'object')}" + (f" ({', '.join(labels)})" if labels else ""))
    coco = store.finish(categories, "samkit detect-segment")
    if not args.quiet:
        print(f"wrote {len(coco['annotations'])} masks on {len(coco['images'])} images to {args.out}")
    return 0
