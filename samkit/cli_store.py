"""Resumable batch output for the ``samkit`` CLI: per-image parts, then one atomic file.

A batch command (``samkit everything``, ``samkit detect-segment``) over many images writes each
image's COCO annotations to a sidecar folder ``OUT.json.parts/`` as soon as the image is done
(each part written to a temporary file and renamed, so a part is whole or absent). When every
image is done, the parts are joined into ``OUT.json`` (again via a temporary file and a rename)
and the sidecar folder is removed. So:

* an interrupted run (Ctrl-C, kill, power loss) leaves no ``OUT.json``, or the previous complete
  one, never a half-written file;
* a rerun with the same settings skips the images found in the parts or in an existing
  ``OUT.json``; new images in the input are added;
* a rerun with other settings (model, preset, ...) is refused unless ``--restart`` is given, so
  one file never mixes results of two configurations.

The settings are stored in ``OUT.json`` under ``info.samkit`` and in ``OUT.json.parts/run.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from samkit.atomic import write_json_atomic

__all__ = ["COCOParts", "image_files", "IMAGE_EXTENSIONS"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
RUN_FILE = "run.json"


def _natural_key(name: str) -> list[Any]:
    import re

    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_files(source: str) -> list[tuple[Path, str]]:
    """``(path, file_name)`` of one image file, or of a folder's images in natural name order.

    ``file_name`` is the name inside the folder (what COCO's ``file_name`` holds).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: the folder holds no image file.
    """
    path = Path(source)
    if path.is_file():
        return [(path, path.name)]
    if not path.exists():
        raise FileNotFoundError(f"no such image file or folder: {source}")
    names = sorted((p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=_natural_key)
    if not names:
        raise ValueError(f"folder {source} holds no images; expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    return [(path / name, name) for name in names]


class COCOParts:
    """Per-image COCO parts in a sidecar folder, joined into one COCO file at the end.

    Args:
        out: the final ``.json`` path.
        settings: what produced the results (JSON-able); reruns must match it.
        restart: forget earlier parts and any existing ``out``.
    """

    def __init__(self, out: str | Path, settings: dict[str, Any], *, restart: bool = False) -> None:
        self.out = Path(out)
        self.folder = self.out.with_name(self.out.name + ".parts")
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON
        if self.out.is_dir():
            raise IsADirectoryError(f"--out {self.out} is a folder; expected the path of a .json file")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._done: dict[str, dict[str, Any]] = {}
        if restart:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            self._load_final()
            self._load_parts()
        for stale in self.out.parent.glob(f".{self.out.name}.*.tmp"):  # from a run killed while writing
            stale.unlink(missing_ok=True)

    # -- reading earlier results -------------------------------------------------------------
    def _refuse(self, where: Path, found: Any) -> None:
        raise ValueError(f"{where} holds results made with other settings ({found}); this run uses {self.settings}. "
                         "Pass --restart to discard them, or choose another --out")

    def _load_final(self) -> None:
        if not self.out.is_file():
            return
        try:
            data = json.loads(self.out.read_text(encoding="utf-8"))
            stored = data["info"]["samkit"]
            images, annotations = data["images"], data["annotations"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"--out {self.out} exists and is not a samkit result file; pass --restart to overwrite "
                             "it, or choose another --out") from None
        if stored != self.settings:
            self._refuse(self.out, stored)
        by_id: dict[Any, list[dict[str, Any]]] = {}
        for annotation in annotations:
            by_id.setdefault(annotation["image_id"], []).append(annotation)
        for image in images:
            self._done[image["file_name"]] = {"image": image, "annotations": by_id.get(image["id"], [])}
        logger.info("%s: %d images already done", self.out, len(images))

    def _load_parts(self) -> None:
        if not self.folder.is_dir():
            return
        run = self.folder / RUN_FILE
        try:
            stored = json.loads(run.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if stored != self.settings:
            if stored is None:
                raise ValueError(f"{self.folder} exists but has no readable {RUN_FILE}; pass --restart to discard it")
            self._refuse(self.folder, stored)
        for part in sorted(self.folder.glob("[!.]*.json")):
            if part.name == RUN_FILE:
                continue
            try:
                entry = json.loads(part.read_text(encoding="utf-8"))
                self._done[entry["image"]["file_name"]] = entry
            except (OSError, ValueError, KeyError, TypeError) as error:
                logger.warning("ignoring the unreadable part %s (%s); its image is redone", part, error)
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    # -- progress ----------------------------------------------------------------------------
    def is_done(self, file_name: str) -> bool:
        return file_name in self._done

    def __len__(self) -> int:
        return len(self._done)

    def next_image_id(self) -> int:
        """An image id not used by any result so far (ids of earlier results are kept)."""
        return 1 + max((int(e["image"]["id"]) for e in self._done.values()), default=0)

    def save(self, image: dict[str, Any], annotations: list[dict[str, Any]]) -> None:
        """Record one finished image (``image`` has ``id`` and ``file_name``) as a part, atomically."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True)
        run = self.folder / RUN_FILE
        if not run.is_file():
            write_json_atomic(run, self.settings, indent=2)
        entry = {"image": image, "annotations": annotations}
        digest = hashlib.sha1(image["file_name"].encode("utf-8")).hexdigest()[:20]
        write_json_atomic(self.folder / f"{digest}.json", entry)
        self._done[image["file_name"]] = json.loads(json.dumps(entry))

    def finish(self, categories: list[dict[str, Any]], description: str) -> dict[str, Any]:
        """Join every result into ``out`` (atomically), remove the parts; returns the COCO dict."""
        entries = sorted(self._done.values(), key=lambda e: int(e["image"]["id"]))
        annotations = []
        for entry in entries:
            for annotation in entry["annotations"]:
                annotations.append(dict(annotation, id=len(annotations) + 1, image_id=entry["image"]["id"]))
        coco = {"info": {"description": description, "samkit": self.settings},
                "images": [e["image"] for e in entries], "annotations": annotations, "categories": categories}
        write_json_atomic(self.out, coco)
        shutil.rmtree(self.folder, ignore_errors=True)
        return coco
