"""The project store's annotation layer: adding, editing, withdrawing and querying masks.

Masks are COCO compressed RLE (:mod:`samkit.formats.rle`) with their XYWH box (pixel edges, as
``pycocotools.mask.toBbox``) and area. Editing writes a new row and points the old row's
``superseded_by`` at it; additions and status changes are rows of the ``events`` table (who,
when, old -> new). A mask is checked against its image's size before the write lock is taken.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable, Sequence

from .records import SOURCES, STAGES, STATUSES, AnnotationRecord, UnknownIdError, check_choice, mask_to_rle
from .store_images import ImageStore, now

__all__ = ["AnnotationStore"]

# The ``annotations`` columns in :meth:`AnnotationRecord.from_row`'s order.
_ANNOTATION_COLUMNS = ("id, image_id, rle, bbox, area, label, stage, source, model_version, author, created_at, "
                       "edited_at, status, superseded_by, score, seconds")


class AnnotationStore(ImageStore):
    """The ``annotations`` table of a project database, over :class:`ImageStore`'s images."""

    def add_annotation(self, image_id: int, mask: Any, *, label: str = "object", stage: int = 1,
                       source: str = "manual", author: str | None = None, model_version: str | None = None,
                       score: float | None = None, seconds: float | None = None, status: str = "accepted") -> int:
        """Store one mask of an image; returns the annotation id.

        Args:
            image_id: the image's id.
            mask: bool or 0/1 (H, W) array of the image's size, or a COCO RLE dict of that size.
            label: the object's class name.
            stage: 1 (assisted-manual), 2 (semi-automatic) or 3 (automatic).
            source: one of :data:`SOURCES`.
            author, model_version, score: provenance (who, which model, the model's confidence).
            seconds: the time spent annotating this mask.
            status: one of :data:`STATUSES`.

        Returns:
            The new annotation's id.

        Raises:
            ValueError: wrong mask shape (both shapes named), an empty mask, or an unknown
                stage, source or status; UnknownIdError: no such image.
        """
        (annotation_id,) = self._add(image_id, [mask], labels=[label], scores=[score], seconds=seconds,
                                     describe=lambda i: f"the mask for image {image_id}", stage=stage, source=source,
                                     author=author, model_version=model_version, status=status)
        return annotation_id

    def add_annotations(self, image_id: int, masks: Sequence[Any], *, scores: Sequence[float | None] | None = None,
                        label: str | Sequence[str] = "object", stage: int = 1, source: str = "manual",
                        author: str | None = None, model_version: str | None = None,
                        status: str = "accepted") -> list[int]:
        """Store several masks of one image in ONE transaction (all or none); returns their ids.

        The keywords are :meth:`add_annotation`'s, shared by every mask; ``scores`` and ``label``
        may instead hold one entry per mask. The stages write an image's masks this way, so a
        crash never leaves an image half stored.

        Returns:
            The new annotations' ids, in the order of ``masks``.

        Raises:
            ValueError: as :meth:`add_annotation` (naming the mask's index), or ``scores`` /
                ``label`` without one entry per mask; UnknownIdError: no such image.
        """
        masks = list(masks)
        scores = [None] * len(masks) if scores is None else list(scores)
        labels = [label] * len(masks) if isinstance(label, str) else list(label)
        return self._add(image_id, masks, labels=labels, scores=scores, seconds=None,
                         describe=lambda i: f"mask {i} for image {image_id}", stage=stage, source=source,
                         author=author, model_version=model_version, status=status)

    def _add(self, image_id: int, masks: list[Any], *, labels: list[str], scores: list[float | None],
             seconds: float | None, describe: Callable[[int], str], stage: int, source: str, author: str | None,
             model_version: str | None, status: str) -> list[int]:
        """Check and store masks of one image in one transaction; ``describe(i)`` names mask ``i`` in errors."""
        check_choice("stage", stage, STAGES)
        check_choice("source", source, SOURCES)
        check_choice("status", status, STATUSES)
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        for name, values in (("scores", scores), ("label", labels)):
            if len(values) != len(masks):
                raise ValueError(f"{name} must have one entry per mask: {len(masks)} masks, got {len(values)}")
        image = self.image(image_id)  # an image's size never changes: encode before taking the write lock
        encoded = [mask_to_rle(m, (image.height, image.width), describe(i)) for i, m in enumerate(masks)]
        with self._write() as db:
            self._image_row(db, image_id)
            return [self._insert_annotation(db, image.id, e, label=name, stage=stage, source=source, author=author,
                                            model_version=model_version, score=score, seconds=seconds, status=status)
                    for e, score, name in zip(encoded, scores, labels)]

    def _insert_annotation(self, db: sqlite3.Connection, image_id: int, encoded: tuple[dict, list[float], int], *,
                           label: str, stage: int, source: str, author: str | None, model_version: str | None,
                           score: float | None, seconds: float | None, status: str) -> int:
        rle, bbox, area = encoded
        cursor = db.execute(
            "INSERT INTO annotations (image_id, rle, bbox, area, label, stage, source, model_version, author, "
            "created_at, edited_at, status, score, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            (image_id, json.dumps(rle), json.dumps(bbox), area, str(label), int(stage), source, model_version, author,
             now(), status, None if score is None else float(score), None if seconds is None else float(seconds)))
        self._event(db, "add", author, image_id=image_id, annotation_id=cursor.lastrowid, new=status)
        return cursor.lastrowid

    def _current_row(self, db: sqlite3.Connection, annotation_id: int, action: str) -> AnnotationRecord:
        row = db.execute(f"SELECT {_ANNOTATION_COLUMNS} FROM annotations WHERE id = ?",
                         (int(annotation_id),)).fetchone()
        if row is None:
            raise UnknownIdError(f"no annotation with id {annotation_id} in project {self.root}")
        record = AnnotationRecord.from_row(row)
        if record.superseded_by is not None:
            raise ValueError(f"annotation {annotation_id} was superseded by annotation {record.superseded_by}; "
                             f"{action} the current one")
        return record

    def edit_annotation(self, annotation_id: int, mask: Any = None, *, label: str | None = None,
                        author: str | None = None, seconds: float | None = None,
                        status: str | None = None) -> int:
        """Replace a current annotation by a new row with a new mask and/or label; returns its id.

        The old row stays, with ``superseded_by`` set to the new id. The new row keeps the old
        one's stage, source, model version, score and ``created_at`` (when the object was first
        annotated); ``edited_at`` is now, ``author`` the editor (else the old author),
        ``seconds`` the old seconds plus the given ones, ``status`` the given one or the old.
        """
        if mask is None and label is None and status is None:
            raise ValueError("edit_annotation needs a new mask, label or status; got none")
        if status is not None:
            check_choice("status", status, STATUSES)
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        encoded = None
        if mask is not None:  # the size is the image's, fixed: encode before taking the write lock
            h, w = self.annotation(annotation_id).rle["size"]
            encoded = mask_to_rle(mask, (h, w), f"the new mask of annotation {annotation_id}")
        with self._write() as db:
            old = self._current_row(db, annotation_id, "edit")
            rle, bbox, area = (old.rle, list(old.bbox), old.area) if encoded is None else encoded
            total = None if old.seconds is None and seconds is None else (old.seconds or 0.0) + (seconds or 0.0)
            new_status = old.status if status is None else status
            cursor = db.execute(
                "INSERT INTO annotations (image_id, rle, bbox, area, label, stage, source, model_version, author, "
                "created_at, edited_at, status, score, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (old.image_id, json.dumps(rle), json.dumps(bbox), area, old.label if label is None else str(label),
                 old.stage, old.source, old.model_version, author if author is not None else old.author,
                 old.created_at, now(), new_status, old.score, total))
            new_id = cursor.lastrowid
            db.execute("UPDATE annotations SET superseded_by = ? WHERE id = ?", (new_id, old.id))
            self._event(db, "edit", author, image_id=old.image_id, annotation_id=new_id, old=str(old.id),
                        new=str(new_id))
            if new_status != old.status:
                self._event(db, "status", author, image_id=old.image_id, annotation_id=new_id, old=old.status,
                            new=new_status)
        return new_id

    def set_status(self, annotation_id: int, status: str, *, author: str | None = None) -> None:
        """Change a current annotation's status (accept / reject / withdraw); recorded as an event."""
        check_choice("status", status, STATUSES)
        with self._write() as db:
            old = self._current_row(db, annotation_id, "change the status of")
            if old.status == status:
                return
            db.execute("UPDATE annotations SET status = ? WHERE id = ?", (status, old.id))
            self._event(db, "status", author, image_id=old.image_id, annotation_id=old.id, old=old.status, new=status)

    def undo_last(self, image_id: int, *, author: str | None = None) -> int | None:
        """Withdraw the newest current accepted or pending annotation of an image (by ``author``
        when given); returns its id, or None when there is nothing to undo."""
        with self._write() as db:
            self._image_row(db, image_id)
            query = ("SELECT id, status FROM annotations WHERE image_id = ? AND superseded_by IS NULL "
                     "AND status IN ('accepted', 'pending')")
            parameters: list[Any] = [int(image_id)]
            if author is not None:
                query += " AND author = ?"
                parameters.append(author)
            row = db.execute(query + " ORDER BY id DESC LIMIT 1", parameters).fetchone()
            if row is None:
                return None
            db.execute("UPDATE annotations SET status = 'withdrawn' WHERE id = ?", (row[0],))
            self._event(db, "status", author, image_id=int(image_id), annotation_id=row[0], old=row[1], new="withdrawn")
        return row[0]

    def annotation(self, annotation_id: int) -> AnnotationRecord:
        """One annotation by id, current or superseded (:class:`UnknownIdError` when there is none)."""
        with self._read() as db:
            row = db.execute(f"SELECT {_ANNOTATION_COLUMNS} FROM annotations WHERE id = ?",
                             (int(annotation_id),)).fetchone()
        if row is None:
            raise UnknownIdError(f"no annotation with id {annotation_id} in project {self.root}")
        return AnnotationRecord.from_row(row)

    def annotations(self, image_id: int | None = None, *, status: str | None = None, stage: int | None = None,
                    current: bool = True) -> list[AnnotationRecord]:
        """Annotations by id, filtered by image, status and stage; ``current`` drops superseded rows."""
        where, parameters = [], []
        if image_id is not None:
            where.append("image_id = ?")
            parameters.append(int(image_id))
        if status is not None:
            check_choice("status", status, STATUSES)
            where.append("status = ?")
            parameters.append(status)
        if stage is not None:
            check_choice("stage", stage, STAGES)
            where.append("stage = ?")
            parameters.append(int(stage))
        if current:
            where.append("superseded_by IS NULL")
        query = f"SELECT {_ANNOTATION_COLUMNS} FROM annotations"
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._read() as db:
            if image_id is not None:
                self._image_row(db, image_id)
            rows = db.execute(query + " ORDER BY id", parameters).fetchall()
        return [AnnotationRecord.from_row(row) for row in rows]

    def events(self, *, image_id: int | None = None, annotation_id: int | None = None) -> list[dict[str, Any]]:
        """The history: ``{"id", "at", "author", "kind", "image_id", "annotation_id", "old", "new"}`` by id."""
        where, parameters = [], []
        for column, value in (("image_id", image_id), ("annotation_id", annotation_id)):
            if value is not None:
                where.append(f"{column} = ?")
                parameters.append(int(value))
        query = "SELECT id, at, author, kind, image_id, annotation_id, old, new FROM events"
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY id", parameters).fetchall()
        keys = ("id", "at", "author", "kind", "image_id", "annotation_id", "old", "new")
        return [dict(zip(keys, row)) for row in rows]

