"""Label Studio annotations into a samkit project (the ``/webhook`` endpoint's work).

Label Studio sends ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` with the whole annotation:
every region (``result`` item) it holds now. :class:`AnnotationSync` makes the project follow it,
one region = one samkit annotation (stage 1, source ``manual``, or ``assisted`` for a region that
came from a prediction):

* a new region is added; a region whose mask or label changed is *edited* (a new row that
  supersedes the old one, nothing is overwritten); an unchanged one is left alone;
* a region no longer in the annotation, a cancelled (skipped) annotation and
  ``ANNOTATIONS_DELETED`` withdraw the samkit annotation (status ``withdrawn``, kept);
* ``lead_time`` (seconds Label Studio measured) is spread over the regions written.

Which samkit annotation a Label Studio region became is kept in a small link database beside
the project, ``label_studio_links.sqlite``. The project write comes first; a crash between it and
the link write leaves an unlinked annotation, and a repeated delivery then finds it by content
(same image, label, author and mask) instead of adding it twice. Each event is handled under an
exclusive lock on ``label_studio_links.lock`` beside the project (``fcntl.flock``, released by
the OS if the process dies), so several backend processes on one project apply events one at a
time (where ``fcntl`` is missing, Windows, the lock is per process only).
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

try:
    import fcntl
except ImportError:  # Windows: the per-process lock only
    fcntl = None  # type: ignore[assignment]

import numpy as np

from samkit.formats.label_studio import brush_rle_to_mask
from samkit.formats.rle import masks_to_coco_rle

from .protocol import BrushConfig, PayloadError, require, resolve_image, task_image_reference

__all__ = ["LINKS_NAME", "LOCK_NAME", "STORED_ACTIONS", "AnnotationSync", "author_of"]

logger = logging.getLogger(__name__)

LINKS_NAME = "label_studio_links.sqlite"
LOCK_NAME = "label_studio_links.lock"
STORED_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETED_ACTION = "ANNOTATIONS_DELETED"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS regions (ls_annotation TEXT NOT NULL, region TEXT NOT NULL,
    annotation_id INTEGER NOT NULL, PRIMARY KEY (ls_annotation, region));
CREATE TABLE IF NOT EXISTS lead_times (ls_annotation TEXT PRIMARY KEY, seconds REAL NOT NULL);
"""


def author_of(annotation: Mapping[str, Any]) -> str | None:
    """The annotator named in a Label Studio annotation (``completed_by``: an id or a user object)."""
    user = annotation.get("completed_by")
    if isinstance(user, Mapping):
        for key in ("email", "username", "id"):
            if user.get(key) not in (None, ""):
                return f"label-studio:{user[key]}"
        return None
    if isinstance(user, (int, str)) and not isinstance(user, bool) and user != "":
        return f"label-studio:{user}"
    return None


