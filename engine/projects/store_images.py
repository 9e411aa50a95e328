"""The project store's bottom layer: image rows, stored paths and the ``events`` history.

:class:`ImageStore` reads the ``images`` table and marks images done; every layer above it
(:mod:`.store_annotations`, :mod:`.store`) records its changes with :meth:`ImageStore._event`.
Image paths are stored relative to the project folder when inside it, absolute otherwise.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from .records import ImageRecord, UnknownIdError
from .schema import Database

__all__ = ["ImageStore", "now"]


def now() -> float:
    """The time stored in the database's ``*_at`` columns: seconds since the epoch."""
    return time.time()


class ImageStore(Database):
    """The ``images`` table and the ``events`` history of a project database."""

    def _stored_path(self, path: Path) -> str:
        path = path.resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _image_record(self, row: sqlite3.Row | tuple) -> ImageRecord:
        image_id, stored, width, height, done = row
        path = Path(stored)
        return ImageRecord(id=image_id, path=path if path.is_absolute() else self.root / path, width=width,
                           height=height, done=bool(done))

    @staticmethod
    def _event(db: sqlite3.Connection, kind: str, author: str | None, *, image_id: int | None = None,
               annotation_id: int | None = None, old: str | None = None, new: str | None = None) -> None:
        db.execute("INSERT INTO events (at, author, kind, image_id, annotation_id, old, new) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (now(), author, kind, image_id, annotation_id, old, new))

    def image(self, image_id: int) -> ImageRecord:
        """The image with this id (:class:`UnknownIdError` when there is none)."""
        with self._read() as db:
            return self._image_record(self._image_row(db, image_id))

    def _image_row(self, db: sqlite3.Connection, image_id: int) -> tuple:
        row = db.execute("SELECT id, path, width, height, done FROM images WHERE id = ?", (int(image_id),)).fetchone()
        if row is None:
            count = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            raise UnknownIdError(f"no image with id {image_id} in project {self.root} ({count} images)")
        return row

    def images(self) -> list[ImageRecord]:
        """All images, by id."""
        with self._read() as db:
            rows = db.execute("SELECT id, path, width, height, done FROM images ORDER BY id").fetchall()
        return [self._image_record(row) for row in rows]

    def find_image(self, path: str | os.PathLike) -> ImageRecord | None:
        """The image stored for this file path (absolute, or relative to the current folder), or None."""
        with self._read() as db:
            row = db.execute("SELECT id, path, width, height, done FROM images WHERE path = ?",
                             (self._stored_path(Path(path)),)).fetchone()
        return None if row is None else self._image_record(row)

    def next_image(self, *, after: int | None = None) -> ImageRecord | None:
        """The first image (by id, after ``after``) with no current accepted annotation and not done."""
        with self._read() as db:
            row = db.execute(
                "SELECT id, path, width, height, done FROM images i WHERE id > ? AND done = 0 AND NOT EXISTS "
                "(SELECT 1 FROM annotations a WHERE a.image_id = i.id AND a.status = 'accepted' "
                "AND a.superseded_by IS NULL) ORDER BY id LIMIT 1", (-1 if after is None else int(after),)).fetchone()
        return None if row is None else self._image_record(row)

    def mark_done(self, image_id: int, *, author: str | None = None) -> None:
        """Mark an image as finished (the annotate UI's "next"); recorded as a ``done`` event."""
        with self._write() as db:
            row = self._image_row(db, image_id)
            if not row[4]:
                db.execute("UPDATE images SET done = 1 WHERE id = ?", (row[0],))
                self._event(db, "done", author, image_id=row[0], old="false", new="true")
