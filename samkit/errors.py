"""Exceptions shared by weight loading and downloading."""
from __future__ import annotations

__all__ = ["CheckpointError", "WeightsNotFoundError"]


class CheckpointError(ValueError):
    """A checkpoint is unreadable, unsafe, or does not match the architecture."""


class WeightsNotFoundError(FileNotFoundError):
    """The weights could not be found locally nor fetched."""
