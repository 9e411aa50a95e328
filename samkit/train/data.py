"""Training data: instance datasets and their conversion to model-frame tensors.

A dataset here is anything indexable whose items are ``(image, masks)``: image (H, W, 3) uint8
RGB and masks (M, H, W) bool, one per instance. Three are provided:

* :class:`CocoInstances`: COCO-format instance annotations (polygons or RLE);
* :class:`MaskFolder`: a folder of images with instance masks as PNG files;
* :class:`samkit.train.synthetic.SyntheticScenes`: generated scenes.

:func:`prepare_batch` turns items into what the training step needs, through the same
transforms as inference (:mod:`samkit.transforms`): the image is resized so its longest side is
the model's ``image_size``, normalised and zero-padded bottom/right; each mask is resized the
same way (bilinear, threshold 0.5) and padded, giving masks in *model input* pixels. Losses are
computed from those masks downsampled to the low-resolution logits size (see
:mod:`samkit.train.losses`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from samkit.formats.coco_read import load_coco_json, parse_coco_instances, segmentation_to_mask
from samkit.transforms import load_image, normalize_and_pad, resize_longest_side, to_rgb_uint8

from .geometry import polygon_mask

__all__ = ["TrainBatch", "CocoInstances", "MaskFolder", "prepare_batch", "coco_segmentation_to_mask"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class TrainBatch:
    """Images and instance masks in the model frame, ready for :func:`samkit.train.loop.train_step`.

    Attributes:
        images: (B, 3, S, S) float32 normalised, padded model inputs (S = ``image_size``).
        masks: (M, S, S) bool ground-truth masks in model input pixels (padding is False).
        image_index: (M,) int64, which image each mask belongs to.
        input_sizes: (h, w) of each resized image inside its padded input.
        embeddings: (M, D) float32 first-prompt embeddings (CLIP image embeddings of mask
            crops), or None; rows of masks without one are ignored.
        has_embedding: (M,) bool, which masks carry an embedding.
    """

    images: torch.Tensor
    masks: torch.Tensor
    image_index: torch.Tensor
    input_sizes: list[tuple[int, int]]
    embeddings: torch.Tensor | None = None
    has_embedding: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "TrainBatch":
        move = (lambda t: None if t is None else t.to(device))
        return TrainBatch(move(self.images), move(self.masks), move(self.image_index), list(self.input_sizes),
                          move(self.embeddings), move(self.has_embedding))


def _resize_masks(masks: np.ndarray, size: tuple[int, int], image_size: int) -> torch.Tensor:
    """(M, H, W) bool -> (M, S, S) bool: resized to ``size`` like the image, then padded."""
    t = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    t = F.pad(t, (0, image_size - size[1], 0, image_size - size[0]))
    return t[:, 0] >= 0.5


def prepare_batch(items: Sequence[tuple[np.ndarray, np.ndarray]], *, image_size: int,
                  pixel_mean: torch.Tensor, pixel_std: torch.Tensor, max_masks_per_image: int = 16,
                  min_mask_pixels: int = 4, rng: np.random.Generator | None = None,
                  embed_crops: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
                  ) -> TrainBatch:
    """Convert ``(image, masks)`` items into a :class:`TrainBatch`.

    Args:
        items: (H, W, 3) uint8 images (anything :func:`samkit.transforms.to_rgb_uint8` reads)
            with (M, H, W) bool masks.
        image_size: the model's input side S.
        pixel_mean: (3, 1, 1) mean on the 0-255 scale (the model's ``pixel_mean`` buffer).
        pixel_std: (3, 1, 1) std on the 0-255 scale.
        max_masks_per_image: at most this many masks per image, sampled without replacement
            (the paper takes up to 64 masks per GPU).
        min_mask_pixels: masks smaller than this *after resizing* are skipped.
        rng: numpy generator for the mask sampling (default: a fresh unseeded one).
        embed_crops: optional ``(image, masks) -> (embeddings (K, D), rows (K,) int)`` giving
            first-prompt embeddings for some of the masks (see
            :class:`samkit.train.clip_path.CropEmbedder`).

    Returns:
        The batch, on the CPU. Images without a usable mask still count in ``images``.
    """
    rng = rng if rng is not None else np.random.default_rng()
    images, masks, owners, sizes, embeddings, has_embedding = [], [], [], [], [], []
    for b, (image, item_masks) in enumerate(items):
        rgb = to_rgb_uint8(image)
        item_masks = np.asarray(item_masks, dtype=bool)
        if item_masks.ndim != 3 or item_masks.shape[1:] != rgb.shape[:2]:
            raise ValueError(f"masks must have shape (M, {rgb.shape[0]}, {rgb.shape[1]}) to match the image, "
                             f"got {item_masks.shape}")
        resized = resize_longest_side(rgb, image_size)
        images.append(normalize_and_pad(resized, image_size=image_size, pixel_mean=pixel_mean,
                                        pixel_std=pixel_std)[0])
        sizes.append(tuple(resized.shape[:2]))
        if len(item_masks) > max_masks_per_image:
            item_masks = item_masks[np.sort(rng.choice(len(item_masks), max_masks_per_image, replace=False))]
        if len(item_masks) == 0:
            continue
        model_masks = _resize_masks(item_masks, resized.shape[:2], image_size)
        keep = (model_masks.flatten(1).sum(1) >= min_mask_pixels).numpy()
        if not keep.any():
            continue
        model_masks, item_masks = model_masks[keep], item_masks[keep]
        masks.append(model_masks)
        owners.append(torch.full((len(model_masks),), b, dtype=torch.int64))
        if embed_crops is not None:
            emb, rows = embed_crops(rgb, item_masks)
            flags = np.zeros(len(item_masks), dtype=bool)
            full = None
            if len(rows):
                flags[np.asarray(rows)] = True
                full = np.zeros((len(item_masks), np.asarray(emb).shape[1]), dtype=np.float32)
                full[np.asarray(rows)] = np.asarray(emb, dtype=np.float32)
            embeddings.append(full)
            has_embedding.append(torch.from_numpy(flags))
    if not masks:
        raise ValueError(f"no usable mask in the {len(items)} items (each must have a mask of at least "
                         f"{min_mask_pixels} pixels after resizing to {image_size})")
    emb_t = flags_t = None
    if embed_crops is not None:
        width = next((e.shape[1] for e in embeddings if e is not None), 0)
        if width:
            emb_t = torch.from_numpy(np.concatenate(
                [e if e is not None else np.zeros((len(f), width), np.float32)
                 for e, f in zip(embeddings, has_embedding)]))
            flags_t = torch.cat(has_embedding)
    return TrainBatch(torch.stack(images), torch.cat(masks), torch.cat(owners), sizes, emb_t, flags_t)


# --------------------------------------------------------------------------- COCO


def _without_short_polygons(segmentation: Any) -> Any:
    """A polygon list without its polygons of fewer than 3 points (anything else unchanged)."""
    if isinstance(segmentation, (list, tuple)):
        return [p for p in segmentation if not (isinstance(p, (list, tuple)) and len(p) < 6)]
    return segmentation


def coco_segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Rasterise one COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) with
    :func:`samkit.formats.coco_read.segmentation_to_mask`.

    Polygons of fewer than 3 points are dropped. Polygons use pycocotools when it is installed
    (COCO's exact rasterisation), else :func:`samkit.train.geometry.polygon_mask` (pixel centres,
    even-odd; may differ from pycocotools on boundary pixels).

    Returns:
        bool (height, width).
    """
    return segmentation_to_mask(_without_short_polygons(segmentation), height, width, polygon_fallback=polygon_mask)


class CocoInstances:
    """Instances of a COCO-format annotation file, read by :mod:`samkit.formats.coco_read`.

    Args:
        annotation_file: the JSON file (``images``, ``annotations``).
        image_dir: folder holding the ``file_name`` of each image.
        include_crowd: keep ``iscrowd`` annotations (skipped by default, as in COCO training).
        min_area: annotations with a smaller ``area`` (pixels) are skipped.
        skip_empty: drop images left without annotations.

    Annotations naming an image that is not listed are skipped; polygons of fewer than 3 points
    are dropped (as :func:`coco_segmentation_to_mask`); any other bad annotation is a
    ``ValueError`` naming the file and the annotation. Items are ``(image (H, W, 3) uint8,
    masks (M, H, W) bool)``, images read on access.
    """

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike, *,
                 include_crowd: bool = False, min_area: float = 0.0, skip_empty: bool = True) -> None:
        self.image_dir = Path(image_dir)
        data, name = load_coco_json(annotation_file)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("annotations"), list):
            raise ValueError(f"{annotation_file}: expected a COCO JSON object with 'images' and 'annotations'")
        for ann in data["annotations"]:
            if isinstance(ann, dict) and "segmentation" in ann:
                ann["segmentation"] = _without_short_polygons(ann["segmentation"])
        coco = parse_coco_instances(data, name=name, errors="collect", check_categories=False)
        bad = next((error for error in coco.rejected if error.image_id is not None), None)
        if bad is not None:
            raise bad
        self.images = {image.id: image.raw for image in coco.images}
        self._instances = {image_id: [a for a in anns if (include_crowd or not a.iscrowd)
                                      and (np.inf if a.area is None else a.area) >= min_area]
                           for image_id, anns in coco.by_image().items()}
        self.annotations: dict[Any, list[dict]] = {i: [a.raw for a in anns] for i, anns in self._instances.items()}
        self.ids = [i for i in self.images if self.annotations[i] or not skip_empty]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        info = self.images[self.ids[index]]
        image = load_image(self.image_dir / info["file_name"])
        h, w = image.shape[:2]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise ValueError(f"{info['file_name']}: the annotation says {info.get('height')}x{info.get('width')}, "
                             f"the file is {h}x{w}")
        masks = [a.mask(h, w, polygon_fallback=polygon_mask) for a in self._instances[info["id"]]]
        return image, (np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool))


