"""Evaluation datasets: a COCO-format instances JSON with its image folder, or in-memory arrays.

A dataset lists its images (COCO image dicts with ``id``) and loads one at a time as an
:class:`EvalSample`: the RGB image and the masks of its objects. The protocols of
:mod:`samkit.eval` read only :attr:`CocoDataset.images`, :meth:`CocoDataset.load` and, for the
pycocotools protocols, :meth:`CocoDataset.coco_dict`.

**What is read.** The JSON is read and checked by :mod:`samkit.formats.coco_read` (its
docstring lists the checks). ``images`` entries need ``id``, and ``file_name`` (LVIS-style
entries without it use the last part of ``coco_url``); ``height``/``width`` are checked against
the file when given. ``annotations`` need ``image_id`` and ``segmentation``: polygons (a list of
``[x0, y0, x1, y1, ...]`` lists, pixel-edge coordinates; rasterised by pycocotools exactly as
COCOeval does) or RLE (compressed or uncompressed counts, ``size`` = [H, W] of the image).
``iscrowd`` regions (missing means 0, as in LVIS) are kept for COCOeval, which ignores
detections on them, and are not prompted or scored by the point protocol. ``area`` defaults to
the mask's pixel count, ``category_id`` to 1 (category ids are not checked against the list).
``categories`` may carry LVIS's ``frequency`` (``"r"``, ``"c"``, ``"f"``).

**Bad input** never ends a run: an annotation naming an image that is not listed is left out
with a warning (:attr:`CocoDataset.warnings`); an annotation the reader rejects (no or a
malformed segmentation, a bad field), an image file that is missing or unreadable, a size that
differs from the JSON, or a segmentation that does not fit the image marks that image as
failed with a message naming its id (:attr:`CocoDataset.problems`, and :meth:`load` raises
:class:`SampleError`); the protocols record it in ``per_image`` and go on. A JSON without
images, or with a bad top level, image or category entry, is a ``ValueError``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from samkit.formats.coco_read import CocoAnnotation, load_coco_json, parse_coco_instances, segmentation_to_mask

__all__ = ["ArrayDataset", "CocoDataset", "EvalObject", "EvalSample", "SampleError", "write_coco_folder"]


class SampleError(ValueError):
    """One image of a dataset cannot be evaluated; ``image_id`` names it."""

    def __init__(self, image_id: Any, message: str) -> None:
        super().__init__(f"image {image_id!r}: {message}")
        self.image_id = image_id


@dataclass(frozen=True)
class EvalObject:
    """One ground-truth object of an image (its mask is the same row of :attr:`EvalSample.masks`).

    Attributes:
        annotation_id: the COCO annotation ``id`` (its index in the image when there is none).
        category_id: the COCO category id (1 when there is none).
        area: the annotation's ``area``, else the mask's pixel count.
        iscrowd: a crowd region (not prompted by the point protocol).
    """

    annotation_id: Any
    category_id: int
    area: float
    iscrowd: bool = False


@dataclass
class EvalSample:
    """One image with its ground truth.

    Attributes:
        image_id: the COCO image id.
        image: uint8 (H, W, 3) RGB.
        masks: bool (M, H, W), one row per entry of ``objects``.
        objects: the M objects, crowd regions included.
        file_name: where the image came from ("" for in-memory data).
    """

    image_id: Any
    image: np.ndarray
    masks: np.ndarray
    objects: list[EvalObject] = field(default_factory=list)
    file_name: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3:
            raise SampleError(self.image_id, f"image must have shape (H, W, 3), got {self.image.shape}")
        h, w = self.image.shape[:2]
        if self.masks.ndim != 3 or self.masks.shape[1:] != (h, w) or len(self.masks) != len(self.objects):
            raise SampleError(self.image_id, f"masks must have shape (M={len(self.objects)}, {h}, {w}), "
                                             f"got {self.masks.shape}")

    def evaluated(self) -> np.ndarray:
        """Indices of the objects the point protocol prompts: not crowd, mask not empty."""
        keep = [i for i, o in enumerate(self.objects) if not o.iscrowd and self.masks[i].any()]
        return np.asarray(keep, dtype=np.int64)


class CocoDataset:
    """A COCO (or LVIS) instances JSON and the folder of its images.

    Args:
        annotations: path of the JSON, or its parsed dict.
        images: the folder ``file_name`` is relative to (default: the JSON's folder).
        max_images: keep only the first ``max_images`` images (in the JSON's order).

    Attributes:
        images: the image dicts, in the JSON's order.
        categories: the category dicts.
        problems: image id -> message for images already known to be unusable.
        warnings: messages about annotations left out (their image is not listed).
        name: the JSON's path ("" for a dict).

    Example:
        >>> data = CocoDataset("val/instances.json", "val/images")   # doctest: +SKIP
        >>> sample = data.load(data.images[0]); sample.masks.shape   # doctest: +SKIP
        (7, 480, 640)
    """

    def __init__(self, annotations: str | os.PathLike | Mapping[str, Any], images: str | os.PathLike | None = None,
                 *, max_images: int | None = None) -> None:
        data, self.name = load_coco_json(annotations)
        coco = parse_coco_instances(data, name=self.name, errors="collect", check_categories=False)
        self.folder = Path(images) if images is not None else Path(self.name).parent if self.name else Path(".")
        self.problems: dict[Any, str] = {}
        self.warnings: list[str] = []
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        kept = coco.images[:max_images]
        if not kept:
            raise ValueError(f"the dataset {self.name or '(dict)'} lists no images; nothing to evaluate")
        self.images: list[dict[str, Any]] = [dict(image.raw) for image in kept]
        self.categories = [dict(c) for c in coco.categories]
        self._by_image: dict[Any, list[dict[str, Any]]] = {image.id: [] for image in kept}
        self._parsed: dict[Any, list[CocoAnnotation]] = {image.id: [] for image in kept}
        for item in sorted([*coco.annotations, *coco.rejected], key=lambda item: item.index):
            if item.image_id not in self._by_image:  # an unlisted image, or one past max_images
                if item.image_id is None:
                    self.warnings.append(f"{item}; it is left out")
                continue
            self._by_image[item.image_id].append(item.raw)
            if isinstance(item, CocoAnnotation):
                self._parsed[item.image_id].append(item)
            else:
                self.problems.setdefault(item.image_id, str(item))

    def __len__(self) -> int:
        return len(self.images)

    def file_name(self, info: Mapping[str, Any]) -> str:
        """The image's path relative to the image folder (``file_name``, else from ``coco_url``)."""
        name = info.get("file_name") or str(info.get("coco_url", "")).rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise SampleError(info["id"], "the image has neither 'file_name' nor 'coco_url'")
        return str(name)

    def annotations(self, image_id: Any) -> list[dict[str, Any]]:
        """The raw annotation dicts of one image."""
        return self._by_image[image_id]

    def load(self, info: Mapping[str, Any]) -> EvalSample:
        """The image and ground truth of one entry of :attr:`images`.

        Raises:
            SampleError: naming the image id and what is wrong.
        """
        from samkit.transforms import load_image

        image_id = info["id"]
        if image_id in self.problems:
            raise SampleError(image_id, self.problems[image_id])
        name = self.file_name(info)
        try:
            image = load_image(self.folder / name)
        except (OSError, ValueError) as error:
            raise SampleError(image_id, str(error)) from None
        h, w = image.shape[:2]
        expected = (info.get("height"), info.get("width"))
        if None not in expected and tuple(int(v) for v in expected) != (h, w):
            raise SampleError(image_id, f"the file {name} is {h}x{w} (H x W), the JSON says "
                                        f"{expected[0]}x{expected[1]}")
        masks, objects = [], []
        for j, ann in enumerate(self._parsed[image_id]):
            annotation_id = j if ann.id is None else ann.id
            try:
                mask = segmentation_to_mask(ann.segmentation, h, w)
            except ValueError as error:
                raise SampleError(image_id, f"annotation {annotation_id!r}: {error}") from None
            masks.append(mask)
            objects.append(EvalObject(annotation_id, 1 if ann.category_id is None else ann.category_id,
                                      float(mask.sum()) if ann.area is None else ann.area, ann.iscrowd))
        stacked = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
        return EvalSample(image_id, image, stacked, objects, name)

    def coco_dict(self, image_ids: Sequence[Any] | None = None) -> dict[str, Any]:
        """The dataset as pycocotools reads it, restricted to ``image_ids`` (default: all).

        Annotations get ``iscrowd`` (default 0), ``id`` (default: position, from 1) and
        ``area`` where missing; images keep their fields (``height``/``width`` are needed for
        polygons and are taken from the file when missing). Annotations the reader rejected are
        left out.
        """
        wanted = set(self._by_image) if image_ids is None else set(image_ids)
        images, annotations = [], []
        next_id = 1 + max((a["id"] for anns in self._by_image.values() for a in anns
                           if isinstance(a.get("id"), int)), default=0)
        for info in self.images:
            if info["id"] not in wanted:
                continue
            info = dict(info)
            if "height" not in info or "width" not in info:
                from PIL import Image

                with Image.open(self.folder / self.file_name(info)) as im:
                    info["width"], info["height"] = im.size
            images.append(info)
            for parsed in self._parsed[info["id"]]:
                ann = dict(parsed.raw, iscrowd=int(parsed.iscrowd),
                           category_id=1 if parsed.category_id is None else parsed.category_id)
                if not isinstance(ann.get("id"), int):
                    ann["id"], next_id = next_id, next_id + 1
                if "area" not in ann:
                    ann["area"] = float(segmentation_to_mask(parsed.segmentation, info["height"], info["width"]).sum())
                annotations.append(ann)
        categories = self.categories or [{"id": 1, "name": "object"}]
        return {"images": images, "annotations": annotations, "categories": categories}


class ArrayDataset:
    """A dataset of ``(image (H, W, 3) uint8, masks (M, H, W) bool)`` items, e.g.
    :class:`samkit.train.SyntheticScenes`; image ids are the item indices, every object has
    category 1 and its pixel count as area. Items are read when loaded."""

    def __init__(self, items: Sequence[tuple[Any, Any]], *, max_images: int | None = None) -> None:
        self.items = items
        count = len(items) if max_images is None else min(max_images, len(items))
        if count < 1:
            raise ValueError("the dataset has no items; nothing to evaluate")
        self.images = [{"id": i} for i in range(count)]
        self.categories = [{"id": 1, "name": "object"}]
        self.problems: dict[Any, str] = {}
        self.warnings: list[str] = []
        self.name = type(items).__name__

    def __len__(self) -> int:
        return len(self.images)

    def load(self, info: Mapping[str, Any]) -> EvalSample:
        from samkit.arrays import to_numpy
        from samkit.transforms import to_rgb_uint8

        image, masks = self.items[info["id"]]
        image = to_rgb_uint8(image)
        masks = np.asarray(to_numpy(masks), dtype=bool)
        objects = [EvalObject(j, 1, float(m.sum())) for j, m in enumerate(masks)]
        if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
            raise SampleError(info["id"], f"masks must have shape (M, {image.shape[0]}, {image.shape[1]}), "
                                          f"got {masks.shape}")
        return EvalSample(info["id"], image, masks, objects)


def write_coco_folder(items: Sequence[tuple[Any, Any]], folder: str | os.PathLike, *,
                      category: str = "object") -> Path:
    """Write ``(image (H, W, 3) uint8, masks (M, H, W) bool)`` items as a COCO dataset folder.

    Images become ``folder/images/000000.png``, ... and the masks compressed-RLE annotations of one
    category in ``folder/instances.json`` (image ids from 1); empty masks are left out. Returns
    the JSON's path, ready for :class:`CocoDataset`.
    """
    from PIL import Image

    from samkit.formats.coco import coco_annotations, coco_dataset, write_coco_json

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (image, masks) in enumerate(items):
        image = np.asarray(image, dtype=np.uint8)
        masks = np.asarray(masks, dtype=bool).reshape(-1, *image.shape[:2])
        masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
        name = f"images/{i:06d}.png"
        Image.fromarray(image).save(folder / name)
        images.append({"id": i + 1, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        annotations += coco_annotations(masks, np.ones(len(masks)), None, i + 1, category_id=1)
    path = folder / "instances.json"
    write_coco_json(path, coco_dataset(images, annotations, [{"id": 1, "name": category}]))
    return path
