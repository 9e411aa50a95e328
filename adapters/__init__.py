"""Adapters: turn other systems' outputs into samkit Prompts (installed as ``samkit.adapters``).

Heavy libraries (ultralytics, transformers, open_clip) are imported only inside the adapter
that needs them, so ``import samkit.adapters`` stays light.
"""
from .gaze import DEFAULT_DISPERSION, DEFAULT_VELOCITY, Fixations, GazeAdapter, detect_fixations, fixations_to_prompts

__all__ = ["Fixations", "GazeAdapter", "detect_fixations", "fixations_to_prompts", "DEFAULT_DISPERSION",
           "DEFAULT_VELOCITY"]
