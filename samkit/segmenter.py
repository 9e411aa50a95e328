"""Segmenter: encode an image once, then segment it with many prompts.

    >>> seg = Segmenter(model)                                    # doctest: +SKIP
    >>> emb = seg.encode(image)           # slow step: the ViT     # doctest: +SKIP
    >>> out = seg.segment(emb, boxes=[[10, 20, 200, 240]])         # doctest: +SKIP
    >>> out.masks.shape                    # (N, K, H, W) bool      # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from .prompts import Prompts
from .results import Segmentation
from .transforms import (CoordinateMap, normalize_and_pad, preprocess_shape, resize_longest_side, to_rgb_uint8,
                         upscale_masks_binary)

logger = logging.getLogger(__name__)

__all__ = ["ImageEmbedding", "Segmenter", "model_fingerprint"]


@dataclass(frozen=True)
class ImageEmbedding:
    """The encoder's output for one image, reusable for any number of prompts.

    Attributes:
        features: (1, C, h, w) tensor on the model's device and dtype.
        original_size: (H, W) of the image as given.
        input_size: (h, w) of the resized image inside the padded model input.
        key: content hash of the image (used by the embedding cache).
        model_fingerprint: :func:`model_fingerprint` of the model that computed it ("" when
            unknown, e.g. built by hand); :meth:`Segmenter.segment` refuses an embedding whose
            fingerprint differs from its own model's.
        early_features: (1, D, h, w) early encoder features, for a decoder that fuses them
            (HQ-SAM, see ``Sam.encode_with_early_features``); None for other models.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    key: str = field(default="", compare=False)
    model_fingerprint: str = field(default="", compare=False)
    early_features: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def coordinate_map(self) -> CoordinateMap:
        return CoordinateMap(self.original_size, self.input_size)


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hex id of a SAM model's image encoder: architecture plus a sample of its weights.

    Two models give the same fingerprint when their encoders have the same parameter shapes,
    input size, embedding grid and pixel normalisation, and the same signs on a fixed sample of
    weights. The signs survive moving between devices and casting to bf16/fp16, so an embedding
    stays usable with the same weights in another precision or process. It is a weak identity:
    lightly fine-tuned weights may keep the fingerprint of their base model.
    """
    encoder = model.image_encoder
    params = [p for p in encoder.parameters() if p.is_floating_point()]
    digest = hashlib.blake2b(digest_size=8)
    layout = (getattr(encoder, "img_size", None), tuple(model.prompt_encoder.image_embedding_size),
              [tuple(p.shape) for p in params],
              [round(float(v), 3) for v in torch.cat([model.pixel_mean.flatten(), model.pixel_std.flatten()])])
    digest.update(repr(layout).encode())
    for p in (params[:1] + params[len(params) // 2:len(params) // 2 + 1] + params[-1:]) if params else []:
        signs = (p.detach().flatten()[:64] > 0).cpu().numpy()
        digest.update(np.packbits(signs).tobytes())
    return digest.hexdigest()


def image_key(image: np.ndarray) -> str:
    """Content hash of an (H, W, 3) uint8 image."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


