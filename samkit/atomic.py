"""Atomic file writes: a reader never sees a half-written output file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = ["atomic_file", "write_json_atomic", "write_text_atomic"]


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a hidden temporary file beside ``path``; on success it is renamed over ``path``.

    An interrupted or failed write leaves ``path`` as it was (absent or complete), never
    half-written. ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as file:
            yield file
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int | None = None,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write JSON atomically (:func:`atomic_file`); ``default`` as in :func:`json.dump`."""
    with atomic_file(path) as file:
        json.dump(payload, file, indent=indent, default=default)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as file:
        file.write(text)
    return Path(path)
