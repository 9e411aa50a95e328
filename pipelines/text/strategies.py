"""What every text-to-mask strategy shares: the protocol, phrase checks and result labelling.

A *text strategy* turns images and phrases into one :class:`~samkit.results.Segmentation` per
image. Four live in their own modules and are chosen by name in
:class:`~samkit.pipelines.text.to_mask.TextToMask`:

==================  =====================================  ===============================================
name                class                                  how
==================  =====================================  ===============================================
``"grounded"``      :class:`GroundedStrategy`              open-vocabulary detector boxes -> SAM
``"clip_rerank"``   :class:`ClipRerankStrategy`            segment everything, score mask crops with CLIP
``"clip_prompt"``   :class:`ClipPromptStrategy`            CLIP text embedding as SAM's embedding prompt
``"sam3"``          :class:`Sam3Strategy`                  SAM 3's native concept prompts (transformers)
==================  =====================================  ===============================================

Every strategy returns masks (N, 1, H, W) in original-image pixels, ``scores`` (N, 1) = the
text score, ordered by phrase (in the order given) then by decreasing text score, and one
meta dict per mask with at least:

================  ==========================================================================
key               value
================  ==========================================================================
``phrase``        the phrase (as given, stripped) this mask matched
``phrase_index``  its index in the phrase list
``text_score``    how well it matched (float; its meaning depends on the strategy, see each)
``strategy``      the strategy's name
================  ==========================================================================

No phrase matching gives ``Segmentation.empty((H, W))``, never an exception.

Strategies that use SAM (all but ``"sam3"``) encode each image with ``segmenter.encode`` /
``encode_batch``, so the segmenter's embedding cache is shared: one encoder pass per image,
whatever the strategy or the number of phrases and calls.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from samkit.results import Segmentation
from samkit.transforms import to_rgb_uint8

__all__ = ["TextStrategy", "StrategyBase", "as_images", "check_phrases", "drop_small", "empty_like", "label_masks",
           "order_by_phrase"]


@runtime_checkable
class TextStrategy(Protocol):
    """Images + phrases -> one :class:`Segmentation` per image (module docstring for the meta).

    Attributes:
        name: stored as meta ``strategy``.
        needs_segmenter: False when the strategy brings its own segmentation model (SAM 3).
    """

    name: str
    needs_segmenter: bool

    def batch(self, segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str) -> list[Segmentation]: ...

    def __call__(self, segmenter: Any, image: Any, phrases: Sequence[str] | str) -> Segmentation: ...


class StrategyBase:
    """Shared plumbing: ``__call__`` is ``batch`` on one image; ``check`` validates a segmenter."""

    name = "strategy"
    needs_segmenter = True

    def batch(self, segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str,
              **options: Any) -> list[Segmentation]:
        raise NotImplementedError

    def __call__(self, segmenter: Any, image: Any, phrases: Sequence[str] | str, **options: Any) -> Segmentation:
        """Masks of one image (anything :func:`samkit.transforms.to_rgb_uint8` accepts)."""
        return self.batch(segmenter, [image], phrases, **options)[0]

    def check(self, segmenter: Any) -> None:
        """Raise early when ``segmenter`` cannot run this strategy."""
        if self.needs_segmenter and segmenter is None:
            raise ValueError(f"the {self.name!r} strategy segments with SAM: pass a samkit.Segmenter, got None")
        if segmenter is not None and not (hasattr(segmenter, "encode_batch") and hasattr(segmenter, "segment")):
            raise TypeError(f"segmenter must be a samkit.Segmenter, got {type(segmenter).__name__}")


def check_phrases(phrases: Sequence[str] | str) -> list[str]:
    """Phrases as a list of distinct non-empty stripped strings; one string is one phrase.

    Example:
        >>> check_phrases(" a wheel ")
        ['a wheel']
    """
    items = [phrases] if isinstance(phrases, str) else phrases
    if not isinstance(items, Sequence) or not len(items):
        raise ValueError(f"phrases must be a string or a non-empty list of strings, got {phrases!r}")
    bad = [p for p in items if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"phrases must be non-empty strings, got {bad[0]!r}")
    out = [p.strip() for p in items]
    seen = {p.lower() for p in out}
    if len(seen) != len(out):
        raise ValueError(f"phrases must be distinct (ignoring case), got {out}")
    return out


def as_images(images: Sequence[Any]) -> list[np.ndarray]:
    """A list of (H, W, 3) uint8 RGB arrays; a single image is rejected (use ``__call__``)."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise TypeError("batch takes a list of images, got one (H, W, 3) array; call the strategy on one image")
    return [to_rgb_uint8(im) for im in images]


def label_masks(result: Segmentation, phrase_index: Any, text_score: Any, phrases: Sequence[str], strategy: str,
                extra: dict[str, Sequence[Any]] | None = None) -> Segmentation:
    """Give each mask its phrase, text score and strategy; ``scores`` become the text scores.

    Args:
        result: N masks with K = 1 (their meta is kept).
        phrase_index: (N,) index into ``phrases`` of each mask.
        text_score: (N,) the score of that match.
        phrases: the phrase list.
        strategy: meta ``strategy``.
        extra: more meta columns, each of length N.

    Returns:
        The masks with meta ``phrase``, ``phrase_index``, ``text_score``, ``strategy`` added and
        ``scores`` (N, 1) = ``text_score``; a Grounding-DINO ``phrase`` already in the meta is
        kept as ``detector_phrase``.
    """
    index = np.asarray(phrase_index, dtype=np.int64).reshape(-1)
    score = np.asarray(text_score, dtype=np.float32).reshape(-1)
    n = len(result)
    if index.shape != (n,) or score.shape != (n,):
        raise ValueError(f"phrase_index and text_score must have shape ({n},), got {index.shape} and {score.shape}")
    if result.num_outputs != 1:
        raise ValueError(f"label_masks expects one mask per row (K = 1), got K = {result.num_outputs}; use .best()")
    if n and (index.min() < 0 or index.max() >= len(phrases)):
        raise ValueError(f"phrase_index must lie in [0, {len(phrases)}), got {index.min()}..{index.max()}")
    meta = []
    for i in range(n):
        m = dict(result.meta[i])
        if "phrase" in m:
            m["detector_phrase"] = m.pop("phrase")
        m.update(phrase=phrases[index[i]], phrase_index=int(index[i]), text_score=float(score[i]), strategy=strategy)
        for key, values in (extra or {}).items():
            m[key] = values[i]
        meta.append(m)
    return Segmentation(result.masks, score[:, None], result.logits, meta)


def order_by_phrase(result: Segmentation) -> Segmentation:
    """Stable order by meta ``phrase_index``, then by decreasing ``text_score``."""
    if len(result) < 2:
        return result
    index = np.array([m["phrase_index"] for m in result.meta])
    score = np.array([m["text_score"] for m in result.meta])
    return result[np.lexsort((-score, index))]


def drop_small(result: Segmentation, min_area: int) -> Segmentation:
    """Rows whose mask has at least ``min_area`` pixels (``min_area`` <= 0 keeps empty masks too)."""
    if not len(result) or min_area <= 0:
        return result
    keep = result.areas()[:, 0] >= int(min_area)
    return result if keep.all() else result[keep]


def empty_like(image: np.ndarray) -> Segmentation:
    """No masks for ``image`` (K = 1)."""
    return Segmentation.empty(image.shape[:2], num_outputs=1)
