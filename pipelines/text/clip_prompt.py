"""CLIP-embedding prompt text-to-mask: the SAM paper's own mechanism (section 7.5).

The CLIP text embedding of each phrase becomes one prompt token through the model's learned
``embedding_prompt`` (``Prompts(embeddings=...)``), and SAM decodes one mask per phrase. Only
models trained with that path have it (``SamConfig(embedding_prompt_dim=D)``, trained with
:mod:`samkit.train`; Meta never released such weights); the CLIP model must be the one used in
training. An extra point per phrase (or one for all) can disambiguate, as in the paper's
figure 12. All phrases of an image are decoded in one decoder call; the images are encoded in
batches through the segmenter's cache.

Meta per mask: ``predicted_iou``, ``output_index`` (with ``multimask``), ``phrase``,
``phrase_index``, ``strategy="clip_prompt"`` and ``text_score`` = the predicted IoU, or with
``verify_threshold`` the CLIP cosine similarity of the mask's crop and its phrase (masks below
it are dropped: the embedding prompt always answers, even when the object is absent).

Example:
    >>> clip = ClipModel("ViT-B-32", pretrained="openai")                       # doctest: +SKIP
    >>> ClipPromptStrategy(clip)(segmenter, image, "a wheel", points=[[420, 310]])  # doctest: +SKIP
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from samkit.arrays import to_numpy
from samkit.prompts import Prompts
from samkit.results import Segmentation

from ..checks import check_score
from .crops import BACKGROUNDS, mask_crop_batch
from .strategies import StrategyBase, as_images, check_phrases, drop_small, empty_like, label_masks, \
    order_by_phrase

__all__ = ["ClipPromptStrategy", "clip_prompt_to_mask", "check_embedding_prompt"]

logger = logging.getLogger(__name__)


def check_embedding_prompt(segmenter: Any, dim: int | None = None) -> int:
    """The embedding width D that ``segmenter``'s model accepts as a prompt; errors when it has
    no embedding prompt path or D differs from ``dim`` (the CLIP model's width)."""
    module = getattr(getattr(segmenter, "model", None), "embedding_prompt", None)
    if module is None:
        raise ValueError("the 'clip_prompt' strategy needs a SAM model with the embedding prompt path (SAM paper "
                         "sec. 7.5: SamConfig(embedding_prompt_dim=D), trained with samkit.train); this model has "
                         "none (Meta's checkpoints never do). Use strategy='grounded', 'clip_rerank' or 'sam3', or "
                         "load a checkpoint trained with the path")
    if dim is not None and int(dim) != int(module.in_dim):
        raise ValueError(f"the model's embedding prompt takes embeddings of width D = {module.in_dim}, the CLIP model "
                         f"gives D = {dim}; use the CLIP model the SAM model was trained with")
    return int(module.in_dim)


def _text_embeddings(clip: Any, text_embeddings: Any, phrases: list[str]) -> np.ndarray:
    if text_embeddings is None:
        if clip is None:
            raise ValueError("the 'clip_prompt' strategy needs clip= (a ClipModel) or text_embeddings=, got neither")
        return clip.encode_text(phrases)
    emb = np.asarray(to_numpy(text_embeddings), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(phrases):
        raise ValueError(f"text_embeddings must have shape (P, D) with P = {len(phrases)} phrases, got {emb.shape}")
    return emb


def _verify(rgb: list[np.ndarray], results: list[Segmentation], text: np.ndarray, clip: Any, threshold: float,
            background: str, padding: float) -> list[Segmentation]:
    """Rescore every mask by the CLIP similarity of its crop to its phrase (one image-tower pass)."""
    height, width = clip.input_size
    crops = [mask_crop_batch(image, r.masks[:, 0], size=height, padding=padding, background=background,
                             fill=clip.mean) for image, r in zip(rgb, results)]
    counts = [len(r) for r in results]
    if not sum(counts):
        return results
    pixels = torch.cat(crops)
    if width != height:
        pixels = torch.nn.functional.interpolate(pixels, size=(height, width), mode="bilinear")
    parts = np.split(clip.encode_pixels(pixels), np.cumsum(counts)[:-1])
    out = []
    for image, r, emb in zip(rgb, results, parts):
        if not len(r):
            out.append(r)
            continue
        index = np.array([m["phrase_index"] for m in r.meta])
        sim = np.einsum("nd,nd->n", emb, text[index])
        keep = sim >= threshold
        relabelled = Segmentation(r.masks, sim[:, None], r.logits, [dict(m, text_score=float(s))
                                                                    for m, s in zip(r.meta, sim)])
        out.append(order_by_phrase(relabelled[keep]) if keep.any() else empty_like(image))
    return out


def clip_prompt_to_mask(segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str, clip: Any = None, *,
                        text_embeddings: Any = None, points: Any = None, labels: Any = None, multimask: bool = True,
                        min_score: float | None = None, min_area: int = 1, verify_threshold: float | None = None,
                        background: str = "blur", padding: float = 0.1) -> list[Segmentation]:
    """One mask per phrase and image from CLIP text embeddings given as SAM prompts.

    Args:
        segmenter: a :class:`samkit.Segmenter` whose model has the embedding prompt path.
        images: RGB images.
        phrases: one phrase or a list.
        clip: a :class:`samkit.adapters.clip.ClipModel` (the one the SAM model was trained with).
        text_embeddings: (P, D) embeddings of the phrases instead of computing them with ``clip``.
        points: extra prompt points, XY original pixels: (Q, 2) for every phrase or (P, Q, 2)
            one set per phrase; the same for every image.
        labels: (Q,) or (P, Q) point labels (1 foreground, 0 background; default 1).
        multimask: decode three masks per phrase and keep the highest predicted IoU.
        min_score: drop masks whose predicted IoU is lower (None: keep all).
        min_area: drop masks with fewer pixels (the default drops empty masks; 0 keeps them).
        verify_threshold: rescore each mask with CLIP (crop vs phrase cosine similarity) and drop
            those below; needs ``clip``. None: off.
        background, padding: crops for ``verify_threshold`` (see
            :func:`samkit.pipelines.text.crops.mask_crop_batch`).

    Returns:
        One :class:`Segmentation` per image (module docstring for meta), K = 1.
    """
    phrases = check_phrases(phrases)
    verify_threshold = check_score("verify_threshold", verify_threshold)
    if verify_threshold is not None and clip is None:
        raise ValueError("verify_threshold needs clip= (a ClipModel) to score the mask crops, got clip=None")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    text = _text_embeddings(clip, text_embeddings, phrases)
    check_embedding_prompt(segmenter, text.shape[1])
    prompts = Prompts(embeddings=text, points=points, labels=labels if points is not None else None,
                      meta=[{} for _ in phrases])
    if len(prompts) != len(phrases):
        raise ValueError(f"points must hold one set per phrase ({len(phrases)}) or one for all, got {len(prompts)}")
    rgb = as_images(images)
    results = []
    for image, embedding in zip(rgb, segmenter.encode_batch(rgb)):
        masks = segmenter.segment(embedding, prompts=prompts, multimask=multimask)
        masks = masks.best() if multimask else masks
        iou = masks.scores[:, 0].astype(np.float32)
        result = label_masks(masks, np.arange(len(phrases)), iou, phrases, "clip_prompt",
                             {"predicted_iou": [float(s) for s in iou]})
        if check_score("min_score", min_score) is not None:
            result = result.filter(min_score=min_score)
        result = drop_small(result, min_area)
        results.append(order_by_phrase(result) if len(result) else empty_like(image))
    if verify_threshold is not None:
        results = _verify(rgb, results, text, clip, verify_threshold, background, padding)
    return results


class ClipPromptStrategy(StrategyBase):
    """Settings for :func:`clip_prompt_to_mask`; same defaults. A text strategy.

    Args:
        clip: a :class:`samkit.adapters.clip.ClipModel` (None when every call passes
            ``text_embeddings=``).
        multimask, min_score, min_area, verify_threshold, background, padding: see
            :func:`clip_prompt_to_mask`.

    A call may pass ``points=``, ``labels=`` and ``text_embeddings=``.
    """

    name = "clip_prompt"

    def __init__(self, clip: Any = None, *, multimask: bool = True, min_score: float | None = None,
                 min_area: int = 1, verify_threshold: float | None = None, background: str = "blur",
                 padding: float = 0.1) -> None:
        if clip is not None and not (hasattr(clip, "encode_text") and hasattr(clip, "embedding_dim")):
            raise TypeError(f"clip must be a samkit.adapters.clip.ClipModel or None, got {type(clip).__name__}")
        if verify_threshold is not None and clip is None:
            raise ValueError("verify_threshold needs clip= (a ClipModel), got clip=None")
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        min_score = check_score("min_score", min_score)
        verify_threshold = check_score("verify_threshold", verify_threshold)
        self.clip, self.multimask, self.min_score, self.min_area = clip, multimask, min_score, min_area
        self.verify_threshold, self.background, self.padding = verify_threshold, background, padding

    def check(self, segmenter: Any) -> None:
        """Errors when the segmenter's model has no embedding prompt path or another width."""
        super().check(segmenter)
        check_embedding_prompt(segmenter, None if self.clip is None else self.clip.embedding_dim)

    def batch(self, segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str, *, points: Any = None,
              labels: Any = None, text_embeddings: Any = None) -> list[Segmentation]:
        """One :class:`Segmentation` per image; ``points`` / ``labels`` apply to every image."""
        self.check(segmenter)
        return clip_prompt_to_mask(segmenter, images, phrases, self.clip, text_embeddings=text_embeddings,
                                   points=points, labels=labels, multimask=self.multimask, min_score=self.min_score,
                                   min_area=self.min_area, verify_threshold=self.verify_threshold,
                                   background=self.background, padding=self.padding)

    def __repr__(self) -> str:
        return f"ClipPromptStrategy({self.clip!r}, multimask={self.multimask}, min_score={self.min_score})"
