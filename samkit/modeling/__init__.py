"""SAM network modules (state-dict compatible with Meta's checkpoints)."""
from .config import CONFIGS, SamConfig, get_config
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam, build_sam
from .transformer import TwoWayTransformer

__all__ = ["CONFIGS", "SamConfig", "get_config", "ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam",
           "build_sam", "TwoWayTransformer"]
