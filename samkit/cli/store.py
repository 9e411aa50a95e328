"""Resumable batch output for the ``samkit`` CLI: COCO parts joined into one file, or SA-1B files.

**COCO** (:class:`COCOParts`). A batch command (``samkit everything``, ``samkit detect-segment``) over many images writes each
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

**SA-1B** (:class:`SA1BFolder`, ``everything --format sa1b``). One JSON per image,
``DIR/<image stem>.json``, written atomically, holding SA-1B's ``image`` and ``annotations``
and a ``samkit`` block: the run's ``settings``, their ``settings_sha256`` and the
``image_sha256`` of the image file's bytes. So a rerun:

* skips an image whose file holds the same settings and the same image bytes;
* recomputes an image whose bytes changed (a replaced file);
* is refused, before anything is computed, when any samkit file in ``DIR`` holds other settings,
  or when a file it would write exists without a ``samkit`` block (``--restart`` overwrites);
* removes, once every image is done, the samkit files of images no longer in the input.

``image_id`` is :func:`stable_image_id` of the image's file name, so it never changes when
files are added or removed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from samkit.atomic import write_json_atomic

__all__ = ["COCOParts", "IMAGE_EXTENSIONS", "SA1BFolder", "file_sha256", "image_files", "stable_image_id"]

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
        from samkit.formats.coco import coco_dataset

        entries = sorted(self._done.values(), key=lambda e: int(e["image"]["id"]))
        annotations = [dict(annotation, image_id=entry["image"]["id"])
                       for entry in entries for annotation in entry["annotations"]]
        coco = coco_dataset([e["image"] for e in entries], annotations, categories,
                            info={"description": description, "samkit": self.settings})
        write_json_atomic(self.out, coco)
        shutil.rmtree(self.folder, ignore_errors=True)
        return coco


# -- SA-1B, one file per image -------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_image_id(file_name: str) -> int:
    """An image id from the file name alone: the first 52 bits of SHA-256 of its UTF-8 bytes.

    Deterministic across runs and machines, independent of the other files, and below 2**53 so
    JavaScript readers keep it exact. ``file_name`` is the name inside the input folder.
    """
    return int(hashlib.sha256(file_name.encode("utf-8")).hexdigest()[:13], 16)


def settings_sha256(settings: dict[str, Any]) -> str:
    """Hex SHA-256 of the settings as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()


class SA1BFolder:
    """Per-image SA-1B files, resumable by image content and settings (module docstring).

    Args:
        out: the folder, or with ``single`` the one ``.json`` file to write.
        file_names: the input images' file names (one file each; stems must differ).
        settings: what produced the results (JSON-able).
        restart: overwrite earlier results, whatever their settings.
        single: ``out`` is the file for the only image.
    """

    def __init__(self, out: str | Path, file_names: list[str], settings: dict[str, Any], *, restart: bool = False,
                 single: bool = False) -> None:
        self.out, self.single = Path(out), single
        self.settings = json.loads(json.dumps(settings))
        self.settings_sha256 = settings_sha256(self.settings)
        if single and len(file_names) != 1:
            raise ValueError(f"one SA-1B file holds one image, got {len(file_names)}")
        if not single:
            if self.out.exists() and not self.out.is_dir():
                raise NotADirectoryError(f"--out {self.out} exists and is not a folder")
            stems = [Path(name).stem for name in file_names]
            twins = sorted({s for s in stems if stems.count(s) > 1})
            if twins:
                raise ValueError(f"--format sa1b names each JSON after its image; these names clash: {twins}")
        self.targets = {name: self.target(name) for name in file_names}
        self.ids = {name: stable_image_id(name) for name in file_names}
        if len(set(self.ids.values())) != len(self.ids):
            raise ValueError("two image names give the same stable image id; rename one of them")
        self._stored: dict[Path, dict[str, Any]] = {}  # samkit block of each earlier file of ours
        self._scan(restart)

    def target(self, file_name: str) -> Path:
        """The JSON file of one image."""
        return self.out if self.single else self.out / f"{Path(file_name).stem}.json"

    def _scan(self, restart: bool) -> None:
        if self.single:
            candidates = [self.out] if self.out.is_file() else []
        else:
            candidates = sorted(self.out.glob("[!.]*.json")) if self.out.is_dir() else []
            for stale in self.out.glob(".*.json.*.tmp"):  # from a run killed while writing
                stale.unlink(missing_ok=True)
        ours_to_write = set(self.targets.values())
        for path in candidates:
            try:
                block = json.loads(path.read_text(encoding="utf-8")).get("samkit")
            except (OSError, ValueError, AttributeError):
                block = None
            if not isinstance(block, dict) or "settings_sha256" not in block:
                if path in ours_to_write and not restart:
                    raise ValueError(f"{path} exists and was not written by this samkit (it has no 'samkit' block); "
                                     "pass --restart to overwrite it, or choose another --out")
                continue
            if block["settings_sha256"] != self.settings_sha256 and not restart:
                raise ValueError(f"{path} holds results made with other settings ({block.get('settings')}); this run "
                                 f"uses {self.settings}. Pass --restart to discard them, or choose another --out")
            self._stored[path] = block

    def is_done(self, file_name: str, image_sha256: str) -> bool:
        """Whether the image's file holds this run's settings and these image bytes."""
        block = self._stored.get(self.targets[file_name])
        return (block is not None and block["settings_sha256"] == self.settings_sha256
                and block.get("image_sha256") == image_sha256 and block.get("file_name") == file_name)

    def save(self, file_name: str, image_sha256: str, result: Any) -> Path:
        """Write one image's SA-1B JSON (atomically); ``result`` is a Segmentation or records."""
        from samkit.formats.sa1b import write_sa1b_json

        target = self.targets[file_name]
        if not self.single:
            self.out.mkdir(parents=True, exist_ok=True)
        block = {"settings": self.settings, "settings_sha256": self.settings_sha256, "image_sha256": image_sha256,
                 "file_name": file_name}
        write_sa1b_json(target, {"image_id": self.ids[file_name], "file_name": file_name}, result,
                        extra={"samkit": block})
        self._stored[target] = block
        return target

    def finish(self) -> list[Path]:
        """Remove the samkit files of images no longer in the input; returns their paths."""
        wanted = set(self.targets.values())
        orphans = [path for path in self._stored if path not in wanted]
        for path in orphans:
            path.unlink(missing_ok=True)
            del self._stored[path]
        if orphans:
            logger.info("removed %d SA-1B files of images no longer in the input", len(orphans))
        return orphans
