"""Reading COCO instances: one parser that validates the JSON, one decoder of a ``segmentation``.

Every samkit reader of COCO instances (:func:`samkit.engine.projects.io.read_coco` behind
``samkit project import``, :class:`samkit.eval.CocoDataset`, :class:`samkit.train.CocoInstances`)
parses with :func:`parse_coco_instances` and rasterises with :func:`segmentation_to_mask`, so a
file means the same everywhere and a bad one gets the same message.

**What is checked.** The JSON is an object with an ``images`` list and optional ``annotations``
and ``categories`` lists.

* images: ``id`` (int or str, unique); optional ``file_name`` (str), ``height`` and ``width``
  (ints >= 1);
* categories: ``id`` (int, unique) and ``name`` (str); other keys (LVIS's ``frequency``) are kept;
* annotations: ``image_id`` naming a listed image; optional ``id`` (int or str), ``category_id``
  (int; one of the categories when the file lists any and ``check_categories`` is set),
  ``iscrowd`` (0 or 1, default 0), ``area`` (finite, >= 0) and ``bbox`` (XYWH: 4 finite numbers,
  W and H >= 0); and a ``segmentation``, one of

  - polygons ``[[x0, y0, x1, y1, ...], ...]``: at least 3 finite XY points each, pixel-edge
    coordinates (the pixel ``mask[r, c]`` is the square ``[c, c + 1] x [r, r + 1]``); their union
    is rasterised by pycocotools, exactly as ``pycocotools.coco.COCO.annToMask``; ``[]`` is an
    empty mask;
  - RLE ``{"size": [H, W], "counts": ...}`` with uncompressed (``list[int]``) or compressed
    (``str``) counts (:mod:`samkit.formats.rle`).

Errors are ``ValueError`` naming the file, the entry (an annotation by its ``id``, else as
``annotations[i]``), what was expected and what was got.

Example:
    >>> data = {"images": [{"id": 1, "height": 2, "width": 3}],
    ...         "annotations": [{"id": 5, "image_id": 1, "segmentation": {"size": [2, 3], "counts": [1, 2, 3]}}]}
    >>> annotation = parse_coco_instances(data).annotations[0]
    >>> annotation.mask(2, 3).astype(int).tolist(), annotation.box(2, 3)
    ([[0, 1, 0], [1, 0, 0]], [0.0, 0.0, 2.0, 2.0])
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np

from samkit.formats.rle import masks_to_boxes, rle_to_mask

__all__ = ["CocoAnnotation", "CocoAnnotationError", "CocoImage", "CocoInstancesFile", "load_coco_json",
           "parse_coco_instances", "read_coco_instances", "segmentation_to_mask"]

#: Rasterises one polygon when pycocotools is not installed: (V, 2) float64 XY vertices, H, W -> bool (H, W).
PolygonRasterizer = Callable[[np.ndarray, int, int], np.ndarray]


class CocoAnnotationError(ValueError):
    """An annotation the parser rejects.

    Attributes:
        index: its position in ``annotations``.
        raw: the entry as it is in the file.
        image_id: the listed image it names, or None when it names none.
    """

    def __init__(self, message: str, *, index: int, raw: Any, image_id: Any) -> None:
        super().__init__(message)
        self.index, self.raw, self.image_id = index, raw, image_id


@dataclass(frozen=True)
class CocoImage:
    """One entry of ``images``.

    Attributes:
        id: the image id.
        file_name: its path relative to the image folder, or None when the entry has none.
        height: rows H, or None when not given.
        width: columns W, or None when not given.
        raw: the entry as it is in the file.
    """

    id: int | str
    file_name: str | None
    height: int | None
    width: int | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class CocoAnnotation:
    """One validated entry of ``annotations``.

    Attributes:
        index: its position in ``annotations``.
        id: the annotation id, or None when it has none.
        image_id: the id of a listed image.
        category_id: the category id, or None when it has none.
        segmentation: the ``segmentation`` as in the file (polygons or RLE; module docstring).
        iscrowd: a crowd region.
        area: the ``area`` (pixels), or None when not given.
        bbox: the ``bbox`` as XYWH pixel edges, or None when not given.
        raw: the entry as it is in the file.
        where: how messages name it, e.g. ``"instances.json: annotation 5"``.
    """

    index: int
    id: int | str | None
    image_id: int | str
    category_id: int | None
    segmentation: Any
    iscrowd: bool
    area: float | None
    bbox: tuple[float, float, float, float] | None
    raw: dict[str, Any]
    where: str

    def mask(self, height: int, width: int, *, polygon_fallback: PolygonRasterizer | None = None) -> np.ndarray:
        """The segmentation as a bool (height, width) mask (:func:`segmentation_to_mask`).

        Raises:
            ValueError: naming the annotation, when the RLE does not fit the image.
        """
        try:
            return segmentation_to_mask(self.segmentation, height, width, polygon_fallback=polygon_fallback)
        except ValueError as error:
            raise ValueError(f"{self.where}: {error}") from None

    def box(self, height: int, width: int) -> list[float]:
        """XYWH box in pixel edges: the annotation's ``bbox``, else the mask's tight box (as
        ``pycocotools.mask.toBbox``; zeros for an empty mask)."""
        if self.bbox is not None:
            return list(self.bbox)
        x0, y0, x1, y1 = masks_to_boxes(self.mask(height, width)).tolist()
        return [x0, y0, x1 - x0, y1 - y0]


@dataclass(frozen=True)
class CocoInstancesFile:
    """A parsed COCO instances JSON.

    Attributes:
        name: the file's path ("" for data given as a dict).
        images: the images, in file order.
        annotations: the valid annotations, in file order.
        categories: the category dicts, in file order.
        rejected: with ``errors="collect"``, the annotations that failed the checks.
    """

    name: str
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[dict[str, Any]]
    rejected: list[CocoAnnotationError] = field(default_factory=list)

    def by_image(self) -> dict[Any, list[CocoAnnotation]]:
        """Each image id (all of them) -> its valid annotations in file order."""
        out: dict[Any, list[CocoAnnotation]] = {image.id: [] for image in self.images}
        for annotation in self.annotations:
            out[annotation.image_id].append(annotation)
        return out


# -- checks of single values ------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value: Any) -> bool:
    return _is_int(value) or isinstance(value, str)


def _prefixed(where: str, text: str) -> str:
    return f"{where}: {text}" if where else text


def _polygons(segmentation: list | tuple) -> list[np.ndarray]:
    """The polygons as (V, 2) float64 XY arrays (ValueError naming the first bad one)."""
    out = []
    for k, polygon in enumerate(segmentation):
        try:
            coords = np.asarray(polygon) if isinstance(polygon, (list, tuple)) else None
        except ValueError:  # ragged nesting
            coords = None
        if coords is None or coords.ndim != 1 or (coords.size and coords.dtype.kind not in "iuf") \
                or bool in map(type, polygon):  # numpy would read true / false as 1 / 0
            raise ValueError(f"polygon {k} must be a list of numbers [x0, y0, x1, y1, ...], got {polygon!r:.80}")
        if coords.size % 2:
            raise ValueError(f"polygon {k} must have an even number of coordinates (x, y pairs), got {coords.size}")
        if coords.size < 6:
            raise ValueError(f"polygon {k} needs at least 3 points (6 coordinates), got {coords.size}")
        coords = coords.astype(np.float64)
        if not np.isfinite(coords).all():
            raise ValueError(f"polygon {k} must hold finite numbers, got {coords[~np.isfinite(coords)][0]}")
        out.append(coords.reshape(-1, 2))
    return out


def _check_rle(rle: Mapping[str, Any]) -> None:
    if "size" not in rle or "counts" not in rle:
        raise ValueError(f"an RLE needs 'size' and 'counts', got keys {sorted(map(str, rle))}")
    size, counts = rle["size"], rle["counts"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) and v >= 0 for v in size):
        raise ValueError(f"RLE size must be [H, W] with ints >= 0, got {size!r:.80}")
    if isinstance(counts, (str, bytes, bytearray)):
        return
    if isinstance(counts, (list, tuple)) and all(_is_int(v) and v >= 0 for v in counts):
        return
    raise ValueError("RLE counts must be a str (compressed) or a list of ints >= 0 (uncompressed), got "
                     f"{type(counts).__name__} {counts!r:.80}")


def _check_segmentation(segmentation: Any) -> list[np.ndarray] | None:
    """Polygons as (V, 2) arrays, or None for a valid RLE; ValueError for anything else."""
    if isinstance(segmentation, Mapping):
        _check_rle(segmentation)
        return None
    if isinstance(segmentation, (list, tuple)):
        return _polygons(segmentation)
    raise ValueError("segmentation must be a list of polygons [[x0, y0, x1, y1, ...], ...] or an RLE dict "
                     f"{{'size': [H, W], 'counts': ...}}, got {type(segmentation).__name__}")


# -- the segmentation decoder -----------------------------------------------------------------------
def segmentation_to_mask(segmentation: Any, height: int, width: int, *,
                         polygon_fallback: PolygonRasterizer | None = None) -> np.ndarray:
    """Rasterise one COCO ``segmentation`` (polygon list, uncompressed or compressed RLE).

    Args:
        segmentation: polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixel-edge XY coordinates, or
            an RLE ``{"size": [H, W], "counts": list[int] | str}``.
        height: the image's rows H.
        width: the image's columns W.
        polygon_fallback: rasterises one (V, 2) polygon when pycocotools is not installed (the
            polygons' union is taken); None: polygons then raise ``ImportError``.

    Returns:
        bool (height, width), C-contiguous; polygons exactly as ``pycocotools`` ``annToMask``.

    Raises:
        ValueError: the segmentation is malformed, or an RLE's size is not ``[height, width]``.
        ImportError: polygons without pycocotools and without ``polygon_fallback``.

    Example:
        >>> segmentation_to_mask({"size": [2, 2], "counts": "022"}, 2, 2).tolist()   # compressed counts
        [[True, False], [True, False]]
    """
    polygons = _check_segmentation(segmentation)
    height, width = int(height), int(width)
    if polygons is None:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image's [H, W] = {[height, width]}")
        return rle_to_mask(dict(segmentation))
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        if polygon_fallback is None:
            raise ImportError("polygon segmentations are rasterised by pycocotools: pip install samkit[eval]") from None
        out = np.zeros((height, width), dtype=bool)
        for polygon in polygons:
            out |= np.asarray(polygon_fallback(polygon, height, width), dtype=bool)
        return out
    rles = mask_utils.frPyObjects([polygon.ravel().tolist() for polygon in polygons], height, width)
    return np.ascontiguousarray(mask_utils.decode(mask_utils.merge(rles)), dtype=bool)


# -- the parser -------------------------------------------------------------------------------------
def _image(entry: Any, i: int, where: str) -> CocoImage:
    if not isinstance(entry, Mapping) or not _is_id(entry.get("id")):
        got = f"id {entry.get('id')!r}" if isinstance(entry, Mapping) else type(entry).__name__
        raise ValueError(_prefixed(where, f"images[{i}] must be an object with an int or str 'id', got {got}"))
    file_name = entry.get("file_name")
    if file_name is not None and not isinstance(file_name, str):
        raise ValueError(_prefixed(where, f"image {entry['id']!r}: 'file_name' must be a str, got {file_name!r:.80}"))
    sizes = []
    for key in ("height", "width"):
        value = entry.get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            raise ValueError(_prefixed(where, f"image {entry['id']!r}: '{key}' must be an int >= 1, got {value!r:.40}"))
        sizes.append(value)
    return CocoImage(entry["id"], file_name, sizes[0], sizes[1], dict(entry))


def _categories(entries: list, where: str) -> list[dict[str, Any]]:
    out, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not _is_int(entry.get("id")) or not isinstance(entry.get("name"), str):
            raise ValueError(_prefixed(where, f"categories[{i}] must be an object with an int 'id' and a str 'name', "
                                              f"got {entry!r:.80}"))
        if entry["id"] in seen:
            raise ValueError(_prefixed(where, f"category ids must differ, got {entry['id']!r} twice"))
        seen.add(entry["id"])
        out.append(dict(entry))
    return out


def _annotation(entry: Any, i: int, where: str, image_ids: set, category_ids: set | None) -> CocoAnnotation:
    """One annotation, checked in the order image, category, fields, segmentation."""
    def fail(text: str, image_id: Any = None) -> CocoAnnotationError:
        return CocoAnnotationError(_prefixed(where, f"{name} {text}"), index=i, raw=entry, image_id=image_id)

    name = f"annotations[{i}]"
    if not isinstance(entry, Mapping):
        raise fail(f"must be an object, got {type(entry).__name__}")
    ann_id = entry.get("id")
    if ann_id is not None and not _is_id(ann_id):
        raise fail(f"has id {ann_id!r:.40}; expected an int or str")
    if ann_id is not None:
        name = f"annotation {ann_id!r}"
    if "image_id" not in entry:
        raise fail(f"needs an 'image_id', got keys {sorted(map(str, entry))}")
    image_id = entry["image_id"]
    if not _is_id(image_id) or image_id not in image_ids:
        raise fail(f"names image {image_id!r:.40}, which is not among the images")
    category = entry.get("category_id")
    if category is not None and not _is_int(category):
        raise fail(f"has category_id {category!r:.40}; expected an int", image_id)
    if category_ids:
        if category is None:
            raise fail(f"needs a 'category_id'; categories are {sorted(category_ids)}", image_id)
        if category not in category_ids:
            raise fail(f"names category {category!r}; categories are {sorted(category_ids)}", image_id)
    iscrowd = entry.get("iscrowd", 0)
    if not isinstance(iscrowd, int) or iscrowd not in (0, 1):  # bools count as 0 / 1
        raise fail(f"has iscrowd {iscrowd!r:.40}; expected 0 or 1", image_id)
    area = entry.get("area")
    if area is not None and not (_is_number(area) and area >= 0):
        raise fail(f"has area {area!r:.40}; expected a finite number >= 0", image_id)
    bbox = entry.get("bbox")
    if bbox is not None and not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                                 and all(_is_number(v) for v in bbox) and bbox[2] >= 0 and bbox[3] >= 0):
        raise fail(f"has bbox {bbox!r:.80}; expected [x, y, w, h]: 4 finite numbers, w and h >= 0", image_id)
    if "segmentation" not in entry:
        raise fail(f"needs a 'segmentation', got keys {sorted(map(str, entry))}", image_id)
    try:
        _check_segmentation(entry["segmentation"])
    except ValueError as error:
        raise fail(f"has a bad segmentation: {error}", image_id) from None
    return CocoAnnotation(i, ann_id, image_id, category, entry["segmentation"], bool(iscrowd),
                          None if area is None else float(area),
                          None if bbox is None else tuple(float(v) for v in bbox), dict(entry),
                          _prefixed(where, name))


def parse_coco_instances(data: Any, *, name: str = "", errors: Literal["raise", "collect"] = "raise",
                         check_categories: bool = True) -> CocoInstancesFile:
    """Validate a parsed COCO instances JSON (module docstring for the checks).

    Args:
        data: the JSON's value (e.g. from :func:`load_coco_json`).
        name: the file's path, for messages ("" for none).
        errors: ``"raise"``: a bad annotation raises :class:`CocoAnnotationError`; ``"collect"``:
            it is left out and listed in :attr:`CocoInstancesFile.rejected`. Bad images or
            categories and a bad top level always raise.
        check_categories: require each annotation's ``category_id`` to be one of the categories
            when the file lists any.

    Returns:
        The images, valid annotations and categories.

    Raises:
        ValueError: naming the file and the first bad entry, what was expected and what was got.
    """
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        got = type(data).__name__ + (f" with keys {sorted(map(str, data))}" if isinstance(data, Mapping) else "")
        raise ValueError(_prefixed(name, f"expected a COCO JSON object with an 'images' list, got {got}"))
    for key in ("annotations", "categories"):
        if data.get(key) is not None and not isinstance(data[key], list):
            raise ValueError(_prefixed(name, f"'{key}' must be a list, got {type(data[key]).__name__}"))
    images = [_image(entry, i, name) for i, entry in enumerate(data["images"])]
    image_ids: set = set()
    for image in images:
        if image.id in image_ids:
            raise ValueError(_prefixed(name, f"image ids must differ, got {image.id!r} twice"))
        image_ids.add(image.id)
    categories = _categories(data.get("categories") or [], name)
    category_ids = {c["id"] for c in categories} if check_categories else None
    annotations, rejected = [], []
    for i, entry in enumerate(data.get("annotations") or []):
        try:
            annotations.append(_annotation(entry, i, name, image_ids, category_ids))
        except CocoAnnotationError as error:
            if errors == "raise":
                raise
            rejected.append(error)
    return CocoInstancesFile(name, images, annotations, categories, rejected)


def load_coco_json(source: str | os.PathLike | Mapping[str, Any]) -> tuple[Any, str]:
    """The JSON value of a COCO file and its name: ``(json.load(file), str(path))``, or
    ``(source, "")`` for a dict.

    Raises:
        FileNotFoundError: no such file. ValueError: the file is not JSON (UTF-8).
    """
    if isinstance(source, Mapping):
        return source, ""
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"COCO instances file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a JSON file: {error}") from None


def read_coco_instances(source: str | os.PathLike | Mapping[str, Any], *,
                        errors: Literal["raise", "collect"] = "raise", check_categories: bool = True
                        ) -> CocoInstancesFile:
    """Load (:func:`load_coco_json`) and validate (:func:`parse_coco_instances`) a COCO instances JSON.

    Args:
        source: the JSON file, or its parsed dict.
        errors: as :func:`parse_coco_instances`.
        check_categories: as :func:`parse_coco_instances`.

    Example:
        >>> coco = read_coco_instances("instances_val2017.json")    # doctest: +SKIP
        >>> first = coco.annotations[0]; image = coco.by_image()    # doctest: +SKIP
    """
    data, name = load_coco_json(source)
    return parse_coco_instances(data, name=name, errors=errors, check_categories=check_categories)
