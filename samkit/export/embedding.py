"""Image embeddings as ``.npy`` files: what a client-side decoder (the web page, an ONNX client) reads.

The file holds the encoder's output for one image, (1, C, g, g) float32 (C = 256, g = 64 for
the paper's models), exactly :attr:`samkit.ImageEmbedding.features`. The image's size is not
stored: the client knows it from the image, and maps clicks into the resized frame with
:func:`samkit.transforms.preprocess_shape`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from samkit.arrays import to_numpy
from samkit.atomic import atomic_file
from samkit.segmenter import ImageEmbedding, Segmenter

__all__ = ["read_embedding", "write_embedding"]


def write_embedding(model_or_segmenter: Any, image: Any, path: str | os.PathLike) -> ImageEmbedding:
    """Encode ``image`` and write its (1, C, g, g) float32 embedding to ``path`` (``.npy``).

    Args:
        model_or_segmenter: a samkit SAM model or a :class:`samkit.Segmenter`.
        image: anything :meth:`samkit.Segmenter.encode` takes (array, PIL image, path).
        path: the ``.npy`` file to write (written atomically; its folder must exist).

    Returns:
        The :class:`samkit.ImageEmbedding` that was written.
    """
    segmenter = model_or_segmenter if isinstance(model_or_segmenter, Segmenter) else Segmenter(model_or_segmenter)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"embedding output {path} is a folder; expected a .npy file path")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder of the embedding output {path} does not exist")
    embedding = segmenter.encode(image)
    features = np.ascontiguousarray(to_numpy(embedding.features.float()), dtype=np.float32)
    with atomic_file(path, "wb") as file:
        np.save(file, features, allow_pickle=False)
    return embedding


def read_embedding(path: str | os.PathLike, *, expected_shape: Sequence[int] | None = None) -> np.ndarray:
    """Read a ``.npy`` embedding as float32, checked against ``expected_shape`` when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"cannot read {path} as a .npy array: {error}") from None
    if array.ndim != 4 or array.shape[0] != 1:
        raise ValueError(f"embedding {path} must have shape (1, C, g, g), got {array.shape}")
    if expected_shape is not None and tuple(array.shape) != tuple(expected_shape):
        raise ValueError(f"embedding {path} must have shape {tuple(expected_shape)} for this model, got {array.shape}")
    return array.astype(np.float32, copy=False)
