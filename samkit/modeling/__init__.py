"""SAM network modules (state-dict compatible with Meta's checkpoints).

Image encoders come from the families registry (:mod:`samkit.modeling.families`; ViT first);
the mask decoder's fast path (:mod:`samkit.modeling.fast_decoder`) is chosen by
``build_sam(fast_decoder=...)``.
"""
from .common import module_device, module_dtype
from .config import CONFIGS, SamConfig, get_config
from .encoder_family import EncoderFamily
from .families import FAMILIES, family_of, get_family, register_family, unregister_family
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam, build_sam
from .transformer import TwoWayTransformer
from .vit import ViTConfig

__all__ = ["CONFIGS", "EncoderFamily", "FAMILIES", "ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam",
           "SamConfig", "TwoWayTransformer", "ViTConfig", "build_sam", "family_of", "get_config", "get_family",
           "module_device", "module_dtype", "register_family", "unregister_family"]
