"""The annotation-project store: one SQLite file beside the images, nothing ever overwritten.

    >>> project = Project.init("photos/")                                   # doctest: +SKIP
    >>> project.add_images(["photos/"]).added                               # doctest: +SKIP
    [1, 2, 3]
    >>> a = project.add_annotation(1, mask, label="cat", author="ann", seconds=14.0)  # doctest: +SKIP
    >>> b = project.edit_annotation(a, new_mask, author="bob")             # doctest: +SKIP
    >>> project.status().accepted_per_stage                                 # doctest: +SKIP
    {1: 1, 2: 0, 3: 0}

Storage rules. The database is ``DIR/samkit_project.sqlite`` (:data:`DB_NAME`), in WAL mode
with a busy timeout, so several threads and processes may read and write at once; every write
is one ``BEGIN IMMEDIATE`` transaction, so a killed process leaves either the whole change or
none of it. The schema version lives in ``PRAGMA user_version`` and :data:`MIGRATIONS` brings
an older file up to date on open; a newer version is refused. ``PRAGMA application_id`` marks
the file as a samkit project. Masks are COCO compressed RLE (:mod:`samkit.formats.rle`) with
their XYWH box (pixel edges, as ``pycocotools.mask.toBbox``) and area. Editing writes a new row
and points the old row's ``superseded_by`` at it; status changes and "done" marks are rows of
the ``events`` table (who, when, old -> new). Image paths are stored relative to the project
folder when inside it, absolute otherwise.
"""
from __future__ import annotations

import json
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import io as project_io
from .records import (
    SOURCES,
    STAGES,
    STATUSES,
    AnnotationRecord,
    ImageRecord,
    ImportReport,
    ModelVersion,
    ProjectStatus,
    UnknownIdError,
    check_choice,
    mask_to_rle,
)
from .schema import APPLICATION_ID, DB_NAME, SCHEMA_VERSION, Database, connect, prepare

__all__ = ["APPLICATION_ID", "DB_NAME", "SCHEMA_VERSION", "Project"]

_ANNOTATION_COLUMNS = ("id, image_id, rle, bbox, area, label, stage, source, model_version, author, created_at, "
                       "edited_at, status, superseded_by, score, seconds")


def _now() -> float:
    return time.time()


