"""The engine's runtime error (usage errors are ValueError, TypeError and FileNotFoundError)."""
from __future__ import annotations

__all__ = ["EngineError"]


class EngineError(RuntimeError):
    """A job could not run: Ray missing or unreachable, workers failing to start, a job aborted.

    The message says what happened and what to do; outputs already written stay valid, and a
    rerun of the same job resumes.
    """
