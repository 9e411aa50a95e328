"""SA-1B per-image JSON: the layout of Meta's SA-1B dataset, one file per image.

``{"image": {"image_id", "file_name", "height", "width", ...}, "annotations": [{"id",
"segmentation": COCO RLE (str counts), "bbox", "area", "predicted_iou", "stability_score",
"crop_box", "point_coords"}, ...]}``. ``bbox`` is XYWH as the records carry it
(segment_anything's ``SamAutomaticMaskGenerator`` records: inclusive ``max_col``); the RLE
decodes with ``pycocotools.mask.decode``.

The records are those of ``Segmentation.to_records`` / ``SegmentEverything.generate`` (any
output mode: bool masks or RLE of either counts form); an object with ``to_records`` (a
:class:`~samkit.results.Segmentation`) is accepted too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from samkit.atomic import write_json_atomic
from samkit.formats.jsonable import json_default
from samkit.formats.rle import to_coco_rle

__all__ = ["read_sa1b_json", "sa1b_dict", "write_sa1b_json"]


def _records(records: Any) -> Sequence[Mapping[str, Any]]:
    if hasattr(records, "to_records"):  # a Segmentation, duck-typed
        return records.to_records("coco_rle")
    return records


def sa1b_dict(image_info: Mapping[str, Any], records: Any) -> dict[str, Any]:
    """One image's SA-1B dict (JSON-ready but for numpy values, which :func:`write_sa1b_json` converts).

    Args:
        image_info: e.g. ``{"image_id": 1, "file_name": "sa_1.jpg"}``; ``height``/``width`` are
            filled in from the masks when missing.
        records: mask records (module docstring) or a Segmentation.
    """
    annotations = []
    for i, record in enumerate(_records(records)):
        if "segmentation" not in record:
            raise ValueError(f"record {i} has no 'segmentation', got keys {sorted(record)}")
        annotations.append(dict(record, id=record.get("id", i), segmentation=to_coco_rle(record["segmentation"])))
    info = dict(image_info)
    if annotations:
        info.setdefault("height", annotations[0]["segmentation"]["size"][0])
        info.setdefault("width", annotations[0]["segmentation"]["size"][1])
    return {"image": info, "annotations": annotations}


def write_sa1b_json(path: str | os.PathLike, image_info: Mapping[str, Any], records: Any, *,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write one image's masks as SA-1B JSON, atomically; returns the path.

    Args:
        image_info, records: see :func:`sa1b_dict`.
        extra: more top-level keys (e.g. provenance); SA-1B readers ignore them.
    """
    payload = sa1b_dict(image_info, records)
    clash = sorted(set(extra or {}) & set(payload))
    if clash:
        raise ValueError(f"extra keys must not replace {clash}")
    payload.update(extra or {})
    return write_json_atomic(path, payload, default=json_default)


def read_sa1b_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read an SA-1B per-image file, checking it has ``image`` and ``annotations``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("image"), dict) or \
            not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path} is not an SA-1B per-image file: expected an object with 'image' and 'annotations'")
    return data
