"""Writers for segment-everything results: SA-1B per-image JSON and COCO instances files.

Both accept a :class:`~samkit.results.Segmentation` or the records of
:meth:`~samkit.pipelines.everything.SegmentEverything.generate` (any output mode), write
COCO RLE with str counts, and replace the file atomically.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np

from samkit.atomic import write_json_atomic
from samkit.results import Segmentation
from samkit.rle import compress_counts, masks_to_coco_rle, rle_to_bbox

__all__ = ["write_coco_instances", "write_sa1b_json"]


def _coco_rle(segmentation: Any) -> dict[str, Any]:
    """A record's segmentation (bool mask or RLE, either counts form) as COCO RLE with str counts."""
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        elif not isinstance(counts, str):
            counts = compress_counts(counts)
        return {"size": [int(v) for v in segmentation["size"]], "counts": counts}
    return masks_to_coco_rle(np.asarray(segmentation, dtype=bool))[0]


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


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
    if isinstance(records, Segmentation):
        records = records.to_records("coco_rle")
    annotations = [dict(r, id=r.get("id", i), segmentation=_coco_rle(r["segmentation"])) for i, r in enumerate(records)]
    info = dict(image_info)
    if annotations:
        info.setdefault("height", annotations[0]["segmentation"]["size"][0])
        info.setdefault("width", annotations[0]["segmentation"]["size"][1])
    write_json_atomic(path, {"image": info, "annotations": annotations}, default=_json_default)


def write_coco_instances(path: str | os.PathLike,
                         images_and_results: Iterable[tuple[dict[str, Any], Segmentation | Sequence[dict]]],
                         categories: Sequence[dict[str, Any]] = ({"id": 1, "name": "object"},)) -> None:
    """Write a COCO instances file for several images (atomically).

    Args:
        images_and_results: (image info, result) pairs; image info needs ``"id"`` (and usually
            ``"file_name"``); ``height``/``width`` come from the result when missing. A result is
            a :class:`Segmentation` or :meth:`~samkit.pipelines.everything.SegmentEverything.generate` records.
        categories: COCO categories; masks without a ``category_id`` get the first one.

    Annotations get ids from 1, ``segmentation`` COCO RLE with str counts, ``bbox`` XYWH as
    ``pycocotools.mask.toBbox``, ``area``, ``score`` (predicted IoU) and ``iscrowd`` 0.
    """
    categories = [dict(c) for c in categories]
    if not categories or any("id" not in c for c in categories):
        raise ValueError(f"categories must be a non-empty list of dicts with an 'id', got {categories!r}")
    images, annotations = [], []
    for info, result in images_and_results:
        if "id" not in info:
            raise ValueError(f"each image info needs an 'id', got keys {sorted(info)}")
        info = dict(info)
        if isinstance(result, Segmentation):
            info.setdefault("height", result.image_size[0])
            info.setdefault("width", result.image_size[1])
            annotations += result.to_coco(info["id"], category_id=categories[0]["id"], start_id=len(annotations) + 1)
        else:
            for record in result:
                rle = _coco_rle(record["segmentation"])
                info.setdefault("height", rle["size"][0])
                info.setdefault("width", rle["size"][1])
                annotations.append({"id": len(annotations) + 1, "image_id": info["id"],
                                    "category_id": int(record.get("category_id", categories[0]["id"])),
                                    "segmentation": rle, "area": int(record["area"]), "bbox": rle_to_bbox(rle),
                                    "score": float(record.get("predicted_iou", 1.0)), "iscrowd": 0})
        images.append(info)
    write_json_atomic(path, {"images": images, "annotations": annotations, "categories": categories},
                      default=_json_default)
