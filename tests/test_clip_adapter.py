"""Tests for samkit.adapters.clip with a tiny random open_clip model built offline.

The model comes from a ``local-dir:`` folder holding only ``open_clip_config.json`` (a 32-wide
ViT and text transformer): open_clip builds it with random weights and its bundled BPE tokenizer.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("open_clip")

from samkit.adapters.clip import ClipModel  # noqa: E402
from samkit.train.clip_path import ClipSettings, load_clip  # noqa: E402
from samkit.weights import WeightsNotFoundError  # noqa: E402

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def write_tiny_clip(folder) -> str:
    """A folder open_clip reads as ``local-dir:``: config only, so the weights are random."""
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    return f"local-dir:{folder}"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(0)
    return ClipModel(write_tiny_clip(tmp_path_factory.mktemp("clip")), pretrained=None, batch_size=4)


def test_text_embeddings_are_unit_float32_rows(clip):
    text = clip.encode_text(["a wheel", "a grille", "a red circle"])
    assert text.shape == (3, 32) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert clip.encode_text("a wheel").shape == (1, 32)
    np.testing.assert_allclose(clip.encode_text("a wheel")[0], text[0], atol=1e-6)


def test_image_embeddings_from_arrays_of_any_size(clip):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(10, 30), (40, 40), (64, 20)]]
    emb = clip.encode_images(crops)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert clip.encode_images([]).shape == (0, 32)


def test_pixel_batches_are_chunked_and_equal_single_passes(clip):
    pixels = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calls = []
    original = clip.model.encode_image
    clip.model.encode_image = lambda x, **kw: calls.append(len(x)) or original(x, **kw)
    try:
        together = clip.encode_images(pixels)
    finally:
        clip.model.encode_image = original
    assert calls == [4, 2]  # batch_size = 4
    alone = np.concatenate([clip.encode_pixels(pixels[i:i + 1]) for i in range(6)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_pixels_of_another_size_are_resized(clip):
    assert clip.input_size == (32, 32)
    emb = clip.encode_pixels(torch.rand(2, 3, 50, 70))
    assert emb.shape == (2, 32)


def test_matches_clip_path_loader_and_shares_its_model(clip):
    model, _, _ = load_clip(ClipSettings(model_name=clip.settings.model_name, pretrained=None))
    assert model is clip.model
    assert clip.embedding_dim == 32
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


@pytest.mark.parametrize("pixels, error", [
    (torch.rand(2, 32, 32), ValueError),
    (torch.rand(2, 1, 32, 32), ValueError),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError),
])
def test_bad_pixels(clip, pixels, error):
    with pytest.raises(error, match="pixels"):
        clip.encode_pixels(pixels)


@pytest.mark.parametrize("phrases", [[""], ["ok", "  "], [3]])
def test_bad_phrases(clip, phrases):
    with pytest.raises(ValueError, match="non-empty strings"):
        clip.encode_text(phrases)


def test_missing_weights_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "open_clip_pytorch_model.bin"
    with pytest.raises(WeightsNotFoundError, match="nowhere"):
        ClipModel("ViT-B-32", pretrained=str(missing))


def test_offline_tag_without_cache_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: nothing to find
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="ViT-B-32.*pretrained='openai'.*Offline"):
        ClipModel("ViT-B-32", pretrained="openai", image_size=32)


def test_pretrained_must_be_given():
    with pytest.raises(TypeError, match="pretrained"):
        ClipModel("ViT-B-32")  # no silent download, no silent random weights


class _TouchOnUnpickle:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.mark.parametrize("where", ["pretrained file", "local-dir weights"])
def test_weights_that_would_run_code_are_refused(tmp_path, where):
    from samkit.errors import CheckpointError

    marker = tmp_path / "marker"
    weights = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"state_dict": {"hook": _TouchOnUnpickle(marker)}}, weights)
    if where == "pretrained file":
        model, pretrained = "ViT-B-32", str(weights)
    else:  # the folder's weights file is found by open_clip itself
        model, pretrained = write_tiny_clip(tmp_path), None
    with pytest.raises(CheckpointError, match="could run code"):
        ClipModel(model, pretrained=pretrained)
    assert not marker.exists()
