"""Tests for samkit.pipelines.detect_segment: plumbing, label alignment, refinement and exports.

Plumbing cases that use a test-double segmenter also run through the real tiny SAM model.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import samkit
from samkit.adapters.base import as_prompt_source
from samkit.prompts import Prompts
from samkit.results import Segmentation
from samkit.rle import rle_to_mask
from samkit.pipelines.detect_segment import (
    DetectThenSegment,
    detect_then_segment,
    filter_detections,
    to_coco_instances,
    to_yolo_seg,
)

BOXES = np.array([[10, 20, 110, 120], [200, 30, 400, 250], [50, 150, 90, 290], [300, 200, 440, 295]], np.float32)
SCORES = np.array([0.9, 0.8, 0.6, 0.3], np.float32)
LABELS = ["cat", "empty", "low", "dog"]
NAMES = ["cat", "empty", "low", "dog"]


def detector(image):
    return BOXES.copy(), SCORES.copy(), np.array(LABELS)


def detector_with_ids(image):
    return BOXES.copy(), SCORES.copy(), np.arange(4)


class SpySegmenter:
    """Calls the wrapped segmenter and records every encode and segment call."""

    def __init__(self, inner):
        self.inner, self.encoded, self.calls = inner, [], []

    def encode(self, image):
        self.encoded.append(image.shape)
        return self.inner.encode(image)

    def segment(self, embedding, *, prompts, multimask):
        result = self.inner.segment(embedding, prompts=prompts, multimask=multimask)
        self.calls.append(SimpleNamespace(prompts=prompts, multimask=multimask, result=result))
        return result


class FakeSegmenter:
    """Test double: each mask fills its box, except the prompts labelled "empty" (no pixel set);
    the predicted IoU is 0.1 for prompts labelled "low", else 0.9."""

    def encode(self, image):
        return SimpleNamespace(original_size=image.shape[:2])

    def segment(self, embedding, *, prompts, multimask):
        h, w = embedding.original_size
        k = 3 if multimask else 1
        masks = np.zeros((len(prompts), k, h, w), bool)
        for i, (box, meta) in enumerate(zip(prompts.boxes.astype(int), prompts.meta)):
            if meta.get("label") != "empty":
                masks[i, :, box[1]:box[3], box[0]:box[2]] = True
        scores = np.array([[0.1 if m.get("label") == "low" else 0.9] * k for m in prompts.meta])
        return Segmentation(masks, scores, np.zeros((len(prompts), k, 8, 8), np.float32), prompts.meta)


@pytest.fixture
def image(images):
    return images["chelsea_300x451"]  # (300, 451, 3): non-square


@pytest.fixture
def real(tiny_model):
    return samkit.Segmenter(tiny_model)


@pytest.fixture(params=["fake", "real"])
def either(request, tiny_model):
    """The test double, then the real tiny model, for plumbing cases."""
    return FakeSegmenter() if request.param == "fake" else samkit.Segmenter(tiny_model)


# -- plumbing ---------------------------------------------------------------------------------------
def test_prompts_reaching_the_real_segmenter_are_the_detector_boxes(image, real):
    spy = SpySegmenter(real)
    result = DetectThenSegment(detector, spy)(image)
    assert spy.encoded == [(300, 451, 3)] and len(spy.calls) == 1  # one encode, one segment call
    call = spy.calls[0]
    np.testing.assert_array_equal(call.prompts.boxes, BOXES)
    assert call.prompts.points is None and call.prompts.mask_inputs is None and call.multimask is False
    assert result.masks.shape == (4, 1, 300, 451) and result.masks.dtype == bool
    assert [m["label"] for m in result.meta] == LABELS
    assert [m["score"] for m in result.meta] == pytest.approx(SCORES.tolist())
    assert [m["box"] for m in result.meta] == BOXES.tolist()
    assert [m["predicted_iou"] for m in result.meta] == pytest.approx(result.scores[:, 0].tolist())
    np.testing.assert_array_equal(result.masks, call.result.masks)


@pytest.mark.parametrize("segmenter_kind", ["fake", "real"])
def test_empty_detections_give_empty_result(image, segmenter_kind, tiny_model):
    inner = FakeSegmenter() if segmenter_kind == "fake" else samkit.Segmenter(tiny_model)
    spy = SpySegmenter(inner)
    result = DetectThenSegment(lambda im: (np.zeros((0, 4)), np.zeros(0), np.zeros(0)), spy)(image)
    assert isinstance(result, Segmentation) and result.masks.shape == (0, 1, 300, 451)
    assert spy.encoded == [] and spy.calls == []


def test_refinement_feeds_logits_back_with_the_same_boxes(image, real):
    spy = SpySegmenter(real)
    result = DetectThenSegment(detector, spy, refine_iterations=2)(image)
    assert len(spy.calls) == 3 and len(spy.encoded) == 1
    for before, after in zip(spy.calls, spy.calls[1:]):
        np.testing.assert_array_equal(after.prompts.boxes, BOXES)
        np.testing.assert_array_equal(after.prompts.mask_inputs, before.result.logits[:, :1])
        assert after.multimask is False
    np.testing.assert_array_equal(result.masks, spy.calls[-1].result.masks)
    assert [m["label"] for m in result.meta] == LABELS


def test_multimask_keeps_the_best_of_three(image, real):
    spy = SpySegmenter(real)
    result = DetectThenSegment(detector, spy, multimask=True)(image)
    assert spy.calls[0].multimask is True and spy.calls[0].result.masks.shape[1] == 3
    assert result.masks.shape == (4, 1, 300, 451)
    best = spy.calls[0].result.scores.argmax(1)
    assert [m["output_index"] for m in result.meta] == best.tolist()
    np.testing.assert_allclose(result.scores[:, 0], spy.calls[0].result.scores.max(1))


def test_chunks_beyond_batch_size_and_same_masks(image, real):
    spy = SpySegmenter(real)
    chunked = DetectThenSegment(detector, spy, batch_size=3)(image)
    assert [len(c.prompts) for c in spy.calls] == [3, 1]
    whole = DetectThenSegment(detector, real)(image)
    assert [m["label"] for m in chunked.meta] == LABELS
    np.testing.assert_allclose(chunked.logits, whole.logits, atol=1e-4)


@pytest.mark.parametrize("segmenter_kind", ["fake", "real"])
def test_pre_filters_by_detector_score_and_class(image, segmenter_kind, tiny_model):
    spy = SpySegmenter(FakeSegmenter() if segmenter_kind == "fake" else samkit.Segmenter(tiny_model))
    # ids 0..3 with scores 0.9, 0.8, 0.6, 0.3: the class filter keeps 0 and 2, both above 0.5
    result = DetectThenSegment(detector_with_ids, spy, min_score=0.5, class_filter=[0, "x", 2])(image)
    np.testing.assert_array_equal(spy.calls[0].prompts.boxes, BOXES[[0, 2]])
    assert [m["class_id"] for m in result.meta] == [0, 2] and len(result) == 2


def test_class_filter_by_name(image, either):
    result = DetectThenSegment(detector, either, class_filter="dog")(image)
    assert [m["label"] for m in result.meta] == ["dog"]
    assert filter_detections(Prompts.empty(), min_score=0.5, class_filter=["dog"]).meta == []


# -- alignment after mask filtering ------------------------------------------------------------
def test_labels_stay_aligned_when_masks_are_dropped(image, tmp_path):
    # ultralytics' auto_annotate once dropped empty masks but kept every class id; here the
    # "empty" and "low" masks go, and each kept mask keeps its own label, box and class id
    result = DetectThenSegment(detector, FakeSegmenter(), drop_empty=True, min_mask_score=0.5)(image)
    assert [m["label"] for m in result.meta] == ["cat", "dog"]
    for mask, meta in zip(result.masks[:, 0], result.meta):
        x0, y0, x1, y1 = (int(v) for v in meta["box"])
        assert mask.sum() == (x1 - x0) * (y1 - y0) and mask[y0:y1, x0:x1].all()
    named = as_prompt_source(detector, class_names=NAMES)  # names -> class ids 0..3
    labelled = DetectThenSegment(named, FakeSegmenter(), drop_empty=True, min_mask_score=0.5)(image)
    path = tmp_path / "labels.txt"
    assert to_yolo_seg(labelled, path) == 2
    lines = path.read_text().splitlines()
    assert [int(line.split()[0]) for line in lines] == [0, 3]  # cat and dog, not cat and empty
    first = np.array(lines[0].split()[1:], float).reshape(-1, 2) * [451, 300]
    np.testing.assert_allclose(first, [[10, 20], [110, 20], [110, 120], [10, 120]], atol=1e-3)


def test_labels_stay_aligned_when_masks_are_dropped_real_model(image, real):
    full = DetectThenSegment(detector, real)(image)
    threshold = float(np.median(full.scores[:, 0]))
    kept = DetectThenSegment(detector, real, min_mask_score=threshold)(image)
    rows = np.flatnonzero(full.scores[:, 0] >= threshold)
    assert 0 < len(rows) < 4
    assert [m["label"] for m in kept.meta] == [LABELS[i] for i in rows]
    assert [m["box"] for m in kept.meta] == BOXES[rows].tolist()
    np.testing.assert_array_equal(kept.masks, full.masks[rows])


def test_everything_filtered_gives_empty(image, either):
    result = DetectThenSegment(detector, either, min_mask_score=2.0)(image)
    assert result.masks.shape == (0, 1, 300, 451)


# -- detectors in other forms --------------------------------------------------------------------
def test_ultralytics_yolo_object_as_detector(image, real):
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    from samkit.adapters.ultralytics import YOLODetector

    yolo = YOLO("yolov8n.yaml")
    yolo.overrides["imgsz"] = 64  # keeps the default-settings call below fast on CPU
    pipeline = DetectThenSegment(yolo, real)  # the YOLO object itself, default settings
    assert isinstance(pipeline.detector, YOLODetector)
    assert isinstance(pipeline(image), Segmentation)
    spy = SpySegmenter(real)
    detector = YOLODetector(yolo, conf=0.0, imgsz=64, max_det=3)
    result = DetectThenSegment(detector, spy)(image)
    expected = detector(image)
    np.testing.assert_allclose(spy.calls[0].prompts.boxes, expected.boxes, atol=1e-3)
    assert result.masks.shape == (len(expected), 1, 300, 451)
    assert [m["class_id"] for m in result.meta] == [m["class_id"] for m in expected.meta]


def test_batch_uses_detect_batch(images, real):
    class BatchDetector:
        def __init__(self):
            self.batches = []

        def detect_batch(self, imgs):
            self.batches.append(len(imgs))
            return [Prompts.from_boxes([[0, 0, 20, 30]], meta=[{"label": "x", "class_id": 0}]) for _ in imgs]

        def __call__(self, img):
            raise AssertionError("batch() should call detect_batch")

    det = BatchDetector()
    out = DetectThenSegment(det, real).batch(list(images.values()))
    assert det.batches == [2]
    assert [r.image_size for r in out] == [im.shape[:2] for im in images.values()]


def test_class_equals_function(image, real):
    kwargs = dict(multimask=True, refine_iterations=1, min_mask_score=0.0, drop_empty=True, batch_size=2)
    a = DetectThenSegment(detector, real, **kwargs)(image)
    b = detect_then_segment(image, detector, real, **kwargs)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.meta == b.meta


@pytest.mark.parametrize("det, kwargs, error, match", [
    (lambda im: (np.zeros((2, 3)), np.zeros(2), np.zeros(2)), {}, ValueError, r"\(N, 4\)"),
    (lambda im: (np.array([[0, 0, np.nan, 4]]), [1.0], [0]), {}, ValueError, "finite"),
    (lambda im: (BOXES, SCORES[:2], LABELS), {}, ValueError, r"scores must have shape \(N,\) = \(4,\)"),
    (lambda im: "nothing", {}, TypeError, "must return Prompts"),
    (detector, {"refine_iterations": -1}, ValueError, "refine_iterations"),
    (detector, {"batch_size": 0}, ValueError, "batch_size"),
    (42, {}, TypeError, "detector must be"),
])
def test_bad_inputs(image, det, kwargs, error, match):
    with pytest.raises(error, match=match):
        DetectThenSegment(det, FakeSegmenter(), **kwargs)(image)


# -- exports ---------------------------------------------------------------------------------------
def test_to_coco_instances(image, real):
    results = [DetectThenSegment(detector, real)(image), DetectThenSegment(detector, FakeSegmenter())(image[:100])]
    coco = to_coco_instances(results, [{"id": 7, "file_name": "a.jpg"}, 8],
                             [{"id": 1, "name": "cat"}, {"id": 2, "name": "empty"}, {"id": 3, "name": "low"},
                              {"id": 5, "name": "dog"}])
    json.dumps(coco)
    assert coco["images"] == [{"id": 7, "file_name": "a.jpg", "height": 300, "width": 451},
                              {"id": 8, "height": 100, "width": 451}]
    anns = coco["annotations"]
    assert [a["id"] for a in anns] == list(range(1, 9)) and [a["image_id"] for a in anns] == [7] * 4 + [8] * 4
    assert [a["category_id"] for a in anns] == [1, 2, 3, 5] * 2
    assert [a["score"] for a in anns[:4]] == pytest.approx(SCORES.tolist())  # the detector's scores
    np.testing.assert_array_equal(rle_to_mask(anns[0]["segmentation"]), results[0].masks[0, 0])


def test_to_coco_categories_forms_and_errors(image, either):
    result = DetectThenSegment(lambda im: (BOXES[:2], SCORES[:2], [0, 3]), either)(image)
    by_id = to_coco_instances([result], [1], {0: "person", 3: "car"})
    assert [a["category_id"] for a in by_id["annotations"]] == [0, 3]
    named = DetectThenSegment(detector, either)(image)
    assert [a["category_id"] for a in to_coco_instances([named], [1], NAMES)["annotations"]] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="match no category"):
        to_coco_instances([named], [1], ["cat"])
    with pytest.raises(ValueError, match="one image info per result"):
        to_coco_instances([named], [1, 2], NAMES)
    with pytest.raises(ValueError, match="300x451 in its result"):
        to_coco_instances([named], [{"id": 1, "height": 10, "width": 10}], NAMES)


def test_to_yolo_seg_formats(tmp_path):
    masks = np.zeros((2, 1, 10, 20), bool)
    masks[0, 0, 2:5, 4:10] = True
    masks[1, 0, 0:2, 0:2] = True
    masks[1, 0, 6:10, 10:20] = True  # two parts: the larger is written by default
    seg = Segmentation(masks, np.ones((2, 1)), meta=[{"class_id": 3}, {"class_id": 1}])
    assert to_yolo_seg(seg, tmp_path / "a.txt") == 2
    lines = (tmp_path / "a.txt").read_text().splitlines()
    assert lines[0] == "3 0.200000 0.200000 0.500000 0.200000 0.500000 0.500000 0.200000 0.500000"
    assert lines[1] == "1 0.500000 0.600000 1.000000 0.600000 1.000000 1.000000 0.500000 1.000000"
    assert to_yolo_seg(seg, tmp_path / "b.txt", multipart="all") == 3
    empty = Segmentation.empty((10, 20))
    assert to_yolo_seg(empty, tmp_path / "c.txt") == 0 and (tmp_path / "c.txt").read_text() == ""


@pytest.mark.parametrize("meta, kwargs, match", [
    ([{"label": "cat"}], {}, "integer meta 'class_id'"),
    ([{"class_id": None}], {}, "integer meta 'class_id'"),
    ([{"class_id": 0}], {"multipart": "merge"}, "multipart"),
])
def test_to_yolo_seg_bad(tmp_path, meta, kwargs, match):
    seg = Segmentation(np.ones((1, 1, 4, 4), bool), np.ones((1, 1)), meta=meta)
    with pytest.raises(ValueError, match=match):
        to_yolo_seg(seg, tmp_path / "x.txt", **kwargs)


def test_to_supervision_keeps_labels(image, either):
    pytest.importorskip("supervision")
    named = as_prompt_source(detector, class_names=NAMES)
    result = DetectThenSegment(named, either, drop_empty=True)(image)
    det = result.to_supervision()
    assert det.class_id.tolist() == [m["class_id"] for m in result.meta] and det.mask.shape == (len(result), 300, 451)
    if isinstance(either, FakeSegmenter):  # the "empty" mask is dropped with its class id
        assert det.class_id.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(det.mask, result.masks[:, 0])
    assert det.data["label"].tolist() == [m["label"] for m in result.meta]


@pytest.mark.parametrize("setting, value, error", [
    ("min_mask_score", float("nan"), ValueError),
    ("min_score", float("nan"), ValueError),
    ("min_mask_score", float("inf"), ValueError),
    ("min_mask_score", "0.5", TypeError),
])
def test_score_settings_must_be_finite_numbers(setting, value, error):
    from samkit.pipelines.detect_segment import DetectThenSegment, detect_then_segment

    detector = lambda image: ([[0, 0, 4, 4]], [0.9], None)  # noqa: E731
    with pytest.raises(error, match=setting):
        DetectThenSegment(detector, None, **{setting: value})
    with pytest.raises(error, match=setting):
        detect_then_segment(np.zeros((8, 8, 3), np.uint8), detector, None, **{setting: value})
