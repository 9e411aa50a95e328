"""Gaze adapter: raw eye-tracker samples -> fixations -> one point prompt per video frame.

An eye tracker (screen-based, or a head-mounted one with a scene camera) reports where a person
looks. A *fixation* (gaze resting on one spot for 100 ms or more) says which object they attend
to, so its centroid is a good foreground point prompt for SAM on the frames it spans.

Conventions used throughout this module:

* ``samples`` is an (M, 3) or (M, 4) float array of ``t, x, y[, confidence]``; ``t`` in seconds
  (any origin, finite and non-decreasing), one row per tracker sample.
* ``coordinates="pixels"``: x, y are XY pixels of the scene frame (origin top-left, y down).
  ``coordinates="normalized"``: x, y in [0, 1] with the same top-left origin, so pixel
  ``X = x * W`` and ``Y = y * H`` for ``frame_size=(H, W)``. Pupil Labs' normalized coordinates
  have their origin at the *bottom*-left: pass ``1 - y`` for them.
* Thresholds are in the units of ``coordinates``: ``dispersion_threshold`` in pixels or
  normalized units, ``velocity_threshold`` in pixels or normalized units per second. Their
  defaults (None) resolve to :data:`DEFAULT_DISPERSION` / :data:`DEFAULT_VELOCITY`.

Example:
    >>> t = np.arange(100) / 250.0                          # 0.4 s of gaze at 250 Hz
    >>> samples = np.stack([t, np.full(100, 320.0), np.full(100, 240.0)], axis=1)
    >>> fixations = detect_fixations(samples)
    >>> len(fixations), float(fixations.x[0])
    (1, 320.0)
    >>> prompts = fixations_to_prompts(fixations, [0.1, 0.9])
    >>> prompts[0].points.tolist(), prompts[1]
    ([[[320.0, 240.0]]], None)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from samkit.prompts import Prompts

from .fixations import (DEFAULT_DISPERSION, DEFAULT_VELOCITY, Fixations, check_coordinates, check_frame_size,
                        check_positive, detect_fixations, points_inside, resolve_detection_settings)

__all__ = [
    "DEFAULT_DISPERSION",
    "DEFAULT_VELOCITY",
    "Fixations",
    "GazeAdapter",
    "detect_fixations",
    "fixations_to_prompts",
]

logger = logging.getLogger(__name__)


def fixations_to_prompts(fixations: Fixations, frame_times: Any, *, tolerance: float = 0.02,
                         frame_size: tuple[int, int] | None = None,
                         coordinates: str | None = None, negative_from_previous: bool = False,
                         min_negative_distance: float = 50.0) -> list[Prompts | None]:
    """One point prompt per video frame from the fixation active at the frame's time.

    A fixation is active at ``t`` when ``start - tolerance <= t <= end + tolerance``; when
    several are, the one whose ``[start, end]`` is nearest to ``t`` wins (the earliest on a
    tie). Its centroid becomes a foreground point (label 1). With ``negative_from_previous``,
    the fixation just before it in time is added as a background point (label 0) when it lies
    at least ``min_negative_distance`` pixels away (the person looked away from it, so it is
    probably another object).

    Args:
        fixations: from :func:`detect_fixations` or built by hand.
        frame_times: (T,) frame timestamps in seconds, on the gaze clock, in any order.
        tolerance: seconds by which a fixation's span is widened on both sides.
        frame_size: ``(H, W)`` of the frames. Required for normalized coordinates
            (``X = x * W``, ``Y = y * H``). When given, a fixation whose centroid lies outside
            the frame yields no prompt, and an outside previous fixation no background point.
        coordinates: units of the fixations; None takes ``fixations.coordinates``. A value
            that disagrees with ``fixations.coordinates`` is an error.
        negative_from_previous: add the previous fixation as a background point.
        min_negative_distance: pixels; closer previous fixations are not used as background.

    Returns:
        A list of length T: None for frames without an active fixation, else a
        :class:`~samkit.prompts.Prompts` with one prompt whose points are (1, P, 2) XY pixels
        (P = 1, or 2 with the background point) and whose meta holds ``source="gaze"``,
        ``fixation_index`` (into ``fixations``), ``fixation_start``, ``fixation_end``,
        ``frame_index``, ``frame_time`` and, with a background point,
        ``negative_fixation_index``.

    Example:
        >>> fx = Fixations(start=[0.0, 0.5], end=[0.3, 0.8], x=[0.25, 0.75], y=[0.5, 0.5],
        ...                coordinates="normalized")
        >>> out = fixations_to_prompts(fx, [0.6], frame_size=(480, 640), negative_from_previous=True)
        >>> out[0].points.tolist(), out[0].labels.tolist()
        ([[[480.0, 240.0], [160.0, 240.0]]], [[1, 0]])
    """
    if not isinstance(fixations, Fixations):
        raise TypeError(f"fixations must be Fixations, got {type(fixations).__name__}")
    if coordinates is None:
        coordinates = fixations.coordinates
    check_coordinates(coordinates)
    if coordinates != fixations.coordinates:
        raise ValueError(f"coordinates={coordinates!r} disagrees with fixations.coordinates="
                         f"{fixations.coordinates!r}")
    tolerance = check_positive("tolerance", tolerance, allow_zero=True)
    min_negative_distance = check_positive("min_negative_distance", min_negative_distance,
                                      allow_zero=True)
    size = check_frame_size(frame_size)
    if coordinates == "normalized" and size is None:
        raise ValueError("frame_size=(H, W) is required to turn normalized gaze into pixels, "
                         "got None")
    times = np.asarray(frame_times, dtype=np.float64)
    if times.ndim != 1:
        raise ValueError(f"frame_times must have shape (T,), got {times.shape}")
    if not np.all(np.isfinite(times)):
        raise ValueError("frame_times must be finite, got NaN or infinite values")

    order = np.argsort(fixations.start, kind="stable")
    start, end = fixations.start[order], fixations.end[order]
    px, py = fixations.x[order], fixations.y[order]
    if coordinates == "normalized":
        px, py = px * size[1], py * size[0]
    inside = np.ones(len(order), bool) if size is None else points_inside(px, py, size, "pixels")
    # fixation k is active at t when lower[k] <= t <= end[k] + tolerance; the running max of the
    # ends keeps the search bounds valid for overlapping fixations
    lower = start - tolerance
    reach = (np.maximum.accumulate(end) if len(order) else end) + tolerance

    prompts: list[Prompts | None] = []
    outside = 0
    for frame_index, t in enumerate(times.tolist()):
        lo = int(np.searchsorted(reach, t, side="left"))
        hi = int(np.searchsorted(lower, t, side="right"))
        candidates = np.arange(lo, hi)
        candidates = candidates[end[candidates] + tolerance >= t]
        if candidates.size == 0:
            prompts.append(None)
            continue
        gap = np.maximum(np.maximum(start[candidates] - t, t - end[candidates]), 0.0)
        k = int(candidates[np.argmin(gap)])
        if not inside[k]:
            outside += 1
            prompts.append(None)
            continue
        points, labels = [[px[k], py[k]]], [1]
        meta = {"source": "gaze", "fixation_index": int(order[k]),
                "fixation_start": float(start[k]), "fixation_end": float(end[k]),
                "frame_index": frame_index, "frame_time": float(t)}
        if negative_from_previous and k > 0 and inside[k - 1] and \
                np.hypot(px[k - 1] - px[k], py[k - 1] - py[k]) >= min_negative_distance:
            points.append([px[k - 1], py[k - 1]])
            labels.append(0)
            meta["negative_fixation_index"] = int(order[k - 1])
        prompts.append(Prompts(points=[points], labels=[labels], meta=[meta]))
    if outside:
        logger.info("%d frames had their fixation outside the frame and got no prompt", outside)
    return prompts


_DETECTION_SETTINGS = ("method", "dispersion_threshold", "velocity_threshold", "min_duration",
                       "min_confidence", "max_gap", "smoothing", "coordinates", "frame_size")


@dataclass(kw_only=True)
class GazeAdapter:
    """Settings for :func:`detect_fixations` and :func:`fixations_to_prompts`, same defaults.

    Example:
        >>> adapter = GazeAdapter(method="ivt", frame_size=(1080, 1920))
        >>> prompts = adapter(samples, frame_times)     # doctest: +SKIP
    """

    method: str = "idt"
    dispersion_threshold: float | None = None
    velocity_threshold: float | None = None
    min_duration: float = 0.1
    min_confidence: float = 0.6
    max_gap: float = 0.075
    smoothing: int = 1
    coordinates: str = "pixels"
    frame_size: tuple[int, int] | None = None
    tolerance: float = 0.02
    negative_from_previous: bool = False
    min_negative_distance: float = 50.0

    def __post_init__(self) -> None:
        resolve_detection_settings(self.method, self.dispersion_threshold,
                                    self.velocity_threshold, self.min_duration,
                                    self.min_confidence, self.max_gap, self.smoothing,
                                    self.coordinates)
        check_frame_size(self.frame_size)
        check_positive("tolerance", self.tolerance, allow_zero=True)

    def detect(self, samples: Any) -> Fixations:
        """:func:`detect_fixations` with these settings."""
        return detect_fixations(samples, **{k: getattr(self, k) for k in _DETECTION_SETTINGS})

    def to_prompts(self, fixations: Fixations, frame_times: Any) -> list[Prompts | None]:
        """:func:`fixations_to_prompts` with these settings."""
        return fixations_to_prompts(
            fixations, frame_times, tolerance=self.tolerance, frame_size=self.frame_size,
            coordinates=self.coordinates, negative_from_previous=self.negative_from_previous,
            min_negative_distance=self.min_negative_distance)

    def __call__(self, samples: Any, frame_times: Any) -> list[Prompts | None]:
        """Detect fixations in ``samples`` and return one prompt (or None) per frame time."""
        return self.to_prompts(self.detect(samples), frame_times)
