"""``samkit segment``: masks of one image from point and box prompts."""
from __future__ import annotations

import argparse
from typing import Any

from samkit.cli.common import UsageError, box_arg, check_out_folder, load_segmenter, point_arg, remove_earlier_masks

__all__ = ["add_commands", "run_segment"]


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``segment`` on the ``samkit`` sub-parsers."""
    p = commands.add_parser(
        "segment", parents=parents, help="segment an image from points and boxes",
        description="Segment IMAGE from point and box prompts. All points (and at most one box) form one prompt; "
                    "several boxes without points give one mask each. Writes mask_<prompt>.png (the best mask of "
                    "each prompt), mask_<prompt>_<k>.png (every candidate, with --multimask), overlay.png and "
                    "result.json (scores, boxes, COCO RLE) to DIR.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--point", type=point_arg, action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a point in pixels; LABEL 1 foreground (default) or 0 background; repeatable")
    p.add_argument("--box", type=box_arg, action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box in pixels (XYXY); repeatable")
    p.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the masks, overlay and JSON")
    multi = p.add_mutually_exclusive_group()
    multi.add_argument("--multimask", dest="multimask", action="store_const", const=True, default=None,
                       help="three candidate masks per prompt (default for a single point)")
    multi.add_argument("--single", dest="multimask", action="store_const", const=False,
                       help="one mask per prompt (default for several points or a box)")
    p.set_defaults(func=run_segment, parser=p)


def _prompt_arrays(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    if not args.point and not args.box:
        raise UsageError("segment needs at least one --point X,Y[,LABEL] or --box X0,Y0,X1,Y1")
    if args.point and len(args.box) > 1:
        raise UsageError(f"points form one prompt with at most one box, got {len(args.box)} boxes; give the boxes "
                         "alone (one mask each) or run once per box")
    prompt: dict[str, Any] = {}
    if args.point:
        prompt["points"] = np.array([[x, y] for x, y, _ in args.point], dtype=np.float32)
        prompt["labels"] = np.array([label for _, _, label in args.point], dtype=np.int64)
    if args.box:
        boxes = np.array(args.box, dtype=np.float32)
        prompt["boxes"] = boxes[0] if args.point else boxes
    return prompt


def run_segment(args: argparse.Namespace) -> int:
    from samkit.atomic import write_json_atomic
    from samkit.formats.png import save_mask_png
    from samkit.transforms import load_image
    from samkit.visualize import overlay_segmentation

    prompt = _prompt_arrays(args)
    out = check_out_folder(args.out)
    image = load_image(args.image)
    segmenter = load_segmenter(args)
    multimask = args.multimask if args.multimask is not None else (len(args.point) == 1 and not args.box)
    result = segmenter.segment(segmenter.encode(image), multimask=multimask, **prompt)
    out.mkdir(parents=True, exist_ok=True)
    remove_earlier_masks(out)

    best = result.best()
    rles, boxes, areas = result.to_rle(), result.boxes(), result.areas()
    masks_info, lines = [], []
    for i in range(len(result)):
        chosen = best.meta[i]["output_index"]
        save_mask_png(result.masks[i, chosen], out / f"mask_{i}.png")
        for k in range(result.num_outputs):
            file_name = f"mask_{i}.png"
            if result.num_outputs > 1:
                file_name = f"mask_{i}_{k}.png"
                save_mask_png(result.masks[i, k], out / file_name)
            x0, y0, x1, y1 = boxes[i, k].tolist()
            masks_info.append({"prompt": i, "output": k, "best": k == chosen, "score": float(result.scores[i, k]),
                               "area": int(areas[i, k]), "bbox": [x0, y0, x1 - x0, y1 - y0], "file": file_name,
                               "rle": rles[i][k]})
        lines.append(f"prompt {i}: mask {chosen} of {result.num_outputs}, score {result.scores[i, chosen]:.3f}, "
                     f"{int(areas[i, chosen])} px -> {out / f'mask_{i}.png'}")
    points, labels = prompt.get("points"), prompt.get("labels")
    overlay = overlay_segmentation(image, result, points=points, labels=labels, boxes=prompt.get("boxes"))
    from PIL import Image

    Image.fromarray(overlay).save(out / "overlay.png")
    payload = {
        "image": str(args.image), "image_size": list(result.image_size), "model": args.model_source,
        "multimask": multimask,
        "prompts": {"points": None if points is None else points.tolist(),
                    "labels": None if labels is None else labels.tolist(),
                    "boxes": None if "boxes" not in prompt else prompt["boxes"].reshape(-1, 4).tolist()},
        "conventions": {"coordinates": "XY pixels", "bbox": "XYWH, pixel edges", "rle": "COCO, column-major"},
        "masks": masks_info,
    }
    write_json_atomic(out / "result.json", payload, indent=2)
    if not args.quiet:
        print("\n".join(lines + [f"overlay -> {out / 'overlay.png'}", f"scores and RLE -> {out / 'result.json'}"]))
    return 0