def _identifier(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise PayloadError(f"{what} must be an integer or string id, got {value!r}")
    return str(value)


class AnnotationSync:
    """Applies Label Studio annotation events to a :class:`samkit.engine.projects.Project`.

    Args:
        project: the open project.
        root: where task images are resolved (see :func:`.protocol.resolve_image`).
        model_version: recorded on regions that came from predictions.
    """

    def __init__(self, project: Any, *, root: str | Path, model_version: str | None = None) -> None:
        self.project = project
        self.root = Path(root)
        self.model_version = model_version
        self._lock = threading.Lock()  # one event at a time: links and project move together
        self._lock_path = Path(project.root) / LOCK_NAME
        self._links = sqlite3.connect(Path(project.root) / LINKS_NAME, check_same_thread=False, isolation_level=None)
        self._links.execute("PRAGMA busy_timeout = 10000")
        self._links.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the link database (the project is the caller's)."""
        self._links.close()

    # -- entry point -------------------------------------------------------------------------
    def handle(self, action: str, payload: Mapping[str, Any], config: BrushConfig | None) -> dict[str, Any]:
        """Apply one webhook event; returns counts of what changed."""
        with self._exclusive():
            if action == DELETED_ACTION:
                items = require(payload, "annotations", list, "webhook")
                ids = [_identifier(require(item, "id", (int, str), "webhook annotations[]"), "annotation id")
                       for item in items]
                withdrawn = sum(self._withdraw(ls_id, keep=set(), author=None) for ls_id in ids)
                return {"action": action, "added": 0, "edited": 0, "unchanged": 0, "withdrawn": withdrawn}
            return self._sync(action, payload, config)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread alone in this process, and this process alone among those on the project."""
        with self._lock:
            if fcntl is None:
                yield
                return
            with open(self._lock_path, "a+b") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- one annotation ------------------------------------------------------------------------
    def _sync(self, action: str, payload: Mapping[str, Any], config: BrushConfig | None) -> dict[str, Any]:
        annotation = require(payload, "annotation", dict, "webhook")
        task = require(payload, "task", dict, "webhook")
        ls_id = _identifier(require(annotation, "id", (int, str), "webhook['annotation']"), "annotation id")
        results = require(annotation, "result", list, "webhook['annotation']")
        author = author_of(annotation)
        image = self._image(task, config)
        regions = [] if annotation.get("was_cancelled") else self._regions(results, config, image)
        seconds = self._seconds_spent(ls_id, annotation.get("lead_time"), len(regions))
        counts = {"action": action, "image_id": image.id, "added": 0, "edited": 0, "unchanged": 0, "withdrawn": 0}
        for region_id, mask, label, source, score in regions:
            counts[self._store(ls_id, region_id, image, mask, label, source, score, author, seconds)] += 1
        counts["withdrawn"] = self._withdraw(ls_id, keep={r[0] for r in regions}, author=author)
        return counts

    def _image(self, task: Mapping[str, Any], config: BrushConfig | None) -> Any:
        if config is not None:
            reference = task_image_reference(task, config, "webhook['task']")
        else:  # no label config known: the task's one string value
            data = require(task, "data", dict, "webhook['task']")
            strings = [v for v in data.values() if isinstance(v, str)]
            if len(strings) != 1:
                raise PayloadError("webhook: cannot tell the task's image without a label config (call /setup or "
                                   "send project.label_config); task data has "
                                   f"{len(strings)} string values")
            reference = strings[0]
        path = resolve_image(reference, self.root)
        record = self.project.find_image(path)
        if record is None:
            report = self.project.add_images([path])
            if not report.added:
                reason = report.skipped[0][1] if report.skipped else "not added"
                raise PayloadError(f"webhook: image {reference!r} cannot join the project: {reason}")
            record = self.project.image(report.added[0])
        return record

    def _regions(self, results: list, config: BrushConfig | None, image: Any) -> list[tuple]:
        regions = []
        for index, result in enumerate(results):
            where = f"webhook['annotation']['result'][{index}]"
            if not isinstance(result, Mapping):
                raise PayloadError(f"{where} must be an object, got {type(result).__name__}")
            if str(result.get("type", "")).lower() != "brushlabels":
                continue  # keypoints, rectangles, choices: prompts or other tags, not masks
            if config is not None and result.get("from_name") not in (None, config.from_name):
                continue
            region_id = _identifier(result.get("id"), f"{where}['id']")
            value = require(result, "value", dict, where)
            if value.get("format", "rle") != "rle":
                raise PayloadError(f"{where}: brush format {value.get('format')!r} is not read (expected 'rle')")
            width = require(result, "original_width", int, where)
            height = require(result, "original_height", int, where)
            if (width, height) != (image.width, image.height):
                raise PayloadError(f"{where} is on a {width} x {height} image; {image.path.name} is "
                                   f"{image.width} x {image.height}")
            try:
                mask = brush_rle_to_mask(require(value, "rle", list, f"{where}['value']"), height, width)
            except (TypeError, ValueError) as error:
                raise PayloadError(f"{where}: {error}") from None
            if not mask.any():
                continue  # an emptied region: withdrawn like a removed one
            labels = value.get("brushlabels") or ["object"]
            if not isinstance(labels, list) or not isinstance(labels[0], str):
                raise PayloadError(f"{where}['value']['brushlabels'] must be a list of strings, got {labels!r}")
            origin = result.get("origin")
            source = "assisted" if origin in ("prediction", "prediction-changed") or region_id.startswith("samkit-") \
                else "manual"
            score = result.get("score")
            score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) \
                and np.isfinite(score) else None
            regions.append((region_id, mask, labels[0], source, score))
        return regions

    def _seconds_spent(self, ls_id: str, lead_time: Any, count: int) -> float | None:
        """This event's share of Label Studio's cumulative ``lead_time``, per region written."""
        if isinstance(lead_time, bool) or not isinstance(lead_time, (int, float)) or not lead_time >= 0:
            return None
        row = self._links.execute("SELECT seconds FROM lead_times WHERE ls_annotation = ?", (ls_id,)).fetchone()
        spent = max(0.0, float(lead_time) - (row[0] if row else 0.0))
        self._links.execute("INSERT OR REPLACE INTO lead_times (ls_annotation, seconds) VALUES (?, ?)",
                            (ls_id, float(lead_time)))
        return spent / count if count else None

    def _current(self, annotation_id: int) -> Any:
        record = self.project.annotation(annotation_id)
        while record.superseded_by is not None:  # edited elsewhere since (e.g. the Annotate tab)
            record = self.project.annotation(record.superseded_by)
        return record

    def _link(self, ls_id: str, region_id: str, annotation_id: int) -> None:
        self._links.execute("INSERT OR REPLACE INTO regions (ls_annotation, region, annotation_id) VALUES (?, ?, ?)",
                            (ls_id, region_id, int(annotation_id)))

    def _store(self, ls_id: str, region_id: str, image: Any, mask: np.ndarray, label: str, source: str,
               score: float | None, author: str | None, seconds: float | None) -> str:
        row = self._links.execute("SELECT annotation_id FROM regions WHERE ls_annotation = ? AND region = ?",
                                  (ls_id, region_id)).fetchone()
        rle = masks_to_coco_rle(mask)[0]
        if row is None:
            twin = self._unlinked_twin(image.id, rle, label, author)
            if twin is not None:
                self._link(ls_id, region_id, twin)
                return "unchanged"
            new_id = self.project.add_annotation(
                image.id, mask, label=label, stage=1, source=source, author=author, score=score, seconds=seconds,
                model_version=self.model_version if source == "assisted" else None)
            self._link(ls_id, region_id, new_id)
            return "added"
        current = self._current(row[0])
        if current.status == "accepted" and current.label == label and current.rle["counts"] == rle["counts"]:
            if current.id != row[0]:
                self._link(ls_id, region_id, current.id)
            return "unchanged"
        new_id = self.project.edit_annotation(current.id, mask, label=label, author=author, seconds=seconds,
                                              status="accepted")
        self._link(ls_id, region_id, new_id)
        return "edited"

    def _unlinked_twin(self, image_id: int, rle: Mapping[str, Any], label: str, author: str | None) -> int | None:
        linked = {r[0] for r in self._links.execute("SELECT annotation_id FROM regions")}
        for record in self.project.annotations(image_id, status="accepted"):
            if (record.id not in linked and record.label == label and record.author == author
                    and record.rle["counts"] == rle["counts"]):
                return record.id
        return None

    def _withdraw(self, ls_id: str, *, keep: set[str], author: str | None) -> int:
        rows = self._links.execute("SELECT region, annotation_id FROM regions WHERE ls_annotation = ?",
                                   (ls_id,)).fetchall()
        withdrawn = 0
        for region_id, annotation_id in rows:
            if region_id in keep:
                continue
            current = self._current(annotation_id)
            if current.status != "withdrawn":
                self.project.set_status(current.id, "withdrawn", author=author)
                withdrawn += 1
        return withdrawn
