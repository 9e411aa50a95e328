"""Getting images and masks into a project and out of it.

In: :func:`list_image_files` (files and folders), :func:`probe_image` (decode once: size after
EXIF rotation and a content hash, or a ``ValueError`` naming the problem), :func:`read_coco` (a
COCO instances file: images with their masks, read by :mod:`samkit.formats.coco_read`).

Out: :func:`export_project` writes ``"coco"`` (one COCO instances JSON through
:mod:`samkit.formats.coco`: categories are the labels in sorted order, ``file_name`` relative
to the project folder, ``segmentation`` the stored RLE) or ``"sa1b"`` (a folder holding one
SA-1B JSON per image through :mod:`samkit.formats.sa1b`, at the image's relative path with
``.json``). Both carry samkit's provenance per annotation (``samkit_id``, ``stage``,
``source``, ``author``, ``model_version``, ``status``); readers ignore the extra keys. Files are
written atomically.

This module knows a project only by duck typing (``root``, ``images()``, ``annotations()``),
so the store imports it and not the other way round.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from samkit.formats.coco import category_of, coco_dataset, normalize_categories, write_coco_json
from samkit.formats.coco_read import CocoAnnotation, load_coco_json, parse_coco_instances
from samkit.formats.rle import to_coco_rle
from samkit.formats.sa1b import write_sa1b_json

__all__ = ["EXPORT_FORMATS", "IMAGE_EXTENSIONS", "CocoEntry", "export_project", "list_image_files", "probe_image",
           "read_coco"]

#: File endings taken as images when a folder is searched.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: The formats :func:`export_project` writes.
EXPORT_FORMATS = ("coco", "sa1b")


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.as_posix())]


def list_image_files(paths: Iterable[str | os.PathLike], *, recursive: bool = True,
                     exclude: Path | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files named by ``paths`` (files as given; folders: their files ending in
    :data:`IMAGE_EXTENSIONS`, hidden ones left out, in natural order).

    Returns:
        ``(files, skipped)``: absolute paths, and ``(path, reason)`` for paths that do not exist.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for given in paths:
        path = Path(given).resolve()
        if path.is_dir():
            found = path.rglob("*") if recursive else path.glob("*")
            files.extend(sorted((p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                                 and not any(part.startswith(".") for part in p.relative_to(path).parts)
                                 and p != exclude), key=_natural_key))
        elif path.is_file():
            files.append(path)
        else:
            skipped.append((str(given), "no such file or folder"))
    return files, skipped


def probe_image(path: str | os.PathLike) -> tuple[int, int, str]:
    """Decode an image fully; returns ``(width, height, sha256 of the file)``.

    The size is the one after EXIF rotation (what :func:`samkit.transforms.load_image` returns,
    so masks drawn on the decoded image fit).

    Raises:
        FileNotFoundError: no such file; ValueError: not a readable image (corrupt, truncated,
        unknown format).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            width, height = ImageOps.exif_transpose(img).size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as error:
        raise ValueError(f"cannot read image file {path}: {error}") from None
    if width < 1 or height < 1:
        raise ValueError(f"image file {path} has no pixels ({width}x{height})")
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return width, height, digest.hexdigest()


@dataclass
class CocoEntry:
    """One image of a COCO file: its path, the size the file states (None when absent) and its
    masks as ``(label, COCO RLE)`` pairs."""

    path: Path
    width: int | None
    height: int | None
    annotations: list[tuple[str, dict]] = field(default_factory=list)


def _stored_rle(annotation: CocoAnnotation, entry: CocoEntry) -> dict:
    """The annotation's mask as COCO RLE (polygons rasterised at the size the file states)."""
    if isinstance(annotation.segmentation, dict):
        return to_coco_rle(annotation.segmentation)
    if entry.height is None or entry.width is None:
        raise ValueError(f"{annotation.where}: polygon segmentations need the image's height and width in the "
                         "COCO file")
    return to_coco_rle(annotation.mask(entry.height, entry.width))


