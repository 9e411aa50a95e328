"""The prompt encoder + mask decoder as one ONNX graph with Meta's input/output contract.

Clients written for Meta's ``segment_anything`` ONNX decoder (its web demo, CVAT, AnyLabeling,
samexporter users) run samkit's file unchanged. For a model with an (g x g) embedding grid of
C channels and input side S (g = 64, C = 256, S = 1024 for the paper's models):

=================  ==================  ===============================================================
input              shape / dtype       meaning
=================  ==================  ===============================================================
image_embeddings   (1, C, g, g) f32    the image encoder's output
point_coords       (1, N, 2) f32       XY in the resized frame (original pixels scaled so the long
                                       side is S, no padding offset); N is dynamic
point_labels       (1, N) f32          1 foreground, 0 background, 2 box top-left, 3 box
                                       bottom-right, -1 padding (add one (0, 0) point labelled -1
                                       when there is no box, as Meta's clients do)
mask_input         (1, 1, 4g, 4g) f32  low-res logits of an earlier prediction
has_mask_input     (1,) f32            1: use ``mask_input``; 0: ignore it
orig_im_size       (2,) f32            (H, W) of the original image
=================  ==================  ===============================================================

=================  ==================  ===============================================================
output             shape               meaning
=================  ==================  ===============================================================
masks              (1, K, H, W) f32    logits at the original size (``> 0`` is the mask)
iou_predictions    (1, K) f32          predicted IoU per mask
low_res_masks      (1, K, 4g, 4g) f32  logits to feed back as ``mask_input``
=================  ==================  ===============================================================

K = 4 by default, as Meta's export: output 0 is the single-mask output and outputs 1-3 the
ambiguity-aware ones (samkit's ``segment(multimask=True)`` gives outputs 1-3). With
``single_mask=True`` (Meta's ``return_single_mask``) K = 1: output 0 when N > 2 (several
clicks, or a box with a click), else the best-scoring of outputs 1-3.

:func:`samkit.export.export_decoder` (:mod:`samkit.export.decoder_file`) writes the file.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn


__all__ = ["DECODER_INPUTS", "DECODER_OUTPUTS", "OnnxDecoder", "decoder_example_inputs"]

DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
                  "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


class OnnxDecoder(nn.Module):
    """Meta's decoder contract (module docstring) over a samkit model's prompt encoder and decoder.

    Args:
        model: a samkit :class:`~samkit.modeling.Sam` (its modules are used, not copied).
        single_mask: return one mask per call (Meta's ``return_single_mask``) instead of all K.
    """

    def __init__(self, model: nn.Module, *, single_mask: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.image_size = int(model.image_encoder.img_size)
        self.single_mask = single_mask
        self.register_buffer("dense_pe", self.prompt_encoder.get_dense_pe().detach().clone(), persistent=False)

    def embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """(1, N, 2) resized-frame XY and (1, N) labels -> (1, N, C) sparse embeddings."""
        pe = self.prompt_encoder
        embedding = pe.pe_layer.encode((point_coords + 0.5) / self.image_size)
        labels = point_labels.unsqueeze(-1)
        embedding = torch.where(labels == -1, pe.not_a_point_embed.weight, embedding)
        for label, table in enumerate(pe.point_embeddings):
            embedding = embedding + torch.where(labels == label, table.weight, 0.0)
        return embedding

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """The mask prompt's dense embedding, or the no-mask embedding where ``has_mask_input`` is 0."""
        pe = self.prompt_encoder
        weight = has_mask_input.reshape(1, 1, 1, 1)
        return weight * pe.mask_downscaling(mask_input) + (1 - weight) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def choose_single(self, masks: torch.Tensor, scores: torch.Tensor,
                      point_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta's rule: output 0 for more than two points, else the best of outputs 1..K-1."""
        num_points = torch.ones_like(point_labels).sum(dim=1)  # (1,), a tensor so N stays symbolic
        best_multi = scores[:, 1:].argmax(dim=1) + 1
        index = torch.where(num_points > 2.5, torch.zeros_like(best_multi), best_multi)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, index].unsqueeze(1), scores[rows, index].unsqueeze(1)

    def upscale(self, low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> logits at ``orig_im_size``: to the padded S x S input, crop, resize.

        Equal to Meta's postprocess (upsample the (4g, 4g) logits to S x S, crop the (h, w) of the
        resized image, resize to (H, W)) while upsampling only the low-res rows and columns the
        crop reads: the crop's pixels sample low-res rows up to ``ceil(h / r)`` (r = S / 4g), so
        ``ceil(h / r) + 1`` of them are upsampled by r with the same half-pixel coordinates
        (no padding rows are interpolated for a non-square image).
        """
        side, low = self.image_size, low_res.shape[-1]
        ratio = side // low
        size = orig_im_size.to(torch.float32)
        resized = torch.floor(size * (side / size.max()) + 0.5).to(torch.int64)  # transforms.preprocess_shape
        kept = torch.clamp((resized + (ratio - 1)) // ratio + 1, max=low)  # low-res rows/cols the crop reads
        h, w = resized[0].item(), resized[1].item()
        kh, kw = kept[0].item(), kept[1].item()
        for value in (h, w, kh, kw):
            torch._check(value >= 1)
        for value in (h, w):
            torch._check(value <= side)
        for value in (kh, kw):
            torch._check(value <= low)
        up = F.interpolate(low_res[..., :kh, :kw], size=(kh * ratio, kw * ratio), mode="bilinear",
                           align_corners=False)
        up = up[..., :h, :w]
        original = orig_im_size.to(torch.int64)
        height, width = original[0].item(), original[1].item()
        torch._check(height >= 1)
        torch._check(width >= 1)
        return F.interpolate(up, size=(height, width), mode="bilinear", align_corners=False)

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor,
                orig_im_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The contract of the module docstring: (masks, iou_predictions, low_res_masks)."""
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        low_res, scores = self.mask_decoder.predict_masks(image_embeddings, self.dense_pe, sparse, dense)
        if self.single_mask:
            low_res, scores = self.choose_single(low_res, scores, point_labels)
        return self.upscale(low_res, orig_im_size), scores, low_res


def decoder_example_inputs(model: nn.Module, num_points: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of the contract's shapes for ``model`` (random embedding, ``num_points`` points)."""
    pe = model.prompt_encoder
    channels, (grid, _) = pe.embed_dim, pe.image_embedding_size
    side = float(model.image_encoder.img_size)
    generator = torch.Generator().manual_seed(0)
    coords = torch.rand(1, num_points, 2, generator=generator) * side
    labels = torch.ones(1, num_points)
    labels[0, -1] = -1
    return (torch.randn(1, channels, grid, grid, generator=generator), coords, labels,
            torch.zeros(1, 1, 4 * grid, 4 * grid), torch.zeros(1), torch.tensor([0.75 * side, side]))
