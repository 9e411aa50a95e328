"""What every ``samkit`` command shares: argument types, the model, the progress bar, messages.

Front-end code: anything here may import the rest of samkit; nothing outside the front ends
(:mod:`samkit.cli`, the demos) imports it.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from samkit.precision import PRECISIONS

__all__ = ["MODEL_ENV", "PRECISIONS", "Progress", "UsageError", "box_arg", "check_out_folder", "comma_list", "count",
           "device_arg", "everything_presets", "find_model_source", "load_segmenter", "open_project", "point_arg",
           "positive_int", "precision_dtype", "precision_dtype_name", "project_parser", "remove_earlier_masks",
           "resolve_model_source", "select_device", "source_id", "unit_float"]

logger = logging.getLogger(__name__)

MODEL_ENV = "SAMKIT_MODEL"
# Mask files the commands write into an --out folder: mask_<prompt>.png and mask_<prompt>_<output>.png.
MASK_FILE = re.compile(r"mask_\d+(_\d+)?\.png")


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
def find_model_source(model: str | os.PathLike | None = None) -> str | None:
    """``model``, else ``$SAMKIT_MODEL``, else the first known model already cached; None when none."""
    if model:
        return str(model)
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    from samkit.weights import PRETRAINED_WEIGHTS, cache_dir

    for name, weights in PRETRAINED_WEIGHTS.items():
        if (cache_dir() / weights.file_name).is_file():
            logger.info("using the cached model %s", name)
            return name
    return None


def resolve_model_source(model: str | None) -> str:
    """:func:`find_model_source`, or a :class:`UsageError` saying how to get a model."""
    source = find_model_source(model)
    if source is not None:
        return source
    from samkit.weights import PRETRAINED_WEIGHTS, cache_dir

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


def precision_dtype_name(precision: str) -> str | None:
    """The dtype name of a ``--precision`` choice for ``load_model(dtype=...)``; None for fp32."""
    return PRECISIONS[precision]


def precision_dtype(precision: str) -> Any:
    """The torch dtype of a ``--precision`` choice (:data:`samkit.precision.PRECISIONS`); None for fp32."""
    import torch

    name = PRECISIONS[precision]
    return None if name is None else getattr(torch, name)


def load_segmenter(args: argparse.Namespace) -> Any:
    """A :class:`samkit.Segmenter` for the global ``--device``/``--precision`` and ``args.model``."""
    import samkit

    source = resolve_model_source(getattr(args, "model", None))
    dtype = precision_dtype(args.precision)
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


def everything_presets() -> list[str]:
    """The segment-everything presets the commands offer: :data:`samkit.pipelines.PRESETS` without
    ``edges`` (settings for edge maps, which these commands do not write)."""
    from samkit.pipelines import PRESETS

    return [name for name in PRESETS if name != "edges"]


def count(n: int, noun: str) -> str:
    """``"1 mask"``, ``"3 masks"``: a number with its noun, plural unless it is one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def comma_list(text: str | None, option: str) -> list[str] | None:
    """Comma-separated names of ``option`` as a list (None when not given)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"{option} expects comma-separated names, got {text!r}")
    return items


def source_id(source: str) -> str:
    """A model or detector source as stored in a run's settings: existing paths made absolute."""
    return os.path.abspath(source) if os.path.exists(source) else source


def check_out_folder(out: str | os.PathLike) -> Path:
    """``--out DIR`` as a path, checked to be a folder or absent (it is created when written)."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {folder} exists and is not a folder")
    return folder


def remove_earlier_masks(folder: Path) -> int:
    """Delete the mask files an earlier run wrote into ``folder``; returns how many.

    Only files named like the commands' masks (``mask_<i>.png``, ``mask_<i>_<k>.png``) are
    removed, so a rerun with fewer masks leaves none of the earlier run's behind and other
    files stay.
    """
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.is_file() and MASK_FILE.fullmatch(p.name)]
    for path in stale:
        path.unlink()
    if stale:
        logger.info("removed %d mask files of an earlier run from %s", len(stale), folder)
    return len(stale)


# -- annotation projects (samkit project ...) ----------------------------------------------------------
def project_parser(kinds: Any, name: str, parents: list[argparse.ArgumentParser], help: str,
                   run: Callable[[argparse.Namespace], int] | None = None, *, description: str | None = None
                   ) -> argparse.ArgumentParser:
    """Add ``samkit project NAME DIR ...``: a sub-parser whose first argument is the project folder
    (``args.project``; open it with :func:`open_project`) and which runs ``run(args)`` (when None,
    the caller calls ``p.set_defaults(func=..., parser=p)``); the caller adds the other arguments."""
    p = kinds.add_parser(name, parents=parents, help=help, description=description or help)
    p.add_argument("project", metavar="DIR", help="the project folder (holding samkit_project.sqlite)")
    if run is not None:
        p.set_defaults(func=run, parser=p)
    return p


def open_project(args: argparse.Namespace) -> Any:
    """The project of ``args.project``; a missing folder or database is a :class:`UsageError`."""
    from samkit.engine.projects import DB_NAME, Project

    folder = Path(args.project)
    if not folder.exists():
        raise UsageError(f"project folder {folder} does not exist; create it with `samkit project init {folder}`")
    if folder.is_dir() and not (folder / DB_NAME).is_file():
        raise UsageError(f"{folder} is not a samkit project (no {DB_NAME}); create one with "
                         f"`samkit project init {folder}`")
    return Project.open(folder)
