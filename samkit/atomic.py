"""Atomic file writes: a reader never sees a half-written output file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["write_json_atomic"]


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int | None = None,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write JSON to a hidden temporary file beside ``path``, then rename it over ``path``.

    An interrupted write leaves ``path`` as it was (absent or complete), never half-written.
    ``default`` converts objects json cannot (as in :func:`json.dump`).
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(payload, file, indent=indent, default=default)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path