def read_coco(coco_json: str | os.PathLike, *, images_root: str | os.PathLike | None = None) -> list[CocoEntry]:
    """Read a COCO instances file into one :class:`CocoEntry` per image (``file_name`` resolved
    against ``images_root``, default the JSON's folder). Labels are the category names
    (``"object"`` when the file lists no categories).

    The file is checked by :func:`samkit.formats.coco_read.parse_coco_instances`; each image
    also needs a ``file_name``, and images with polygon annotations their ``height`` and ``width``.

    Raises:
        FileNotFoundError, ValueError: the file is missing, not JSON, or not COCO instances
        (the message names the first bad entry).
    """
    data, name = load_coco_json(coco_json)
    coco = parse_coco_instances(data, name=name)
    root = Path(images_root) if images_root is not None else Path(name).parent
    names = {c["id"]: str(c["name"]) for c in coco.categories}
    entries: dict[Any, CocoEntry] = {}
    for i, image in enumerate(coco.images):
        if image.file_name is None:
            raise ValueError(f"{name}: images[{i}] needs a 'file_name', got {image.raw!r:.200}")
        entries[image.id] = CocoEntry((root / image.file_name).resolve(), image.width, image.height)
    for annotation in coco.annotations:
        entry = entries[annotation.image_id]
        entry.annotations.append((names.get(annotation.category_id, "object"), _stored_rle(annotation, entry)))
    return list(entries.values())


# -- export ----------------------------------------------------------------------------------------
def _file_name(project: Any, image: Any) -> str:
    try:
        return Path(image.path).relative_to(project.root).as_posix()
    except ValueError:
        return str(image.path)


def _provenance(annotation: Any) -> dict[str, Any]:
    return {"samkit_id": annotation.id, "label": annotation.label, "stage": annotation.stage,
            "source": annotation.source, "author": annotation.author, "model_version": annotation.model_version,
            "status": annotation.status, "seconds": annotation.seconds}


def _selected(project: Any, status: str) -> list[Any]:
    return project.annotations(status=None if status == "any" else status)


def export_project(project: Any, out: str | os.PathLike, *, format: str = "coco", status: str = "accepted") -> Path:
    """Write a project's current annotations with ``status`` (``"any"``: all) as ``format``.

    Returns:
        ``out``: the COCO JSON file, or the SA-1B folder.

    Raises:
        ValueError: an unknown format or status, or ``out`` of the wrong kind (a folder for
        ``coco``, a file for ``sa1b``).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}, got {format!r}")
    out = Path(out)
    annotations = _selected(project, status)
    images = project.images()
    if format == "coco":
        if out.is_dir():
            raise ValueError(f"the COCO export is one JSON file, but {out} is a folder; give a file name")
        categories = normalize_categories(sorted({a.label for a in annotations}) or ["object"])
        coco_images = [{"id": im.id, "file_name": _file_name(project, im), "width": im.width, "height": im.height}
                       for im in images]
        coco_annotations = [dict(_provenance(a), image_id=a.image_id, segmentation=a.rle, area=a.area,
                                 bbox=list(a.bbox), iscrowd=0, score=1.0 if a.score is None else a.score,
                                 category_id=category_of({"label": a.label}, categories)) for a in annotations]
        dataset = coco_dataset(coco_images, coco_annotations, categories,
                               info={"description": f"samkit project {project.root.name}", "status": status})
        out.parent.mkdir(parents=True, exist_ok=True)
        return write_coco_json(out, dataset)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the SA-1B export is a folder of per-image JSON files, but {out} is a file")
    by_image: dict[int, list[Any]] = {}
    for annotation in annotations:
        by_image.setdefault(annotation.image_id, []).append(annotation)
    for image in images:
        name = _file_name(project, image)
        target = out / (Path(name).with_suffix(".json") if not Path(name).is_absolute()
                        else Path(f"image_{image.id}.json"))
        target.parent.mkdir(parents=True, exist_ok=True)
        records = [dict(_provenance(a), id=a.id, segmentation=a.rle, bbox=list(a.bbox), area=a.area,
                        predicted_iou=a.score, stability_score=None, point_coords=None,
                        crop_box=[0, 0, image.width, image.height]) for a in by_image.get(image.id, [])]
        write_sa1b_json(target, {"image_id": image.id, "file_name": name, "width": image.width,
                                 "height": image.height}, records)
    return out
