"""Gaze-to-mask: the object a person looks at, segmented in every frame of a sequence.

Each frame that has a fixation prompt (a foreground point, see :mod:`samkit.adapters.gaze`) is
encoded once and segmented from that point. When the gaze stays on the same object (every
foreground point of the new prompt falls inside the previous frame's mask) the previous mask's
low-resolution logits are fed back as ``mask_input`` (single-mask output), which keeps the mask
stable from frame to frame; otherwise the point alone is used (three candidate masks, the best
one kept). A frame without a prompt (a saccade, a blink, gaze off-frame) yields None, is not
encoded, and ends the chain: the next fixation starts afresh.

Frames may be a list of images (arrays are RGB), a folder of images (natural name order:
``frame2`` before ``frame10``) or a video file, read lazily with PyAV (``pip install av``) or
OpenCV (``pip install opencv-python``). Frame times in seconds come from ``frame_times``, else
``fps`` (``t = index / fps``), else the video's own timestamps.

Example:
    >>> adapter = GazeAdapter(method="idt", frame_size=(720, 1280))            # doctest: +SKIP
    >>> pipeline = GazeToMask(Segmenter(model), adapter, fps=30)               # doctest: +SKIP
    >>> out = pipeline("scene.mp4", samples)   # samples: (M, 3) t, x, y     # doctest: +SKIP
    >>> out[12].masks.shape, out.reused[12]                                    # doctest: +SKIP
    ((1, 1, 720, 1280), True)
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from samkit.prompts import Prompts
from samkit.results import Segmentation
from samkit.transforms import to_rgb_uint8

__all__ = ["GazeToMask", "GazeMaskSequence", "gaze_to_mask", "segment_fixation", "iter_frames",
           "list_image_files", "read_video"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_READERS = ("auto", "av", "cv2")


# -- frame sources --------------------------------------------------------------------------------
def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_image_files(folder: str | os.PathLike) -> list[str]:
    """Image files of a folder (by extension), in natural name order; an empty folder is an error."""
    folder = os.fspath(folder)
    names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)
    if not names:
        raise ValueError(f"folder {folder!r} holds no images with extensions {IMAGE_EXTENSIONS}")
    return [os.path.join(folder, n) for n in names]


def _read_av(path: str) -> Iterator[tuple[np.ndarray, float | None]]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = None if frame.pts is None or frame.time_base is None else float(frame.pts * frame.time_base)
            yield frame.to_ndarray(format="rgb24"), t


def _read_cv2(path: str) -> Iterator[tuple[np.ndarray, float | None]]:
    import cv2

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot open video {path!r}")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            yield np.ascontiguousarray(frame[:, :, ::-1]), t  # OpenCV decodes to BGR
    finally:
        capture.release()


def read_video(path: str | os.PathLike, *, reader: str = "auto") -> Iterator[tuple[np.ndarray, float | None]]:
    """Yield ``(frame, time)`` from a video file: (H, W, 3) uint8 RGB and seconds (or None).

    Args:
        path: the video file.
        reader: ``"av"`` (PyAV), ``"cv2"`` (OpenCV) or ``"auto"`` (PyAV, else OpenCV).

    Raises:
        ImportError: neither reader is installed (``pip install av`` or ``pip install opencv-python``).
    """
    if reader not in VIDEO_READERS:
        raise ValueError(f"reader must be one of {VIDEO_READERS}, got {reader!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    for name, read in (("av", _read_av), ("cv2", _read_cv2)):
        if reader not in ("auto", name):
            continue
        try:
            __import__(name)
        except ImportError:
            if reader == name:
                package = "av" if name == "av" else "opencv-python"
                raise ImportError(f"video_reader={name!r} needs {package}: pip install {package}") from None
            continue
        return read(path)
    raise ImportError(f"reading video {path!r} needs PyAV or OpenCV: pip install av (or opencv-python)")


def iter_frames(frames: Any, *, video_reader: str = "auto") -> Iterator[tuple[Any, float | None]]:
    """Yield ``(image, time or None)`` from a list of images, a folder of images or a video file."""
    if isinstance(frames, (str, os.PathLike)):
        path = os.fspath(frames)
        if os.path.isdir(path):
            return ((f, None) for f in list_image_files(path))
        return read_video(path, reader=video_reader)
    if isinstance(frames, np.ndarray) and frames.ndim == 3 and frames.shape[-1] in (1, 3, 4):
        raise ValueError(f"frames must be a sequence of images; got one image of shape {frames.shape} "
                         "(wrap it in a list)")
    try:
        return ((f, None) for f in frames)
    except TypeError:
        raise TypeError("frames must be a list of images, a folder path or a video file path, "
                        f"got {type(frames).__name__}") from None


# -- one frame ------------------------------------------------------------------------------------
def _points_inside(prompts: Prompts, previous: Segmentation) -> bool:
    if prompts.points is None or len(prompts) != len(previous) or previous.logits is None:
        return False
    h, w = previous.image_size
    for points, labels, mask in zip(prompts.points, prompts.labels, previous.masks[:, 0]):
        fg = points[labels == 1]
        if len(fg) == 0:
            return False
        cols, rows = np.floor(fg[:, 0]).astype(np.int64), np.floor(fg[:, 1]).astype(np.int64)
        if np.any((cols < 0) | (cols >= w) | (rows < 0) | (rows >= h)) or not mask[rows, cols].all():
            return False
    return True


def segment_fixation(segmenter: Any, embedding: Any, prompts: Prompts, previous: Segmentation | None = None, *,
                     multimask: bool = True) -> tuple[Segmentation, bool]:
    """Segment one frame's gaze prompts, reusing the previous mask when the gaze stayed on it.

    Args:
        segmenter: a :class:`samkit.Segmenter`.
        embedding: ``segmenter.encode(frame)``.
        prompts: N point prompts (XY pixels of this frame).
        previous: the previous frame's result (K = 1, with logits), or None.
        multimask: for prompts without a previous mask, decode three masks and keep the best.

    Returns:
        ``(result, reused)``: masks (N, 1, H, W) with logits; ``reused`` tells whether the
        previous logits were used (same N, same frame size, and every foreground point of each
        prompt inside its previous mask).
    """
    reuse = previous is not None and previous.image_size == tuple(embedding.original_size) \
        and _points_inside(prompts, previous)
    if reuse:
        again = Prompts(points=prompts.points, labels=prompts.labels, boxes=prompts.boxes,
                        mask_inputs=previous.logits[:, :1], meta=prompts.meta)
        return segmenter.segment(embedding, prompts=again, multimask=False), True
    result = segmenter.segment(embedding, prompts=prompts, multimask=multimask)
    return (result.best() if result.num_outputs > 1 else result), False


# -- the sequence ---------------------------------------------------------------------------------
@dataclass
class GazeMaskSequence:
    """Per-frame results of :func:`gaze_to_mask`.

    Attributes:
        segmentations: T items, a :class:`Segmentation` (masks (N, 1, H, W), usually N = 1) or
            None for frames without a prompt. Meta adds ``frame_index``, ``frame_time`` and
            ``reused_previous_mask`` to the prompt's own (fixation) meta.
        frame_times: float64 (T,) seconds; NaN where unknown.
        reused: bool (T,): the previous mask's logits were used.
        frame_sizes: T (H, W) tuples.
    """

    segmentations: list[Segmentation | None]
    frame_times: np.ndarray
    reused: np.ndarray
    frame_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.segmentations)

    def __getitem__(self, index: int) -> Segmentation | None:
        return self.segmentations[index]

    def __iter__(self) -> Iterator[Segmentation | None]:
        return iter(self.segmentations)

    @property
    def prompted(self) -> np.ndarray:
        """int64 indices of the frames that have a result."""
        return np.array([i for i, s in enumerate(self.segmentations) if s is not None], dtype=np.int64)

    def masks(self) -> np.ndarray:
        """bool (T, H, W): the union of each frame's masks, all False for frames without one."""
        if len(set(self.frame_sizes)) > 1:
            raise ValueError(f"masks() needs frames of one size, got sizes {sorted(set(self.frame_sizes))}")
        if not self.frame_sizes:
            raise ValueError("masks() needs at least one frame, got none")
        out = np.zeros((len(self), *self.frame_sizes[0]), dtype=bool)
        for i, s in enumerate(self.segmentations):
            if s is not None and len(s):
                out[i] = s.masks[:, 0].any(axis=0)
        return out


