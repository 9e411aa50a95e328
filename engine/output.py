"""A job's output folder: per-image JSON files, the manifest, resume checks and the merged COCO file.

Layout of ``out/``:

* ``<name>.json`` per input, :func:`output_name` of its ``file_name``: the relative path with
  separators as ``__`` (made filesystem-safe, at most 96 characters) plus ``-`` and 12 hex
  digits of SHA-256 of the relative path, so names are stable across runs and never collide.
  Each file holds a ``"samkit"`` block: ``settings_sha256`` (of the task's ``describe()``),
  ``file_name`` and ``path``. Files are written to a temporary file and renamed.
* ``manifest.jsonl``: one line per input, ``{"path", "output", "status": "ok"|"error",
  "error", "masks", "seconds", "worker"}``. Lines are appended as results arrive; when the job
  ends the manifest is rewritten (atomically) with exactly one line per input, in input order.

Image ids are :func:`stable_image_id` of the ``file_name``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from samkit.atomic import write_text_atomic

__all__ = ["MANIFEST", "Manifest", "merge_coco", "output_name", "read_output", "settings_sha256",
           "stable_image_id"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_CHARS = 96


def output_name(file_name: str) -> str:
    """The output file name of an input (module docstring), e.g. ``"sub__a.jpg-1f0c2a9e4b7d.json"``."""
    digest = hashlib.sha256(file_name.encode("utf-8")).hexdigest()[:12]
    readable = _UNSAFE.sub("_", file_name.replace("/", "__")).lstrip(".")[:_NAME_CHARS]
    return f"{readable}-{digest}.json"


def stable_image_id(file_name: str) -> int:
    """An image id from the ``file_name`` alone: the first 52 bits of its SHA-256 (below 2**53,
    exact in JavaScript), the same in every run and on every machine."""
    return int(hashlib.sha256(file_name.encode("utf-8")).hexdigest()[:13], 16)


def settings_sha256(settings: Mapping[str, Any], default: Any = None) -> str:
    """Hex SHA-256 of ``settings`` as canonical JSON (sorted keys; ``default`` for other values)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=default).encode("utf-8")).hexdigest()


def read_output(path: str | os.PathLike) -> dict[str, Any] | None:
    """A per-image output as a dict, or None when it is missing or does not parse."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("annotations"), list) else None


def _json_line(row: Mapping[str, Any]) -> str:
    return json.dumps(dict(row), sort_keys=False, allow_nan=False) + "\n"


class Manifest:
    """The manifest of ``out`` (module docstring): earlier lines read back, new lines appended.

    Args:
        out: the job's output folder (must exist).
        restart: forget earlier lines.
    """

    def __init__(self, out: Path, *, restart: bool = False) -> None:
        self.path = Path(out) / MANIFEST
        self.earlier: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        if restart:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            with open(self.path, encoding="utf-8") as file:
                for line in file:
                    try:
                        row = json.loads(line)
                        self.earlier[row["path"]] = row  # the last line of a path wins
                    except (ValueError, KeyError, TypeError):
                        logger.warning("ignoring an unreadable line of %s", self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, row: Mapping[str, Any]) -> None:
        """Record one result now (flushed, so an interrupted job keeps it)."""
        self._file.write(_json_line(row))
        self._file.flush()
        self.rows[row["path"]] = dict(row)

    def compact(self, paths: Sequence[str], fill: Mapping[str, Mapping[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
        """Rewrite the manifest with one line per path, in order: this run's line, else an earlier
        run's ok line, else ``fill[path]``. Returns the lines."""
        self.close()
        fill = fill or {}
        rows = []
        for path in paths:
            earlier = self.earlier.get(path)
            row = self.rows.get(path) or (earlier if earlier and earlier.get("status") == "ok" else None) \
                or fill.get(path)
            if row is None:
                raise RuntimeError(f"the manifest has no line for {path}")
            rows.append(dict(row))
        write_text_atomic(self.path, "".join(_json_line(row) for row in rows))
        return rows

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _label_categories(annotations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    names = sorted({str(a.get("label") or "object") for a in annotations})
    return [{"id": i + 1, "name": name} for i, name in enumerate(names)]


def merge_coco(path: str | os.PathLike, out: Path, rows: Sequence[Mapping[str, Any]], kind: str,
               settings: Mapping[str, Any]) -> dict[str, int]:
    """Write one COCO instances file from the ok rows' outputs (atomically).

    Segment-everything outputs (SA-1B) become category 1 ``"object"`` with ``score`` = predicted
    IoU and ``bbox`` as ``pycocotools.mask.toBbox``; detect and text outputs keep their
    categories, or (a detector that names none) get one category per label found, ids 1..K in
    name order. Image ids are the stable ids of the outputs. Returns the image and mask counts.
    The whole dataset is held in memory while it is written.
    """
    from samkit.formats import coco_dataset, rle_to_bbox, write_coco_json

    images, annotations, categories = [], [], None
    for row in rows:
        if row.get("status") != "ok" or not row.get("output"):
            continue
        data = read_output(out / row["output"])
        if data is None:
            raise RuntimeError(f"cannot read {out / row['output']} back while merging COCO")
        info = data["image"]
        if kind == "everything":
            image_id = info["image_id"]
            images.append({"id": image_id, "file_name": info["file_name"], "height": info["height"],
                           "width": info["width"]})
            annotations += [{"image_id": image_id, "category_id": 1, "segmentation": a["segmentation"],
                             "area": int(a["area"]), "bbox": rle_to_bbox(a["segmentation"]),
                             "score": float(a["predicted_iou"]), "iscrowd": 0} for a in data["annotations"]]
        else:
            images.append({k: info[k] for k in ("id", "file_name", "height", "width")})
            annotations += data["annotations"]
            categories = categories or data.get("categories")
    if kind == "everything":
        categories = [{"id": 1, "name": "object"}]
    elif categories is None:
        categories = _label_categories(annotations)
        ids = {c["name"]: c["id"] for c in categories}
        annotations = [dict(a, category_id=ids[str(a.get("label") or "object")]) for a in annotations]
    dataset = coco_dataset(images, annotations, categories, info={"description": f"samkit engine {kind}",
                                                                   "samkit": dict(settings)})
    write_coco_json(path, dataset)
    return {"images": len(images), "masks": len(annotations)}
