"""Detectors for detect-then-segment jobs: a spec (name, path or object) to a detector.

:func:`load_detector` is the one place a job turns a detector spec into a detector, inside each
worker (so weights are loaded where they run); it defers to
:func:`samkit.adapters.registry.load_detector`, whose rules recognise the spec: a YOLO file or
official name, a transformers detector folder or hub id (zero-shot with ``queries``), a built
detector, or a callable ``image -> Prompts | Detections | (boxes, scores, labels)``. A spec that
travels to Ray workers must be picklable (a module-level function or a class instance).
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["check_detector", "describe_detector", "detector_categories", "load_detector"]


def check_detector(spec: Any) -> None:
    """Validate a spec without loading anything (what the driver can check before a job starts).

    Raises:
        FileNotFoundError, ValueError: a name or path that names no detector.
        TypeError: neither a name, a path, nor a detector object or callable.
    """
    if isinstance(spec, (str, os.PathLike)):
        from samkit.adapters.registry import detector_family

        detector_family(os.fspath(spec))
    elif not callable(spec) and not hasattr(spec, "predict"):
        raise TypeError(f"detector must be a name, a path or a detector object/callable, got {type(spec).__name__}")


def load_detector(spec: Any, *, device: str | None = None, **options: Any) -> Any:
    """A detector from a spec; ``options`` go to :func:`samkit.adapters.registry.load_detector`
    (``threshold``, ``classes``, ``queries``, family options such as ``max_det``).

    ``device`` applies to detectors loaded from a name or path; a built detector or callable
    runs where it is.
    """
    from samkit.adapters.registry import load_detector as registry_load

    if isinstance(spec, (str, os.PathLike)):
        return registry_load(spec, device=device, **options)
    return registry_load(spec, **options)


def detector_categories(detector: Any) -> list[dict[str, Any]] | None:
    """COCO categories of a loaded detector, or None when it names none (a plain callable: the
    categories then come from the labels it returns, at merge time)."""
    categories = getattr(detector, "categories", None)
    return [dict(c) for c in categories] if categories else None


def describe_detector(spec: Any) -> str:
    """A stable text id of a spec for a job's settings: existing paths absolute, objects by type."""
    if isinstance(spec, (str, os.PathLike)):
        spec = os.fspath(spec)
        return os.path.abspath(spec) if os.path.exists(spec) else spec
    target = spec if callable(spec) and hasattr(spec, "__qualname__") else type(spec)
    return f"{target.__module__}.{target.__qualname__}"
