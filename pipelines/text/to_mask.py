"""Text-to-mask: one pipeline, four strategies.

``TextToMask(segmenter, strategy=..., **settings)(image, phrases)`` returns a
:class:`~samkit.results.Segmentation` whose masks (N, 1, H, W) each carry the ``phrase`` they
matched, the ``text_score`` of the match (also in ``scores``) and the ``strategy``; it is
``Segmentation.empty((H, W))`` when nothing matches. Strategies (see
:mod:`samkit.pipelines.text.strategies`):

* ``"grounded"`` (:class:`GroundedStrategy`): an open-vocabulary detector (OWLv2, Grounding
  DINO, YOLO-World or a callable) boxes the phrases, SAM segments the boxes;
* ``"clip_rerank"`` (:class:`ClipRerankStrategy`): segment everything, score the mask crops
  against the phrases with CLIP;
* ``"clip_prompt"`` (:class:`ClipPromptStrategy`): the CLIP text embedding is SAM's prompt
  (models trained with the embedding prompt path only);
* ``"sam3"`` (:class:`Sam3Strategy`): SAM 3's native concept prompts via transformers.

The pipeline is preprocess (images to RGB, phrases checked) -> forward (the strategy; SAM
strategies encode each image once through the segmenter's cache) -> postprocess (optional
``min_text_score`` and ``max_masks``, metadata kept aligned).

Example:
    >>> from samkit.adapters.clip import ClipModel                                        # doctest: +SKIP
    >>> grounded = TextToMask(segmenter, strategy="grounded",
    ...                       detector="google/owlv2-base-patch16-ensemble")               # doctest: +SKIP
    >>> result = grounded(image, ["a wheel", "a grille"])                                  # doctest: +SKIP
    >>> [(m["phrase"], round(m["text_score"], 2)) for m in result.meta]                    # doctest: +SKIP
    [('a wheel', 0.61), ('a wheel', 0.58), ('a grille', 0.44)]
    >>> rerank = TextToMask(segmenter, strategy="clip_rerank",
    ...                     clip=ClipModel("ViT-B-32", pretrained="openai"))               # doctest: +SKIP
    >>> rerank.batch([image_a, image_b], "a wheel")                                        # doctest: +SKIP
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from samkit.results import Segmentation

from .clip_prompt import ClipPromptStrategy
from .grounded import GroundedStrategy
from .rerank import ClipRerankStrategy
from .sam3 import Sam3Strategy
from .strategies import TextStrategy, as_images, check_phrases

__all__ = ["STRATEGIES", "STRATEGY_NAMES", "TextToMask", "make_strategy", "text_to_mask"]

logger = logging.getLogger(__name__)

#: Strategy name -> class; ``make_strategy(name, **settings)`` builds one.
STRATEGIES: dict[str, type] = {
    "grounded": GroundedStrategy,
    "clip_rerank": ClipRerankStrategy,
    "clip_prompt": ClipPromptStrategy,
    "sam3": Sam3Strategy,
}
#: The strategy names, in :data:`STRATEGIES` order (for front ends' choices).
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)


def make_strategy(strategy: str | TextStrategy, **settings: Any) -> TextStrategy:
    """A strategy from its name and settings, or the given strategy object (then no settings).

    Example:
        >>> make_strategy("grounded", detector=lambda image, phrases: ([], [], []))
        GroundedStrategy(phrase detector <lambda>)
    """
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {sorted(STRATEGIES)} or a strategy object, got {strategy!r}")
        return STRATEGIES[strategy](**settings)
    if not (callable(getattr(strategy, "batch", None)) and callable(strategy)):
        raise TypeError("strategy must be a name or an object with batch(segmenter, images, phrases) and "
                        f"__call__(segmenter, image, phrases); got {type(strategy).__name__}")
    if settings:
        raise ValueError(f"settings {sorted(settings)} go to a strategy given by name; this one is already built "
                         f"({type(strategy).__name__})")
    return strategy


def _postprocess(result: Segmentation, min_text_score: float | None, max_masks: int | None) -> Segmentation:
    if min_text_score is not None and len(result):
        keep = result.scores[:, 0] >= min_text_score
        result = result if keep.all() else result[keep]
    if max_masks is not None and len(result) > max_masks:
        order = np.argsort(-result.scores[:, 0], kind="stable")[:max_masks]
        result = result[np.sort(order)]
    return result


def _finish(strategy: TextStrategy, images: list[np.ndarray], results: Sequence[Segmentation],
            min_text_score: float | None, max_masks: int | None) -> list[Segmentation]:
    name = getattr(strategy, "name", type(strategy).__name__)
    if max_masks is not None and max_masks < 1:
        raise ValueError(f"max_masks must be None or >= 1, got {max_masks}")
    if len(results) != len(images):
        raise RuntimeError(f"strategy {name!r} returned {len(results)} results for {len(images)} images")
    for image, result in zip(images, results):
        if not isinstance(result, Segmentation) or result.image_size != image.shape[:2]:
            raise RuntimeError(f"strategy {name!r} must return a Segmentation of the image's size "
                               f"{image.shape[:2]}, got {result!r}")
    return [_postprocess(r, min_text_score, max_masks) for r in results]


def text_to_mask(segmenter: Any, image: Any, phrases: Sequence[str] | str, strategy: str | TextStrategy, *,
                 min_text_score: float | None = None, max_masks: int | None = None,
                 options: dict[str, Any] | None = None, **settings: Any) -> Segmentation:
    """Masks of ``image`` matching ``phrases`` with one strategy.

    Args:
        segmenter: a :class:`samkit.Segmenter` (None for ``"sam3"``).
        image: anything :func:`samkit.transforms.to_rgb_uint8` accepts (arrays are RGB).
        phrases: ``"a wheel"`` or ``["wheel", "grille"]`` (distinct, non-empty).
        strategy: a name of :data:`STRATEGIES` (then ``settings`` build it) or a strategy object.
        min_text_score: drop masks whose text score is lower (None: the strategy's own filtering only).
        max_masks: keep at most this many masks, highest text score first, order kept.
        options: per-call strategy options (``points=`` for ``"clip_prompt"``, ``masks=`` for
            ``"clip_rerank"``).

    Returns:
        :class:`Segmentation` (N, 1, H, W) with meta ``phrase``, ``phrase_index``, ``text_score``,
        ``strategy`` and the strategy's own keys; empty when nothing matches.
    """
    built = make_strategy(strategy, **settings)
    built_check = getattr(built, "check", None)
    if built_check is not None:
        built_check(segmenter)
    rgb = as_images([image])
    result = built(segmenter, rgb[0], check_phrases(phrases), **dict(options or {}))
    return _finish(built, rgb, [result], min_text_score, max_masks)[0]


class TextToMask:
    """Settings for :func:`text_to_mask`; same defaults. The strategy is built (and its models
    loaded) once, here, and checked against the segmenter.

    Args:
        segmenter: a :class:`samkit.Segmenter` (None for ``"sam3"``).
        strategy: a name of :data:`STRATEGIES` or a strategy object.
        min_text_score, max_masks: see :func:`text_to_mask`.
        **settings: the named strategy's settings (e.g. ``detector=``, ``clip=``, ``threshold=``).

    Example:
        >>> pipeline = TextToMask(segmenter, strategy="clip_prompt", clip=clip)     # doctest: +SKIP
        >>> pipeline(image, "a wheel", points=[[420, 310]])                        # doctest: +SKIP
    """

    def __init__(self, segmenter: Any, *, strategy: str | TextStrategy,
                 min_text_score: float | None = None, max_masks: int | None = None, **settings: Any) -> None:
        if max_masks is not None and max_masks < 1:
            raise ValueError(f"max_masks must be None or >= 1, got {max_masks}")
        self.segmenter = segmenter
        self.strategy = make_strategy(strategy, **settings)
        check = getattr(self.strategy, "check", None)
        if check is not None:
            check(segmenter)
        self.min_text_score, self.max_masks = min_text_score, max_masks

    def __call__(self, image: Any, phrases: Sequence[str] | str, **options: Any) -> Segmentation:
        """Masks of one image matching ``phrases``; ``options`` go to the strategy's call."""
        rgb = as_images([image])
        result = self.strategy(self.segmenter, rgb[0], check_phrases(phrases), **options)
        return _finish(self.strategy, rgb, [result], self.min_text_score, self.max_masks)[0]

    def batch(self, images: Sequence[Any], phrases: Sequence[str] | str, **options: Any) -> list[Segmentation]:
        """One :class:`Segmentation` per image, the same phrases for all; batched by the strategy."""
        rgb = as_images(images)
        results = self.strategy.batch(self.segmenter, rgb, check_phrases(phrases), **options)
        return _finish(self.strategy, rgb, results, self.min_text_score, self.max_masks)

    def __repr__(self) -> str:
        return (f"TextToMask(strategy={self.strategy!r}, min_text_score={self.min_text_score}, "
                f"max_masks={self.max_masks})")
