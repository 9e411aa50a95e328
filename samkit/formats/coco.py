"""COCO instance segmentation: annotations, whole datasets and detection results.

Every samkit writer of COCO (``Segmentation.to_coco``, ``pipelines.to_coco_instances`` and
``write_coco_instances``, the CLI's batch files, the demo's downloads) builds its annotations
with :func:`coco_annotations`, so one rule decides each mask's category.

**Category rule.** A mask's ``category_id`` is the first that applies of:

1. its meta ``"category_id"`` (a COCO category id given outright);
2. with a category list: the category whose ``name`` equals its meta ``"label"`` (else
   ``"class_name"``), e.g. a detector's class name or a text query;
3. its meta ``"class_id"`` (a detector's class index);
4. the ``category_id`` argument;
5. with a category list of exactly one category: that category.

With a category list, the id found in 1, 3 or 4 must be one of the list's ids, and a mask whose
meta has a label must get its category from 1 to 3 (a label that names no category never falls
back to a default). Without a list, labels are not read. Anything else is a ``ValueError``
naming the mask, its label and class id, and the categories.

Reading COCO instances back is :mod:`samkit.formats.coco_read`.

Annotations hold ``id``, ``image_id``, ``category_id``, ``segmentation`` (compressed RLE with
``str`` counts), ``area`` (pixels), ``bbox`` (XYWH as ``pycocotools.mask.toBbox``: pixel edges),
``score`` and ``iscrowd`` 0: what ``pycocotools.coco.COCO`` and ``COCOeval`` read.

Example:
    >>> masks = np.zeros((2, 4, 5), dtype=bool); masks[0, 1:3, 1:4] = True; masks[1, 0, 0] = True
    >>> anns = coco_annotations(masks, [0.9, 0.5], [{"label": "cat"}, {"label": "dog"}], image_id=7,
    ...                         categories=["cat", "dog"])
    >>> [(a["category_id"], a["area"], a["bbox"]) for a in anns]
    [(1, 6, [1.0, 1.0, 3.0, 2.0]), (2, 1, [0.0, 0.0, 1.0, 1.0])]
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from samkit.atomic import write_json_atomic
from samkit.formats.jsonable import json_default, to_python
from samkit.formats.rle import as_bool_masks, masks_to_boxes, masks_to_coco_rle

__all__ = ["LABEL_KEYS", "category_of", "coco_annotations", "coco_dataset", "coco_results", "normalize_categories",
           "write_coco_json"]

#: Meta keys holding a mask's class name, matched against category names (in this order).
LABEL_KEYS = ("label", "class_name")

Categories = Sequence[str] | Sequence[Mapping[str, Any]] | Mapping[int, str]


def normalize_categories(categories: Categories) -> list[dict[str, Any]]:
    """COCO categories ``[{"id": int, "name": str, ...}, ...]`` from any accepted form.

    Args:
        categories: such dicts, a list of names (ids 1..K in order) or ``{id: name}`` (e.g. a
            YOLO model's ``names``).

    Raises:
        TypeError: an item is neither a name nor a dict with ``id`` and ``name``.
        ValueError: two categories share an id.
    """
    if isinstance(categories, Mapping):
        out = [{"id": int(k), "name": str(v)} for k, v in categories.items()]
    else:
        out = []
        for i, c in enumerate(categories):
            if isinstance(c, str):
                out.append({"id": i + 1, "name": c})
            elif isinstance(c, Mapping) and "id" in c and "name" in c:
                out.append(dict(c, id=int(c["id"]), name=str(c["name"])))
            else:
                raise TypeError(f"categories must hold names or {{'id', 'name'}} dicts, got {c!r}")
    ids = [c["id"] for c in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"category ids must differ, got {ids}")
    return out


def _label(meta: Mapping[str, Any]) -> Any:
    return next((meta[key] for key in LABEL_KEYS if meta.get(key) is not None), None)


def category_of(meta: Mapping[str, Any], categories: Sequence[Mapping[str, Any]] | None = None,
                category_id: int | None = None) -> int:
    """The category id of one mask by the module's rule.

    Args:
        meta: the mask's metadata.
        categories: normalized categories (:func:`normalize_categories`), or None for no list.
        category_id: the default id (step 4).

    Raises:
        ValueError: no step applies, or an id is not in the list.
    """
    label, class_id = _label(meta), meta.get("class_id")
    ids = None if categories is None else {int(c["id"]) for c in categories}

    def known(value: Any, where: str) -> int:
        value = int(value)
        if ids is not None and value not in ids:
            raise ValueError(f"a mask's {where} {value} is not a category id; categories are "
                             f"{[(c['id'], c['name']) for c in categories]}")
        return value

    if meta.get("category_id") is not None:
        return known(meta["category_id"], "meta 'category_id'")
    if categories is not None and label is not None:
        by_name = {str(c["name"]): int(c["id"]) for c in categories}
        if str(label) in by_name:
            return by_name[str(label)]
    if class_id is not None and (ids is None or int(class_id) in ids or label is None):
        return known(class_id, "meta 'class_id'")
    if label is None or categories is None:  # without a list, a label cannot be matched and is ignored
        if category_id is not None:
            return known(category_id, "category_id argument")
        if categories is not None and len(categories) == 1:
            return int(categories[0]["id"])
    names = None if categories is None else sorted(str(c["name"]) for c in categories)
    raise ValueError(f"the mask has label {label!r} / class_id {class_id!r}, which match no category; categories "
                     f"are {names}")


def coco_annotations(masks: Any, scores: Any, meta: Sequence[Mapping[str, Any]] | None, image_id: Any, *,
                     categories: Categories | None = None, category_id: int | None = None, start_id: int = 1,
                     score_key: str | None = None) -> list[dict[str, Any]]:
    """COCO annotation dicts for the masks of one image, one per mask.

    Args:
        masks: bool (M, H, W) in original-image pixels.
        scores: (M,) the annotations' ``score`` (e.g. predicted IoU).
        meta: M dicts (or None): read for the category (module docstring) and ``score_key``.
        image_id: the image's COCO id.
        categories: the category list (any form :func:`normalize_categories` accepts) or None.
        category_id: the default category (rule step 4).
        start_id: id of the first annotation; the others count up.
        score_key: a meta key whose value, when present, replaces the mask's score (e.g.
            ``"score"``: a detector's confidence).

    Returns:
        M JSON-ready dicts (module docstring for the keys).
    """
    masks = as_bool_masks(masks, "masks")
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (M, H, W), got {masks.shape}")
    m = len(masks)
    scores = np.asarray(to_python(scores) if scores is not None else np.ones(m), dtype=np.float64).reshape(-1)
    meta = [{} for _ in range(m)] if meta is None else list(meta)
    if len(scores) != m or len(meta) != m:
        raise ValueError(f"need one score and one meta dict per mask ({m}), got {len(scores)} and {len(meta)}")
    cats = None if categories is None else normalize_categories(categories)
    xyxy = masks_to_boxes(masks).astype(np.float64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    areas = masks.sum(axis=(1, 2), dtype=np.int64).tolist()
    out = []
    for i, (rle, info) in enumerate(zip(masks_to_coco_rle(masks), meta)):
        try:
            category = category_of(info, cats, category_id)
        except ValueError as error:
            raise ValueError(f"mask {i} of image {image_id!r}: {error}") from None
        score = info.get(score_key) if score_key is not None else None
        out.append({"id": start_id + i, "image_id": image_id, "category_id": category, "segmentation": rle,
                    "area": areas[i], "bbox": xywh[i].tolist(),
                    "score": float(scores[i] if score is None else score), "iscrowd": 0})
    return out


def coco_dataset(images: Sequence[Mapping[str, Any]], annotations: Iterable[Mapping[str, Any]],
                 categories: Categories, *, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A COCO instances dataset: ``{"info"?, "images", "annotations", "categories"}``.

    Annotations are renumbered 1, 2, ... in order; each must name one of the ``images`` (by
    ``image_id``) and one of the ``categories``.

    Args:
        images: COCO image dicts with ``id`` (and usually ``file_name``, ``height``, ``width``).
        annotations: e.g. from :func:`coco_annotations`.
        categories: any form :func:`normalize_categories` accepts.
        info: the dataset's ``info`` block, or None for none.
    """
    cats = normalize_categories(categories)
    images = [dict(image) for image in images]
    missing = [i for i, image in enumerate(images) if "id" not in image]
    if missing:
        raise ValueError(f"each image needs an 'id', got keys {sorted(images[missing[0]])}")
    image_ids = {image["id"] for image in images}
    if len(image_ids) != len(images):
        raise ValueError(f"image ids must differ, got {[image['id'] for image in images]}")
    category_ids = {c["id"] for c in cats}
    out = []
    for annotation in annotations:
        if annotation["image_id"] not in image_ids:
            raise ValueError(f"an annotation names image {annotation['image_id']!r}, which is not among the images")
        if annotation["category_id"] not in category_ids:
            raise ValueError(f"an annotation names category {annotation['category_id']!r}; categories are "
                             f"{sorted(category_ids)}")
        out.append(dict(annotation, id=len(out) + 1))
    dataset: dict[str, Any] = {} if info is None else {"info": dict(info)}
    dataset.update(images=images, annotations=out, categories=cats)
    return dataset


def coco_results(annotations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Annotations as a COCO results list (what ``COCO.loadRes`` and ``COCOeval`` read):
    ``image_id``, ``category_id``, ``segmentation``, ``score`` per mask."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
             "score": float(a["score"])} for a in annotations]


def write_coco_json(path: str | os.PathLike, dataset: Any, *, indent: int | None = None) -> Path:
    """Write a COCO dataset dict or results list as JSON, atomically; returns the path."""
    return write_json_atomic(path, dataset, indent=indent, default=json_default)
