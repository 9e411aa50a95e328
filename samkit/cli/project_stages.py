"""``samkit project prefill|auto|retrain``: the data-engine stages run over a project.

    samkit project prefill photos/ --detector yolov8n.pt [--min-score 0.5] [--model M]
    samkit project auto photos/ [--engine local|ray] [--workers N] [--model M] [--preset sa1b]
    samkit project retrain photos/ [--steps N] [--model M]

Without ``--model`` each command uses the project's current model version (``retrain`` then
continues it; with none registered, ``--model`` names the base checkpoint). The stages
themselves live in :mod:`samkit.engine.projects.stages`.

:func:`add_stage_commands` is called by :func:`samkit.cli.project.add_commands` with the
``project`` group's sub-parsers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from samkit.cli.common import UsageError, count, everything_presets, load_segmenter, open_project, positive_int, \
    project_parser, resolve_model_source, unit_float

__all__ = ["add_stage_commands", "run_auto", "run_prefill", "run_retrain"]

_MODEL_HELP = "checkpoint file, Hugging Face folder or known name (default: the project's current model version)"


def add_stage_commands(kinds: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``prefill``, ``auto`` and ``retrain`` on the ``project`` sub-parsers."""
    p = project_parser(kinds, "prefill", parents, "stage 2: detect then segment; store confident masks as "
                                                  "pending prefill for review", run_prefill)
    p.add_argument("--detector", required=True, metavar="NAME|PATH",
                   help="a detector of the registry: YOLO file or name, transformers folder or hub id")
    p.add_argument("--min-score", type=unit_float, default=0.5, metavar="S",
                   help="keep detections with a score >= S (default 0.5)")
    p.add_argument("--label", default=None, help="label stored on every mask (default: the detector's class)")
    p.add_argument("--model", metavar="NAME|PATH", help=_MODEL_HELP)

    p = project_parser(kinds, "auto", parents, "stage 3: segment everything on images without accepted masks; "
                                               "store the masks as accepted", run_auto)
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: a Ray Data actor pool (pip install samkit[ray])")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N", help="Ray actors (default 1)")
    p.add_argument("--address", default=None, metavar="ADDR", help="an existing Ray cluster (default: a local Ray)")
    p.add_argument("--preset", choices=everything_presets(), default="sa1b", help="segment-everything preset")
    p.add_argument("--points-per-side", type=positive_int, default=None, metavar="N",
                   help="override the preset's point grid")
    p.add_argument("--model", metavar="NAME|PATH", help=_MODEL_HELP)

    p = project_parser(kinds, "retrain", parents, "fine-tune on the accepted masks, report held-out mIoU before / "
                                                  "after, register the new model version", run_retrain)
    p.add_argument("--steps", type=positive_int, default=200, metavar="N", help="optimiser steps (default 200)")
    p.add_argument("--holdout", type=unit_float, default=0.2, metavar="F",
                   help="fraction of the annotated images held out for the measurement (default 0.2)")
    p.add_argument("--iterations", type=positive_int, default=None, metavar="K",
                   help="simulated prompting rounds per mask (default 11, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split and the training (default 0)")
    p.add_argument("--out", default=None, metavar="DIR", help="checkpoint folder (default: DIR/.samkit/models/...)")
    p.add_argument("--model", metavar="NAME|PATH",
                   help="base checkpoint when the project has no model version yet")


def _model(args: argparse.Namespace, project: Any) -> str:
    if args.model:
        return args.model
    current = project.current_model()
    return str(current.checkpoint) if current is not None else resolve_model_source(None)


def _report_skipped(skipped: list[tuple[str, str]], quiet: bool) -> None:
    for path, reason in skipped:
        if not reason.startswith(("already prefilled", "has accepted masks")):
            sys.stderr.write(f"samkit: skipped {path}: {reason}\n")
        elif not quiet:
            print(f"skipped {path}: {reason}")


def run_prefill(args: argparse.Namespace) -> int:
    from samkit.engine.projects.stages import prefill

    with open_project(args) as project:
        args.model = _model(args, project)
        segmenter = load_segmenter(args)
        report = prefill(project, segmenter, args.detector, min_score=args.min_score, label=args.label,
                         detector_options={"device": args.device} if args.device else None)
    _report_skipped(report.skipped, args.quiet)
    if not args.quiet:
        print(f"prefilled {count(len(report.processed), 'image')} with {count(len(report.added), 'pending mask')} "
              f"(stage 2, model {report.model_version or '-'})")
    return 1 if any(not r.startswith("already") for _, r in report.skipped) else 0


def run_auto(args: argparse.Namespace) -> int:
    from samkit.engine import TextProgress
    from samkit.engine.projects.stages import auto

    if args.engine == "local" and (args.workers != 1 or args.address):
        raise UsageError("--workers and --address apply to --engine ray")
    settings = {} if args.points_per_side is None else {"points_per_side": args.points_per_side}
    with open_project(args) as project:
        model = _model(args, project)
        report = auto(project, model, engine=args.engine, preset=args.preset, settings=settings,
                      workers=args.workers, address=args.address, device=args.device,
                      progress=None if args.quiet else TextProgress())
    _report_skipped(report.skipped, args.quiet)
    failed = [s for s in report.skipped if not s[1].startswith("has accepted masks")]
    if not args.quiet:
        print(f"auto: {count(len(report.added), 'accepted mask')} on {count(len(report.processed), 'image')} "
              f"(stage 3, model {report.model_version or '-'}); job folder {report.out}")
    return 1 if failed else 0


def run_retrain(args: argparse.Namespace) -> int:
    from samkit.engine.projects.stages import retrain

    if not 0 < args.holdout < 1:
        raise UsageError(f"--holdout expects a fraction strictly between 0 and 1, got {args.holdout}")
    with open_project(args) as project:
        current, base = project.current_model(), args.model
        if current is not None and base is not None:
            raise UsageError(f"the project's current model is {current.version} ({current.checkpoint}) and "
                             "retraining continues it; --model names the base only while no version is registered")
        if current is None and base is None:
            base = resolve_model_source(None)
        report = retrain(project, base=base, steps=args.steps, holdout=args.holdout, seed=args.seed, out=args.out,
                         device=args.device, prompt_iterations=args.iterations)
    if not args.quiet:
        b, a = report.before, report.after
        print(f"registered {report.version} (from {report.parent or 'the base checkpoint'}) at {report.checkpoint}")
        print(f"held-out mIoU on {count(len(report.held_out_images), 'image')} ({b['num_masks']} masks): "
              f"1 point {b['point_miou']:.3f} -> {a['point_miou']:.3f}, box {b['box_miou']:.3f} -> "
              f"{a['box_miou']:.3f}")
    return 0
