"""Writers for segment-everything results: SA-1B per-image JSON and COCO instances files.

Both accept a :class:`~samkit.results.Segmentation` or the records of
:meth:`~samkit.pipelines.everything.SegmentEverything.generate` (any output mode), write
COCO RLE with str counts, and replace the file atomically. The formats live in
:mod:`samkit.formats.sa1b` and :mod:`samkit.formats.coco` (whose category rule applies).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from samkit.formats.coco import category_of, coco_dataset, normalize_categories, write_coco_json
from samkit.formats.rle import rle_to_bbox, to_coco_rle
from samkit.formats.sa1b import write_sa1b_json as _write_sa1b_file
from samkit.results import Segmentation

__all__ = ["write_coco_instances", "write_sa1b_json"]


def write_sa1b_json(path: str | os.PathLike, image_info: dict[str, Any],
                    records: Sequence[dict[str, Any]] | Segmentation) -> None:
    """Write one image's masks in the SA-1B per-image format (atomically).

    ``{"image": image_info, "annotations": [{"id", "segmentation": COCO RLE (str counts), "bbox",
    "area", "predicted_iou", "stability_score", "crop_box", "point_coords"}, ...]}``.

    Args:
        image_info: e.g. ``{"image_id": 1, "file_name": "sa_1.jpg"}``; ``height``/``width`` are
            filled in from the masks when missing.
        records: :meth:`~samkit.pipelines.everything.SegmentEverything.generate` output (any
            output mode) or a Segmentation.
    """
    _write_sa1b_file(path, image_info, records)


def _record_annotation(record: dict[str, Any], image_id: Any, categories: list[dict[str, Any]]) -> dict[str, Any]:
    rle = to_coco_rle(record["segmentation"])
    return {"id": 0, "image_id": image_id, "category_id": category_of(record, categories),
            "segmentation": rle, "area": int(record["area"]), "bbox": rle_to_bbox(rle),
            "score": float(record.get("predicted_iou", 1.0)), "iscrowd": 0}


def write_coco_instances(path: str | os.PathLike,
                         images_and_results: Iterable[tuple[dict[str, Any], Segmentation | Sequence[dict]]],
                         categories: Sequence[dict[str, Any]] = ({"id": 1, "name": "object"},)) -> None:
    """Write a COCO instances file for several images (atomically).

    Args:
        images_and_results: (image info, result) pairs; image info needs ``"id"`` (and usually
            ``"file_name"``); ``height``/``width`` come from the result when missing. A result is
            a :class:`Segmentation` or :meth:`~samkit.pipelines.everything.SegmentEverything.generate` records.
        categories: COCO categories. Each mask's category follows :mod:`samkit.formats.coco`'s
            rule: its meta (or record) ``category_id``, label or ``class_id``, else the only
            category when there is one.

    Annotations get ids from 1, ``segmentation`` COCO RLE with str counts, ``bbox`` XYWH as
    ``pycocotools.mask.toBbox``, ``area``, ``score`` (predicted IoU) and ``iscrowd`` 0.
    """
    categories = [dict(c) for c in categories]
    if not categories or any("id" not in c for c in categories):
        raise ValueError(f"categories must be a non-empty list of dicts with an 'id', got {categories!r}")
    categories = normalize_categories([dict(c, name=c.get("name", str(c["id"]))) for c in categories])
    images, annotations = [], []
    for info, result in images_and_results:
        if "id" not in info:
            raise ValueError(f"each image info needs an 'id', got keys {sorted(info)}")
        info = dict(info)
        if isinstance(result, Segmentation):
            info.setdefault("height", result.image_size[0])
            info.setdefault("width", result.image_size[1])
            annotations += result.to_coco(info["id"], category_id=None, categories=categories)
        else:
            for record in result:
                annotation = _record_annotation(record, info["id"], categories)
                info.setdefault("height", annotation["segmentation"]["size"][0])
                info.setdefault("width", annotation["segmentation"]["size"][1])
                annotations.append(annotation)
        images.append(info)
    write_coco_json(path, coco_dataset(images, annotations, categories))
