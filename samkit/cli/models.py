"""``samkit models`` (known checkpoints and the cache) and ``samkit download``."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any

__all__ = ["add_commands", "run_download", "run_models"]


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``models`` and ``download`` on the ``samkit`` sub-parsers."""
    from samkit.weights import PRETRAINED_WEIGHTS

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