class Segmenter:
    """Promptable segmentation with a SAM model.

    Threads: one Segmenter may be shared by several threads. :meth:`encode`,
    :meth:`encode_batch`, :meth:`segment` and :meth:`decode` are safe to call concurrently: the
    embedding cache is locked, and the default embedding of :meth:`segment` (the last image
    encoded) is kept per thread, so a thread never segments another thread's image.
    :meth:`clear_cache` forgets the cache and every thread's default embedding. Not safe while
    other threads run: changing the settings below, moving or training the model. With
    ``compile=True`` make the first :meth:`encode` from one thread (compilation is not
    thread-safe). Concurrency does not add CPU throughput beyond PyTorch's own threads.

    Args:
        model: a :class:`samkit.modeling.Sam` (see :func:`samkit.load_model`).
        device: where to run; defaults to the model's device. The model is moved there.
        cache_size: how many image embeddings to keep (least recently used dropped); 0 disables.
        prompt_batch_size: prompts decoded per decoder call (bounds memory; results are identical).
        compile: run the image encoder through ``torch.compile`` (opt-in; the first call is slow
            while it compiles; falls back to eager with a warning if compilation fails).

    Attributes:
        model_fingerprint: :func:`model_fingerprint` of the model, taken at construction; every
            embedding from :meth:`encode` carries it.
    """

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device | None = None, cache_size: int = 4,
                 prompt_batch_size: int = 64, compile: bool = False) -> None:
        if not hasattr(model, "image_encoder") or not hasattr(model, "mask_decoder"):
            raise TypeError(f"model must be a SAM model (samkit.load_model), got {type(model).__name__}")
        if cache_size < 0 or prompt_batch_size < 1:
            raise ValueError(f"cache_size must be >= 0 and prompt_batch_size >= 1, got {cache_size}, {prompt_batch_size}")
        self.model = model.eval()
        if device is not None:
            from .precision import check_device

            self.model.to(check_device(device))
        self.cache_size = cache_size
        self.prompt_batch_size = prompt_batch_size
        self._cache: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Each thread's last encoded embedding, valid while its generation equals _generation.
        self._thread_state = threading.local()
        self._generation = 0
        self._dense_pe: torch.Tensor | None = None
        self.model_fingerprint = model_fingerprint(self.model)
        self._fuses_early = getattr(self.model, "early_features", None) is not None  # HQ-SAM
        self._encoder = self.model.encode_with_early_features if self._fuses_early else self.model.image_encoder
        if compile:
            self._encoder = compile_encoder(self._encoder)

    # -- slow step ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        from .modeling.common import module_device

        return module_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the image encoder (embeddings come out in it)."""
        from .modeling.common import module_dtype

        return module_dtype(self.model.image_encoder)

    @property
    def image_size(self) -> int:
        return self.model.image_encoder.img_size

    def preprocess(self, image: Any) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], str]:
        """Image -> ((1, 3, S, S) model input, original (H, W), input (h, w), content key)."""
        rgb = to_rgb_uint8(image)
        x, input_size = self._model_input(rgb)
        return x, rgb.shape[:2], input_size, image_key(rgb)

    def _model_input(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(H, W, 3) uint8 -> resized, normalised, padded (1, 3, S, S) tensor and the resized (h, w)."""
        resized = resize_longest_side(rgb, self.image_size)
        x = normalize_and_pad(resized, image_size=self.image_size, pixel_mean=self.model.pixel_mean,
                              pixel_std=self.model.pixel_std, device=self.device, dtype=self.dtype)
        return x, resized.shape[:2]

    @torch.inference_mode()
    def encode(self, image: Any) -> ImageEmbedding:
        """Run the image encoder on one image (or fetch it from the cache).

        Args:
            image: (H, W, 3) uint8 RGB array, PIL image, torch tensor (H, W, C) or a path;
                grayscale, RGBA, 16-bit and [0, 1] float images are converted (see
                :mod:`samkit.transforms`).

        Returns:
            The :class:`ImageEmbedding`; it also becomes the default for :meth:`segment`.
        """
        if isinstance(image, (list, tuple)) and image and not isinstance(image[0], (int, float, np.number)):
            raise TypeError("encode takes one image; use encode_batch for a list of images")
        return self.encode_batch([image])[0]

    @torch.inference_mode()
    def encode_batch(self, images: Iterable[Any], *, batch_size: int = 4) -> list[ImageEmbedding]:
        """Encode several images, ``batch_size`` per encoder call; cached ones are not recomputed."""
        images = list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rgbs = [to_rgb_uint8(img) for img in images]
        keys = [image_key(rgb) for rgb in rgbs]
        out: list[ImageEmbedding | None] = [self._cache_get(key) for key in keys]
        # Resize and normalise only the images the cache misses, one encoder batch at a time.
        todo = [i for i, e in enumerate(out) if e is None]
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            inputs = [self._model_input(rgbs[i]) for i in idx]
            features = self._encoder(torch.cat([x for x, _ in inputs]))
            features, early = features if self._fuses_early else (features, None)
            for j, (i, (_, input_size)) in enumerate(zip(idx, inputs)):
                emb = ImageEmbedding(features[j:j + 1].clone(), tuple(rgbs[i].shape[:2]), tuple(input_size), keys[i],
                                     self.model_fingerprint, None if early is None else early[j:j + 1].clone())
                self._cache_put(emb)
                out[i] = emb
        if out:
            self._thread_state.last = (self._generation, out[-1])
        return out  # type: ignore[return-value]

    def _last_embedding(self) -> ImageEmbedding | None:
        """The calling thread's most recently encoded embedding, unless clear_cache came since."""
        generation, emb = getattr(self._thread_state, "last", (None, None))
        return emb if generation == self._generation else None

    def _cache_get(self, key: str) -> ImageEmbedding | None:
        with self._cache_lock:
            emb = self._cache.get(key)
            if emb is not None:
                self._cache.move_to_end(key)
        if emb is not None:
            logger.debug("embedding cache hit %s", key)
        return emb

    def _cache_put(self, emb: ImageEmbedding) -> None:
        if self.cache_size == 0:
            return
        with self._cache_lock:
            self._cache[emb.key] = emb
            self._cache.move_to_end(emb.key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget every cached embedding and every thread's default embedding for :meth:`segment`."""
        with self._cache_lock:
            self._cache.clear()
            self._generation += 1

    # -- fast step ------------------------------------------------------------------------------
    @torch.inference_mode()
    def segment(self, embedding: ImageEmbedding | None = None, *, points: Any = None, labels: Any = None,
                boxes: Any = None, mask_input: Any = None, prompts: Prompts | None = None, multimask: bool = True,
                meta: Sequence[Mapping] | Mapping | None = None, return_logits: bool = True,
                best_only: bool = False) -> Segmentation:
        """Predict masks for one image embedding and N prompts in one call.

        Args:
            embedding: from :meth:`encode` of this Segmenter (or one with the same model); defaults
                to the image this thread encoded last.
            points: (P, 2) one prompt of P points, or (N, P, 2) N prompts; XY original pixels.
                Points outside the image are valid prompts (as in the reference); NaN is not.
            labels: (P,) or (N, P): 1 foreground, 0 background (default all 1).
            boxes: (4,) or (N, 4) XYXY original pixels; with points, combined per prompt.
            mask_input: (N, 1, s, s) low-res logits (s = 256 for the paper's models), e.g. a
                previous result's ``logits``.
            prompts: a :class:`Prompts` instead of the keyword fields above.
            multimask: three ambiguity-aware masks per prompt (True, as the reference's
                ``predict``) or the single-mask output.
            meta: per-prompt metadata carried into the result: one mapping per prompt, or one
                mapping copied to every prompt.
            return_logits: keep the low-res logits in the result.
            best_only: keep only the highest-scoring of the K outputs per prompt (K = 1 in the
                result, meta ``output_index`` says which); only that mask is upsampled.

        Returns:
            :class:`Segmentation` with masks (N, K, H, W) bool, scores (N, K), logits
            (N, K, s, s); K = 3 with ``multimask`` else 1 (HQ-SAM: always 1, see
            :mod:`samkit.modeling.hq_decoder`).
        """
        if prompts is None:
            if points is None and boxes is None and mask_input is None:
                raise ValueError("segment needs a prompt: points, boxes, mask_input or prompts; got none")
            prompts = Prompts(points=points, labels=labels, boxes=boxes, mask_inputs=mask_input,
                              meta=meta if meta is not None else [])
        elif not isinstance(prompts, Prompts):
            raise TypeError(f"prompts must be a samkit.Prompts, got {type(prompts).__name__}")
        elif any(v is not None for v in (points, labels, boxes, mask_input)):
            raise ValueError("pass either prompts= or points/labels/boxes/mask_input, not both")
        if embedding is None:
            embedding = self._last_embedding()
            if embedding is None:
                raise ValueError("no image embedding: call encode(image) in this thread before segment(), "
                                 "or pass the embedding")
        self._check_embedding(embedding)
        num_outputs = self.model.mask_decoder.num_multimask_outputs if multimask and not self._fuses_early else 1
        if len(prompts) == 0:
            empty = Segmentation.empty(embedding.original_size, num_outputs=1 if best_only else num_outputs)
            if return_logits:  # the documented (N, K, s, s) shape, with N = 0
                low_res = 4 * self.model.prompt_encoder.image_embedding_size[0]
                empty = Segmentation(empty.masks, empty.scores, logits=np.zeros(
                    (0, empty.scores.shape[1], low_res, low_res), dtype=np.float32))
            return empty
        self._check_prompts(prompts)
        results = [self._segment_chunk(embedding, chunk, multimask, return_logits, best_only)
                   for chunk in prompts.chunks(self.prompt_batch_size)]
        return results[0] if len(results) == 1 else Segmentation.concat(results)

    def _check_embedding(self, embedding: Any) -> None:
        """Refuse embeddings of another model, with the reason, before they reach the decoder."""
        if not isinstance(embedding, ImageEmbedding):
            raise TypeError(f"embedding must be an ImageEmbedding from encode(), got {type(embedding).__name__}")
        if embedding.model_fingerprint and embedding.model_fingerprint != self.model_fingerprint:
            raise ValueError(f"embedding was computed by another model (fingerprint {embedding.model_fingerprint}, "
                             f"this Segmenter's model is {self.model_fingerprint}): encode the image with this "
                             "Segmenter")
        pe = self.model.prompt_encoder
        expected = (1, pe.embed_dim, *pe.image_embedding_size)
        if tuple(embedding.features.shape) != expected:
            raise ValueError(f"embedding features must have shape {expected} for this model, "
                             f"got {tuple(embedding.features.shape)} (computed by another model?)")
        if self._fuses_early and embedding.early_features is None:
            raise ValueError("this model's decoder fuses early encoder features (HQ-SAM) and the embedding has none: "
                             "encode the image with this Segmenter")
        expected_input = preprocess_shape(*embedding.original_size, self.image_size)
        if tuple(embedding.input_size) != expected_input:
            raise ValueError(f"embedding input_size must be {expected_input} for an image of size "
                             f"{tuple(embedding.original_size)} and this model's image_size {self.image_size}, "
                             f"got {tuple(embedding.input_size)} (computed by another model?)")

    def _check_prompts(self, prompts: Prompts) -> None:
        low_res = 4 * self.model.prompt_encoder.image_embedding_size[0]
        if prompts.mask_inputs is not None and prompts.mask_inputs.shape[-2:] != (low_res, low_res):
            raise ValueError(
                f"mask_input must have shape (N, 1, {low_res}, {low_res}), got {tuple(prompts.mask_inputs.shape)}"
            )
        if prompts.embeddings is not None:
            module = getattr(self.model, "embedding_prompt", None)
            if module is None:
                raise ValueError("embedding prompts need a model with the embedding prompt path "
                                 "(trained with samkit.train); this model has none")
            if prompts.embeddings.shape[1] != module.in_dim:
                raise ValueError(f"embeddings must have shape (N, {module.in_dim}) for this model, "
                                 f"got {tuple(prompts.embeddings.shape)}")

    def decode(self, embedding: ImageEmbedding, prompts: Prompts, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder: low-res logits (N, K, s, s) and scores (N, K), as tensors."""
        self._check_embedding(embedding)
        model, device = self.model, self.device
        dtype = model.mask_decoder.iou_token.weight.dtype  # may differ from the encoder's (see load_model)
        cmap = embedding.coordinate_map
        point_args = None
        if prompts.points is not None:
            coords = torch.as_tensor(cmap.points_to_model(prompts.points), device=device)
            point_args = (coords, torch.as_tensor(prompts.labels, device=device))
        box_t = None
        if prompts.boxes is not None:
            box_t = torch.as_tensor(cmap.boxes_to_model(prompts.boxes), device=device)
        mask_t = None
        if prompts.mask_inputs is not None:
            mask_t = torch.as_tensor(prompts.mask_inputs, device=device, dtype=dtype)
        sparse, dense = model.prompt_encoder(point_args, box_t, mask_t)
        if prompts.embeddings is not None:
            tokens = model.embedding_prompt(torch.as_tensor(prompts.embeddings, device=device))
            sparse = torch.cat([sparse.expand(len(prompts), -1, -1), tokens.to(sparse.dtype)], dim=1)
        if mask_t is None:
            dense = dense[:1]  # identical for every prompt: lets the decoder share image work
        dense_pe = self._dense_pe
        if dense_pe is None or dense_pe.device != device or dense_pe.dtype != dtype:
            dense_pe = self._dense_pe = model.prompt_encoder.get_dense_pe().to(dtype)  # prompt-independent: once
        early = {} if embedding.early_features is None or not self._fuses_early else {
            "early_features": embedding.early_features.to(device=device, dtype=dtype)}
        return model.mask_decoder(embedding.features.to(device=device, dtype=dtype), dense_pe, sparse.to(dtype),
                                  dense.to(dtype), multimask, **early)

    def _segment_chunk(self, embedding: ImageEmbedding, prompts: Prompts, multimask: bool,
                       return_logits: bool, best_only: bool) -> Segmentation:
        low_res, scores = self.decode(embedding, prompts, multimask)
        meta = [dict(m) for m in prompts.meta]
        if best_only:
            best = scores.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            low_res, scores = low_res[rows, best][:, None], scores[rows, best][:, None]
            for m, index in zip(meta, best.tolist()):
                m["output_index"] = index
        masks = upscale_masks_binary(low_res.float(), input_size=embedding.input_size,
                                     original_size=embedding.original_size, image_size=self.image_size,
                                     threshold=self.model.mask_threshold).cpu().numpy()
        return Segmentation(
            masks=masks,
            scores=scores.float().cpu().numpy(),
            logits=low_res.float().cpu().numpy() if return_logits else None,
            meta=meta,
        )


class _CompiledEncoder:
    """Calls ``torch.compile(encoder)``; on a compilation error warns once and runs eagerly."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.eager = encoder
        self.compiled: Any = None
        try:
            self.compiled = torch.compile(encoder, dynamic=False)
        except Exception as exc:  # unsupported platform or Python
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        import warnings

        warnings.warn(f"torch.compile unavailable ({type(exc).__name__}: {exc}); the encoder runs eagerly",
                      RuntimeWarning, stacklevel=4)
        self.compiled = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as exc:  # no C++ toolchain, unsupported op, ...
                self._give_up(exc)
        return self.eager(x)


def compile_encoder(encoder: torch.nn.Module) -> Any:
    """Wrap the image encoder in ``torch.compile`` with an eager fallback (see :class:`Segmenter`)."""
    return _CompiledEncoder(encoder)
