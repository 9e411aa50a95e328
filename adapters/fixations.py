"""Fixation detection: raw eye-tracker samples -> fixations (I-DT dispersion or I-VT velocity).

The first half of the gaze adapter (:mod:`samkit.adapters.gaze` turns fixations into point
prompts per video frame and re-exports everything here). The conventions for ``samples``,
``coordinates`` and thresholds are described in :mod:`samkit.adapters.gaze`.

Example (the gaze jumps at 0.5 s; I-VT splits the trace there):
    >>> t = np.arange(250) / 250.0                          # 1 s of gaze at 250 Hz
    >>> x = np.where(t < 0.5, 100.0, 500.0)
    >>> fixations = detect_fixations(np.stack([t, x, np.full(250, 80.0)], axis=1), "ivt")
    >>> fixations.x.tolist()
    [100.0, 500.0]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_DISPERSION", "DEFAULT_VELOCITY", "Fixations", "detect_fixations", "check_coordinates",
           "check_frame_size", "check_positive", "points_inside", "resolve_detection_settings"]

logger = logging.getLogger(__name__)

METHODS = ("idt", "ivt")
COORDINATES = ("pixels", "normalized")

#: I-DT dispersion threshold, (max x - min x) + (max y - min y), by coordinate system. 50 px is
#: about 1.25 degrees of visual angle on a 24-inch 1920-pixel screen seen from 60 cm.
DEFAULT_DISPERSION = {"pixels": 50.0, "normalized": 0.025}
#: I-VT speed threshold in units per second: about 30 degrees/s (Tobii's I-VT default) on the
#: same screen.
DEFAULT_VELOCITY = {"pixels": 1200.0, "normalized": 0.6}

# Durations and gaps are compared with this slack (seconds) so that float timestamps such as
# k / 250 do not make a 100 ms window count as 99.999999 ms.
_TIME_EPS = 1e-9


@dataclass
class Fixations:
    """``F`` fixations, sorted by start time.

    Attributes:
        start: float64 (F,) time in seconds of the first sample of each fixation.
        end: float64 (F,) time of the last sample (so ``duration = end - start``).
        x: float64 (F,) centroid x (mean of the raw positions of its samples).
        y: float64 (F,) centroid y.
        n_samples: int64 (F,) number of samples in each fixation (0 when unknown, e.g. for
            fixations imported from another tool).
        coordinates: ``"pixels"`` or ``"normalized"``: the units of ``x`` and ``y``.
    """

    start: np.ndarray
    end: np.ndarray
    x: np.ndarray
    y: np.ndarray
    n_samples: np.ndarray | None = None
    coordinates: str = "pixels"

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("start", "end", "x", "y"):
            arr = np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64))
            if arr.ndim != 1:
                raise ValueError(f"Fixations.{name} must have shape (F,), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"Fixations.{name} must be finite, got NaN or infinite values")
            arrays[name] = arr
        sizes = {name: arr.shape[0] for name, arr in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Fixations fields must have the same length, got {sizes}")
        if np.any(arrays["end"] < arrays["start"]):
            i = int(np.flatnonzero(arrays["end"] < arrays["start"])[0])
            raise ValueError(f"Fixations need end >= start, got fixation {i}: "
                             f"start={arrays['start'][i]}, end={arrays['end'][i]}")
        n = sizes["start"]
        counts = np.zeros(n, np.int64) if self.n_samples is None else np.asarray(self.n_samples)
        if counts.shape != (n,):
            raise ValueError(f"Fixations.n_samples must have shape ({n},), got {counts.shape}")
        if self.coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be one of {COORDINATES}, got {self.coordinates!r}")
        self.start, self.end, self.x, self.y = (arrays[k] for k in ("start", "end", "x", "y"))
        self.n_samples = counts.astype(np.int64)

    @classmethod
    def empty(cls, coordinates: str = "pixels") -> "Fixations":
        """No fixations."""
        return cls(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), coordinates=coordinates)

    @property
    def duration(self) -> np.ndarray:
        """float64 (F,) ``end - start`` in seconds."""
        return self.end - self.start

    def __len__(self) -> int:
        return self.start.shape[0]

    def __getitem__(self, index: Any) -> "Fixations":
        """Select by int, slice, integer array or boolean mask; always returns Fixations."""
        idx = np.atleast_1d(np.arange(len(self))[index])
        return Fixations(self.start[idx], self.end[idx], self.x[idx], self.y[idx],
                         self.n_samples[idx], coordinates=self.coordinates)

    def to_array(self) -> np.ndarray:
        """float64 (F, 6) with columns ``start, end, x, y, duration, n_samples``."""
        return np.stack([self.start, self.end, self.x, self.y, self.duration,
                         self.n_samples.astype(np.float64)], axis=1).reshape(-1, 6)

    def __repr__(self) -> str:
        return f"Fixations(n={len(self)}, coordinates={self.coordinates!r})"


# -- validation -------------------------------------------------------------------------------
def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return v


def check_coordinates(coordinates: str) -> None:
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")


def check_frame_size(frame_size: Any) -> tuple[float, float] | None:
    if frame_size is None:
        return None
    try:
        size = np.asarray(frame_size, dtype=np.float64)
    except (TypeError, ValueError):
        size = None
    if size is None or size.shape != (2,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise ValueError(f"frame_size must be (H, W) with positive sizes, got {frame_size!r}")
    return float(size[0]), float(size[1])


def resolve_detection_settings(method: str, dispersion_threshold: float | None,
                                velocity_threshold: float | None, min_duration: float,
                                min_confidence: float, max_gap: float, smoothing: int,
                                coordinates: str) -> tuple[float, float]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_coordinates(coordinates)
    dispersion = DEFAULT_DISPERSION[coordinates] if dispersion_threshold is None else \
        check_positive("dispersion_threshold", dispersion_threshold)
    velocity = DEFAULT_VELOCITY[coordinates] if velocity_threshold is None else \
        check_positive("velocity_threshold", velocity_threshold)
    check_positive("min_duration", min_duration, allow_zero=True)
    check_positive("max_gap", max_gap, allow_zero=True)
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float, np.number)) \
            or not np.isfinite(min_confidence):
        raise ValueError(f"min_confidence must be a finite number, got {min_confidence!r}")
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, np.integer)) \
            or smoothing < 1 or smoothing % 2 == 0:
        raise ValueError(f"smoothing must be an odd integer >= 1 (median window in samples; "
                         f"1 = off), got {smoothing!r}")
    return dispersion, velocity


def _as_samples(samples: Any) -> np.ndarray:
    arr = np.asarray(samples)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"samples must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] not in (3, 4):
        raise ValueError(f"samples must have shape (M, 3) or (M, 4) as t, x, y[, confidence], "
                         f"got {arr.shape}")
    t = arr[:, 0]
    if not np.all(np.isfinite(t)):
        i = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ValueError(f"sample timestamps must be finite, got {t[i]} at row {i}")
    if np.any(np.diff(t) < 0):
        i = int(np.flatnonzero(np.diff(t) < 0)[0])
        raise ValueError(f"sample timestamps must be non-decreasing, got t[{i}]={t[i]} then "
                         f"t[{i + 1}]={t[i + 1]}")
    return arr


# -- detection --------------------------------------------------------------------------------
def _moving_median(values: np.ndarray, window: int) -> np.ndarray:
    """Centered running median; the window shrinks at the ends."""
    if window == 1 or values.shape[0] < 2:
        return values
    half = window // 2
    padded = np.pad(values, half, constant_values=np.nan)
    return np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, window), axis=-1)


def _grow_window(x: np.ndarray, y: np.ndarray, i: int, j: int, threshold: float) -> int:
    """Last index ``k >= j`` such that samples i..k have dispersion <= threshold."""
    x_lo, x_hi, y_lo, y_hi = x[i:j + 1].min(), x[i:j + 1].max(), y[i:j + 1].min(), y[i:j + 1].max()
    n, block = x.shape[0], 64
    while j + 1 < n:
        stop = min(n, j + 1 + block)
        bx, by = x[j + 1:stop], y[j + 1:stop]
        xl = np.minimum(np.minimum.accumulate(bx), x_lo)
        xh = np.maximum(np.maximum.accumulate(bx), x_hi)
        yl = np.minimum(np.minimum.accumulate(by), y_lo)
        yh = np.maximum(np.maximum.accumulate(by), y_hi)
        over = np.flatnonzero((xh - xl) + (yh - yl) > threshold)
        if over.size:
            return j + int(over[0])
        j, x_lo, x_hi, y_lo, y_hi = stop - 1, xl[-1], xh[-1], yl[-1], yh[-1]
        block *= 2
    return j


def _idt(t: np.ndarray, x: np.ndarray, y: np.ndarray, threshold: float,
         min_duration: float) -> list[tuple[int, int]]:
    """Salvucci & Goldberg (2000) dispersion-threshold identification on one gap-free segment."""
    n = t.shape[0]
    first_end = np.searchsorted(t, t + min_duration - _TIME_EPS, side="left")
    first_end = np.maximum(first_end, np.arange(n) + 1)  # a fixation holds >= 2 samples
    found, i = [], 0
    while i < n:
        j = int(first_end[i])
        if j >= n:
            break
        if np.ptp(x[i:j + 1]) + np.ptp(y[i:j + 1]) > threshold:
            i += 1
            continue
        j = _grow_window(x, y, i, j, threshold)
        found.append((i, j))
        i = j + 1
    return found


def _ivt(t: np.ndarray, x: np.ndarray, y: np.ndarray, threshold: float,
         min_duration: float) -> list[tuple[int, int]]:
    """Velocity-threshold identification on one gap-free segment."""
    if t.shape[0] < 2:
        return []
    dt, dist = np.diff(t), np.hypot(np.diff(x), np.diff(y))
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.where(dt > 0, dist / np.where(dt > 0, dt, 1.0), np.where(dist > 0, np.inf, 0.0))
    slow = np.concatenate([[False], speed < threshold, [False]]).astype(np.int8)
    edges = np.diff(slow)
    firsts, lasts = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # sample indices
    keep = t[lasts] - t[firsts] >= min_duration - _TIME_EPS
    return list(zip(firsts[keep].tolist(), lasts[keep].tolist()))


def points_inside(x: np.ndarray, y: np.ndarray, size: tuple[float, float], coordinates: str
            ) -> np.ndarray:
    h, w = (1.0, 1.0) if coordinates == "normalized" else size
    return (x >= 0) & (x <= w) & (y >= 0) & (y <= h)


# -- prompts ----------------------------------------------------------------------------------


def detect_fixations(samples: Any, method: str = "idt", *,
                     dispersion_threshold: float | None = None,
                     velocity_threshold: float | None = None, min_duration: float = 0.1,
                     min_confidence: float = 0.6, max_gap: float = 0.075, smoothing: int = 1,
                     coordinates: str = "pixels",
                     frame_size: tuple[int, int] | None = None) -> Fixations:
    """Find fixations in a gaze trace with I-DT or I-VT.

    Invalid samples (NaN or infinite x/y, as trackers write for blinks and tracking loss, or
    ``confidence < min_confidence`` or NaN confidence) are removed first. Two consecutive valid
    samples more than ``max_gap`` seconds apart never belong to the same fixation, whether the
    rows between them were invalid or missing; shorter gaps are bridged (detection proceeds as
    if the bracketing valid samples were neighbours). ``max_gap`` must therefore exceed the
    sampling interval. Then, per gap-free segment:

    * ``"idt"`` (Salvucci & Goldberg, 2000): a window spanning at least ``min_duration`` whose
      dispersion ``(max x - min x) + (max y - min y)`` is ``<= dispersion_threshold`` starts a
      fixation, which grows sample by sample while the dispersion stays ``<=`` the threshold;
      otherwise the window slides by one sample.
    * ``"ivt"``: consecutive samples whose speed ``hypot(dx, dy) / dt`` is ``<
      velocity_threshold`` are linked; each maximal linked run lasting at least
      ``min_duration`` is a fixation. Equal timestamps with different positions count as
      infinitely fast.

    Args:
        samples: (M, 3) or (M, 4) array of ``t`` (seconds, finite, non-decreasing), ``x``,
            ``y`` and optionally ``confidence``.
        method: ``"idt"`` or ``"ivt"``.
        dispersion_threshold: I-DT threshold in ``coordinates`` units; None uses
            ``DEFAULT_DISPERSION[coordinates]`` (50 px or 0.025).
        velocity_threshold: I-VT threshold in ``coordinates`` units per second; None uses
            ``DEFAULT_VELOCITY[coordinates]`` (1200 px/s or 0.6/s).
        min_duration: shortest fixation in seconds, ``end - start``.
        min_confidence: samples with a lower confidence are invalid (ignored without a
            confidence column). 0.6 is Pupil Labs' recommended cut-off.
        max_gap: longest stretch in seconds without valid data that a fixation may bridge. The
            75 ms default is Tobii's gap fill-in default: short dropouts are bridged, blinks
            (100-400 ms) split fixations.
        smoothing: odd window, in samples, of a moving median applied to x and y of each
            segment before detection (1 = off). Centroids use the unsmoothed positions.
        coordinates: ``"pixels"`` or ``"normalized"`` (see the module docstring).
        frame_size: ``(H, W)`` of the scene frame. When given, fixations whose centroid lies
            outside the frame (``0 <= x <= W``, ``0 <= y <= H`` in pixels; ``[0, 1]`` when
            normalized) are dropped and their number is logged at INFO level.

    Returns:
        :class:`Fixations` sorted by start; ``start``/``end`` are the timestamps of their first
        and last sample.

    Raises:
        ValueError: bad shapes, non-finite or decreasing timestamps, unknown method or
            coordinates, non-positive thresholds.

    Example:
        >>> samples = np.array([[0.00, 10, 10], [0.05, 11, 10], [0.10, 10, 11], [0.15, 300, 9]])
        >>> detect_fixations(samples).to_array()[:, :4].tolist()
        [[0.0, 0.1, 10.333333333333334, 10.333333333333334]]
    """
    dispersion, velocity = resolve_detection_settings(
        method, dispersion_threshold, velocity_threshold, min_duration, min_confidence, max_gap,
        smoothing, coordinates)
    size = check_frame_size(frame_size)
    data = _as_samples(samples)

    valid = np.isfinite(data[:, 1]) & np.isfinite(data[:, 2])
    if data.shape[1] == 4:
        valid &= data[:, 3] >= min_confidence  # NaN confidence compares False
    rows = np.flatnonzero(valid)
    t, x, y = data[rows, 0], data[rows, 1], data[rows, 2]
    logger.debug("%d of %d gaze samples valid", rows.size, data.shape[0])
    if rows.size >= 2 and np.median(np.diff(t)) > max_gap:
        logger.warning("max_gap=%s s is shorter than the median sampling interval %s s: every "
                       "sample is its own segment and no fixation can be found",
                       max_gap, float(np.median(np.diff(t))))

    cuts = np.flatnonzero(np.diff(t) > max_gap + _TIME_EPS) + 1
    bounds = zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [t.size]]).tolist())
    detect, threshold = (_idt, dispersion) if method == "idt" else (_ivt, velocity)
    spans = []
    for lo, hi in bounds:
        xs, ys = _moving_median(x[lo:hi], smoothing), _moving_median(y[lo:hi], smoothing)
        spans += [(lo + a, lo + b) for a, b in detect(t[lo:hi], xs, ys, threshold, min_duration)]

    if not spans:
        return Fixations.empty(coordinates)
    first, last = np.array(spans, dtype=np.int64).T
    cx = np.array([x[a:b + 1].mean() for a, b in spans])
    cy = np.array([y[a:b + 1].mean() for a, b in spans])
    fixations = Fixations(t[first], t[last], cx, cy, last - first + 1, coordinates=coordinates)
    if size is not None:
        inside = points_inside(fixations.x, fixations.y, size, coordinates)
        if not inside.all():
            logger.info("dropped %d of %d fixations with centroid outside the %gx%g (H x W) "
                        "frame", int((~inside).sum()), len(fixations), size[0], size[1])
            fixations = fixations[inside]
    return fixations
