"""Job progress: the event a job reports after every input, and a text printer for front ends.

``run_job(..., progress=handler)`` calls ``handler(event)`` with a :class:`JobProgress` once
before the first result, after each input and once more at the end (``finished=True``).
:class:`TextProgress` prints one updating line to stderr; pass ``progress=None`` for silence.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import IO, Callable

__all__ = ["JobProgress", "ProgressHandler", "TextProgress"]


@dataclasses.dataclass(frozen=True)
class JobProgress:
    """Where a job stands.

    Attributes:
        done: inputs finished, skipped ones included.
        total: all inputs of the job.
        ok, errors, skipped: counts of this run (skipped: found done by an earlier run).
        elapsed: seconds since the job started running inputs.
        finished: the last event of the job.
    """

    done: int
    total: int
    ok: int
    errors: int
    skipped: int
    elapsed: float
    finished: bool = False

    @property
    def images_per_second(self) -> float:
        """Inputs processed by this run (not skipped) per second."""
        processed = self.ok + self.errors
        return processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate (None before the first result)."""
        rate = self.images_per_second
        return (self.total - self.done) / rate if rate > 0 else None


ProgressHandler = Callable[[JobProgress], None]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TextProgress:
    """Prints ``samkit engine: 120/1000 (12%) 3.4 img/s, 2 errors, 40 skipped, ETA 4:18``.

    Args:
        stream: where to write (default ``sys.stderr``).
        interval: seconds between updates (the first and last event always print).
        label: the line's prefix.
    """

    def __init__(self, stream: IO[str] | None = None, *, interval: float = 0.5, label: str = "samkit engine") -> None:
        self.stream, self.interval, self.label = stream, interval, label
        self._last = -float("inf")
        self._interactive: bool | None = None

    def line(self, event: JobProgress) -> str:
        """The text for one event."""
        percent = 100.0 * event.done / event.total if event.total else 100.0
        text = (f"{self.label}: {event.done}/{event.total} ({percent:.0f}%) {event.images_per_second:.2f} img/s, "
                f"{event.errors} error{'s' if event.errors != 1 else ''}, {event.skipped} skipped")
        if event.finished:
            return text + f", done in {_duration(event.elapsed)}"
        return text + f", ETA {_duration(event.eta_seconds)}"

    def __call__(self, event: JobProgress) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        now = time.monotonic()
        if not event.finished and now - self._last < self.interval:
            return
        self._last = now
        if self._interactive is None:
            self._interactive = bool(getattr(stream, "isatty", lambda: False)())
        if self._interactive:
            stream.write("\r\x1b[2K" + self.line(event) + ("\n" if event.finished else ""))
        else:
            stream.write(self.line(event) + "\n")
        stream.flush()
