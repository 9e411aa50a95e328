"""open_clip adapter: text and image embeddings in CLIP's shared space.

Needs ``pip install samkit[clip]``; open_clip is imported only when a :class:`ClipModel` is
built. The model is built and cached by :func:`samkit.train.clip_path.load_clip` (the same
loader the CLIP-embedding prompt path is trained with), so an adapter and a training run that
name the same model share one instance.

Weights, in the order open_clip resolves them:

* ``pretrained=None``: random weights (tests; nothing is read or downloaded);
* ``pretrained="/path/to/open_clip_pytorch_model.bin"``: a local checkpoint file;
* ``model_name="local-dir:/folder"``: a folder with ``open_clip_config.json`` (and weights,
  random when none is there); ``pretrained`` is ignored;
* ``pretrained="openai"`` (or another tag of ``open_clip.list_pretrained()``): open_clip's
  cache, downloaded from the hub on first use when online. This is the only case that
  downloads, and only because the caller named the weights.

Offline with neither the file nor the cache, the error says which weights are missing and
how to provide them. Weights files are read by open_clip with ``torch.load(weights_only=True)``
(or as safetensors): a file holding other pickled objects is refused with a
:class:`~samkit.errors.CheckpointError` before anything in it runs.

Example:
    >>> clip = ClipModel("ViT-B-32", pretrained="openai")                   # doctest: +SKIP
    >>> text = clip.encode_text(["a wheel", "a grille"])   # (2, 512) float32, unit rows  # doctest: +SKIP
    >>> crops = clip.encode_images([crop_a, crop_b])       # (2, 512) float32, unit rows  # doctest: +SKIP
    >>> similarity = crops @ text.T                        # cosine similarity (2, 2)     # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from samkit.errors import CheckpointError
from samkit.weights import WeightsNotFoundError

__all__ = ["ClipModel"]

logger = logging.getLogger(__name__)

_INSTALL = "pip install samkit[clip]"
_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


def _check_pretrained(pretrained: str | os.PathLike | None) -> str | None:
    if pretrained is None:
        return None
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f"pretrained must be an open_clip tag, a weights file or None, got {type(pretrained).__name__}")
    value = os.fspath(pretrained)
    looks_like_path = os.sep in value or "/" in value or value.lower().endswith(_WEIGHT_SUFFIXES)
    if looks_like_path and not os.path.isfile(value):
        raise WeightsNotFoundError(f"CLIP weights file not found: {value!r}; expected an open_clip checkpoint "
                                   "(e.g. open_clip_pytorch_model.bin) at that path")
    return value


class ClipModel:
    """An open_clip model that embeds phrases and image crops.

    Args:
        model_name: an open_clip model name (``open_clip.list_models()``, e.g. ``"ViT-B-32"``),
            ``"local-dir:/folder"`` or ``"hf-hub:org/name"``.
        pretrained: an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``, ...), a local
            weights file, or None for random weights. Required, so that no download and no
            random model happens without being asked for.
        device: where CLIP runs.
        image_size: force CLIP's input size (None: the model's own).
        batch_size: crops per image forward pass.

    Raises:
        ImportError: open_clip is not installed (``pip install samkit[clip]``).
        WeightsNotFoundError: the weights file is missing, or the tag's weights are neither cached
            nor downloadable (offline).
    """

    def __init__(self, model_name: str = "ViT-B-32", *, pretrained: str | os.PathLike | None,
                 device: str | torch.device = "cpu", image_size: int | None = None, batch_size: int = 64) -> None:
        from samkit.train.clip_path import ClipSettings, load_clip

        if not isinstance(model_name, str) or not model_name:
            raise ValueError(f"model_name must be a non-empty open_clip model name, got {model_name!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.settings = ClipSettings(model_name=model_name, pretrained=_check_pretrained(pretrained),
                                     device=str(device), image_size=image_size)
        self.batch_size = batch_size
        try:
            self.model, self.preprocess, self.tokenizer = load_clip(self.settings)
        except ImportError as exc:
            raise ImportError(f"ClipModel needs open_clip: {_INSTALL} ({exc})") from None
        except pickle.UnpicklingError as exc:  # open_clip reads .bin / .pt files with weights_only=True
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"refused to load CLIP {model_name!r} with pretrained={pretrained!r}: the weights file holds pickled "
                f"Python objects that could run code, expected tensors only ({reason})") from None
        except (RuntimeError, OSError) as exc:
            raise WeightsNotFoundError(
                f"cannot load CLIP {model_name!r} with pretrained={pretrained!r}: {exc}. Offline, download the "
                "weights once and pass pretrained='/path/to/open_clip_pytorch_model.bin', or "
                "model_name='local-dir:/folder' holding open_clip_config.json and the weights; "
                "pretrained=None builds random weights (tests only)") from None
        self._mean, self._std, self.input_size = self._preprocess_settings()

    def _preprocess_settings(self) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg.get("size", 224)
        size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
        mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=torch.float32)
        std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=torch.float32)
        return mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1), size

    # -- properties ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        """D, the width of the embeddings (512 for ViT-B-32)."""
        width = getattr(getattr(self.model, "visual", None), "output_dim", None)
        return int(width) if width else int(self.model.text_projection.shape[-1])

    @property
    def mean(self) -> tuple[float, float, float]:
        """CLIP's RGB normalisation mean on the [0, 1] scale (the neutral grey of crops)."""
        return tuple(float(v) for v in self._mean.flatten())

    # -- embeddings ---------------------------------------------------------------------------
    def encode_text(self, phrases: Sequence[str]) -> np.ndarray:
        """CLIP text embeddings, all phrases in one forward pass.

        Args:
            phrases: P strings (a single string is one phrase).

        Returns:
            float32 (P, D), L2-normalised rows.
        """
        from samkit.train.clip_path import clip_text_embeddings

        phrases = [phrases] if isinstance(phrases, str) else list(phrases)
        bad = [p for p in phrases if not isinstance(p, str) or not p.strip()]
        if bad:
            raise ValueError(f"phrases must be non-empty strings, got {bad[0]!r}")
        return clip_text_embeddings(phrases, self.settings).astype(np.float32, copy=False)

    def encode_images(self, crops: Sequence[Any] | torch.Tensor) -> np.ndarray:
        """CLIP image embeddings.

        Args:
            crops: either (h, w, 3) uint8 RGB arrays or PIL images of any sizes (open_clip's own
                preprocessing: resize, centre crop, normalise), or a float tensor (N, 3, h, w) of
                RGB in [0, 1], resized to CLIP's input size if needed and normalised here
                (:meth:`encode_pixels`).

        Returns:
            float32 (N, D), L2-normalised rows; (0, D) for no crops.
        """
        if isinstance(crops, torch.Tensor):
            return self.encode_pixels(crops)
        from samkit.train.clip_path import clip_image_embeddings

        return clip_image_embeddings(list(crops), self.settings, batch_size=self.batch_size).astype(np.float32,
                                                                                                      copy=False)

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """CLIP image embeddings of a batch of RGB crops, ``batch_size`` per forward pass.

        Args:
            pixels: float (N, 3, h, w) RGB in [0, 1]; resized (bicubic, antialiased) to
                :attr:`input_size` when (h, w) differs.

        Returns:
            float32 (N, D), L2-normalised rows.
        """
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            shape = tuple(pixels.shape) if hasattr(pixels, "shape") else type(pixels).__name__
            raise ValueError(f"pixels must be a float tensor (N, 3, h, w) of RGB in [0, 1], got {shape}")
        if not pixels.is_floating_point():
            raise TypeError(f"pixels must be floating point in [0, 1], got dtype {pixels.dtype}")
        out = []
        dtype = next(self.model.parameters()).dtype
        for start in range(0, len(pixels), self.batch_size):
            x = pixels[start:start + self.batch_size].to(self.device, torch.float32)
            if tuple(x.shape[-2:]) != self.input_size:
                x = F.interpolate(x, size=self.input_size, mode="bicubic", antialias=True, align_corners=False)
            x = (x - self._mean.to(x.device)) / self._std.to(x.device)
            out.append(F.normalize(self.model.encode_image(x.to(dtype)).float(), dim=-1).cpu())
        if not out:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return torch.cat(out).numpy()

    def __repr__(self) -> str:
        s = self.settings
        return f"ClipModel({s.model_name!r}, pretrained={s.pretrained!r}, device={s.device!r})"
