"""``samkit segment``, ``models``, ``download`` and ``demo``."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from samkit.cli import UsageError, box_arg, load_segmenter, point_arg, resolve_model_source

__all__ = ["add_commands", "load_demo_module"]

logger = logging.getLogger(__name__)


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register this module's commands on the ``samkit`` sub-parsers."""
    from samkit.weights import PRETRAINED_WEIGHTS

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

    p = commands.add_parser("models", parents=parents, help="list known models and what is cached",
                            description="Known checkpoint names, parameter counts, and which are in the cache "
                                        "folder ($SAMKIT_CACHE, default ~/.cache/samkit), with their sizes.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_models, parser=p)

    p = commands.add_parser("download", parents=parents, help="download a known checkpoint into the cache",
                            description="Download a known checkpoint into the cache folder and verify its "
                                        "checksums; prints its path.")
    p.add_argument("name", choices=sorted(PRETRAINED_WEIGHTS), metavar="NAME",
                   help=f"one of {', '.join(sorted(PRETRAINED_WEIGHTS))}")
    p.set_defaults(func=run_download, parser=p)

    p = commands.add_parser("demo", parents=parents, help="launch the Gradio demo (pip install samkit[demo])",
                            description="Launch the Gradio demo in this process until Ctrl-C. The model comes "
                                        "from --model, else $SAMKIT_MODEL, else a cached known model; without "
                                        "one the page says how to get one.")
    p.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    p.set_defaults(func=run_demo, parser=p)


# -- segment --------------------------------------------------------------------------------------
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
    from samkit.cli_overlay import overlay_segmentation, save_mask_png
    from samkit.transforms import load_image

    prompt = _prompt_arrays(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    image = load_image(args.image)
    segmenter = load_segmenter(args)
    multimask = args.multimask if args.multimask is not None else (len(args.point) == 1 and not args.box)
    result = segmenter.segment(segmenter.encode(image), multimask=multimask, **prompt)
    out.mkdir(parents=True, exist_ok=True)

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


# -- models, download -----------------------------------------------------------------------------
def _parameter_count(config_name: str) -> int:
    import torch

    from samkit.modeling import build_sam, get_config

    with torch.device("meta"):  # shapes only: nothing is allocated
        model = build_sam(get_config(config_name))
    return sum(p.numel() for p in model.parameters())


def _size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def run_models(args: argparse.Namespace) -> int:
    from samkit.weights import PRETRAINED_WEIGHTS, cache_dir

    rows = []
    for name, weights in PRETRAINED_WEIGHTS.items():
        path = cache_dir() / weights.file_name
        cached = path.is_file()
        rows.append({"name": name, "file": weights.file_name, "parameters": _parameter_count(weights.config_name),
                     "cached": cached, "size_bytes": path.stat().st_size if cached else None,
                     "path": str(path), "url": weights.url, "license": weights.license})
    if args.json:
        print(json.dumps({"cache_dir": str(cache_dir()), "models": rows}, indent=2))
        return 0
    header = ("NAME", "FILE", "PARAMS", "CACHED", "SIZE")
    table = [header] + [(r["name"], r["file"], f"{r['parameters'] / 1e6:.1f}M", "yes" if r["cached"] else "no",
                         _size(r["size_bytes"]) if r["cached"] else "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"cache folder: {cache_dir()} (set SAMKIT_CACHE to change it); get one with `samkit download NAME`")
    return 0


def _tqdm_available() -> bool:
    return importlib.util.find_spec("tqdm") is not None


def run_download(args: argparse.Namespace) -> int:
    from samkit.weights import PRETRAINED_WEIGHTS, cache_dir, download_weights

    target = cache_dir() / PRETRAINED_WEIGHTS[args.name].file_name
    already = target.is_file()
    path = download_weights(args.name, progress=not args.quiet and _tqdm_available())
    if not args.quiet and already:
        sys.stderr.write(f"samkit: {args.name} is already cached\n")
    print(path)
    return 0


# -- demo -----------------------------------------------------------------------------------------
def load_demo_module() -> Any:
    """The Gradio demo module: ``samkit.demos.app`` when installed so, else ``demos/app.py`` of the checkout."""
    try:
        return importlib.import_module("samkit.demos.app")
    except ModuleNotFoundError as error:
        if error.name not in ("samkit.demos", "samkit.demos.app"):
            raise
    folder = Path(__file__).resolve().parent.parent / "demos"
    if not (folder / "app.py").is_file():
        raise FileNotFoundError("the Gradio demo (demos/app.py) is not part of this samkit installation; run "
                                "`samkit demo` from a source checkout installed with pip install -e .[demo]")
    name = "samkit_demos"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.app")


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from samkit.cli import PRECISIONS, select_device

    if not 0 < args.port < 65536:
        raise UsageError(f"--port expects 1-65535, got {args.port}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app_module = load_demo_module()
    dtype_name = PRECISIONS[args.precision]
    model = args.model
    if model is None:
        try:
            model = resolve_model_source(None)
        except UsageError:
            model = None  # the page explains how to get weights
    app = app_module.build_app(model, device=select_device(args.device),
                               dtype=None if dtype_name is None else getattr(torch, dtype_name))
    if not args.quiet:
        print(f"samkit demo on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, quiet=args.quiet)
    return 0
