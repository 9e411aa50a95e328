"""``samkit export onnx`` and ``samkit export embedding``: files for ONNX runtimes and browsers.

    samkit export onnx --model vit_b --out onnx/                 # decoder.onnx + encoder.onnx
    samkit export onnx --model vit_b --out onnx/ --decoder-only --quantize
    samkit export embedding photo.jpg --model vit_b --out photo.npy
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from samkit.cli.common import UsageError, check_out_folder, load_segmenter, positive_int

__all__ = ["add_commands", "run_export_embedding", "run_export_onnx"]


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``export onnx`` and ``export embedding`` on the ``samkit`` sub-parsers."""
    from samkit.export import DEFAULT_OPSET

    group = commands.add_parser("export", parents=parents, help="export ONNX files or an image embedding "
                                                                "(pip install samkit[onnx])",
                                description="Export a model to ONNX (Meta's decoder contract) or an image's "
                                            "embedding to .npy for a client-side decoder.")
    kinds = group.add_subparsers(dest="export_kind", metavar="KIND", required=True)

    p = kinds.add_parser("onnx", parents=parents, help="write DIR/decoder.onnx and DIR/encoder.onnx",
                         description="Write the prompt encoder + mask decoder (DIR/decoder.onnx, Meta's input and "
                                     "output names) and the image encoder (DIR/encoder.onnx, float32).")
    p.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created when absent)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--decoder-only", action="store_true", help="write decoder.onnx only")
    only.add_argument("--encoder-only", action="store_true", help="write encoder.onnx only")
    p.add_argument("--quantize", action="store_true",
                   help="also write decoder.quant.onnx / encoder.quant.onnx with uint8 weights "
                        "(onnxruntime dynamic quantization)")
    p.add_argument("--single-mask", action="store_true",
                   help="the decoder returns one mask per call (Meta's return_single_mask); default all four")
    p.add_argument("--hq-token-only", action="store_true",
                   help="HQ-SAM models: the decoder returns the HQ mask alone (default: HQ mask + SAM's)")
    p.add_argument("--preprocess", action="store_true",
                   help="the encoder takes an (H, W, 3) uint8 image and resizes, normalises and pads it itself")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, >= {DEFAULT_OPSET} (default: {DEFAULT_OPSET})")
    p.set_defaults(func=run_export_onnx, parser=p)

    e = kinds.add_parser("embedding", parents=parents, help="write an image's embedding to a .npy file",
                         description="Encode IMAGE and write its (1, C, g, g) float32 embedding to FILE.npy, "
                                     "the input of the web page and of ONNX decoder clients.")
    e.add_argument("image", metavar="IMAGE", help="image file")
    e.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
    e.add_argument("--out", required=True, metavar="FILE.npy", help="the .npy file to write")
    e.set_defaults(func=run_export_embedding, parser=e)


def run_export_onnx(args: argparse.Namespace) -> int:
    from samkit.export import DEFAULT_OPSET, export_onnx

    if args.opset < DEFAULT_OPSET:
        raise UsageError(f"--opset expects {DEFAULT_OPSET} or more (the exporter's lowest), got {args.opset}")
    if args.preprocess and args.decoder_only:
        raise UsageError("--preprocess changes the encoder's input; it cannot go with --decoder-only")
    folder = check_out_folder(args.out)
    model = load_segmenter(args).model
    if args.hq_token_only and getattr(model.config, "decoder_kind", None) != "hq":
        raise UsageError(f"--hq-token-only applies to HQ-SAM models; {args.model_source} has decoder kind "
                         f"{getattr(model.config, 'decoder_kind', None)!r}")
    written = export_onnx(model, folder, decoder=not args.encoder_only, encoder=not args.decoder_only,
                          quantize=args.quantize, single_mask=args.single_mask, preprocess=args.preprocess,
                          opset=args.opset, hq_token_only=args.hq_token_only or None)
    if not args.quiet:
        for path in written.values():
            size = path.stat().st_size + (path.with_name(path.name + ".data").stat().st_size
                                          if path.with_name(path.name + ".data").is_file() else 0)
            print(f"wrote {path} ({size / 1e6:.2f} MB)")
    return 0


def run_export_embedding(args: argparse.Namespace) -> int:
    from samkit.export import write_embedding

    out = Path(args.out)
    if out.suffix.lower() != ".npy":
        raise UsageError(f"--out expects a .npy file name, got {args.out!r}")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; expected a .npy file name")
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"image file not found: {args.image}")
    out.parent.mkdir(parents=True, exist_ok=True)
    embedding = write_embedding(load_segmenter(args), args.image, out)
    if not args.quiet:
        print(f"wrote {out}: embedding {tuple(embedding.features.shape)} float32 of a "
              f"{embedding.original_size[1]}x{embedding.original_size[0]} image")
    return 0
