"""The Annotate tab's state and handlers, plain Python: no Gradio, testable without a browser.

:mod:`.annotate` builds the tab's components on top of these. Every browser session has its own
:class:`AnnotateSession` (a ``gr.State``): two annotators on one project never share prompts or
edits, and both of their saves land in the database.

The correction rule (exact, per pixel). The editor's layer holds the current mask (every layer
pixel with alpha >= :data:`OPAQUE` is "in"); the server puts it there after each prompt. When an
event brings the layer back, each pixel whose in/out state differs from what the server put there
records the user's latest edit: brushed in (``+1``) or erased (``-1``). The mask is then::

    mask = (sam | brushed) & ~erased

where ``sam`` is SAM's mask for the current prompts, so a new click re-decodes SAM and keeps the
corrections. ``source`` is ``"assisted"`` when SAM's mask contributes pixels, else ``"manual"``;
``seconds`` is the time since the image (or the previous accepted object) was shown.
"""

import getpass
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samkit.visualize import draw_overlay

from . import handlers as h

__all__ = ["ACCEPTED_COLOR", "LAYER_ALPHA", "MASK_COLOR", "OPAQUE", "PREFILL_COLOR", "AnnotateSession", "accept",
           "clear_object", "click", "current_mask", "decide_prefill", "default_author", "editor_value", "fold_edits",
           "load_next", "model_version_for", "next_image", "open_project", "overlay", "read_layer", "undo"]

log = logging.getLogger(__name__)

OPAQUE = 128  # a layer pixel with at least this alpha belongs to the mask
LAYER_ALPHA = 160  # how the server paints the mask into the editor's layer
MASK_COLOR = (30, 144, 255)
ACCEPTED_COLOR, PREFILL_COLOR = (150, 150, 150), (255, 200, 0)


def open_project(project: Any) -> Any:
    """A :class:`samkit.engine.projects.Project`, or the project folder / .sqlite file to open."""
    if hasattr(project, "add_annotation"):
        return project
    from samkit.engine.projects.store import Project

    return Project.open(project)


def default_author() -> str:
    """The login name, the default annotator name."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): still a usable name
        return "annotator"


def model_version_for(project: Any, source: str | None) -> str | None:
    """The project's version name of the checkpoint ``source`` (same file), else None."""
    if not source:
        return None
    try:
        path = Path(source).resolve()
    except (OSError, ValueError):
        return None
    return next((m.version for m in project.models() if Path(m.checkpoint).resolve() == path), None)


@dataclass
class AnnotateSession:
    """One browser session's place in the project and its object in progress."""

    author: str = "annotator"
    record: Any = None  # ImageRecord of the image shown; None when the project has none left
    rgb: np.ndarray | None = None
    clicks: h.ClickSession = field(default_factory=h.ClickSession)
    sam: np.ndarray | None = None  # SAM's mask for the current prompts
    edits: np.ndarray | None = None  # int8 (H, W): +1 brushed in, -1 erased, 0 untouched
    shown: np.ndarray | None = None  # the mask last put into the editor's layer
    started: float = 0.0
    skipped: set = field(default_factory=set)  # ids of images that could not be read
    review: int | None = None  # the pre-filled annotation selected for accept / reject
    message: str = ""
    last_saved: dict = field(default_factory=dict)  # the last accepted object: id, prompts and its parts
    syncs: int = 0  # how many times the editor got a new value

    def reset_object(self) -> None:
        """Forget the prompts and corrections; the clock restarts for the next object."""
        self.clicks.points, self.clicks.labels, self.clicks.history = [], [], []
        self.clicks.box, self.clicks.corner, self.clicks.result = None, None, None
        self.sam = None
        self.edits = None if self.rgb is None else np.zeros(self.rgb.shape[:2], np.int8)
        self.started = time.monotonic()


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def load_next(service: h.SamService, project: Any, session: AnnotateSession, *, after: int | None = None
              ) -> AnnotateSession:
    """Show the next image without an accepted annotation (after ``after``, else from the start).

    Unreadable images are skipped for this session with a message (they stay in the project).
    """
    problems = []
    for start in ([after, None] if after is not None else [None]):
        cursor = start
        while (record := project.next_image(after=cursor)) is not None:
            cursor = record.id
            if record.id in session.skipped or (start is None and after is not None and record.id == after):
                continue
            try:
                rgb = _read_image(record.path)
                if rgb.shape[:2] != (record.height, record.width):
                    raise ValueError(f"it is {rgb.shape[1]} x {rgb.shape[0]} px, the project says "
                                     f"{record.width} x {record.height}")
            except Exception as error:  # a corrupt file must not stop the annotator
                session.skipped.add(record.id)
                problems.append(f"skipped image {record.id} ({record.path.name}): {error}")
                log.warning(problems[-1])
                continue
            session.record, session.rgb = record, rgb
            session.clicks = h.ClickSession(key=h.image_key(rgb), embedding=service.encode(rgb))
            session.reset_object()
            session.review = None
            session.message = "; ".join(problems)
            return session
    session.record, session.rgb, session.sam, session.edits, session.shown = None, None, None, None, None
    session.clicks, session.review = h.ClickSession(), None
    session.message = "; ".join(problems + ["no image is left to annotate"])
    return session


