"""CLIP re-ranking text-to-mask: propose masks, score their crops against the phrases with CLIP.

Proposals come from :func:`samkit.pipelines.everything.segment_everything` on the same
:class:`~samkit.Segmenter` (one encoder pass per image, cached), from a callable
``image -> Segmentation`` (e.g. a configured ``SegmentEverything``) or are given per call
(``masks=``). Each proposal is cropped (:func:`~samkit.pipelines.text.crops.mask_crop_batch`:
background blurred or greyed, padded square box); all crops of all images go through CLIP's
image tower together (``ClipModel.batch_size`` per forward), all phrases through its text tower
once. The score is the cosine similarity of crop and phrase embeddings.

Selection: with ``exclusive`` (default) each mask competes only for the phrase it matches best;
masks scoring at least ``threshold`` are kept, at most ``top_k`` per phrase (best first).

Meta per mask: the proposal's meta (``point_coords``, ``stability_score``, ``bbox``, ... from
segment-everything), ``predicted_iou`` (the proposal's score), ``phrase``, ``phrase_index``,
``strategy="clip_rerank"`` and ``text_score`` = the cosine similarity (in [-1, 1]; about 0.2
to 0.35 for matching crops with OpenAI's CLIP).

Example:
    >>> clip = ClipModel("ViT-B-32", pretrained="openai")                              # doctest: +SKIP
    >>> strategy = ClipRerankStrategy(clip, threshold=0.25, everything={"points_per_side": 16})  # doctest: +SKIP
    >>> strategy(segmenter, image, ["a wheel", "a grille"])                            # doctest: +SKIP
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from samkit.results import Segmentation

from ..checks import check_score
from .crops import BACKGROUNDS, mask_crop_batch
from .strategies import StrategyBase, as_images, check_phrases, empty_like, label_masks, order_by_phrase

__all__ = ["ClipRerankStrategy", "clip_rerank", "rerank_masks", "select_matches"]

logger = logging.getLogger(__name__)

Proposals = Callable[[np.ndarray], Segmentation]


def select_matches(similarity: np.ndarray, *, threshold: float | None = 0.25, top_k: int | None = None,
                   exclusive: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which (mask, phrase) pairs to keep from a similarity matrix, without loops.

    Args:
        similarity: (M, P) scores of M masks against P phrases.
        threshold: keep pairs scoring at least this (None: no threshold).
        top_k: at most this many masks per phrase, best first (None: no limit).
        exclusive: pair each mask only with its best phrase.

    Returns:
        (mask index, phrase index, score) arrays, ordered by phrase then decreasing score.

    Example:
        >>> select_matches(np.array([[0.3, 0.1], [0.2, 0.4], [0.35, 0.0]]), threshold=0.25)[0].tolist()
        [2, 0, 1]
    """
    threshold = check_score("threshold", threshold)
    sim = np.asarray(similarity, dtype=np.float32)
    if sim.ndim != 2:
        raise ValueError(f"similarity must have shape (M, P), got {sim.shape}")
    allowed = np.ones(sim.shape, dtype=bool)
    if exclusive and sim.size:
        allowed &= np.arange(sim.shape[1])[None] == sim.argmax(axis=1)[:, None]
    if threshold is not None:
        allowed &= sim >= threshold
    rows, cols = np.nonzero(allowed)
    scores = sim[rows, cols]
    order = np.lexsort((rows, -scores, cols))  # phrase, then score (desc), ties by mask index
    rows, cols, scores = rows[order], cols[order], scores[order]
    if top_k is not None and len(rows):
        rank = np.arange(len(cols)) - np.searchsorted(cols, cols, side="left")
        keep = rank < top_k
        rows, cols, scores = rows[keep], cols[keep], scores[keep]
    return rows.astype(np.int64), cols.astype(np.int64), scores.astype(np.float32)


