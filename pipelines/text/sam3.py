"""SAM 3 text-to-mask through transformers: native concept prompts, every instance of a phrase.

SAM 3 (``Sam3Model`` / ``Sam3Processor``, transformers >= 5; ``pip install samkit[transformers]``)
detects and segments all instances of a noun phrase itself; it does not use samkit's SAM.
Each image goes through SAM 3's vision encoder once; the phrases are encoded once per call;
then the DETR-style detector and mask head run for all (image, phrase) pairs of an image in one
batch (``phrase_batch_size`` pairs at most). transformers' own post-processing gives the boxes
and masks at the original size.

Weights (``facebook/sam3``) are gated on the hub and licensed under Meta's SAM License; load
them from a local folder written by ``save_pretrained`` or a hub id (downloads when online).

Meta per mask: ``box`` (XYXY pixels), ``score`` (SAM 3's score: query logit times presence,
both sigmoid), ``source="sam3"``, ``phrase``, ``phrase_index``, ``strategy="sam3"`` and
``text_score`` = ``score``.

Example:
    >>> strategy = Sam3Strategy("facebook/sam3", threshold=0.4)                    # doctest: +SKIP
    >>> result = strategy(None, image, ["a wheel", "a grille"])                  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from samkit.arrays import is_tensor, to_numpy
from samkit.results import Segmentation

from .strategies import StrategyBase, as_images, check_phrases, drop_small, empty_like, label_masks, \
    order_by_phrase

__all__ = ["Sam3Strategy", "load_sam3", "sam3_text_to_mask", "sam3_outputs_to_segmentation"]

logger = logging.getLogger(__name__)

_INSTALL = "pip install -U samkit[transformers]"


def load_sam3(model: str | os.PathLike | Any, *, processor: Any = None, device: str | None = None) -> tuple[Any, Any]:
    """(Sam3Model in eval mode, Sam3Processor) from a local folder, a hub id or as given.

    Raises:
        ImportError: transformers is missing or has no SAM 3 (needs transformers >= 5).
        OSError: the folder or hub id cannot be read (offline: the files that are needed).
    """
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        if (os.path.isabs(name) or name.startswith(".") or os.path.exists(name)) and not os.path.isdir(name):
            raise FileNotFoundError(f"SAM 3 folder not found: {name!r}; expected a folder written by save_pretrained "
                                    "(config.json, model.safetensors, processor_config.json, tokenizer files)")
        try:
            from transformers import Sam3Model, Sam3Processor
        except ImportError:
            raise ImportError(f"the 'sam3' strategy needs transformers with SAM 3 (Sam3Model, transformers >= 5): "
                              f"{_INSTALL}") from None
        try:
            processor = processor if processor is not None else Sam3Processor.from_pretrained(name)
            model = Sam3Model.from_pretrained(name)
        except OSError as exc:
            raise OSError(f"cannot load SAM 3 from {name!r}: {exc}. Offline, pass a local folder written by "
                          "save_pretrained (config.json, model.safetensors, processor_config.json and the "
                          "tokenizer files); facebook/sam3 is gated: accept its licence on the hub first") from None
    elif processor is None:
        raise ValueError(f"a built SAM 3 model ({type(model).__name__}) needs processor=..., got None")
    if not (hasattr(model, "get_vision_features") and hasattr(model, "get_text_features")):
        raise TypeError(f"model must be a transformers Sam3Model, got {type(model).__name__}")
    model.eval()
    if device is not None:
        model.to(device)
    return model, processor


def _take(value: Any, index: Any) -> Any:
    """Rows ``index`` of every tensor in a (nested) model output; other values unchanged."""
    if hasattr(value, "index_select"):
        return value.index_select(0, index.to(value.device))
    if isinstance(value, (tuple, list)):
        return type(value)(_take(v, index) for v in value)
    return value


def _select_rows(output: Any, index: Any) -> Any:
    return type(output)(**{key: _take(value, index) for key, value in output.items()})


def sam3_outputs_to_segmentation(results: Sequence[dict[str, Any]], phrase_index: Sequence[int],
                                 image_size: tuple[int, int], phrases: Sequence[str], *, min_area: int = 1
                                 ) -> Segmentation:
    """Instances of one image from ``Sam3Processor.post_process_instance_segmentation`` output.

    Args:
        results: one dict per (image, phrase) row of the batch, with ``scores`` (M,), ``boxes``
            (M, 4) XYXY pixels and ``masks`` (M, H, W) 0/1 (tensors or arrays).
        phrase_index: the phrase of each row.
        image_size: (H, W) of the image.
        phrases: the phrase list.
        min_area: drop masks with fewer pixels.

    Returns:
        A :class:`Segmentation` (K = 1) ordered by phrase then decreasing score; meta as in the
        module docstring.
    """
    def numpy(v: Any) -> np.ndarray:
        return to_numpy(v.float()) if is_tensor(v) else np.asarray(v)

    if len(results) != len(phrase_index):
        raise ValueError(f"need one phrase index per result row, got {len(phrase_index)} for {len(results)} rows")
    masks, scores, boxes, ids = [], [], [], []
    for row, p in zip(results, phrase_index):
        m = numpy(row["masks"])
        if m.shape[0] == 0:
            continue
        if m.ndim != 3 or tuple(m.shape[1:]) != tuple(image_size):
            raise ValueError(f"SAM 3 masks must have shape (M, {image_size[0]}, {image_size[1]}), got {m.shape}")
        masks.append(m > 0.5)
        scores.append(numpy(row["scores"]).reshape(-1))
        boxes.append(numpy(row["boxes"]).reshape(-1, 4))
        ids.append(np.full(len(m), int(p), dtype=np.int64))
    if not masks:
        return Segmentation.empty(image_size, num_outputs=1)
    score = np.concatenate(scores).astype(np.float32)
    box = np.concatenate(boxes).astype(np.float32)
    meta = [{"box": b.tolist(), "score": float(s), "source": "sam3"} for b, s in zip(box, score)]
    raw = Segmentation(np.concatenate(masks)[:, None], score, None, meta)
    return order_by_phrase(drop_small(label_masks(raw, np.concatenate(ids), score, phrases, "sam3"), min_area))


def sam3_text_to_mask(model: Any, processor: Any, images: Sequence[Any], phrases: Sequence[str] | str, *,
                      threshold: float = 0.3, mask_threshold: float = 0.5, min_area: int = 1,
                      image_batch_size: int = 4, phrase_batch_size: int = 16) -> list[Segmentation]:
    """All instances of each phrase in each image with SAM 3.

    Args:
        model, processor: from :func:`load_sam3`.
        images: RGB images.
        phrases: one phrase or a list.
        threshold: minimum instance score.
        mask_threshold: probability above which a pixel is in the mask.
        min_area: drop masks with fewer pixels.
        image_batch_size: images per vision-encoder pass.
        phrase_batch_size: (image, phrase) pairs per detector pass.

    Returns:
        One :class:`Segmentation` per image (module docstring for meta), K = 1.
    """
    import torch
    from PIL import Image
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    phrases = check_phrases(phrases)
    rgb = as_images(images)
    if image_batch_size < 1 or phrase_batch_size < 1:
        raise ValueError(f"image_batch_size and phrase_batch_size must be >= 1, got {image_batch_size}, "
                         f"{phrase_batch_size}")
    device = model.device
    dtype = next(model.parameters()).dtype
    text = processor(text=list(phrases), return_tensors="pt")
    with torch.inference_mode():
        text_features = model.get_text_features(input_ids=text["input_ids"].to(device),
                                                attention_mask=text["attention_mask"].to(device),
                                                return_dict=True).pooler_output  # (P, L, C)
    out = []
    for start in range(0, len(rgb), image_batch_size):
        chunk = rgb[start:start + image_batch_size]
        pixels = processor(images=[Image.fromarray(im) for im in chunk], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            vision = model.get_vision_features(pixel_values=pixels.to(device, dtype))
        for b, image in enumerate(chunk):
            rows = []
            for p0 in range(0, len(phrases), phrase_batch_size):
                pidx = torch.arange(p0, min(p0 + phrase_batch_size, len(phrases)))
                with torch.inference_mode():
                    outputs = model(vision_embeds=_select_rows(vision, torch.full_like(pidx, b)),
                                    text_embeds=BaseModelOutputWithPooling(pooler_output=text_features[pidx]),
                                    attention_mask=text["attention_mask"][pidx].to(device))
                rows += processor.post_process_instance_segmentation(
                    outputs, threshold=threshold, mask_threshold=mask_threshold,
                    target_sizes=[image.shape[:2]] * len(pidx))
            result = sam3_outputs_to_segmentation(rows, list(range(len(phrases))), image.shape[:2], phrases,
                                                  min_area=min_area)
            out.append(result if len(result) else empty_like(image))
    return out


class Sam3Strategy(StrategyBase):
    """Settings for :func:`sam3_text_to_mask`; same defaults. A text strategy needing no segmenter.

    Args:
        model: a local folder, a hub id (``"facebook/sam3"``) or a built ``Sam3Model`` (then
            also ``processor``); loaded once, here.
        processor: the ``Sam3Processor`` of a built model.
        device: where SAM 3 runs.
        threshold, mask_threshold, min_area, image_batch_size, phrase_batch_size: see
            :func:`sam3_text_to_mask`.
    """

    name = "sam3"
    needs_segmenter = False

    def __init__(self, model: str | os.PathLike | Any, *, processor: Any = None, device: str | None = None,
                 threshold: float = 0.3, mask_threshold: float = 0.5, min_area: int = 1, image_batch_size: int = 4,
                 phrase_batch_size: int = 16) -> None:
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= mask_threshold <= 1.0:
            raise ValueError(f"threshold and mask_threshold must lie in [0, 1], got {threshold}, {mask_threshold}")
        if image_batch_size < 1 or phrase_batch_size < 1:
            raise ValueError(f"image_batch_size and phrase_batch_size must be >= 1, got {image_batch_size}, "
                             f"{phrase_batch_size}")
        self.model, self.processor = load_sam3(model, processor=processor, device=device)
        self.threshold, self.mask_threshold, self.min_area = threshold, mask_threshold, min_area
        self.image_batch_size, self.phrase_batch_size = image_batch_size, phrase_batch_size

    def batch(self, segmenter: Any, images: Sequence[Any], phrases: Sequence[str] | str) -> list[Segmentation]:
        """One :class:`Segmentation` per image; ``segmenter`` is not used (may be None)."""
        return sam3_text_to_mask(self.model, self.processor, images, phrases, threshold=self.threshold,
                                 mask_threshold=self.mask_threshold, min_area=self.min_area,
                                 image_batch_size=self.image_batch_size, phrase_batch_size=self.phrase_batch_size)

    def __repr__(self) -> str:
        return f"Sam3Strategy({type(self.model).__name__}, threshold={self.threshold})"