def read_layer(value: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """The mask painted in an ImageEditor value: layer pixels with alpha >= OPAQUE (all layers OR-ed).

    Args:
        value: the editor's value ``{"background", "layers": [(H, W, 4) uint8 RGBA], "composite"}``.
        shape: the image's (H, W).

    Returns:
        (H, W) bool, or None when the value holds no layer (nothing to fold in).
    """
    layers = value.get("layers") if isinstance(value, dict) else None
    if not layers:
        return None
    painted = np.zeros(shape, bool)
    for layer in layers:
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[2] != 4:
            raise ValueError(f"an editor layer must be an (H, W, 4) RGBA array, got shape {layer.shape}")
        if layer.shape[:2] != tuple(shape):
            raise ValueError(f"the editor layer is {layer.shape[1]} x {layer.shape[0]} px, the image "
                             f"{shape[1]} x {shape[0]} px")
        painted |= layer[..., 3] >= OPAQUE
    return painted


def fold_edits(session: AnnotateSession, value: Any) -> None:
    """Record the editor's corrections: pixels now in but shown out are brushed, the reverse erased."""
    if session.rgb is None or session.shown is None:
        return
    painted = read_layer(value, session.rgb.shape[:2])
    if painted is None:
        return
    changed = painted != session.shown
    session.edits[changed & painted] = 1
    session.edits[changed & ~painted] = -1
    session.shown = current_mask(session)


def current_mask(session: AnnotateSession) -> np.ndarray:
    """``(sam | brushed) & ~erased`` for the object in progress, (H, W) bool."""
    if session.rgb is None:
        raise ValueError("no image is loaded")
    mask = np.zeros(session.rgb.shape[:2], bool) if session.sam is None else session.sam.copy()
    mask |= session.edits > 0
    mask &= ~(session.edits < 0)
    return mask


def _need_image(session: AnnotateSession) -> None:
    if session.record is None:
        raise ValueError("no image is loaded: every image of the project is annotated or skipped")


def click(service: h.SamService, session: AnnotateSession, x: float, y: float, mode: str,
          value: Any = None) -> AnnotateSession:
    """A click at pixel (x, y): a point or a box corner; SAM re-decodes on the cached embedding.

    One point alone gives SAM's three candidates and the best-scored one is used; more points or
    a box give SAM's single mask. ``value`` (the editor's) is folded in first.
    """
    _need_image(session)
    fold_edits(session, value)
    h.add_click(session.clicks, x, y, mode)
    if session.clicks.corner is None:
        c = session.clicks
        h.segment_session(service, c, multimask=len(c.points) == 1 and c.box is None)
        session.sam = None if c.result is None else c.result.masks[0, c.choice].copy()
    return session


def accept(project: Any, session: AnnotateSession, label: str, value: Any = None, *,
           model_version: str | None = None) -> int:
    """Store the object in progress (one transaction); returns the annotation id."""
    _need_image(session)
    fold_edits(session, value)
    mask = current_mask(session)
    if not mask.any():
        raise ValueError("the mask is empty: click on the object or paint it with the brush first")
    label = (label or "").strip() or "object"
    assisted = session.sam is not None and bool((mask & session.sam).any())
    annotation_id = project.add_annotation(
        session.record.id, mask, label=label, stage=1, source="assisted" if assisted else "manual",
        author=session.author, model_version=model_version if assisted else None,
        score=float(session.clicks.result.scores[0, session.clicks.choice]) if assisted else None,
        seconds=time.monotonic() - session.started)
    session.last_saved = {"id": annotation_id, "points": list(session.clicks.points),
                          "labels": list(session.clicks.labels), "box": session.clicks.box, **_parts(session)}
    session.reset_object()
    session.message = f"saved mask {annotation_id} ({label}, {int(mask.sum())} px)"
    return annotation_id


def undo(project: Any, session: AnnotateSession) -> int | None:
    """Withdraw this annotator's newest mask on the image; returns its id (None: nothing to undo)."""
    _need_image(session)
    withdrawn = project.undo_last(session.record.id, author=session.author)
    session.message = "nothing of yours to undo here" if withdrawn is None else f"withdrew mask {withdrawn}"
    return withdrawn


def clear_object(session: AnnotateSession) -> None:
    """Drop the prompts and corrections of the object in progress."""
    _need_image(session)
    session.reset_object()
    session.message = "cleared"


def next_image(service: h.SamService, project: Any, session: AnnotateSession) -> AnnotateSession:
    """Mark the image done and show the next one."""
    _need_image(session)
    done = session.record.id
    project.mark_done(done, author=session.author)
    return load_next(service, project, session, after=done)


def decide_prefill(project: Any, session: AnnotateSession, decision: str) -> int:
    """Accept or reject the selected pre-filled mask (default: the first pending one)."""
    _need_image(session)
    if decision not in ("accepted", "rejected"):
        raise ValueError(f"decision must be 'accepted' or 'rejected', got {decision!r}")
    pending = [a.id for a in project.annotations(session.record.id, status="pending")]
    target = session.review if session.review in pending else (pending[0] if pending else None)
    if target is None:
        raise ValueError("this image has no pending pre-filled mask")
    project.set_status(target, decision, author=session.author)
    rest = [i for i in pending if i != target]
    session.review = rest[0] if rest else None
    session.message = f"{decision} pre-filled mask {target}"
    return target


def overlay(project: Any, session: AnnotateSession) -> np.ndarray | None:
    """The image with accepted masks (grey), the pre-filled mask under review (yellow), the mask in
    progress (blue) and the prompts."""
    if session.rgb is None:
        return None
    masks, colors = [], []
    for record in project.annotations(session.record.id):
        if record.status == "accepted" or (record.status == "pending" and record.id == session.review):
            masks.append(record.mask())
            colors.append(ACCEPTED_COLOR if record.status == "accepted" else PREFILL_COLOR)
    mask = current_mask(session)
    if mask.any():
        masks.append(mask)
        colors.append(MASK_COLOR)
    c = session.clicks
    corner = [c.corner] if c.corner is not None else []
    points = np.asarray(c.points + corner, float).reshape(-1, 2) if c.points or corner else None
    labels = np.asarray(c.labels + [1] * len(corner)) if points is not None else None
    stack = np.stack(masks) if masks else np.zeros((0, *session.rgb.shape[:2]), bool)
    return draw_overlay(session.rgb, stack, colors=colors or None, points=points, labels=labels,
                        boxes=None if c.box is None else np.asarray([c.box]))


def editor_value(session: AnnotateSession) -> dict | None:
    """The editor's new value: the image, and the current mask as its one layer; remembers it as shown."""
    if session.rgb is None:
        session.shown = None
        return None
    session.shown = current_mask(session)
    session.syncs += 1
    layer = np.zeros((*session.rgb.shape[:2], 4), np.uint8)
    layer[session.shown] = (*MASK_COLOR, LAYER_ALPHA)
    return {"background": session.rgb, "layers": [layer], "composite": None}


def _pending_choices(project: Any, session: AnnotateSession) -> list[tuple[str, int]]:
    if session.record is None:
        return []
    return [(f"#{a.id} {a.label} ({a.area} px" + (f", score {a.score:.2f})" if a.score is not None else ")"), a.id)
            for a in project.annotations(session.record.id, status="pending")]


def _info(project: Any, session: AnnotateSession) -> str:
    if session.record is None:
        return session.message
    mine = [a for a in project.annotations(session.record.id, status="accepted") if a.author == session.author]
    text = (f"Image {session.record.id} `{session.record.path.name}` ({session.record.width} x "
            f"{session.record.height}); your masks here: {len(mine)}; mask in progress: "
            f"{int(current_mask(session).sum())} px.")
    return text + (f" {session.message}." if session.message else "")


def _parts(session: AnnotateSession) -> dict[str, np.ndarray]:
    empty = np.zeros(session.rgb.shape[:2], bool)
    return {"sam": empty if session.sam is None else session.sam, "brushed": session.edits > 0,
            "erased": session.edits < 0, "mask": current_mask(session)}


def _edits_json(session: AnnotateSession) -> str:
    """The object in progress and the last saved one, masks as COCO RLE (``sam``, ``brushed``,
    ``erased``, ``mask``): what the page holds, for checks from outside."""
    import json

    from samkit.formats.rle import masks_to_coco_rle

    def encode(parts: dict) -> dict:
        return {k: masks_to_coco_rle(v[None])[0] if isinstance(v, np.ndarray) else v for k, v in parts.items()}

    if session.rgb is None:
        return json.dumps({"image_id": None, "syncs": session.syncs})
    return json.dumps({"image_id": session.record.id, "syncs": session.syncs, **encode(_parts(session)),
                       "last_saved": encode(session.last_saved)})