# --------------------------------------------------------------------------- folder of PNGs


class MaskFolder:
    """A folder of images and instance masks stored as PNG files.

    Layout::

        root/images/<name>.<png|jpg|...>
        root/masks/<name>.png            an instance-id map: 0 background, k > 0 instance k
                                         (8- or 16-bit grayscale), or
        root/masks/<name>/<any>.png      one binary mask per file (nonzero = inside)

    Args:
        root: the folder holding ``images/`` and ``masks/``.

    Items are ``(image (H, W, 3) uint8, masks (M, H, W) bool)``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        image_dir = self.root / "images"
        if not image_dir.is_dir() or not (self.root / "masks").is_dir():
            raise FileNotFoundError(f"expected folders {image_dir} and {self.root / 'masks'}")
        self.files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        missing = [p.name for p in self.files if not self._mask_path(p).exists()]
        if missing:
            raise FileNotFoundError(f"no masks/<name>.png nor masks/<name>/ for images {missing[:5]} in {self.root}")

    def _mask_path(self, image_path: Path) -> Path:
        folder = self.root / "masks" / image_path.stem
        return folder if folder.is_dir() else folder.with_suffix(".png")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        image = load_image(self.files[index])
        path = self._mask_path(self.files[index])
        if path.is_dir():
            masks = [np.asarray(Image.open(p)) for p in sorted(path.glob("*.png"))]
            masks = [(m if m.ndim == 2 else m[..., 0]) != 0 for m in masks]
            stacked = np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), dtype=bool)
        else:
            ids = np.asarray(Image.open(path))
            ids = ids if ids.ndim == 2 else ids[..., 0]
            labels = np.unique(ids)
            stacked = ids[None] == labels[labels != 0][:, None, None]
        if stacked.shape[1:] != image.shape[:2]:
            raise ValueError(f"{path}: masks must be {image.shape[:2]} like the image, got {stacked.shape[1:]}")
        return image, stacked
