"""samkit: composable pipeline components around Meta's Segment Anything Model.

    >>> import samkit
    >>> model = samkit.load_model("sam_vit_b_01ec64.pth")      # doctest: +SKIP
    >>> seg = samkit.Segmenter(model)                           # doctest: +SKIP
    >>> out = seg.segment(seg.encode(image), points=[[500, 375]], labels=[1])  # doctest: +SKIP
"""
from __future__ import annotations

from .modeling import SamConfig, build_sam, get_config
from .prompts import Prompts
from .results import Segmentation
from .segmenter import ImageEmbedding, Segmenter

__version__ = "0.1.0"


def __getattr__(name: str):
    # weights pulls in hashing/download helpers; load it on first use.
    if name in ("load_model", "save_checkpoint", "infer_config"):
        from . import weights

        return getattr(weights, name)
    raise AttributeError(f"module 'samkit' has no attribute {name!r}")


__all__ = ["Prompts", "Segmentation", "Segmenter", "ImageEmbedding", "SamConfig", "build_sam", "get_config",
           "load_model", "save_checkpoint", "infer_config", "__version__"]
