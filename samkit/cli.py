"""The ``samkit`` command line.

    samkit segment photo.jpg --point 500,375 --point 620,400,0 --model vit_b --out masks/
    samkit everything photos/ --preset sa1b --out photos.json
    samkit detect-segment photos/ --detector yolov8n.pt --out instances.json
    samkit text photo.jpg "a wheel" --strategy grounded --detector google/owlv2-base-patch16-ensemble --out wheels/
    samkit models
    samkit download vit_b
    samkit demo --model vit_b

Global options (before or after the command): ``--device``, ``--precision fp32|bf16|fp16``,
``--quiet`` (no progress bar, no summary lines) and ``--debug`` (tracebacks, debug logging).

Exit codes: 0 success; 1 runtime error (missing file, unreadable checkpoint, failed download,
...), reported on stderr in one line without a traceback; 2 bad usage; 130 interrupted.

The model comes from ``--model NAME|PATH``, else ``$SAMKIT_MODEL``, else the first known model
(``vit_b``, ``vit_l``, ``vit_h``) already in the cache folder; nothing is downloaded unless a
known name is asked for (by ``--model``, ``$SAMKIT_MODEL`` or ``samkit download``).

The commands use samkit's public API only; they live in :mod:`samkit.cli_commands` and
:mod:`samkit.cli_batch` and :mod:`samkit.cli_text`.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from typing import Any, Callable, Sequence, TextIO

__all__ = ["UsageError", "Progress", "build_parser", "main", "resolve_model_source", "load_segmenter"]

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
MODEL_ENV = "SAMKIT_MODEL"


class UsageError(Exception):
    """A command was given arguments that cannot work together (exit status 2)."""


# -- argument types ------------------------------------------------------------------------------
def _numbers(text: str, what: str, counts: Sequence[int]) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in counts or not all(v == v and abs(v) != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def point_arg(text: str) -> tuple[float, float, int]:
    """``X,Y`` or ``X,Y,LABEL`` (label 1 foreground, 0 background) -> (x, y, label)."""
    values = _numbers(text, "X,Y or X,Y,LABEL with LABEL 1 (foreground) or 0 (background)", (2, 3))
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"expected LABEL 1 (foreground) or 0 (background), got {text!r}")
    return values[0], values[1], int(label)


def box_arg(text: str) -> tuple[float, float, float, float]:
    """``X0,Y0,X1,Y1`` (XYXY pixels, X1 > X0 and Y1 > Y0) -> a tuple."""
    x0, y0, x1, y1 = _numbers(text, "X0,Y0,X1,Y1 (four numbers)", (4,))
    if x1 <= x0 or y1 <= y0:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 with X1 > X0 and Y1 > Y0, got {text!r}")
    return x0, y0, x1, y1


def device_arg(text: str) -> str:
    """A torch device string such as ``cpu``, ``cuda``, ``cuda:1`` or ``mps``."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda, cuda:1 or mps, "
                                         f"got {text!r}") from None
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


# -- shared helpers for the commands ---------------------------------------------------------------
def resolve_model_source(model: str | None) -> str:
    """``--model``, else ``$SAMKIT_MODEL``, else the first known model already cached."""
    if model:
        return model
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    from samkit.weights import PRETRAINED_WEIGHTS, cache_dir

    for name, weights in PRETRAINED_WEIGHTS.items():
        if (cache_dir() / weights.file_name).is_file():
            logger.info("using the cached model %s", name)
            return name
    raise UsageError(f"no model given and none cached in {cache_dir()}: pass --model NAME|PATH (a checkpoint file, "
                     f"a Hugging Face folder or one of {sorted(PRETRAINED_WEIGHTS)}), set {MODEL_ENV}, "
                     "or run `samkit download vit_b`")


def select_device(device: str | None) -> str:
    """The requested device, checked to exist; default ``cuda`` when available, else ``cpu``."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} needs CUDA, but this torch ({torch.__version__}) sees no CUDA device; "
                           "use --device cpu")
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise RuntimeError(f"--device {device} needs Apple's MPS, which is not available here; use --device cpu")
    return device


def load_segmenter(args: argparse.Namespace) -> Any:
    """A :class:`samkit.Segmenter` for the global ``--device``/``--precision`` and ``args.model``."""
    import torch

    import samkit

    source = resolve_model_source(getattr(args, "model", None))
    dtype_name = PRECISIONS[args.precision]
    dtype = None if dtype_name is None else getattr(torch, dtype_name)
    device = select_device(args.device)
    started = time.perf_counter()
    progress = not args.quiet and importlib.util.find_spec("tqdm") is not None  # a download's bar
    model = samkit.load_model(source, device=device, dtype=dtype, progress=progress)
    logger.info("loaded %s on %s (%s) in %.1f s", source, device, args.precision, time.perf_counter() - started)
    args.model_source = source
    return samkit.Segmenter(model)


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per step otherwise.

    Args:
        total: number of steps.
        label: shown before the counter.
        enabled: False draws nothing (``--quiet``).
        stream: where to draw; default ``sys.stderr``.
    """

    def __init__(self, total: int, label: str, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.perf_counter()

    def step(self, note: str = "", *, skipped: bool = False) -> None:
        """Count one step done; ``note`` names it (e.g. the image file)."""
        self.done += 1
        if not self.enabled:
            return
        suffix = f" {note}" + (" (already done)" if skipped else "")
        if self._tty:
            width = 24
            filled = round(width * self.done / max(self.total, 1))
            elapsed = time.perf_counter() - self._started
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                              f"{elapsed:.0f}s{suffix[:60]:<60}")
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{self.label} [{self.done}/{self.total}]{suffix}\n")
        self.stream.flush()


# -- parser --------------------------------------------------------------------------------------
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
    from samkit import cli_batch, cli_commands, cli_text

    parser = argparse.ArgumentParser(
        prog="samkit", description="Segment Anything from the command line.",
        epilog="Run `samkit COMMAND --help` for a command's options. Exit codes: 0 ok, 1 runtime error, "
               "2 bad usage.")
    parser.add_argument("--version", action="version", version=f"samkit {__version__}")
    _add_global_options(parser, with_defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, with_defaults=False)
    for module in (cli_commands, cli_batch, cli_text):  # cli_text adds `text` only when its pipeline exists
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


if __name__ == "__main__":  # python -m samkit.cli: run the imported module's main, so its classes are the ones
    from samkit.cli import main as _main  # the commands raise (not this __main__ copy's)

    sys.exit(_main())
