"""Regression tests for the core edge cases of issue 15: elongated images, threads sharing one
Segmenter, embeddings from another model, out-of-range prompts, HF index files, load_model arguments."""
from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch

import samkit
from samkit import ImageEmbedding, Prompts, Segmenter, load_model
from samkit.errors import CheckpointError
from samkit.modeling import build_sam
from samkit.transforms import preprocess_shape, to_rgb_uint8

from conftest import randomize_


@pytest.fixture(scope="module")
def segmenter(tiny_model):
    return Segmenter(tiny_model, cache_size=2)


def random_image(seed: int, height: int = 40, width: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# -- elongated images -------------------------------------------------------------------------


@pytest.mark.parametrize("height, width, long_side, expected", [
    (1, 3000, 1024, (1, 1024)),
    (3000, 1, 1024, (1024, 1)),
    (20000, 20, 128, (128, 1)),
    (1, 1, 1024, (1024, 1024)),
])
def test_preprocess_shape_keeps_one_pixel(height, width, long_side, expected):
    assert preprocess_shape(height, width, long_side) == expected


def test_preprocess_shape_matches_reference_where_the_short_side_is_not_empty():
    from segment_anything.utils.transforms import ResizeLongestSide

    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 5000, (200, 2)):
        reference = ResizeLongestSide.get_preprocess_shape(int(height), int(width), 1024)
        if min(reference) >= 1:
            assert preprocess_shape(int(height), int(width), 1024) == reference


@pytest.mark.parametrize("shape", [(20000, 20), (20, 20000)])
def test_elongated_images_segment_at_original_size(segmenter, shape):
    image = random_image(1, *shape)
    embedding = segmenter.encode(image)
    height, width = shape
    out = segmenter.segment(embedding, points=[[width - 1, height - 1], [0, 0]], labels=[1, 0],
                            boxes=[0, 0, width - 1, height - 1])
    assert out.masks.shape == (1, 3, height, width) and out.masks.dtype == bool
    assert out.scores.shape == (1, 3) and np.all(np.isfinite(out.scores))


# -- threads ------------------------------------------------------------------------------------


