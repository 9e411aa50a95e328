"""``samkit text IMAGE PHRASE...``: masks of what the phrases name (the text-to-mask pipeline).

Registered only when :mod:`samkit.pipelines.text_to_mask` is installed. Strategies:

* ``grounded``: ``--detector`` (a transformers zero-shot folder or hub id, or a YOLO-World ``.pt``)
  boxes the phrases, SAM segments the boxes;
* ``clip_rerank``: segment everything, keep the masks CLIP matches to the phrases
  (``--clip`` model, ``--clip-weights``);
* ``clip_prompt``: the CLIP text embedding prompts SAM directly (models trained with samkit's
  embedding prompt path only; ``--point`` adds point prompts);
* ``sam3``: SAM 3's own concept prompts (``--sam3`` folder or hub id; no SAM model needed).

With ``--engine local|ray`` the input is a source (folder, glob, list file, URI) and the data
engine writes one COCO-results JSON per image plus ``manifest.jsonl`` under ``--out DIR``
(:mod:`samkit.cli.engine_options`); the strategies whose settings are names (``grounded``,
``sam3``) run there. The CLIP strategies hold a loaded CLIP model: use
:class:`samkit.engine.TextTask` from Python for them.
"""
from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from samkit.cli.common import (
    UsageError,
    precision_dtype_name,
    resolve_model_source,
    check_out_folder,
    count,
    everything_presets,
    load_segmenter,
    point_arg,
    positive_int,
    remove_earlier_masks,
)

from samkit.cli.engine_options import add_engine_arguments, run_engine_job, uses_engine

__all__ = ["add_commands", "available", "strategy_names"]

_ENGINE_STRATEGIES = ("grounded", "sam3")


def available() -> bool:
    """Whether this samkit has the text-to-mask pipeline."""
    try:
        return importlib.util.find_spec("samkit.pipelines.text_to_mask") is not None
    except ImportError:
        return False


def strategy_names() -> list[str]:
    """The text strategies, read from the pipeline's registry (:data:`samkit.pipelines.STRATEGIES`)."""
    from samkit.pipelines import STRATEGIES

    return list(STRATEGIES)


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``text`` when the pipeline exists."""
    if not available():
        return
    p = commands.add_parser(
        "text", parents=parents, help="segment what a phrase names",
        description="Masks of IMAGE matching the phrases. Writes mask_<i>.png per mask, overlay.png and result.json "
                    "(phrase, text score, SAM score, box, COCO RLE) to DIR.")
    p.add_argument("image", metavar="IMAGE", help="an image; with --engine: a folder, glob, list file or URI")
    p.add_argument("phrases", nargs="+", metavar="PHRASE", help='e.g. "a wheel" "a grille"')
    p.add_argument("--strategy", choices=strategy_names(), default="grounded", help="how text finds masks "
                   "(default: grounded)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the masks, overlay and JSON")
    p.add_argument("--model", metavar="NAME|PATH", help="SAM checkpoint, Hugging Face folder or known name")
    p.add_argument("--detector", metavar="PATH|NAME", help="grounded: a transformers zero-shot detector folder or "
                   "hub id (OWL-ViT, OWLv2, Grounding DINO) or a YOLO-World .pt")
    p.add_argument("--clip", default="ViT-B-32", metavar="NAME",
                   help="clip strategies: open_clip model name or local-dir:FOLDER (default: ViT-B-32)")
    p.add_argument("--clip-weights", metavar="PATH|TAG|none",
                   help="clip strategies: open_clip weights file or tag (e.g. openai; downloaded when online), "
                        "or none for random weights (tests only)")
    p.add_argument("--sam3", metavar="PATH|ID", help="sam3: a SAM 3 folder or hub id (facebook/sam3)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="grounded: detector score; clip_rerank: CLIP cosine similarity; sam3: detection score "
                        "(default: the strategy's)")
    p.add_argument("--preset", choices=everything_presets(), default=None,
                   help="clip_rerank: settings of the segment-everything proposals (default: segment_anything's)")
    p.add_argument("--points-per-side", type=positive_int, default=None, metavar="N",
                   help="clip_rerank: grid of the segment-everything proposals")
    p.add_argument("--point", type=point_arg, action="append", default=[], metavar="X,Y[,LABEL]",
                   help="clip_prompt: point prompts added to the text; repeatable")
    p.add_argument("--min-text-score", type=float, default=None, metavar="S", help="drop weaker matches")
    p.add_argument("--max-masks", type=positive_int, default=None, metavar="N", help="keep the N best matches")
    p.add_argument("--restart", action="store_true", help="--engine: discard earlier results for --out and start over")
    add_engine_arguments(p)
    p.set_defaults(func=run_text, parser=p)


def _strategy_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings building the strategy, options of each call), checked for the chosen strategy."""
    strategy = args.strategy
    given = {"--detector": args.detector, "--clip-weights": args.clip_weights, "--sam3": args.sam3,
             "--points-per-side": args.points_per_side, "--preset": args.preset, "--point": args.point or None}
    uses = {"grounded": {"--detector"}, "clip_rerank": {"--clip-weights", "--points-per-side", "--preset"},
            "clip_prompt": {"--clip-weights", "--point"}, "sam3": {"--sam3"}}[strategy]
    stray = sorted(k for k, v in given.items() if v is not None and k not in uses)
    if stray:
        raise UsageError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to --strategy {strategy}")
    needed = {"grounded": "--detector", "clip_rerank": "--clip-weights", "clip_prompt": "--clip-weights",
              "sam3": "--sam3"}[strategy]
    if given[needed] is None:
        raise UsageError(f"--strategy {strategy} needs {needed}")
    if args.threshold is not None and strategy == "clip_prompt":
        raise UsageError("--threshold does not apply to --strategy clip_prompt (use --min-text-score)")
    settings: dict[str, Any] = {} if args.threshold is None else {"threshold": args.threshold}
    options: dict[str, Any] = {}
    if strategy == "grounded":
        settings["detector"] = args.detector
    elif strategy == "sam3":
        settings.update(model=args.sam3, device=args.device)
    else:
        from samkit.adapters.clip import ClipModel

        weights = None if args.clip_weights.lower() == "none" else args.clip_weights
        settings["clip"] = ClipModel(args.clip, pretrained=weights, device=args.device or "cpu")
        everything = {}
        if args.preset is not None:
            from samkit.pipelines import PRESETS

            everything.update(PRESETS[args.preset])
        if args.points_per_side is not None:
            everything["points_per_side"] = args.points_per_side
        if everything:
            settings["everything"] = everything
        if args.point:
            options["points"] = [[x, y] for x, y, _ in args.point]
            options["labels"] = [label for _, _, label in args.point]
    return settings, options


