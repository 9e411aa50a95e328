"""``--engine local|ray`` for the batch commands: per-image outputs and a manifest under ``--out DIR``.

Without ``--engine`` the batch commands write what they always did (one COCO file, or the
``--format sa1b`` folder). With it, :func:`samkit.engine.run_job` runs the same task in this
process (``local``) or on a Ray Data actor pool (``ray``; local cluster, or ``--address`` /
``RAY_ADDRESS``), writing one JSON per image plus ``manifest.jsonl``; reruns resume.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from samkit.cli.common import UsageError, count, positive_int

__all__ = ["add_engine_arguments", "run_engine_job", "uses_engine"]

_ENGINE_FLAGS = ("workers", "gpus_per_worker", "address", "batch_size", "merge_coco")


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine", "with --engine: one JSON per image and manifest.jsonl under "
                                                "--out DIR; reruns skip finished inputs")
    group.add_argument("--engine", choices=("local", "ray"), default=None,
                       help="local: this process; ray: a Ray Data actor pool (pip install samkit[ray])")
    group.add_argument("--workers", type=positive_int, default=None, metavar="N", help="Ray actors (default 1)")
    group.add_argument("--gpus-per-worker", type=_non_negative_float, default=None, metavar="G",
                       help="GPUs per Ray actor (fractions share a GPU; default 0: CPUs)")
    group.add_argument("--address", default=None, metavar="ADDR",
                       help="an existing Ray cluster (auto, host:port, ray://host:port; default $RAY_ADDRESS, "
                            "else a local Ray)")
    group.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                       help="images per worker call; bounds worker memory (default 4)")
    group.add_argument("--merge-coco", default=None, metavar="FILE",
                       help="also write one COCO instances file of all results at the end")


def uses_engine(args: argparse.Namespace) -> bool:
    """True with ``--engine``; engine-only flags without it are a usage error."""
    if getattr(args, "engine", None) is not None:
        return True
    given = [f"--{name.replace('_', '-')}" for name in _ENGINE_FLAGS if getattr(args, name, None) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} need --engine local or --engine ray")
    return False


def run_engine_job(args: argparse.Namespace, task: Any) -> int:
    """Run ``task`` over ``args.input`` with the engine; 0 when every input succeeded, else 1."""
    from samkit.engine import TextProgress, run_job

    out = Path(args.out)
    if out.suffix.lower() == ".json":
        raise UsageError(f"--engine writes one JSON per image: --out must be a folder, got {args.out!r} "
                         "(use --merge-coco FILE for one COCO file)")
    if args.engine == "local" and (args.workers or 1) > 1:
        raise UsageError("--workers applies to --engine ray")
    summary = run_job(args.input, task, out, engine=args.engine, workers=args.workers or 1,
                      gpus_per_worker=args.gpus_per_worker or 0, batch_size=args.batch_size or 4,
                      address=args.address, restart=args.restart, merge_coco_path=args.merge_coco,
                      progress=None if args.quiet else TextProgress(), device=args.device)
    if not args.quiet:
        print(f"{count(summary.ok, 'image')} done, {count(summary.skipped, 'image')} skipped (done before), "
              f"{count(summary.errors, 'error')}; {count(summary.masks, 'mask')} written under {summary.out} "
              f"({summary.images_per_second:.2f} images/s); manifest {summary.manifest}"
              + (f"; COCO file {summary.merged}" if summary.merged else ""))
    if summary.errors:
        print(f"samkit: {count(summary.errors, 'input')} failed; their reasons are in {summary.manifest}",
              file=sys.stderr)
        return 1
    return 0