def test_default_embedding_is_the_calling_threads_last_image(segmenter):
    images = [random_image(10), random_image(11)]
    expected = [segmenter.segment(segmenter.encode(img), points=[[20, 20]]).logits for img in images]
    encoded_a, encoded_b, results = threading.Event(), threading.Event(), {}

    def worker_a():
        segmenter.encode(images[0])
        encoded_a.set()
        encoded_b.wait(30)  # thread b has encoded its image since
        results["a"] = segmenter.segment(points=[[20, 20]]).logits

    def worker_b():
        encoded_a.wait(30)
        segmenter.encode(images[1])
        encoded_b.set()
        results["b"] = segmenter.segment(points=[[20, 20]]).logits

    threads = [threading.Thread(target=worker_a), threading.Thread(target=worker_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    np.testing.assert_allclose(results["a"], expected[0], atol=1e-5)
    np.testing.assert_allclose(results["b"], expected[1], atol=1e-5)


def test_threads_segmenting_without_embedding_get_their_own_image(segmenter):
    images = [random_image(20 + i, 30 + i, 45 - i) for i in range(4)]
    points = [[10, 12], [3, 25]]
    expected = [segmenter.segment(segmenter.encode(img), points=points, labels=[1, 0]).logits for img in images]
    wrong: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for call in range(40):
                segmenter.encode(images[i])  # cache_size 2 < 4 images: hits, misses and evictions
                got = segmenter.segment(points=points, labels=[1, 0]).logits
                if got.shape != expected[i].shape or not np.allclose(got, expected[i], atol=1e-5):
                    wrong.append((i, call))
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert not wrong, f"results computed on another thread's image: {wrong[:5]}"


def test_clear_cache_forgets_every_threads_default_embedding(tiny_model):
    segmenter = Segmenter(tiny_model)
    thread = threading.Thread(target=segmenter.encode, args=(random_image(3),))
    thread.start()
    thread.join(60)
    with pytest.raises(ValueError, match="call encode"):
        segmenter.segment(points=[[1, 1]])  # this thread encoded nothing
    segmenter.encode(random_image(4))
    segmenter.clear_cache()
    with pytest.raises(ValueError, match="call encode"):
        segmenter.segment(points=[[1, 1]])


# -- embeddings from another model ------------------------------------------------------------


def test_embedding_from_another_architecture_is_refused(segmenter, tiny_config):
    other = Segmenter(build_sam(tiny_config.replace(image_size=256)).eval())
    embedding = other.encode(random_image(5))
    with pytest.raises(ValueError, match="another model"):
        segmenter.segment(embedding, points=[[1, 1]])
    with pytest.raises(ValueError, match="another model"):
        segmenter.segment(embedding, prompts=Prompts.empty())


def test_embedding_from_other_weights_is_refused(segmenter, tiny_config):
    other = Segmenter(randomize_(build_sam(tiny_config), seed=7).eval())
    with pytest.raises(ValueError, match="fingerprint"):
        segmenter.segment(other.encode(random_image(6)), points=[[1, 1]])


def test_embedding_is_accepted_by_the_same_weights_in_another_segmenter_or_precision(segmenter, tiny_model):
    image = random_image(7)
    expected = segmenter.segment(segmenter.encode(image), points=[[5, 5]]).logits
    twin = Segmenter(copy.deepcopy(tiny_model))
    np.testing.assert_allclose(twin.segment(segmenter.encode(image), points=[[5, 5]]).logits, expected, atol=1e-5)
    half = copy.deepcopy(tiny_model)
    half.image_encoder.to(torch.bfloat16)
    assert Segmenter(half).model_fingerprint == segmenter.model_fingerprint


def test_hand_built_embedding_with_wrong_shape_is_refused(segmenter):
    features = torch.zeros(1, 16, 8, 8)
    with pytest.raises(ValueError, match=r"features must have shape \(1, 32, 8, 8\).*got \(1, 16, 8, 8\)"):
        segmenter.segment(ImageEmbedding(features, (40, 50), (102, 128)), points=[[1, 1]])
    with pytest.raises(ValueError, match=r"input_size must be \(102, 128\)"):
        segmenter.segment(ImageEmbedding(torch.zeros(1, 32, 8, 8), (40, 50), (40, 50)), points=[[1, 1]])
    with pytest.raises(TypeError, match="ImageEmbedding"):
        segmenter.segment(torch.zeros(1, 32, 8, 8), points=[[1, 1]])


# -- prompts ------------------------------------------------------------------------------------

BAD_PROMPTS = [
    (dict(points=[[3e38, 3e38]]), ValueError, r"points must lie within \+-1e\+06, got \[3e\+38"),
    (dict(points=np.array([[1e39, 1.0]])), ValueError, r"points must lie within .*1e\+39"),
    (dict(points=[[5, -2e6]]), ValueError, r"points .*-2e\+06"),
    (dict(boxes=[0, 0, 3e38, 3e38]), ValueError, r"boxes must lie within .*3e\+38"),
    (dict(points=[[1, 1]], labels=[1e20]), ValueError, r"labels must be 1 .* got \[1e\+20\]"),
    (dict(points=[[1, 1]], labels=[2]), ValueError, r"got \[2\]"),
    (dict(points=[[1, 1]], labels=[0.5]), ValueError, r"got \[0\.5\]"),
    (dict(points=[[1, 1]], meta=[1]), TypeError, "meta must be a sequence of mappings.*int at index 0"),
    (dict(points=[[1, 1]], meta=5), TypeError, "meta must be a mapping or a sequence of mappings"),
    (dict(points=[[1, 1]], meta="ab"), TypeError, "meta must be a mapping"),
    (dict(points=np.array([[1 + 1j, 1]])), TypeError, "points must be real numbers, got complex"),
    (dict(boxes=torch.zeros(4, dtype=torch.complex64)), TypeError, "boxes must be real numbers"),
    (dict(points=[[1, 1]], labels=np.array([1j])), TypeError, "labels must be real numbers"),
    (dict(mask_input=np.full((1, 1, 32, 32), 1e30)), ValueError, r"mask_input must lie within"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_PROMPTS)
def test_bad_prompts_are_refused_with_the_value(segmenter, kwargs, error, match):
    embedding = segmenter.encode(random_image(8))
    with pytest.raises(error, match=match):
        segmenter.segment(embedding, **kwargs)


def test_meta_accepts_mappings_and_none_entries(segmenter):
    from types import MappingProxyType

    embedding = segmenter.encode(random_image(8))
    out = segmenter.segment(embedding, boxes=[[0, 0, 9, 9], [1, 1, 5, 5]], meta=[MappingProxyType({"a": 1}), None])
    assert [m.get("a") for m in out.meta] == [1, None]
    assert [m["k"] for m in Prompts(points=[[[1, 1]], [[2, 2]]], meta={"k": 2}).meta] == [2, 2]


def test_prompt_tensors_of_low_precision_are_accepted():
    p = Prompts(points=torch.tensor([[1.5, 2.0]], dtype=torch.bfloat16), labels=torch.tensor([1]))
    np.testing.assert_array_equal(p.points, [[[1.5, 2.0]]])


# -- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_tensor_images_convert_via_float32(dtype):
    image = torch.rand(6, 7, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    np.testing.assert_array_equal(to_rgb_uint8(image), to_rgb_uint8(image.float().numpy()))


# -- loading ------------------------------------------------------------------------------------


def hf_folder(tmp_path, index_text: str):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(index_text)
    return tmp_path


@pytest.mark.parametrize("index_text, match", [
    ("{not json", r"model\.safetensors\.index\.json: not a valid JSON index file"),
    ("[1, 2]", r"model\.safetensors\.index\.json: expected a 'weight_map'"),
    (json.dumps({"weight_map": {"a": "model-1.safetensors"}}), r"missing: \['model-1\.safetensors'\]"),
    (json.dumps({"weight_map": {"a": "../outside.safetensors"}}), "must lie in the same folder"),
])
def test_broken_hf_index_names_the_file(tmp_path, index_text, match):
    with pytest.raises(CheckpointError, match=match):
        load_model(hf_folder(tmp_path, index_text))


@pytest.mark.parametrize("device, match", [
    ("gpu", r"device must be 'cpu', 'cuda', 'cuda:N', 'mps'.*got 'gpu'"),
    ("cuda:99", r"cuda:99"),
    (3.5, r"device must be .*got 3\.5"),
])
def test_load_model_rejects_bad_devices_before_reading(device, match):
    with pytest.raises(ValueError, match=match):
        load_model("no-such-file.pth", device=device)


@pytest.mark.parametrize("source", ["", "  "])
def test_load_model_rejects_an_empty_source(source):
    with pytest.raises(ValueError, match="got an empty string"):
        load_model(source)


def test_read_weights_rejects_an_empty_source():
    from samkit.weights import read_weights

    with pytest.raises(ValueError, match="got an empty string"):
        read_weights("")


def test_segmenter_rejects_a_bad_device(tiny_model_for_device_check):
    with pytest.raises(ValueError, match=r"device must be .*got 'gpu'"):
        samkit.Segmenter(tiny_model_for_device_check, device="gpu")


@pytest.fixture(scope="module")
def tiny_model_for_device_check():
    return samkit.build_sam(samkit.get_config("tiny"))


def test_unreadable_image_error_is_clear_after_ultralytics_wraps_pillow(tmp_path):
    """ultralytics replaces PIL.Image.open with a wrapper that imports a HEIF plugin on unknown
    files; load_image must still say which file could not be read (real ultralytics, own process)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ultralytics")
    bad = tmp_path / "garbage.jpg"
    bad.write_bytes(b"not an image at all")
    code = (
        "import sys, ultralytics.utils.patches\n"
        "from samkit.transforms import load_image\n"
        "try:\n"
        "    load_image(sys.argv[1])\n"
        "except ValueError as exc:\n"
        "    print('VALUE', exc)\n"
    )
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "VALUE cannot read image file" in out.stdout and "garbage.jpg" in out.stdout
