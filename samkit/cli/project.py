"""``samkit project ...``: annotation projects (:mod:`samkit.engine.projects`).

    samkit project init photos/                      # photos/samkit_project.sqlite
    samkit project import photos/ photos/ more.jpg   # images (folders searched recursively)
    samkit project import photos/ instances.json     # a COCO file: images and their masks
    samkit project status photos/ [--json]
    samkit project export photos/ --format coco --out photos.json
    samkit project export photos/ --format sa1b --out sa1b/

The stage commands (``prefill``, ``auto``, ``retrain``) live in :mod:`samkit.cli.project_stages`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from samkit.cli import project_stages
from samkit.cli.common import UsageError, count, open_project, project_parser

__all__ = ["add_commands", "run_export", "run_import", "run_init", "run_status"]


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the ``project`` command group: init, import, status, export and the stage commands."""
    from samkit.engine.projects import EXPORT_FORMATS, STATUSES

    group = commands.add_parser("project", parents=parents, help="annotation projects: images, masks, stages",
                                description="Annotation projects for the data engine: one SQLite file beside the "
                                            "images holding every mask, its stage, source, author and history.")
    kinds = group.add_subparsers(dest="project_command", metavar="ACTION", required=True)

    p = project_parser(kinds, "init", parents, "create a project in DIR", run_init)
    p.add_argument("--name", help="the project's name (default: the folder's name)")

    p = project_parser(kinds, "import", parents, "add images (files, folders) or a COCO file's images and masks",
                       run_import)
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="image files, folders (searched recursively) or COCO instances .json files")
    p.add_argument("--images-root", metavar="DIR", help="folder of a COCO file's file_name entries "
                                                        "(default: the JSON's folder)")
    p.add_argument("--no-recursive", action="store_true", help="do not search sub-folders")
    p.add_argument("--author", default="import", help="author recorded for imported masks (default: import)")

    p = project_parser(kinds, "status", parents, "per-stage counts, masks per image, seconds per mask", run_status)
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object")

    p = project_parser(kinds, "export", parents, "write the masks as COCO (one JSON) or SA-1B (a folder)", run_export)
    p.add_argument("--format", required=True, metavar="FORMAT", help=f"one of {', '.join(EXPORT_FORMATS)}")
    p.add_argument("--out", required=True, metavar="PATH", help="the COCO .json file or the SA-1B folder")
    p.add_argument("--status", default="accepted", metavar="STATUS",
                   help=f"export annotations with this status: {', '.join(STATUSES)} or any (default: accepted)")

    # -- stage commands (prefill, auto, retrain) are registered by samkit.cli.project_stages --
    project_stages.add_stage_commands(kinds, parents)


def run_init(args: argparse.Namespace) -> int:
    from samkit.engine.projects import Project

    project = Project.init(args.project, name=args.name)
    project.close()
    if not args.quiet:
        print(f"created project {args.name or project.root.name} in {project.path}")
    return 0


def _report_skipped(skipped: list[tuple[str, str]]) -> None:
    for path, reason in skipped:
        sys.stderr.write(f"samkit: skipped {path}: {reason}\n")


def run_import(args: argparse.Namespace) -> int:
    missing = [s for s in args.sources if not Path(s).exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    with open_project(args) as project:
        before = len(project.annotations())
        added, skipped = [], []
        images = [s for s in args.sources if not s.lower().endswith(".json")]
        for source in args.sources:
            if source.lower().endswith(".json"):
                report = project.import_coco(source, images_root=args.images_root, author=args.author)
                added += report.added
                skipped += report.skipped
        if images:
            report = project.add_images(images, recursive=not args.no_recursive)
            added += report.added
            skipped += report.skipped
        masks = len(project.annotations()) - before
    _report_skipped(skipped)
    if not args.quiet:
        print(f"added {count(len(added), 'image')} and {count(masks, 'mask')}; skipped {len(skipped)}")
    return 0 if added or not skipped else 1


def status_lines(status: Any) -> list[str]:
    """The lines ``samkit project status`` prints for a :class:`~samkit.engine.projects.ProjectStatus`."""
    seconds = status.median_seconds_per_mask
    stages = ", ".join(f"stage {k}: {v}" for k, v in sorted(status.accepted_per_stage.items()))
    return [f"images: {status.images} ({status.annotated_images} annotated, {status.done_images} marked done)",
            f"accepted masks: {status.accepted} ({stages})",
            f"pending: {status.pending}, rejected: {status.rejected}, withdrawn: {status.withdrawn}",
            f"masks per annotated image: {status.masks_per_image:.2f}",
            f"median seconds per mask: {'-' if seconds is None else f'{seconds:.1f}'}",
            f"model version: {status.model_version or '-'}"]


def run_status(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        status = project.status()
        name = project.name
    if args.json:
        print(json.dumps(dict(status.to_dict(), project=name, path=str(Path(args.project).resolve()))))
    else:
        print(f"project {name} ({Path(args.project).resolve()})")
        print("\n".join(status_lines(status)))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from samkit.engine.projects import EXPORT_FORMATS, STATUSES

    if args.format not in EXPORT_FORMATS:
        raise UsageError(f"--format expects one of {', '.join(EXPORT_FORMATS)}, got {args.format!r}")
    if args.status not in (*STATUSES, "any"):
        raise UsageError(f"--status expects one of {', '.join(STATUSES)} or any, got {args.status!r}")
    out = Path(args.out)
    if args.format == "coco" and out.is_dir():
        raise UsageError(f"--out {out} is a folder; the COCO export is one .json file")
    if args.format == "sa1b" and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; the SA-1B export is a folder")
    with open_project(args) as project:
        written = project.export(out, format=args.format, status=args.status)
        masks = len(project.annotations(status=None if args.status == "any" else args.status))
    if not args.quiet:
        print(f"wrote {count(masks, 'mask')} ({args.format}) to {written}")
    return 0