def _proposal_masks(proposals: Segmentation, min_area: int) -> Segmentation:
    best = proposals.best() if proposals.num_outputs > 1 else proposals
    keep = best.areas()[:, 0] >= max(int(min_area), 1)  # an empty mask has no crop to score
    return best if keep.all() else best[keep]


def _finish(image: np.ndarray, proposals: Segmentation, embeddings: np.ndarray, text: np.ndarray,
            phrases: list[str], threshold: float | None, top_k: int | None, exclusive: bool) -> Segmentation:
    if not len(proposals):
        return empty_like(image)
    rows, cols, scores = select_matches(embeddings @ text.T, threshold=threshold, top_k=top_k, exclusive=exclusive)
    if not len(rows):
        return empty_like(image)
    picked = proposals[rows]
    iou = [float(s) for s in picked.scores[:, 0]]
    return order_by_phrase(label_masks(picked, cols, scores, phrases, "clip_rerank", {"predicted_iou": iou}))


def rerank_masks(images: Sequence[Any], masks: Sequence[Segmentation | np.ndarray], phrases: Sequence[str] | str,
                 clip: Any, *, threshold: float | None = 0.25, top_k: int | None = None, exclusive: bool = True,
                 background: str = "blur", padding: float = 0.1, min_area: int = 1) -> list[Segmentation]:
    """Score given masks against phrases with CLIP and keep the matches; one result per image.

    Args:
        images: RGB images.
        masks: per image, a :class:`Segmentation` (the best output of each row is used) or
            bool (M, H, W) masks.
        phrases: one phrase or a list.
        clip: a :class:`samkit.adapters.clip.ClipModel` (``encode_text``, ``encode_pixels``,
            ``input_size``, ``mean``).
        threshold, top_k, exclusive: see :func:`select_matches`.
        background, padding: see :func:`samkit.pipelines.text.crops.mask_crop_batch`.
        min_area: proposals with fewer pixels are not scored (empty ones never are).

    Returns:
        One :class:`Segmentation` per image (module docstring for meta), K = 1.
    """
    phrases = check_phrases(phrases)
    rgb = as_images(images)
    if len(masks) != len(rgb):
        raise ValueError(f"masks must hold one entry per image ({len(rgb)}), got {len(masks)}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    props = []
    for image, m in zip(rgb, masks):
        seg = m if isinstance(m, Segmentation) else Segmentation(m, np.ones(len(m), dtype=np.float32))
        if seg.image_size != image.shape[:2]:
            raise ValueError(f"masks must have the image's size {image.shape[:2]}, got {seg.image_size}")
        props.append(_proposal_masks(seg, min_area))
    text = clip.encode_text(phrases)
    height, width = clip.input_size
    crops = [mask_crop_batch(image, p.masks[:, 0], size=height, padding=padding, background=background,
                             fill=clip.mean) for image, p in zip(rgb, props)]
    if width != height:
        crops = [torch.nn.functional.interpolate(c, size=(height, width), mode="bilinear") for c in crops]
    counts = [len(p) for p in props]
    embeddings = clip.encode_pixels(torch.cat(crops)) if sum(counts) else np.zeros((0, text.shape[1]), np.float32)
    parts = np.split(embeddings, np.cumsum(counts)[:-1])
    return [_finish(image, p, e, text, phrases, threshold, top_k, exclusive) for image, p, e in zip(rgb, props, parts)]


def clip_rerank(segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str, clip: Any, *,
                proposals: Proposals | None = None, everything: Mapping[str, Any] | None = None,
                masks: Sequence[Segmentation | np.ndarray] | None = None, threshold: float | None = 0.25,
                top_k: int | None = None, exclusive: bool = True, background: str = "blur", padding: float = 0.1,
                min_area: int = 1) -> list[Segmentation]:
    """Propose masks (segment everything) and keep those CLIP matches to the phrases.

    Args:
        segmenter: a :class:`samkit.Segmenter` (the proposals' one; its cache is shared).
        images: RGB images.
        phrases: one phrase or a list.
        clip: a :class:`samkit.adapters.clip.ClipModel`.
        proposals: ``image -> Segmentation`` (e.g. a ``SegmentEverything``); default
            :func:`samkit.pipelines.everything.segment_everything` with ``everything`` settings.
        everything: settings for the default proposals (e.g. ``{"points_per_side": 16}``).
        masks: proposals given per image instead (nothing is segmented then).
        threshold, top_k, exclusive, background, padding, min_area: see :func:`rerank_masks`.

    Returns:
        One :class:`Segmentation` per image, K = 1.
    """
    rgb = as_images(images)
    if masks is None:
        if proposals is None:
            from ..everything import segment_everything

            settings = dict(everything or {})
            masks = [segment_everything(segmenter, image, **settings) for image in rgb]
        else:
            masks = [proposals(image) for image in rgb]
    return rerank_masks(rgb, masks, phrases, clip, threshold=threshold, top_k=top_k, exclusive=exclusive,
                        background=background, padding=padding, min_area=min_area)


class ClipRerankStrategy(StrategyBase):
    """Settings for :func:`clip_rerank`; same defaults. A text strategy.

    Args:
        clip: a :class:`samkit.adapters.clip.ClipModel`.
        proposals, everything, threshold, top_k, exclusive, background, padding, min_area: see
            :func:`clip_rerank`.

    A call may pass ``masks=`` (one Segmentation or (M, H, W) array per image) to rank given
    masks instead of proposing them.
    """

    name = "clip_rerank"
    needs_segmenter = False  # not with proposals= or per-call masks=; checked per call otherwise

    def __init__(self, clip: Any, *, proposals: Proposals | None = None, everything: Mapping[str, Any] | None = None,
                 threshold: float | None = 0.25, top_k: int | None = None, exclusive: bool = True,
                 background: str = "blur", padding: float = 0.1, min_area: int = 1) -> None:
        if not (hasattr(clip, "encode_text") and hasattr(clip, "encode_pixels")):
            raise TypeError(f"clip must be a samkit.adapters.clip.ClipModel, got {type(clip).__name__}")
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be None or >= 1, got {top_k}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if proposals is not None and everything is not None:
            raise ValueError("pass proposals= or everything= settings, not both")
        if proposals is not None and not callable(proposals):
            raise TypeError(f"proposals must be a callable image -> Segmentation, got {type(proposals).__name__}")
        self.clip, self.proposals, self.everything = clip, proposals, dict(everything or {})
        threshold = check_score("threshold", threshold)
        self.threshold, self.top_k, self.exclusive = threshold, top_k, exclusive
        self.background, self.padding, self.min_area = background, padding, min_area

    def batch(self, segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str, *,
              masks: Sequence[Segmentation | np.ndarray] | None = None) -> list[Segmentation]:
        """One :class:`Segmentation` per image; ``masks`` ranks given proposals instead."""
        if masks is None and self.proposals is None and segmenter is None:
            raise ValueError("the 'clip_rerank' strategy proposes masks with SAM: pass a samkit.Segmenter, "
                             "proposals= at construction or masks= per call; got none")
        self.check(segmenter)
        return clip_rerank(segmenter, images, phrases, self.clip, proposals=self.proposals,
                           everything=self.everything or None, masks=masks, threshold=self.threshold,
                           top_k=self.top_k, exclusive=self.exclusive, background=self.background,
                           padding=self.padding, min_area=self.min_area)

    def __call__(self, segmenter: Any, image: Any, phrases: Sequence[str] | str, *,
                 masks: Segmentation | np.ndarray | None = None) -> Segmentation:
        """Masks of one image; ``masks`` (a Segmentation or (M, H, W)) ranks given proposals instead."""
        return self.batch(segmenter, [image], phrases, masks=None if masks is None else [masks])[0]

    def __repr__(self) -> str:
        return f"ClipRerankStrategy({self.clip!r}, threshold={self.threshold}, top_k={self.top_k})"
