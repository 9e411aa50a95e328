"""What the demo's click and segment-everything tabs do, without Gradio: arrays in, plain values out.

(:mod:`prompt_sources` does the same for the detector, text and gaze tabs.)

One :class:`SamService` per process holds the model behind a lock; every browser session has
its own :class:`ClickSession` (kept in a ``gr.State``), so users never see each other's prompts
and each uploaded image is encoded once per session (the Segmenter's content-keyed cache also
spares re-encoding an image another session just used).

Coordinates are original-image pixels, XY order; boxes XYXY.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from samkit.cli.common import count, everything_presets
from samkit.formats.coco import coco_dataset, write_coco_json
from samkit.formats.png import save_mask_png, save_masks_zip
from samkit.results import Segmentation
from samkit.transforms import to_rgb_uint8
from samkit.visualize import draw_overlay, overlay_segmentation

MODES = ("Positive point", "Negative point", "Box (two clicks)")
EVERYTHING_PRESETS = ("default", *everything_presets())  # default: segment_anything's settings


class SamService:
    """The process's model, shared by every session; calls are serialised by a lock.

    Args:
        segmenter: a :class:`samkit.Segmenter`.
        source: where the weights came from (shown on the page).
    """

    def __init__(self, segmenter: Any, source: str) -> None:
        self.segmenter, self.source = segmenter, source
        self.lock = threading.Lock()

    def encode(self, image: np.ndarray) -> Any:
        with self.lock:
            return self.segmenter.encode(image)

    def segment(self, embedding: Any, **prompts: Any) -> Segmentation:
        with self.lock:
            return self.segmenter.segment(embedding, **prompts)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function`` (a pipeline using the segmenter) while holding the model."""
        with self.lock:
            return function(*args, **kwargs)


def new_output_folder(root: str | os.PathLike) -> Path:
    """A fresh folder under ``root`` for one call's downloads."""
    folder = Path(root) / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    return folder


