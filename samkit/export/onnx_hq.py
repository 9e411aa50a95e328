"""HQ-SAM's decoder as one ONNX graph: Meta's contract plus the encoder's early features.

HQ-SAM's mask decoder (:mod:`samkit.modeling.hq_decoder`) fuses an early encoder feature map
with the image embedding, so its graph takes one input more than SAM's decoder, in the place
and layout of the official ``segment_anything_hq`` ``SamOnnxModel``:

=================  ======================  ======================================================
input              shape / dtype           meaning
=================  ======================  ======================================================
image_embeddings   (1, C, g, g) f32        the image encoder's output
interm_embeddings  (L, 1, g, g, D) f32     early encoder features, channels last; only entry 0
                                           is read (samkit's encoder file writes L = 1; the
                                           official ViT encoder's L = 4 works unchanged). D is
                                           the early width: the ViT's width (output of its first
                                           global-attention block) or TinyViT's stage-2 width
point_coords ...   as SAM's decoder        ``point_coords``, ``point_labels``, ``mask_input``,
                                           ``has_mask_input``, ``orig_im_size``
                                           (:mod:`samkit.export.onnx_decoder`)
=================  ======================  ======================================================

Outputs: ``masks`` (1, 1, H, W), ``iou_predictions`` (1, 1), ``low_res_masks`` (1, 1, 4g, 4g):
one mask per call, as the HQ decoder gives. ``multimask=True`` pairs the HQ mask with the
best-scoring of SAM's ambiguity outputs (samkit's ``segment(multimask=True)``; the official
``SamOnnxModel(multimask_output=True)``), False with SAM's single output; ``hq_token_only``
returns the HQ mask alone. Both are fixed when the file is written and stored in its metadata.
The encoder file of an HQ model (:func:`samkit.export.export_encoder`) has the second output
``interm_embeddings`` (1, 1, g, g, D), so a client feeds the encoder's outputs to the decoder.
"""
from __future__ import annotations

import torch
from torch import nn

from .onnx_decoder import DECODER_INPUTS, OnnxDecoder, decoder_example_inputs

__all__ = ["HQ_DECODER_INPUTS", "OnnxHQDecoder", "hq_example_inputs"]

HQ_DECODER_INPUTS = (DECODER_INPUTS[0], "interm_embeddings", *DECODER_INPUTS[1:])


class OnnxHQDecoder(OnnxDecoder):
    """The contract of the module docstring over a samkit HQ-SAM model's prompt encoder and decoder.

    Args:
        model: a samkit :class:`~samkit.modeling.Sam` with ``decoder_kind="hq"``.
        multimask: pair the HQ mask with the best of SAM's ambiguity outputs (else SAM's output 0).
        hq_token_only: the HQ mask alone; None: the decoder's own default (False, as the official one).
    """

    def __init__(self, model: nn.Module, *, multimask: bool = True, hq_token_only: bool | None = None) -> None:
        super().__init__(model, single_mask=False)
        self.multimask = multimask
        self.hq_token_only = model.mask_decoder.hq_token_only if hq_token_only is None else hq_token_only

    def forward(self, image_embeddings: torch.Tensor, interm_embeddings: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor, mask_input: torch.Tensor, has_mask_input: torch.Tensor,
                orig_im_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masks, iou_predictions, low_res_masks), one mask each (module docstring)."""
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        early = interm_embeddings[0].permute(0, 3, 1, 2)
        low_res, scores = self.mask_decoder(image_embeddings, self.dense_pe, sparse, dense, self.multimask,
                                            early_features=early, hq_token_only=self.hq_token_only)
        return self.upscale(low_res, orig_im_size), scores, low_res


def hq_example_inputs(model: nn.Module, num_points: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of the HQ contract's shapes for ``model`` (random features, ``num_points`` points)."""
    base = decoder_example_inputs(model, num_points)
    grid = base[0].shape[-1]
    width = model.early_features.width(model.config)
    interm = torch.randn(1, 1, grid, grid, width, generator=torch.Generator().manual_seed(1))
    return (base[0], interm, *base[1:])