class Project(Database):
    """An annotation project: images, their annotations, model versions (see the module docstring).

    Use :meth:`init` or :meth:`open`, not the constructor. The object may be shared by threads
    (each thread gets its own SQLite connection); several processes may open the same project.
    """

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def init(cls, folder: str | os.PathLike, *, name: str | None = None) -> "Project":
        """Create a project in ``folder`` (created when absent).

        Raises:
            FileExistsError: a project database already exists there.
            NotADirectoryError: ``folder`` is a file.
        """
        root = Path(folder).resolve()
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"project folder {root} exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        path = root / DB_NAME
        try:  # O_EXCL: of two processes initialising the same folder, one wins
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise FileExistsError(f"a samkit project already exists in {root} ({DB_NAME}); open it with "
                                  "Project.open or `samkit project status`") from None
        connection = connect(path)
        try:
            prepare(connection, path, create=True, name=name or root.name)
        except BaseException:
            connection.close()
            path.unlink(missing_ok=True)
            raise
        connection.close()
        return cls.open(root)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Project":
        """Open a project: its folder or its ``.sqlite`` file; older schemas are migrated.

        Raises:
            FileNotFoundError: no such folder, or no project database in it.
            ProjectError: the file is not a samkit project (another SQLite database, not SQLite
                at all) or was written by a newer samkit.
        """
        path = Path(path).resolve()
        if path.is_dir():
            path = path / DB_NAME
            if not path.is_file():
                raise FileNotFoundError(f"{path.parent} is not a samkit project (no {DB_NAME} in it); create one "
                                        f"with `samkit project init {path.parent}`")
        elif not path.exists():
            raise FileNotFoundError(f"no such project folder or database: {path}")
        connection = connect(path)
        try:
            prepare(connection, path, create=False)
        finally:
            connection.close()
        return cls(path)

    @property
    def name(self) -> str:
        """The project's name (default: its folder's name)."""
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
        return row[0] if row else self.root.name

    # -- images ------------------------------------------------------------------------------------
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

    def add_images(self, paths: Iterable[str | os.PathLike] | str | os.PathLike, *,
                   recursive: bool = True) -> ImportReport:
        """Add image files, and the images in folders (searched recursively unless told not to).

        Each image is decoded once to check it and read its size (after EXIF rotation).
        Unreadable or corrupt files, paths already in the project and files whose bytes equal an
        image already added are skipped, each with its reason; none of them stops the import.

        Returns:
            The new image ids and the skipped ``(path, reason)`` pairs.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files, skipped = project_io.list_image_files(paths, recursive=recursive, exclude=self.root / DB_NAME)
        added: list[int] = []
        for file in files:
            try:
                width, height, digest = project_io.probe_image(file)
            except (OSError, ValueError) as error:
                skipped.append((str(file), str(error)))
                continue
            image_id, reason = self._insert_image(file, width, height, digest)
            if image_id is None:
                skipped.append((str(file), reason))
            else:
                added.append(image_id)
        return ImportReport(added=added, skipped=skipped)

    def _insert_image(self, file: Path, width: int, height: int, digest: str | None, *,
                      masks: list[tuple[str, dict]] = (), author: str | None = None) -> tuple[int | None, str]:
        """Insert one image (and its imported ``(label, rle)`` masks) in one transaction, unless
        its path or bytes are already there: then ``(None, reason)``."""
        stored = self._stored_path(file)
        encoded = [(label, mask_to_rle(rle, (height, width), f"imported mask {i} of {file}"))
                   for i, (label, rle) in enumerate(masks)]
        with self._write() as db:
            row = db.execute("SELECT id FROM images WHERE path = ?", (stored,)).fetchone()
            if row:
                return None, f"already in the project as image {row[0]}"
            if digest is not None:
                row = db.execute("SELECT id, path FROM images WHERE sha256 = ?", (digest,)).fetchone()
                if row:
                    return None, f"duplicate of image {row[0]} ({row[1]}): same bytes"
            cursor = db.execute("INSERT INTO images (path, width, height, sha256, added_at) VALUES (?, ?, ?, ?, ?)",
                                (stored, width, height, digest, _now()))
            for label, mask in encoded:
                self._insert_annotation(db, cursor.lastrowid, mask, label=label, stage=1, source="import",
                                        author=author, model_version=None, score=None, seconds=None,
                                        status="accepted")
            return cursor.lastrowid, ""

    def import_coco(self, coco_json: str | os.PathLike, *, images_root: str | os.PathLike | None = None,
                    author: str = "import") -> ImportReport:
        """Add a COCO instances file's images and their annotations (stage 1, source ``"import"``,
        status ``"accepted"``, label = the category name). See :func:`samkit.engine.projects.io.read_coco`.

        ``images_root``: the folder the ``file_name`` entries are relative to (default: the JSON's
        folder). Images already in the project keep their annotations and get none added; images
        that cannot be read are skipped with the reason.
        """
        entries = project_io.read_coco(coco_json, images_root=images_root)
        added: list[int] = []
        skipped: list[tuple[str, str]] = []
        for entry in entries:
            try:
                width, height, digest = project_io.probe_image(entry.path)
            except (OSError, ValueError) as error:
                skipped.append((str(entry.path), str(error)))
                continue
            if (entry.width, entry.height) not in ((None, None), (width, height)):
                skipped.append((str(entry.path), f"the COCO file says {entry.width}x{entry.height} but the image "
                                                 f"is {width}x{height}"))
                continue
            try:
                image_id, reason = self._insert_image(entry.path, width, height, digest, masks=entry.annotations,
                                                      author=author)
            except ValueError as error:  # a mask that does not fit the image: the whole image is skipped
                image_id, reason = None, str(error)
            if image_id is None:
                skipped.append((str(entry.path), reason))
            else:
                added.append(image_id)
        return ImportReport(added=added, skipped=skipped)

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

    # -- annotations -------------------------------------------------------------------------------
    @staticmethod
    def _event(db: sqlite3.Connection, kind: str, author: str | None, *, image_id: int | None = None,
               annotation_id: int | None = None, old: str | None = None, new: str | None = None) -> None:
        db.execute("INSERT INTO events (at, author, kind, image_id, annotation_id, old, new) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (_now(), author, kind, image_id, annotation_id, old, new))

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

        Raises:
            ValueError: wrong mask shape (both shapes named), an empty mask, or an unknown
                stage, source or status; UnknownIdError: no such image.
        """
        check_choice("stage", stage, STAGES)
        check_choice("source", source, SOURCES)
        check_choice("status", status, STATUSES)
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        image = self.image(image_id)  # an image's size never changes: encode before taking the write lock
        encoded = mask_to_rle(mask, (image.height, image.width), f"the mask for image {image_id}")
        with self._write() as db:
            self._image_row(db, image_id)
            annotation_id = self._insert_annotation(db, image.id, encoded, label=label, stage=stage, source=source,
                                                    author=author, model_version=model_version, score=score,
                                                    seconds=seconds, status=status)
        return annotation_id

    def add_annotations(self, image_id: int, masks: Sequence[Any], *, scores: Sequence[float | None] | None = None,
                        label: str | Sequence[str] = "object", stage: int = 1, source: str = "manual",
                        author: str | None = None, model_version: str | None = None,
                        status: str = "accepted") -> list[int]:
        """Store several masks of one image in ONE transaction (all or none); returns their ids.

        The keywords are :meth:`add_annotation`'s, shared by every mask; ``scores`` and ``label``
        may instead hold one entry per mask. The stages write an image's masks this way, so a
        crash never leaves an image half stored.
        """
        check_choice("stage", stage, STAGES)
        check_choice("source", source, SOURCES)
        check_choice("status", status, STATUSES)
        masks = list(masks)
        scores = [None] * len(masks) if scores is None else list(scores)
        labels = [label] * len(masks) if isinstance(label, str) else list(label)
        for name, values in (("scores", scores), ("label", labels)):
            if len(values) != len(masks):
                raise ValueError(f"{name} must have one entry per mask: {len(masks)} masks, got {len(values)}")
        image = self.image(image_id)
        encoded = [mask_to_rle(m, (image.height, image.width), f"mask {i} for image {image_id}")
                   for i, m in enumerate(masks)]
        with self._write() as db:
            self._image_row(db, image_id)
            return [self._insert_annotation(db, image.id, e, label=name, stage=stage, source=source, author=author,
                                            model_version=model_version, score=score, seconds=None, status=status)
                    for e, score, name in zip(encoded, scores, labels)]

    def _insert_annotation(self, db: sqlite3.Connection, image_id: int, encoded: tuple[dict, list[float], int], *,
                           label: str, stage: int, source: str, author: str | None, model_version: str | None,
                           score: float | None, seconds: float | None, status: str) -> int:
        rle, bbox, area = encoded
        cursor = db.execute(
            "INSERT INTO annotations (image_id, rle, bbox, area, label, stage, source, model_version, author, "
            "created_at, edited_at, status, score, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            (image_id, json.dumps(rle), json.dumps(bbox), area, str(label), int(stage), source, model_version, author,
             _now(), status, None if score is None else float(score), None if seconds is None else float(seconds)))
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
                 old.created_at, _now(), new_status, old.score, total))
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

    # -- model versions ----------------------------------------------------------------------------
    def register_model(self, checkpoint: str | os.PathLike, *, parent: str | None = None,
                       metrics: dict | None = None, notes: str | None = None) -> str:
        """Record a model version (``"v1"``, ``"v2"``, ...) and return its name.

        ``parent`` must be a registered version; ``metrics`` must be JSON-serialisable.
        """
        try:
            metrics_text = json.dumps(dict(metrics or {}))
        except (TypeError, ValueError) as error:
            raise ValueError(f"metrics must be a JSON-serialisable dict, got {metrics!r}: {error}") from None
        with self._write() as db:
            known_parent = parent is None or db.execute("SELECT 1 FROM models WHERE version = ?", (parent,)).fetchone()
            if not known_parent:
                known = [r[0] for r in db.execute("SELECT version FROM models ORDER BY seq")]
                raise UnknownIdError(f"parent model version {parent!r} is not registered; known: {known}")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM models").fetchone()[0]
            version = f"v{seq}"
            db.execute("INSERT INTO models (version, seq, checkpoint, parent, created_at, metrics, notes) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (version, seq, self._stored_path(Path(checkpoint)), parent, _now(), metrics_text, notes))
            self._event(db, "model", None, new=version)
        return version

    def _model_record(self, row: tuple) -> ModelVersion:
        version, checkpoint, parent, created_at, metrics, notes = row
        path = Path(checkpoint)
        return ModelVersion(version=version, checkpoint=path if path.is_absolute() else self.root / path,
                            parent=parent, created_at=created_at, metrics=json.loads(metrics), notes=notes)

    def models(self) -> list[ModelVersion]:
        """All registered model versions, oldest first."""
        with self._read() as db:
            rows = db.execute("SELECT version, checkpoint, parent, created_at, metrics, notes FROM models "
                              "ORDER BY seq").fetchall()
        return [self._model_record(row) for row in rows]

    def current_model(self) -> ModelVersion | None:
        """The newest registered model version, or None."""
        models = self.models()
        return models[-1] if models else None

    # -- reporting and export ----------------------------------------------------------------------
    def status(self) -> ProjectStatus:
        """Counts over current annotations (one consistent snapshot); see :class:`ProjectStatus`."""
        with self._read() as db:
            images, done = db.execute("SELECT COUNT(*), COALESCE(SUM(done), 0) FROM images").fetchone()
            counts = dict.fromkeys(STATUSES, 0)
            per_stage = dict.fromkeys(STAGES, 0)
            for stage, status, n in db.execute("SELECT stage, status, COUNT(*) FROM annotations "
                                               "WHERE superseded_by IS NULL GROUP BY stage, status"):
                counts[status] += n
                if status == "accepted":
                    per_stage[stage] += n
            annotated = db.execute("SELECT COUNT(DISTINCT image_id) FROM annotations WHERE status = 'accepted' "
                                   "AND superseded_by IS NULL").fetchone()[0]
            seconds = [r[0] for r in db.execute("SELECT seconds FROM annotations WHERE status = 'accepted' AND "
                                                "superseded_by IS NULL AND seconds IS NOT NULL")]
            model = db.execute("SELECT version FROM models ORDER BY seq DESC LIMIT 1").fetchone()
        return ProjectStatus(images=images, annotated_images=annotated, accepted_per_stage=per_stage,
                             pending=counts["pending"], rejected=counts["rejected"],
                             masks_per_image=counts["accepted"] / annotated if annotated else 0.0,
                             median_seconds_per_mask=statistics.median(seconds) if seconds else None,
                             model_version=model[0] if model else None, withdrawn=counts["withdrawn"],
                             done_images=int(done))

    def export(self, out: str | os.PathLike, *, format: str = "coco", status: str = "accepted") -> Path:
        """Write the current annotations with ``status`` (or ``"any"``): ``"coco"`` one JSON file,
        ``"sa1b"`` a folder of per-image SA-1B JSON; returns ``out``. See :mod:`.io`."""
        return project_io.export_project(self, out, format=format, status=status)