def _check_times(frame_times: Any, fps: float | None) -> np.ndarray | None:
    if fps is not None and (not np.isfinite(fps) or fps <= 0):
        raise ValueError(f"fps must be finite and > 0, got {fps}")
    if frame_times is None:
        return None
    times = np.asarray(frame_times, dtype=np.float64)
    if times.ndim != 1 or not np.all(np.isfinite(times)):
        raise ValueError(f"frame_times must be a finite (T,) array of seconds, got shape {times.shape}")
    return times


def gaze_to_mask(frames: Any, segmenter: Any, prompts: Sequence[Prompts | None] | Callable[[int, float], Any], *,
                 frame_times: Any = None, fps: float | None = None, reuse_previous_mask: bool = True,
                 multimask: bool = True, video_reader: str = "auto") -> GazeMaskSequence:
    """Segment the gazed-at object in every frame.

    Args:
        frames: a list of images, a folder of images or a video file (module docstring).
        segmenter: a :class:`samkit.Segmenter`.
        prompts: one ``Prompts | None`` per frame (e.g. from
            :func:`samkit.adapters.gaze.fixations_to_prompts`), or a function
            ``(frame_index, frame_time) -> Prompts | None`` (``frame_time`` NaN when unknown).
        frame_times: (T,) seconds per frame; else ``fps``; else the video's timestamps.
        fps: frames per second, giving ``t = index / fps``.
        reuse_previous_mask: feed the previous mask's logits back while the gaze stays on it.
        multimask: decode three candidates for a new fixation and keep the best.
        video_reader: ``"auto"``, ``"av"`` or ``"cv2"``.

    Returns:
        A :class:`GazeMaskSequence` with one entry per frame.
    """
    times = _check_times(frame_times, fps)
    if callable(prompts) and not isinstance(prompts, Sequence):
        prompt_for = prompts
    elif isinstance(prompts, Sequence):
        def prompt_for(i: int, t: float) -> Any:
            if i >= len(prompts):
                raise ValueError(f"prompts has {len(prompts)} entries but there are more frames")
            return prompts[i]
    else:
        raise TypeError(f"prompts must be a list of Prompts | None or a function, got {type(prompts).__name__}")
    segmentations: list[Segmentation | None] = []
    used, all_times, sizes = [], [], []
    previous: Segmentation | None = None
    for i, (frame, stamp) in enumerate(iter_frames(frames, video_reader=video_reader)):
        if times is not None:
            if i >= len(times):
                raise ValueError(f"frame_times has {len(times)} entries but there are more frames")
            t = float(times[i])
        else:
            t = i / fps if fps is not None else (float("nan") if stamp is None else stamp)
        p = prompt_for(i, t)
        image = to_rgb_uint8(frame)
        sizes.append(tuple(image.shape[:2]))
        all_times.append(t)
        if p is not None and not isinstance(p, Prompts):
            raise TypeError(f"the prompts for frame {i} must be samkit.Prompts or None, got {type(p).__name__}")
        if p is None or len(p) == 0:
            segmentations.append(None)
            used.append(False)
            previous = None
            continue
        embedding = segmenter.encode(image)
        result, reused = segment_fixation(segmenter, embedding, p, previous if reuse_previous_mask else None,
                                          multimask=multimask)
        for meta in result.meta:
            meta.update(frame_index=i, frame_time=None if np.isnan(t) else t, reused_previous_mask=reused)
        segmentations.append(result)
        used.append(reused)
        previous = result
    n = len(segmentations)
    if times is not None and len(times) != n:
        raise ValueError(f"frame_times has {len(times)} entries for {n} frames")
    if isinstance(prompts, Sequence) and len(prompts) != n:
        raise ValueError(f"prompts has {len(prompts)} entries for {n} frames")
    logger.debug("gaze_to_mask: %d frames, %d segmented, %d reused", n, sum(s is not None for s in segmentations),
                 sum(used))
    return GazeMaskSequence(segmentations, np.asarray(all_times, dtype=np.float64), np.asarray(used, dtype=bool),
                            sizes)