def run_text(args: argparse.Namespace) -> int:
    from PIL import Image

    from samkit.atomic import write_json_atomic
    from samkit.formats.png import save_mask_png
    from samkit.pipelines.text_to_mask import TextToMask
    from samkit.transforms import load_image
    from samkit.visualize import draw_overlay

    if uses_engine(args):
        return _text_with_engine(args)
    if args.restart:
        raise UsageError("--restart applies to --engine (one image writes fresh results each run)")
    settings, options = _strategy_settings(args)
    out = check_out_folder(args.out)
    image = load_image(args.image)
    segmenter = None
    if args.strategy != "sam3":
        segmenter = load_segmenter(args)
    else:
        args.model_source = None
    pipeline = TextToMask(segmenter, strategy=args.strategy, min_text_score=args.min_text_score,
                          max_masks=args.max_masks, **settings)
    result = pipeline(image, list(args.phrases), **options)
    out.mkdir(parents=True, exist_ok=True)
    remove_earlier_masks(out)
    rles, boxes, areas = result.to_rle(), result.boxes()[:, 0], result.areas()[:, 0]
    masks, lines = [], []
    for i, meta in enumerate(result.meta):
        save_mask_png(result.masks[i, 0], out / f"mask_{i}.png")
        x0, y0, x1, y1 = boxes[i].tolist()
        plain = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None), list))}
        masks.append({"index": i, "phrase": meta.get("phrase"), "text_score": meta.get("text_score"),
                      "score": float(result.scores[i, 0]), "area": int(areas[i]), "bbox": [x0, y0, x1 - x0, y1 - y0],
                      "file": f"mask_{i}.png", "rle": rles[i][0], "meta": plain})
        lines.append(f"mask {i}: {meta.get('phrase')!r}, text score {float(result.scores[i, 0]):.3f}, "
                     f"{int(areas[i])} px -> {out / f'mask_{i}.png'}")
    captions = [f"{m['phrase']} {m['score']:.2f}" for m in masks]
    overlay = draw_overlay(image, result.masks[:, 0], boxes=boxes if len(result) else None, captions=captions)
    Image.fromarray(overlay).save(out / "overlay.png")
    write_json_atomic(out / "result.json", {
        "image": str(args.image), "image_size": list(result.image_size), "phrases": list(args.phrases),
        "strategy": args.strategy, "model": args.model_source,
        "conventions": {"coordinates": "XY pixels", "bbox": "XYWH, pixel edges", "rle": "COCO, column-major"},
        "masks": masks}, indent=2)
    if not args.quiet:
        print("\n".join([f"{count(len(result), 'mask')} for {', '.join(map(repr, args.phrases))}", *lines,
                         f"overlay -> {out / 'overlay.png'}", f"scores and RLE -> {out / 'result.json'}"]))
    return 0


def _text_with_engine(args: argparse.Namespace) -> int:
    from samkit.engine import TextTask

    if args.strategy not in _ENGINE_STRATEGIES:
        raise UsageError(f"--engine runs --strategy {' or '.join(_ENGINE_STRATEGIES)}; {args.strategy} holds a loaded "
                         "CLIP model: use samkit.engine.TextTask from Python")
    settings, _ = _strategy_settings(args)
    settings.pop("device", None)  # the engine places the model on each worker's device
    model = None if args.strategy == "sam3" else resolve_model_source(args.model)
    task = TextTask(model, list(args.phrases), strategy=args.strategy, strategy_settings=settings,
                    min_text_score=args.min_text_score, max_masks=args.max_masks,
                    dtype=precision_dtype_name(args.precision))
    args.input = args.image
    return run_engine_job(args, task)
