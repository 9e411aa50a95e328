"""Property-based tests of Segmenter's contract over random prompts and images (tiny model).

Whatever the input, only ValueError or TypeError escape, and every result has the documented
shapes: masks bool (N, K, H, W) at the original size, scores (N, K), logits (N, K, s, s).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samkit import Segmenter

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])

INTERESTING = [0.0, -0.0, 1.0, -1.0, 0.5, 5.0, 63.0, -30.0, 1e5, 1e6, -1e6, 1e7, 3e38, -3e38, 1e300,
               np.nan, np.inf, -np.inf]
NUMBER_DTYPES = [np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_, np.complex64]


@pytest.fixture(scope="module")
def segmenter(tiny_model):
    return Segmenter(tiny_model)


@pytest.fixture(scope="module")
def embedding(segmenter):
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    return segmenter.encode(image)


def elements(dtype) -> st.SearchStrategy:
    if dtype == np.bool_:
        return st.booleans()
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return st.integers(int(info.min), int(info.max))
    if np.issubdtype(dtype, np.complexfloating):
        return st.complex_numbers(max_magnitude=100, allow_nan=False, allow_infinity=False)
    width = 32 if dtype == np.float32 else 64
    values = [v for v in INTERESTING if width == 64 or not np.isfinite(v) or abs(v) < 3.4e38]
    return st.one_of(st.floats(-100, 100, width=width), st.sampled_from(values))


@st.composite
def arrays_of(draw, shapes: st.SearchStrategy) -> np.ndarray:
    dtype = draw(st.sampled_from(NUMBER_DTYPES))
    return draw(hnp.arrays(dtype, draw(shapes), elements=elements(dtype)))


@st.composite
def prompt_kwargs(draw) -> dict:
    n, p = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    kwargs: dict = {}
    if draw(st.booleans()):
        shapes = st.sampled_from([(p, 2), (n, p, 2)] * 3 + [(2,), (), (p, 3), (n, p, 2, 1)])
        kwargs["points"] = draw(arrays_of(shapes))
        if draw(st.booleans()):
            label_shape = st.sampled_from([(p,), (n, p), (p + 1,), ()])
            if draw(st.booleans()):
                kwargs["labels"] = draw(hnp.arrays(np.int64, draw(label_shape), elements=st.sampled_from([-1, 0, 1])))
            else:
                kwargs["labels"] = draw(arrays_of(label_shape))
    if draw(st.booleans()) or not kwargs:
        kwargs["boxes"] = draw(arrays_of(st.sampled_from([(4,), (n, 4), (1, 4)] * 2 + [(n, 3), (2, 2)])))
    form = draw(st.sampled_from(["numpy", "list", "tensor"]))
    for key, value in list(kwargs.items()):
        if form == "list":
            kwargs[key] = value.tolist()
        elif form == "tensor" and value.dtype != np.uint16:
            kwargs[key] = torch.from_numpy(np.ascontiguousarray(value))
    return kwargs


def expected_count(kwargs: dict) -> int:
    """Number of prompts N by the documented broadcasting: single prompts repeat to the larger N."""
    counts = []
    if "points" in kwargs:
        shape = np.shape(np.asarray(kwargs["points"]))
        counts.append(1 if len(shape) == 2 else shape[0])
    if "boxes" in kwargs:
        shape = np.shape(np.asarray(kwargs["boxes"]))
        counts.append(1 if len(shape) == 1 else shape[0])
    return max(counts)


def check_result(out, count: int, num_outputs: int, size: tuple[int, int], low_res: int) -> None:
    assert out.masks.dtype == bool and out.masks.shape == (count, num_outputs, *size)
    assert out.scores.shape == (count, num_outputs) and np.all(np.isfinite(out.scores))
    assert out.logits.shape == (count, num_outputs, low_res, low_res)
    assert len(out.meta) == count


@SETTINGS
@given(kwargs=prompt_kwargs(), multimask=st.booleans(), best_only=st.booleans())
def test_random_prompts_raise_only_value_or_type_errors(segmenter, embedding, kwargs, multimask, best_only):
    try:
        out = segmenter.segment(embedding, multimask=multimask, best_only=best_only, **kwargs)
    except (ValueError, TypeError) as error:
        event(f"{type(error).__name__}: {str(error)[:30]}")
        return
    event("segmented")
    num_outputs = 1 if best_only or not multimask else segmenter.model.mask_decoder.num_multimask_outputs
    low_res = 4 * segmenter.model.prompt_encoder.image_embedding_size[0]
    check_result(out, expected_count(kwargs), num_outputs, embedding.original_size, low_res)


@st.composite
def images(draw) -> np.ndarray:
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    shape = (height, width) if channels is None else (height, width, channels)
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.float32, np.float32, np.bool_]))
    if dtype == np.float32 and draw(st.booleans()):
        values = st.floats(0, 1, width=32)
    elif dtype == np.float32:
        values = st.one_of(st.floats(0, 1, width=32), st.sampled_from([-0.5, 2.0, np.nan, np.inf]))
    else:
        values = elements(dtype)
    image = draw(hnp.arrays(dtype, shape, elements=values))
    return torch.from_numpy(image) if draw(st.booleans()) else image


@SETTINGS
@given(image=images(), x=st.floats(-70, 70), y=st.floats(-70, 70))
def test_random_images_raise_only_value_or_type_errors(segmenter, image, x, y):
    try:
        embedding = segmenter.encode(image)
    except (ValueError, TypeError) as error:
        event(f"{type(error).__name__}: {str(error)[:30]}")
        return
    event("encoded")
    size = tuple(image.shape[:2])
    assert embedding.original_size == size
    out = segmenter.segment(embedding, points=[[x, y]], boxes=[0, 0, size[1], size[0]])
    low_res = 4 * segmenter.model.prompt_encoder.image_embedding_size[0]
    check_result(out, 1, segmenter.model.mask_decoder.num_multimask_outputs, size, low_res)
