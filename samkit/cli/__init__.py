"""The ``samkit`` command line.

    samkit segment photo.jpg --point 500,375 --point 620,400,0 --model vit_b --out masks/
    samkit everything photos/ --preset sa1b --out photos.json
    samkit detect-segment photos/ --detector yolov8n.pt --out instances.json
    samkit text photo.jpg "a wheel" --strategy grounded --detector google/owlv2-base-patch16-ensemble --out wheels/
    samkit models
    samkit download vit_b
    samkit demo --model vit_b

Run it as ``samkit``, ``python -m samkit`` or ``python -m samkit.cli``.

Global options (before or after the command): ``--device``, ``--precision fp32|bf16|fp16``,
``--quiet`` (no progress bar, no summary lines) and ``--debug`` (tracebacks, debug logging).

Exit codes: 0 success; 1 runtime error (missing file, unreadable checkpoint, failed download,
...), reported on stderr in one line without a traceback; 2 bad usage; 130 interrupted.

The model comes from ``--model NAME|PATH``, else ``$SAMKIT_MODEL``, else the first known model
(``vit_b``, ``vit_l``, ``vit_h``) already in the cache folder; nothing is downloaded unless a
known name is asked for (by ``--model``, ``$SAMKIT_MODEL`` or ``samkit download``).

One module per command group, each with ``add_commands(commands, parents)``:
:mod:`~samkit.cli.segment` (``segment``), :mod:`~samkit.cli.batch` (``everything``,
``detect-segment``; resumable outputs in :mod:`~samkit.cli.store`), :mod:`~samkit.cli.text`
(``text``), :mod:`~samkit.cli.models` (``models``, ``download``), :mod:`~samkit.cli.demo`
(``demo``); what they share is in :mod:`~samkit.cli.common`. The commands use samkit's public
API only.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence

from samkit.cli import batch, demo, eval, export, models, project, segment, serve, text
from samkit.cli.common import (
    PRECISIONS,
    Progress,
    UsageError,
    box_arg,
    device_arg,
    load_segmenter,
    point_arg,
    positive_int,
    resolve_model_source,
    select_device,
    unit_float,
)

__all__ = ["COMMAND_MODULES", "UsageError", "Progress", "build_parser", "main", "resolve_model_source",
           "load_segmenter", "PRECISIONS", "box_arg", "device_arg", "point_arg", "positive_int", "select_device",
           "unit_float"]

#: The command groups, in the order ``samkit --help`` lists them.
COMMAND_MODULES = (segment, models, demo, batch, text, export, eval, project, serve)


def _add_global_options(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    # The options are accepted before and after the command: the sub-parsers' copies default to
    # SUPPRESS so they only override what the main parser set when given.
    def default(value: Any) -> Any:
        return value if with_defaults else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument("--device", type=device_arg, default=default(None),
                       help="torch device: cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)")
    group.add_argument("--precision", choices=sorted(PRECISIONS), default=default("fp32"),
                       help="model precision (default: fp32)")
    group.add_argument("--quiet", "-q", action="store_true", default=default(False),
                       help="no progress bar and no summary lines")
    group.add_argument("--debug", action="store_true", default=default(False),
                       help="show tracebacks and debug logging")


def build_parser() -> argparse.ArgumentParser:
    """The ``samkit`` argument parser with every available command."""
    from samkit import __version__

    parser = argparse.ArgumentParser(
        prog="samkit", description="Segment Anything from the command line.",
        epilog="Run `samkit COMMAND --help` for a command's options. Exit codes: 0 ok, 1 runtime error, "
               "2 bad usage.")
    parser.add_argument("--version", action="version", version=f"samkit {__version__}")
    _add_global_options(parser, with_defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, with_defaults=False)
    for module in COMMAND_MODULES:  # text adds `text` only when its pipeline exists
        module.add_commands(commands, [common])
    return parser


def _configure_logging(args: argparse.Namespace) -> Callable[[], None]:
    """Send samkit's log records to stderr for this run; returns the function that undoes it."""
    package = logging.getLogger("samkit")
    saved = package.handlers[:], package.level, package.propagate
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("samkit: %(levelname)s: %(message)s"))
    package.handlers[:] = [handler]
    package.setLevel(logging.DEBUG if args.debug else logging.ERROR if args.quiet else logging.WARNING)
    package.propagate = False

    def restore() -> None:
        package.handlers[:], package.level, package.propagate = saved

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``samkit`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on bad usage
    restore_logging = _configure_logging(args)
    try:
        return _run(parser, args)
    finally:
        restore_logging()


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except UsageError as error:
        parser_for = getattr(args, "parser", parser)
        parser_for.print_usage(sys.stderr)
        sys.stderr.write(f"{parser_for.prog}: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write("samkit: interrupted\n")
        return 130
    except Exception as error:  # reported in one line; --debug shows the traceback
        if args.debug:
            raise
        expected = isinstance(error, (OSError, ValueError, TypeError, ImportError, RuntimeError, LookupError))
        message = str(error) or type(error).__name__
        if not expected:
            message = f"unexpected {type(error).__name__}: {message} (rerun with --debug for the traceback)"
        sys.stderr.write(f"samkit: error: {message}\n")
        return 1