def image_key(image: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def write_coco(path: Path, image_size: tuple[int, int], annotations: list[dict[str, Any]],
               categories: list[dict[str, Any]], file_name: str = "image.png") -> Path:
    """A COCO file of one image (id 1) of ``image_size`` (H, W) with the annotations."""
    images = [{"id": 1, "file_name": file_name, "height": image_size[0], "width": image_size[1]}]
    return write_coco_json(path, coco_dataset(images, annotations, categories))


# -- click to segment -------------------------------------------------------------------------------
@dataclass
class ClickSession:
    """One browser session's prompts on its current image."""

    key: str | None = None
    embedding: Any = None
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    corner: list[float] | None = None  # first click of a box
    history: list[tuple] = field(default_factory=list)
    result: Segmentation | None = None
    choice: int = 0

    def _snapshot(self) -> tuple:
        return [list(p) for p in self.points], list(self.labels), self.box, self.corner

    def remember(self) -> None:
        self.history.append(self._snapshot())

    def clear(self) -> None:
        self.points, self.labels, self.box, self.corner, self.history = [], [], None, None, []
        self.result, self.choice = None, 0

    def undo(self) -> None:
        if self.history:
            self.points, self.labels, self.box, self.corner = self.history.pop()

    def prompts_text(self) -> str:
        return json.dumps({"points": self.points, "labels": self.labels, "box": self.box})


def use_image(service: SamService, session: ClickSession | None, image: Any) -> ClickSession:
    """The session for ``image``: encoded once; a different image starts with no prompts."""
    session = session if isinstance(session, ClickSession) else ClickSession()
    rgb = to_rgb_uint8(image)
    key = image_key(rgb)
    if session.key != key:
        session.clear()
        session.key, session.embedding = key, service.encode(rgb)
    return session


def add_click(session: ClickSession, x: float, y: float, mode: str) -> None:
    """Apply one click at pixel (x, y): a point, or a box corner (two clicks make a box)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    session.remember()
    if mode == MODES[2]:
        if session.corner is None:
            session.corner = [float(x), float(y)]
            return
        (x0, y0), (x1, y1) = session.corner, (float(x), float(y))
        session.corner = None
        if x0 != x1 and y0 != y1:
            session.box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        return
    session.points.append([float(x), float(y)])
    session.labels.append(1 if mode == MODES[0] else 0)


def set_prompts(session: ClickSession, text: str) -> None:
    """Replace the prompts by JSON ``{"points": [[x, y], ...], "labels": [1, 0, ...], "box": [x0, y0, x1, y1]}``."""
    try:
        data = json.loads(text or "{}")
    except ValueError as error:
        raise ValueError(f"prompts must be JSON like {{\"points\": [[x, y]], \"labels\": [1]}}, got {text!r}: "
                         f"{error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"prompts must be a JSON object, got {type(data).__name__}")
    raw = data.get("points") or []
    try:
        points = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    except (TypeError, ValueError):
        points = np.zeros((0, 3))
    if points.shape[1:] != (2,) and len(raw):
        raise ValueError(f"points must be [[x, y], ...] in pixels, got {raw!r}")
    points = points.reshape(-1, 2)
    labels = data.get("labels")
    labels = [1] * len(points) if labels is None else [int(v) for v in labels]
    if len(labels) != len(points) or any(v not in (0, 1) for v in labels):
        raise ValueError(f"labels must hold one 1 (foreground) or 0 (background) per point ({len(points)}), "
                         f"got {labels}")
    box = data.get("box")
    if box is not None:
        box = [float(v) for v in box]
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {data.get('box')}")
    session.remember()
    session.points, session.labels, session.box, session.corner = points.tolist(), labels, box, None


def segment_session(service: SamService, session: ClickSession, multimask: bool) -> None:
    """Segment the session's prompts (one prompt: all points plus the box); no prompt, no result."""
    session.choice = 0
    if not session.points and session.box is None:
        session.result = None
        return
    prompts: dict[str, Any] = {}
    if session.points:
        prompts["points"], prompts["labels"] = np.asarray(session.points), np.asarray(session.labels)
    if session.box is not None:
        prompts["boxes"] = np.asarray(session.box)
    session.result = service.segment(session.embedding, multimask=bool(multimask), **prompts)
    session.choice = int(np.argmax(session.result.scores[0]))


@dataclass
class ClickView:
    """What the click tab shows: overlay, candidate masks, downloads, prompts and a summary."""

    overlay: np.ndarray
    choices: list[tuple[str, int]]
    choice: int | None
    mask_file: str | None
    coco_file: str | None
    prompts_text: str
    info: str


def render_click(image: Any, session: ClickSession, folder: Path) -> ClickView:
    """Draw the chosen candidate and the prompts; write the mask PNG and COCO JSON into ``folder``."""
    rgb = to_rgb_uint8(image)
    corner = [session.corner] if session.corner is not None else []
    marks = np.asarray(session.points + corner, dtype=np.float64).reshape(-1, 2) if session.points or corner else None
    labels = np.asarray(session.labels + [1] * len(corner)) if marks is not None else None
    box = None if session.box is None else np.asarray([session.box])
    result = session.result
    if result is None:
        overlay = draw_overlay(rgb, np.zeros((0, *rgb.shape[:2]), bool), points=marks, labels=labels, boxes=box)
        hint = "Click on the image to add a point." if not corner else "Click the opposite corner of the box."
        return ClickView(overlay, [], None, None, None, session.prompts_text(), hint)
    k = session.choice
    overlay = overlay_segmentation(rgb, result, output=[k], points=marks, labels=labels, boxes=box)
    choices = [(f"Mask {i + 1} (predicted IoU {s:.3f})", i) for i, s in enumerate(result.scores[0].tolist())]
    chosen = Segmentation(result.masks[:, [k]], result.scores[:, [k]], meta=result.meta)
    mask_file = save_mask_png(chosen.masks[0, 0], folder / "mask.png")
    coco_path = write_coco(folder / "coco.json", result.image_size, chosen.to_coco(1),
                           [{"id": 1, "name": "object"}])
    area = int(chosen.areas()[0, 0])
    info = (f"Mask {k + 1} of {result.num_outputs}: predicted IoU {result.scores[0, k]:.3f}, {area} px "
            f"({100.0 * area / (rgb.shape[0] * rgb.shape[1]):.1f}% of the image).")
    return ClickView(overlay, choices, k, str(mask_file), str(coco_path), session.prompts_text(), info)


# -- segment everything ------------------------------------------------------------------------------
def run_everything(service: SamService, image: Any, preset: str, points_per_side: int,
                   folder: Path) -> tuple[np.ndarray, str, str, str]:
    """Automatic masks: (overlay, summary, masks zip, COCO JSON)."""
    from samkit.pipelines.everything import SegmentEverything

    if preset not in EVERYTHING_PRESETS:
        raise ValueError(f"preset must be one of {EVERYTHING_PRESETS}, got {preset!r}")
    rgb = to_rgb_uint8(image)
    settings = {"points_per_side": int(points_per_side)}
    if preset == "default":
        pipeline = SegmentEverything(service.segmenter, **settings)
    else:
        pipeline = SegmentEverything.preset(preset, service.segmenter, **settings)
    result = service.call(pipeline, rgb).sorted("area")  # large first, so small masks are drawn on top
    overlay = overlay_segmentation(rgb, result, alpha=0.45)
    zip_file = save_masks_zip(result.masks[:, 0], folder / "masks.zip")
    coco_path = write_coco(folder / "coco.json", result.image_size, result.to_coco(1), [{"id": 1, "name": "object"}])
    info = f"{count(len(result), 'mask')} ({preset} settings, {int(points_per_side)} points per side)."
    return overlay, info, str(zip_file), str(coco_path)


def output_root() -> Path:
    """The process's folder for download files (removed at exit by the app)."""
    return Path(tempfile.mkdtemp(prefix="samkit-demo-"))
