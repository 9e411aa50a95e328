"""Annotation projects: the data engine's human loop (SQLite store, stages, retraining).

    >>> from samkit.engine.projects import Project                          # doctest: +SKIP
    >>> project = Project.init("photos/")                                   # doctest: +SKIP
    >>> project.add_images(["photos/"]).skipped                             # doctest: +SKIP
    [('photos/broken.jpg', 'cannot read image file ...')]
    >>> project.add_annotation(1, mask, label="cat", author="ann", seconds=14.0)  # doctest: +SKIP
    1
    >>> project.export("photos.json", format="coco")                       # doctest: +SKIP

The store (:mod:`.store`): one SQLite file ``DIR/samkit_project.sqlite`` (WAL, one
``BEGIN IMMEDIATE`` transaction per write, schema migrations in :mod:`.schema`); edits
supersede, nothing is overwritten. Records and errors: :mod:`.records`; import and export
(COCO, SA-1B): :mod:`.io`.
"""
# -- the store -------------------------------------------------------------------------------------
from .io import EXPORT_FORMATS
from .records import (
    SOURCES,
    STAGES,
    STATUSES,
    AnnotationRecord,
    ImageRecord,
    ImportReport,
    ModelVersion,
    ProjectError,
    ProjectStatus,
    UnknownIdError,
)
from .schema import DB_NAME, SCHEMA_VERSION
from .store import Project

# -- the stages ------------------------------------------------------------------------------------
from .stages import RetrainReport, StageReport, auto, prefill, retrain  # noqa: E402

__all__ = [
    # the store
    "DB_NAME", "EXPORT_FORMATS", "SCHEMA_VERSION", "SOURCES", "STAGES", "STATUSES",
    "AnnotationRecord", "ImageRecord", "ImportReport", "ModelVersion", "Project", "ProjectError", "ProjectStatus",
    "UnknownIdError",
    # the stages
    "RetrainReport", "StageReport", "auto", "prefill", "retrain",
]
