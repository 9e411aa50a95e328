"""Tests for samkit.adapters.hf_detectors with tiny random OWLv2, OWL-ViT, Grounding DINO and DETR.

Every model and processor is built offline: the CLIP BPE and BERT WordPiece tokenizers from
small vocabularies written here, the image processors with small sizes; they are saved with
``save_pretrained`` and loaded back through the Auto classes, as a user's local folder would be.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from samkit.adapters.hf_detectors import (
    ClosedSetDetector,
    ZeroShotDetector,
    detect_closed_set,
    detect_zero_shot,
    grounding_text,
    load_hf_detector,
)

transformers = pytest.importorskip("transformers")

from tiny_hf_models import save_tiny_grounding_dino, save_tiny_owl  # noqa: E402

H, W = 30, 80  # non-square on purpose: OWLv2 pads it to 80 x 80
GRID = 4  # 64-pixel model input / 16-pixel patches


@pytest.fixture(scope="module")
def owlv2_dir(tmp_path_factory):
    return save_tiny_owl(tmp_path_factory.mktemp("owlv2"), v2=True)


@pytest.fixture(scope="module")
def owlvit_dir(tmp_path_factory):
    return save_tiny_owl(tmp_path_factory.mktemp("owlvit"), v2=False)


@pytest.fixture(scope="module")
def grounding_dino_dir(tmp_path_factory):
    return save_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"), ["cat", "dog", "red", "car"], num_queries=10)


@pytest.fixture(scope="module")
def detr_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detr")
    config = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False,
        backbone_config=transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                  layer_type="basic", out_features=["stage2"]),
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=5,
        id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    torch.manual_seed(0)
    transformers.DetrForObjectDetection(config).save_pretrained(folder)
    transformers.DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(folder)
    return str(folder)


def image(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def zero_box_head(model):
    """With the box head's last layer zeroed, each patch predicts its grid box (the box bias):
    centre at the patch's lower-right grid corner ((j + 1) / G, (i + 1) / G), size 1 / G, in the
    normalized frame of the model input."""
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()


def grid_boxes(scale_x, scale_y):
    c = (np.arange(GRID) + 1) / GRID
    cx, cy = np.meshgrid(c, c, indexing="xy")
    half = 0.5 / GRID
    boxes = np.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(-1, 4)
    return boxes * [scale_x, scale_y, scale_x, scale_y]


def sort_rows(a):
    a = np.asarray(a, dtype=np.float64)
    return a[np.lexsort(a.T[::-1])]


# -- OWLv2 / OWL-ViT -----------------------------------------------------------------------------
def test_owlv2_boxes_in_original_pixels_on_non_square_image(owlv2_dir):
    detector = ZeroShotDetector(owlv2_dir, ["a cat", "dog"], threshold=0.0)
    zero_box_head(detector.model)
    prompts = detector(image())
    # the image fills the top 30 of an 80 x 80 padded square: only the first row of the 4 x 4
    # grid (cells of 20 px) overlaps it; the other rows lie in the padding and are dropped
    expected = np.array([[10, 10, 30, 30], [30, 10, 50, 30], [50, 10, 70, 30], [70, 10, 80, 30]], float)
    np.testing.assert_allclose(sort_rows(prompts.boxes), expected, atol=0.02)
    unclipped = ZeroShotDetector(owlv2_dir, ["a cat", "dog"], threshold=0.0, clip_boxes=False)
    zero_box_head(unclipped.model)
    raw = unclipped(image()).boxes
    np.testing.assert_allclose(sort_rows(raw), sort_rows(grid_boxes(max(H, W), max(H, W))), atol=0.02)


def test_owlvit_stretches_so_boxes_scale_by_width_and_height(owlvit_dir):
    detector = ZeroShotDetector(owlvit_dir, ["a cat", "dog"], threshold=0.0, clip_boxes=False)
    zero_box_head(detector.model)
    np.testing.assert_allclose(sort_rows(detector(image()).boxes), sort_rows(grid_boxes(W, H)), atol=0.02)


def test_owl_labels_are_the_queries(owlv2_dir):
    queries = ["a cat", "dog", "red car"]
    detector = ZeroShotDetector(owlv2_dir, queries, threshold=0.0, clip_boxes=False)
    prompts = detector(image())
    assert len(prompts) == GRID * GRID
    model, processor = detector.model, detector.processor
    inputs = processor(text=[queries], images=[image()], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]  # (patches, queries)
    for meta in prompts.meta:
        assert meta["label"] == queries[meta["class_id"]] and meta["source"] == "owlv2"
        assert 0.0 <= meta["score"] <= 1.0
    assert {m["class_id"] for m in prompts.meta} <= set(logits.argmax(-1).tolist())


def test_class_equals_function_and_batches(owlv2_dir):
    detector = ZeroShotDetector(owlv2_dir, ["a cat", "dog"], threshold=0.0, batch_size=2)
    zero_box_head(detector.model)  # grid boxes, so that some lie inside each image
    images = [image(seed=1), image(50, 40, seed=2), image(seed=3)]
    batch = detector.detect_batch(images)
    functional = detect_zero_shot(detector.model, detector.processor, images, ["a cat", "dog"], threshold=0.0,
                                  batch_size=1)
    assert len(batch) == 3
    for a, b, im in zip(batch, functional, images):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert [m["class_id"] for m in a.meta] == [m["class_id"] for m in b.meta]
        assert len(a) and a.boxes[:, 2].max() <= im.shape[1] and a.boxes[:, 3].max() <= im.shape[0]


@pytest.mark.parametrize("kind", ["owlv2", "gdino", "detr"])
def test_high_threshold_gives_empty_prompts(kind, owlv2_dir, grounding_dino_dir, detr_dir):
    if kind == "detr":
        prompts = ClosedSetDetector(detr_dir, threshold=1.0, clip_boxes=False)(image())
    else:
        folder = owlv2_dir if kind == "owlv2" else grounding_dino_dir
        prompts = ZeroShotDetector(folder, ["a cat"], threshold=1.0, clip_boxes=False)(image())
    assert len(prompts) == 0 and prompts.boxes is None


def test_built_model_with_processor(owlv2_dir):
    model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(owlv2_dir)
    processor = transformers.AutoProcessor.from_pretrained(owlv2_dir)
    prompts = ZeroShotDetector(model, ["dog"], processor=processor, threshold=0.0, clip_boxes=False)(image())
    assert len(prompts) and {m["label"] for m in prompts.meta} == {"dog"}


# -- Grounding DINO ------------------------------------------------------------------------------
def test_grounding_text():
    assert grounding_text(["A Cat ", "red car."]) == ("a cat. red car.", [(0, 5), (7, 14)])


@pytest.mark.parametrize("queries, match", [
    (["st. bernard"], "may not contain"), (["cat", "Cat"], "distinct"), ([], "non-empty list"),
    ("cat", "non-empty list"), (["cat", ""], "non-empty strings"), ([" . "], "may not contain"),
])
def test_grounding_text_bad(queries, match):
    with pytest.raises(ValueError, match=match):
        grounding_text(queries)


class SpyProcessor:
    """Delegates to a processor and records the text it is called with."""

    def __init__(self, processor):
        self.processor, self.texts = processor, []

    def __call__(self, *args, **kwargs):
        self.texts.append(kwargs.get("text"))
        return self.processor(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.processor, name)


def test_grounding_dino_queries_boxes_and_phrases(grounding_dino_dir):
    queries = ["A Cat", "dog"]
    model, processor = load_hf_detector(grounding_dino_dir)
    spy = SpyProcessor(processor)
    prompts = ZeroShotDetector(model, queries, processor=spy, threshold=0.0, clip_boxes=False)(image())
    assert spy.texts == [["a cat. dog."]]
    assert len(prompts) == model.config.num_queries
    # independent check: boxes scale by (W, H) and each box goes to the query with the best token
    inputs = processor(images=[image()], text=["a cat. dog."], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    probs = out.logits[0].sigmoid()
    ids = inputs["input_ids"][0].tolist()  # [CLS] a cat . dog . [SEP]
    assert ids[:7] == [2, 6, 7, 5, 8, 5, 3]
    per_query = torch.stack([probs[:, 1:3].max(-1).values, probs[:, 4:5].max(-1).values], -1)
    cx, cy, bw, bh = out.pred_boxes[0].unbind(-1)
    expected = torch.stack([(cx - bw / 2) * W, (cy - bh / 2) * H, (cx + bw / 2) * W, (cy + bh / 2) * H], -1)
    np.testing.assert_allclose(prompts.boxes, expected.numpy(), atol=1e-3)
    assert [m["class_id"] for m in prompts.meta] == per_query.argmax(-1).tolist()
    for meta, row in zip(prompts.meta, per_query.tolist()):
        assert meta["label"] == queries[meta["class_id"]] and meta["source"] == "grounding-dino"
        assert meta["query_score"] == pytest.approx(max(row), abs=1e-5)
        assert isinstance(meta["phrase"], str)


def test_grounding_dino_clipping_keeps_boxes_inside(grounding_dino_dir):
    prompts = ZeroShotDetector(grounding_dino_dir, ["cat", "dog"], threshold=0.0)(image())
    b = prompts.boxes
    assert np.all(b >= 0) and np.all(b[:, [0, 2]] <= W) and np.all(b[:, [1, 3]] <= H)
    assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])


def test_grounding_dino_bad_query_fails_at_construction(grounding_dino_dir):
    with pytest.raises(ValueError, match="may not contain"):
        ZeroShotDetector(grounding_dino_dir, ["st. bernard"])


# -- closed set ------------------------------------------------------------------------------------
def test_detr_closed_set(detr_dir):
    detector = ClosedSetDetector(detr_dir, threshold=0.0, clip_boxes=False)
    prompts = detector(image())
    model, processor = detector.model, detector.processor
    from PIL import Image

    with torch.no_grad():
        out = model(**processor(images=[Image.fromarray(image())], return_tensors="pt"))
    cx, cy, bw, bh = out.pred_boxes[0].unbind(-1)
    expected = torch.stack([(cx - bw / 2) * W, (cy - bh / 2) * H, (cx + bw / 2) * W, (cy + bh / 2) * H], -1)
    np.testing.assert_allclose(prompts.boxes, expected.numpy(), atol=1e-3)
    assert all(m["label"] == {0: "cat", 1: "dog"}[m["class_id"]] for m in prompts.meta)
    functional = detect_closed_set(model, processor, [image()], threshold=0.0, clip_boxes=False)[0]
    np.testing.assert_array_equal(functional.boxes, prompts.boxes)
    assert functional.meta == prompts.meta


def test_detr_class_filter(detr_dir):
    all_ids = {m["class_id"] for m in ClosedSetDetector(detr_dir, threshold=0.0)(image()).meta}
    for keep in (["cat"], [1]):
        kept = ClosedSetDetector(detr_dir, threshold=0.0, classes=keep)(image())
        wanted = {0} if keep == ["cat"] else {1}
        assert {m["class_id"] for m in kept.meta} == (all_ids & wanted)


# -- errors ----------------------------------------------------------------------------------------
def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install samkit\[transformers\]"):
        ZeroShotDetector("some/folder", ["cat"])


@pytest.mark.parametrize("make, error, match", [
    (lambda d: ZeroShotDetector(d["detr"], ["cat"]), ValueError, "supports model types.*got 'detr'"),
    (lambda d: ZeroShotDetector(transformers.AutoModelForObjectDetection.from_pretrained(d["detr"]), ["cat"],
                                processor=object()), ValueError, "supports model types"),
    (lambda d: ZeroShotDetector(transformers.AutoModelForObjectDetection.from_pretrained(d["detr"]), ["cat"]),
     ValueError, "needs processor"),
    (lambda d: ZeroShotDetector(d["owlv2"], []), ValueError, "non-empty list"),
    (lambda d: ClosedSetDetector(d["detr"], classes=["zebra"]), ValueError, "'zebra', which the model does not know"),
    (lambda d: ClosedSetDetector(d["detr"], classes=[7]), ValueError, "does not know"),
    (lambda d: ZeroShotDetector(str(d["tmp"] / "missing"), ["cat"]), OSError, "save_pretrained"),
    (lambda d: ClosedSetDetector(object(), processor=object()), TypeError, "transformers detection model"),
])
def test_bad_detector_setups(make, error, match, owlv2_dir, detr_dir, tmp_path):
    with pytest.raises(error, match=match):
        make({"owlv2": owlv2_dir, "detr": detr_dir, "tmp": tmp_path})


def test_bad_batch_size(owlv2_dir):
    with pytest.raises(ValueError, match="batch_size"):
        ZeroShotDetector(owlv2_dir, ["cat"], batch_size=0)(image())
