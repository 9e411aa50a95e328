"""The CLIP-embedding prompt path (SAM paper, section 7.5): CLIP embeddings as first prompts.

Training: for every mask larger than ``min_area`` pixels, the CLIP *image* embedding of a crop
around the mask is given as the mask's first prompt (``Prompts(embeddings=...)``, projected to a
prompt token by ``model.embedding_prompt``). Inference: the CLIP *text* embedding of a phrase
takes its place (text-to-mask), or the image embedding of an example crop ("visual exemplar"
prompting) — both live in CLIP's shared space. The model needs
``SamConfig(embedding_prompt_dim=D)`` with D the CLIP embedding width (512 for ViT-B-32).

open_clip is imported lazily (``pip install samkit[clip]``). Models are built with
``open_clip.create_model_and_transforms(model_name, pretrained=...)``; ``pretrained=None`` gives a
randomly initialised model (no download: tests, offline work). Loaded models are cached per
(name, pretrained tag, device, image size).

Example:
    >>> text = clip_text_embeddings(["a red circle"], model_name="ViT-B-32", pretrained="openai")  # doctest: +SKIP
    >>> out = segmenter.segment(embedding, prompts=Prompts(embeddings=text))                      # doctest: +SKIP
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["ClipSettings", "CropEmbedder", "load_clip", "clip_image_embeddings", "clip_text_embeddings",
           "mask_crops"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSettings:
    """Which CLIP model to use.

    Attributes:
        model_name: an open_clip model name (``open_clip.list_models()``), e.g. ``"ViT-B-32"``.
        pretrained: an open_clip pretrained tag (e.g. ``"openai"``, ``"laion2b_s34b_b79k"``) or a
            local weights file; None builds random weights (tests).
        device: where CLIP runs.
        image_size: force CLIP's input size (None: the model's own, 224 for most).
    """

    model_name: str = "ViT-B-32"
    pretrained: str | None = "openai"
    device: str = "cpu"
    image_size: int | None = None


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as error:
        raise ImportError("the CLIP prompt path needs open_clip: pip install samkit[clip]") from error
    return open_clip


@functools.lru_cache(maxsize=4)
def load_clip(settings: ClipSettings = ClipSettings()) -> tuple[torch.nn.Module, Any, Any]:
    """Build (and cache) an open_clip model: ``(model in eval mode, image preprocess, tokenizer)``."""
    open_clip = _open_clip()
    extra = {"force_image_size": settings.image_size} if settings.image_size else {}
    model, _, preprocess = open_clip.create_model_and_transforms(settings.model_name, pretrained=settings.pretrained,
                                                                 device=settings.device, **extra)
    tokenizer = open_clip.get_tokenizer(settings.model_name)
    logger.info("loaded CLIP %s (pretrained=%s)", settings.model_name, settings.pretrained)
    return model.eval(), preprocess, tokenizer


def clip_image_embeddings(crops: Sequence[Any], settings: ClipSettings = ClipSettings(), *,
                          batch_size: int = 32) -> np.ndarray:
    """CLIP image embeddings of image crops.

    Args:
        crops: (h, w, 3) uint8 RGB arrays (or PIL images) of any sizes.
        settings: the CLIP model.
        batch_size: crops per forward pass.

    Returns:
        (N, D) float32, L2-normalised (D = the model's embedding width); (0, D) for no crops.
    """
    from PIL import Image

    model, preprocess, _ = load_clip(settings)
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            pils = [c if isinstance(c, Image.Image) else Image.fromarray(np.asarray(c, dtype=np.uint8))
                    for c in crops[start:start + batch_size]]
            x = torch.stack([preprocess(p) for p in pils]).to(settings.device)
            out.append(torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1).cpu())
    if not out:
        return np.zeros((0, _embedding_width(model)), dtype=np.float32)
    return torch.cat(out).numpy()


def clip_text_embeddings(phrases: Sequence[str], settings: ClipSettings = ClipSettings()) -> np.ndarray:
    """CLIP text embeddings of phrases: (N, D) float32, L2-normalised.

    Raises:
        TypeError: ``phrases`` is a single string instead of a sequence of strings.
    """
    if isinstance(phrases, str):
        raise TypeError(f"phrases must be a sequence of strings, got one string {phrases!r}; wrap it in a list")
    model, _, tokenizer = load_clip(settings)
    if not phrases:
        return np.zeros((0, _embedding_width(model)), dtype=np.float32)
    with torch.no_grad():
        tokens = tokenizer(list(phrases)).to(settings.device)
        return torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1).cpu().numpy()


def _embedding_width(model: torch.nn.Module) -> int:
    width = getattr(getattr(model, "visual", None), "output_dim", None)
    return int(width) if width else int(model.text_projection.shape[-1])


def mask_crops(image: np.ndarray, masks: np.ndarray, *, min_area: int = 100 * 100, margin: float = 0.1
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Square crops around the masks larger than ``min_area``.

    Args:
        image: (H, W, 3) uint8 RGB.
        masks: (M, H, W) bool.
        min_area: masks with fewer pixels get no crop (the paper uses masks above 100^2 pixels).
        margin: the crop is the mask's box grown by this fraction of its longer side on each side,
            made square, clipped to the image.

    Returns:
        crops (list of (h, w, 3) uint8) and the (K,) int64 indices of the masks they belong to.
    """
    from .geometry import mask_boxes

    masks = np.asarray(masks, dtype=bool)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    rows = np.flatnonzero(areas >= max(min_area, 1))
    h, w = image.shape[:2]
    crops = []
    for box in mask_boxes(masks[rows]):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = max(box[2] - box[0], box[3] - box[1]) * (0.5 + margin)
        x0, x1 = int(max(0, np.floor(cx - half))), int(min(w, np.ceil(cx + half)))
        y0, y1 = int(max(0, np.floor(cy - half))), int(min(h, np.ceil(cy + half)))
        crops.append(np.ascontiguousarray(image[y0:y1, x0:x1]))
    return crops, rows.astype(np.int64)


@dataclass(frozen=True)
class CropEmbedder:
    """``(image, masks) -> (embeddings (K, D), rows (K,))`` for :func:`samkit.train.prepare_batch`.

    Attributes:
        clip: the CLIP model settings.
        min_area: smallest mask (pixels, original image) that gets an embedding.
        margin: crop margin (see :func:`mask_crops`).
    """

    clip: ClipSettings = ClipSettings()
    min_area: int = 100 * 100
    margin: float = 0.1

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops, rows = mask_crops(image, masks, min_area=self.min_area, margin=self.margin)
        return clip_image_embeddings(crops, self.clip), rows