class GazeToMask:
    """Settings for :func:`gaze_to_mask`, with a gaze adapter turning samples into prompts.

    Args:
        segmenter: a :class:`samkit.Segmenter`.
        gaze: a :class:`samkit.adapters.gaze.GazeAdapter` (anything with ``detect(samples) ->
            fixations`` and ``to_prompts(fixations, frame_times) -> list[Prompts | None]``), or
            precomputed per-frame ``Prompts | None``.
        reuse_previous_mask, multimask, fps, video_reader: see :func:`gaze_to_mask`.

    Example:
        >>> pipeline = GazeToMask(segmenter, GazeAdapter(), fps=25)   # doctest: +SKIP
        >>> out = pipeline(frames, samples)                            # doctest: +SKIP
    """

    def __init__(self, segmenter: Any, gaze: Any, *, reuse_previous_mask: bool = True, multimask: bool = True,
                 fps: float | None = None, video_reader: str = "auto") -> None:
        is_adapter = hasattr(gaze, "detect") and hasattr(gaze, "to_prompts")
        if not is_adapter and not (isinstance(gaze, Sequence) and not isinstance(gaze, str)):
            raise TypeError("gaze must be a GazeAdapter-like object (detect, to_prompts) or a list of per-frame "
                            f"Prompts | None, got {type(gaze).__name__}")
        if video_reader not in VIDEO_READERS:
            raise ValueError(f"video_reader must be one of {VIDEO_READERS}, got {video_reader!r}")
        _check_times(None, fps)
        self.segmenter, self.gaze = segmenter, gaze
        self.reuse_previous_mask, self.multimask, self.fps, self.video_reader = \
            reuse_previous_mask, multimask, fps, video_reader

    def __call__(self, frames: Any, samples: Any = None, *, fixations: Any = None,
                 frame_times: Any = None) -> GazeMaskSequence:
        """Segment the gazed-at object in ``frames``.

        Args:
            frames: a list of images, a folder of images or a video file.
            samples: raw gaze samples for the adapter, (M, 3) or (M, 4) ``t, x, y[, confidence]``.
            fixations: already detected fixations (instead of ``samples``).
            frame_times: (T,) seconds on the gaze clock (else ``fps``, else video timestamps).
        """
        if not hasattr(self.gaze, "to_prompts"):
            if samples is not None or fixations is not None:
                raise ValueError("gaze holds precomputed prompts; samples and fixations must be None")
            prompts: Any = self.gaze
        else:
            if (samples is None) == (fixations is None):
                raise ValueError("pass exactly one of samples= or fixations= for the gaze adapter")
            found = self.gaze.detect(samples) if fixations is None else fixations

            def prompts(i: int, t: float) -> Prompts | None:
                if np.isnan(t):
                    raise ValueError("matching gaze to frames needs frame times: pass frame_times or fps "
                                     "(or a video file with timestamps)")
                return self.gaze.to_prompts(found, [t])[0]

        return gaze_to_mask(frames, self.segmenter, prompts, frame_times=frame_times, fps=self.fps,
                            reuse_previous_mask=self.reuse_previous_mask, multimask=self.multimask,
                            video_reader=self.video_reader)
