"""The image encoder as an ONNX graph, with or without the preprocessing inside.

Two input contracts (S = the model's ``image_size``, C x g x g its embedding):

* ``preprocess=False`` (default): ``images`` (1, 3, S, S) float32, normalised with the model's
  ``pixel_mean`` / ``pixel_std`` and zero-padded bottom/right, as
  :func:`samkit.transforms.normalize_and_pad` makes it (one image per call, as Meta's
  clients expect).
* ``preprocess=True``: ``image`` (H, W, 3) uint8 RGB of any size; the graph resizes it so the
  long side is S (bilinear with antialiasing, sizes rounded as
  :func:`samkit.transforms.preprocess_shape`), normalises and pads. samkit resizes with PIL,
  whose bilinear filter differs slightly from the graph's, so the embeddings agree exactly only
  for images whose long side is already S.

Output: ``image_embeddings`` (1, C, g, g) float32, the
decoder's input (:mod:`samkit.export.onnx_decoder`). An HQ-SAM model's encoder has a second
output, ``interm_embeddings`` (1, 1, g, g, D) float32, the early features its decoder fuses
(:mod:`samkit.export.onnx_hq`).

Any registered encoder family exports if ``torch.export`` can trace its encoder; one that
cannot fails with :class:`UnsupportedExportError` naming the family.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .metadata import UnsupportedExportError, check_model, model_metadata
from .onnx_graph import DEFAULT_OPSET, to_onnx

__all__ = ["OnnxEncoder", "UnsupportedExportError", "export_encoder"]


class OnnxEncoder(nn.Module):
    """``model.image_encoder`` in float32, optionally with resize + normalise + pad in front.

    Args:
        model: a samkit SAM model.
        preprocess: take an (H, W, 3) uint8 image instead of the normalised (1, 3, S, S) input.
    """

    def __init__(self, model: nn.Module, *, preprocess: bool = False) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.image_size = int(model.image_encoder.img_size)
        self.preprocess = preprocess
        self.early_features = getattr(model, "early_features", None)  # HQ-SAM: also the early features
        self.register_buffer("pixel_mean", model.pixel_mean.detach().float().reshape(1, 3, 1, 1).clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().float().reshape(1, 3, 1, 1).clone(), False)

    def model_input(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, S, S) resized, normalised, zero-padded float32."""
        side = self.image_size
        x = image.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        size = torch.tensor(image.shape[:2], dtype=torch.float32)
        resized = torch.floor(size * (side / size.max()) + 0.5).to(torch.int64)
        h, w = resized[0].item(), resized[1].item()
        for value in (h, w):
            torch._check(value >= 1)
            torch._check(value <= side)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = (x.round().clamp(0, 255) - self.pixel_mean) / self.pixel_std  # uint8 rounding, as PIL
        return F.pad(x, (0, side - w, 0, side - h))

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, S, S) normalised float32 (or (H, W, 3) uint8 with ``preprocess``) -> (1, C, g, g);
        for HQ-SAM also the early features (1, 1, g, g, D), channels last."""
        if self.preprocess:
            images = self.model_input(images)
        if self.early_features is None:
            return self.image_encoder(images)
        embeddings, early = self.early_features.run(self.image_encoder, images)
        return embeddings, early.permute(0, 2, 3, 1).unsqueeze(0)


def export_encoder(model: nn.Module, path: str | os.PathLike, *, preprocess: bool = False,
                   opset: int = DEFAULT_OPSET, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s image encoder (float32) to ``path``; weights past 1.8 GB go to ``path.data``.

    Args:
        model: a samkit SAM model; its encoder is exported in float32 whatever its dtype.
        path: the ``.onnx`` file to write.
        preprocess: put resize + normalise + pad inside the graph (module docstring).
        opset: ONNX opset (>= 18).
        extra_metadata: more ``metadata_props``.

    Raises:
        UnsupportedExportError: the encoder family's module cannot be traced by ``torch.export``.

    The encoder is moved to the CPU in float32 for the export and put back on its device and
    dtype afterwards (bf16 -> fp32 -> bf16 is exact).

    Example:
        >>> from samkit.modeling import build_sam, get_config
        >>> export_encoder(build_sam(get_config("tiny")), "encoder.onnx")  # doctest: +SKIP
    """
    config = check_model(model)
    was_dtype = next(model.image_encoder.parameters()).dtype
    device = next(model.image_encoder.parameters()).device
    side = config.image_size
    try:
        model.image_encoder.float().cpu()
        wrapper = OnnxEncoder(model, preprocess=preprocess).eval()
        if preprocess:
            example = (torch.zeros(int(0.75 * side), side, 3, dtype=torch.uint8),)
            dynamic: Any = ({0: torch.export.Dim("height", min=2, max=16384),
                             1: torch.export.Dim("width", min=2, max=16384)},)
            names = ("image",)
        else:
            example = (torch.zeros(1, 3, side, side),)
            dynamic = None
            names = ("images",)
        outputs = ("image_embeddings",) if wrapper.early_features is None else ("image_embeddings",
                                                                                 "interm_embeddings")
        metadata = dict(model_metadata(model, part="encoder", opset=opset), preprocess=str(preprocess).lower(),
                        input_name=names[0], outputs=list(outputs), **(extra_metadata or {}))
        try:
            return to_onnx(wrapper, example, path, input_names=names, output_names=outputs,
                           dynamic_shapes=dynamic, opset=opset, metadata=metadata)
        except (ImportError, OSError, ValueError):
            raise
        except Exception as error:  # torch.export / onnxscript failures have many types
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UnsupportedExportError(
                f"the {config.encoder_family!r} encoder family cannot be exported to ONNX: torch.export failed "
                f"with {type(error).__name__}: {first_line}") from error
    finally:
        model.image_encoder.to(device=device, dtype=was_dtype)
