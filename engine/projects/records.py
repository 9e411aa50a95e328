"""What a project hands out: immutable records of images, annotations, model versions, reports.

Also the allowed values (:data:`STAGES`, :data:`SOURCES`, :data:`STATUSES`), the errors, and
the one mask check every write goes through (:func:`mask_to_rle`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from samkit.formats.rle import as_bool_masks, masks_to_coco_rle, rle_area, rle_to_bbox, rle_to_mask, to_coco_rle

__all__ = ["SOURCES", "STAGES", "STATUSES", "AnnotationRecord", "ImageRecord", "ImportReport", "ModelVersion",
           "ProjectError", "ProjectStatus", "UnknownIdError", "check_choice", "mask_to_rle"]

#: Data-engine stages: 1 assisted-manual, 2 semi-automatic, 3 fully automatic.
STAGES = (1, 2, 3)
#: Where a mask came from.
SOURCES = ("manual", "assisted", "prefill", "auto", "import")
#: An annotation's review state; ``withdrawn`` is what undo sets.
STATUSES = ("accepted", "pending", "rejected", "withdrawn")


class ProjectError(ValueError):
    """A file is not a usable samkit project (not SQLite, another application's database, a
    schema newer than this samkit, a closed project). The message says which and what to do."""


class UnknownIdError(KeyError):
    """No image, annotation or model version with that id (a ``KeyError`` with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


def check_choice(what: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming the choices unless ``value`` is one of them (bools are not stages)."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{what} must be one of {list(choices)}, got {value!r}")


def mask_to_rle(mask: Any, size: tuple[int, int], what: str) -> tuple[dict[str, Any], list[float], int]:
    """A mask (bool / 0-1 (H, W) array, or a COCO RLE dict) as (compressed RLE, XYWH box, area).

    Raises:
        ValueError: the mask's shape is not ``size`` (both named), or the mask is empty.
    """
    h, w = (int(v) for v in size)
    if isinstance(mask, dict):
        rle = to_coco_rle(mask)
        if tuple(rle["size"]) != (h, w):
            raise ValueError(f"{what} must have the image's shape (H, W) = {(h, w)}, got an RLE of size "
                             f"{tuple(rle['size'])}")
        rle_to_mask(rle)  # checks that the counts add up
    else:
        array = as_bool_masks(mask, "mask")
        if array.shape != (h, w):
            raise ValueError(f"{what} must have the image's shape (H, W) = {(h, w)}, got {array.shape}")
        rle = masks_to_coco_rle(array)[0]
    area = rle_area(rle)
    if area == 0:
        raise ValueError(f"{what} is empty (no pixel set); empty masks are not stored")
    return rle, rle_to_bbox(rle), area


@dataclass(frozen=True)
class ImageRecord:
    """One image of a project: ``path`` absolute, ``width`` x ``height`` after EXIF rotation,
    ``done`` when marked finished."""

    id: int
    path: Path
    width: int
    height: int
    done: bool


@dataclass(frozen=True)
class AnnotationRecord:
    """One stored mask.

    ``rle`` is COCO compressed RLE (``{"size": [H, W], "counts": str}``), ``bbox`` XYWH in pixel
    edges (as ``pycocotools.mask.toBbox``), ``area`` in pixels; times are unix seconds;
    ``superseded_by`` is the id of the edit that replaced this row (None while current).
    """

    id: int
    image_id: int
    rle: dict
    bbox: tuple[float, float, float, float]
    area: int
    label: str
    stage: int
    source: str
    model_version: str | None
    author: str | None
    created_at: float
    edited_at: float | None
    status: str
    superseded_by: int | None
    score: float | None
    seconds: float | None

    def mask(self) -> np.ndarray:
        """The mask, bool (H, W)."""
        return rle_to_mask(self.rle)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "AnnotationRecord":
        """Build from a row of the ``annotations`` table (the store's column order)."""
        (id_, image_id, rle, bbox, area, label, stage, source, model_version, author, created_at, edited_at, status,
         superseded_by, score, seconds) = row
        return cls(id=id_, image_id=image_id, rle=json.loads(rle), bbox=tuple(json.loads(bbox)), area=area,
                   label=label, stage=stage, source=source, model_version=model_version, author=author,
                   created_at=created_at, edited_at=edited_at, status=status, superseded_by=superseded_by,
                   score=score, seconds=seconds)


@dataclass(frozen=True)
class ModelVersion:
    """A registered model: ``version`` ``"v1"``, ``"v2"``, ...; ``parent`` the version it was trained from."""

    version: str
    checkpoint: Path
    parent: str | None
    created_at: float
    metrics: dict
    notes: str | None


@dataclass(frozen=True)
class ImportReport:
    """What an import did: the new image ids and the skipped ``(path, reason)`` pairs."""

    added: list[int]
    skipped: list[tuple[str, str]]


@dataclass(frozen=True)
class ProjectStatus:
    """Project counts over current (not superseded) annotations.

    ``annotated_images``: images with at least one accepted annotation; ``accepted_per_stage``:
    ``{1: n1, 2: n2, 3: n3}``; ``masks_per_image``: accepted annotations / annotated images (0.0
    when none); ``median_seconds_per_mask``: over accepted annotations that recorded seconds
    (None when none); ``model_version``: the newest registered version.
    """

    images: int
    annotated_images: int
    accepted_per_stage: dict[int, int]
    pending: int
    rejected: int
    masks_per_image: float
    median_seconds_per_mask: float | None
    model_version: str | None
    withdrawn: int = 0
    done_images: int = 0

    @property
    def accepted(self) -> int:
        """Accepted annotations over all stages."""
        return sum(self.accepted_per_stage.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (stage keys as strings)."""
        return {"images": self.images, "annotated_images": self.annotated_images, "done_images": self.done_images,
                "accepted": self.accepted,
                "accepted_per_stage": {str(k): v for k, v in self.accepted_per_stage.items()},
                "pending": self.pending, "rejected": self.rejected, "withdrawn": self.withdrawn,
                "masks_per_image": self.masks_per_image, "median_seconds_per_mask": self.median_seconds_per_mask,
                "model_version": self.model_version}
