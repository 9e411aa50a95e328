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

:class:`Project` stacks three layers: :class:`~.schema.Database` (connections, transactions),
:class:`~.store_images.ImageStore` (image rows, the events history) and
:class:`~.store_annotations.AnnotationStore` (masks); this module adds opening, importing,
model versions and reporting.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Iterable

from . import io as project_io
from .records import STAGES, STATUSES, ImportReport, ModelVersion, ProjectStatus, UnknownIdError, mask_to_rle
from .schema import APPLICATION_ID, DB_NAME, SCHEMA_VERSION, connect, prepare
from .store_annotations import AnnotationStore
from .store_images import now

__all__ = ["APPLICATION_ID", "DB_NAME", "SCHEMA_VERSION", "Project"]


class Project(AnnotationStore):
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

    # -- importing images ------------------------------------------------------------------------
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
                                (stored, width, height, digest, now()))
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
                       (version, seq, self._stored_path(Path(checkpoint)), parent, now(), metrics_text, notes))
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
