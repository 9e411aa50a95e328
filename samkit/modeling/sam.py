"""The SAM container: wires an image encoder, a prompt encoder and a mask decoder together."""
from __future__ import annotations

import torch
from torch import nn

from .common import module_device, module_dtype
from .config import SamConfig
from .embedding_prompt import EmbeddingPrompt
from .families import get_family
from .fast_decoder import FastMaskDecoder, FastTwoWayTransformer
from .hq_decoder import EarlyFeatures, MaskDecoderHQ, early_features_of
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer


class Sam(nn.Module):
    """SAM network. Its ``state_dict`` keys are those of Meta's official checkpoints.

    The model does no image resizing or coordinate mapping: use :class:`samkit.Segmenter`,
    or :mod:`samkit.transforms` directly.

    Attributes:
        config: the :class:`SamConfig` it was built from (None when assembled by hand).
        mask_threshold: logit threshold that turns logits into binary masks (0.0).
        early_features: for a decoder that fuses early encoder features (HQ-SAM), where the
            encoder gives them (see :mod:`samkit.modeling.hq_decoder`); None otherwise.
    """

    mask_threshold: float = 0.0

    def __init__(self, *, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
                 pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
                 config: SamConfig | None = None, embedding_prompt: EmbeddingPrompt | None = None,
                 early_features: EarlyFeatures | None = None) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.config = config
        # Optional CLIP-embedding prompt path (absent from Meta's checkpoints).
        self.embedding_prompt = embedding_prompt
        self.early_features = early_features

    def encode_with_early_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, h, w) image embeddings of (B, 3, S, S) normalised images, and the early encoder
        features (B, D, h, w) the decoder fuses (None when it fuses none)."""
        if self.early_features is None:
            return self.image_encoder(images), None
        return self.early_features.run(self.image_encoder, images)

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return module_device(self)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the image encoder (the prompt encoder and decoder may stay float32)."""
        return module_dtype(self.image_encoder)

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size


def build_sam(config: SamConfig | None = None, *, fast_decoder: bool = True, **overrides) -> Sam:
    """Build a randomly initialised SAM (eval mode) from a :class:`SamConfig`.

    Args:
        config: the architecture (default: ``vit_b``); its ``encoder_family`` names the image
            encoder's builder in :mod:`samkit.modeling.families`.
        fast_decoder: build the mask decoder from the fast parts of
            :mod:`samkit.modeling.fast_decoder` (absorbed projections, token-major upscaling);
            False: the plain modules. Both give the same outputs to float rounding and load
            the same state dict. With ``config.decoder_kind == "hq"`` the decoder is
            :class:`~samkit.modeling.hq_decoder.MaskDecoderHQ` (its transformer still follows
            this flag).
        overrides: SamConfig fields that replace those of ``config``.

    Example:
        >>> from samkit.modeling import build_sam, get_config
        >>> model = build_sam(get_config("tiny"))
        >>> plain = build_sam(get_config("tiny"), fast_decoder=False)
    """
    config = config or SamConfig()
    if overrides:
        config = config.replace(**overrides)
    transformer_class, decoder_class = ((FastTwoWayTransformer, FastMaskDecoder) if fast_decoder
                                        else (TwoWayTransformer, MaskDecoder))
    decoder_options, early = {}, None
    if config.decoder_kind == "hq":  # the fast transformer is a drop-in; HQ's mask path is its own
        early = early_features_of(config)
        decoder_class, decoder_options = MaskDecoderHQ, {"early_dim": early.width(config)}
    grid = config.embedding_size
    model = Sam(
        image_encoder=get_family(config.encoder_family).build(config),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size), mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=decoder_class(
            transformer_dim=config.prompt_embed_dim,
            transformer=transformer_class(config.decoder_depth, config.prompt_embed_dim, config.decoder_num_heads,
                                          config.decoder_mlp_dim),
            num_multimask_outputs=config.num_multimask_outputs, iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim, **decoder_options,
        ),
        pixel_mean=config.pixel_mean, pixel_std=config.pixel_std, config=config,
        embedding_prompt=EmbeddingPrompt(config.embedding_prompt_dim, config.prompt_embed_dim,
                                         config.embedding_prompt_hidden_dim or None)
        if config.embedding_prompt_dim > 0 else None,
        early_features=early,
    )
    return model.eval()
