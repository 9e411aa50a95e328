"""Text to mask: phrases -> masks, by one of several strategies.

* :mod:`.to_mask`: :class:`TextToMask` / :func:`text_to_mask` and the strategy registry
  :data:`STRATEGIES` (name -> class; :data:`STRATEGY_NAMES` for front ends);
* :mod:`.strategies`: the :class:`TextStrategy` protocol and helpers every strategy shares;
* :mod:`.grounded`: an open-vocabulary detector finds boxes, SAM segments them;
* :mod:`.rerank`: CLIP ranks segment-everything masks against the phrases;
* :mod:`.clip_prompt`: a CLIP text embedding is the prompt (models trained with it);
* :mod:`.sam3`: SAM 3 concept prompts (transformers);
* :mod:`.crops`: mask crops for CLIP.
"""
from .clip_prompt import ClipPromptStrategy, clip_prompt_to_mask
from .grounded import GroundedStrategy, as_phrase_detector, grounded_text_to_mask
from .rerank import ClipRerankStrategy, clip_rerank
from .sam3 import Sam3Strategy, sam3_text_to_mask
from .strategies import TextStrategy
from .to_mask import STRATEGIES, STRATEGY_NAMES, TextToMask, make_strategy, text_to_mask

__all__ = ["STRATEGIES", "STRATEGY_NAMES", "TextToMask", "make_strategy", "text_to_mask", "TextStrategy",
           "GroundedStrategy", "as_phrase_detector", "grounded_text_to_mask", "ClipRerankStrategy", "clip_rerank",
           "ClipPromptStrategy", "clip_prompt_to_mask", "Sam3Strategy", "sam3_text_to_mask"]
