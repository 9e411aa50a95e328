"""Tests for samkit.adapters.base and samkit.adapters.supervision: box normalisation, prompt sources."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samkit.adapters.base import PromptSource, as_prompt_source, boxes_to_prompts, resolve_class_names
from samkit.adapters.supervision import from_supervision_detections
from samkit.prompts import Prompts

IMAGE = np.zeros((30, 50, 3), np.uint8)
BOXES = [[1.0, 2.0, 11.0, 12.0], [5.0, 5.0, 45.0, 25.0]]


def test_boxes_to_prompts_meta_and_boxes():
    p = boxes_to_prompts(np.array(BOXES), np.array([0.9, 0.4]), np.array([2.0, 0.0]),
                         class_names=["cat", "dog", "bird"], source="unit")
    assert isinstance(p, Prompts) and len(p) == 2 and p.points is None
    assert p.boxes.dtype == np.float32 and p.boxes.tolist() == BOXES
    assert p.meta == [
        {"label": "bird", "class_id": 2, "score": pytest.approx(0.9), "source": "unit", "box": BOXES[0]},
        {"label": "cat", "class_id": 0, "score": pytest.approx(0.4), "source": "unit", "box": BOXES[1]},
    ]


@pytest.mark.parametrize("labels, class_names, expected", [
    (None, None, [(None, None), (None, None)]),
    ([3, 1], None, [(None, 3), (None, 1)]),
    ([3, 1], {3: "car", 1: "bus"}, [("car", 3), ("bus", 1)]),
    (["dog", "cat"], None, [("dog", None), ("cat", None)]),
    (["dog", "cat"], ["cat", "dog"], [("dog", 1), ("cat", 0)]),
    (np.array(["dog", "cat"]), ["cat", "dog"], [("dog", 1), ("cat", 0)]),
    (torch.tensor([1, 0]), ("cat", "dog"), [("dog", 1), ("cat", 0)]),
])
def test_label_forms(labels, class_names, expected):
    p = boxes_to_prompts(BOXES, [0.5, 0.5], labels, class_names=class_names)
    assert [(m["label"], m["class_id"]) for m in p.meta] == expected


def test_torch_inputs_and_no_scores():
    p = boxes_to_prompts(torch.tensor(BOXES), None, None)
    assert p.boxes.tolist() == BOXES and [m["score"] for m in p.meta] == [None, None]


@pytest.mark.parametrize("boxes", [np.zeros((0, 4)), [], np.zeros((0,)), torch.zeros(0, 4)])
def test_empty_detections_give_empty_prompts(boxes):
    p = boxes_to_prompts(boxes, np.zeros(0), np.zeros(0))
    assert len(p) == 0 and p.boxes is None


@pytest.mark.parametrize("boxes, scores, labels, class_names, error, match", [
    ([[1, 2, 3]], [0.5], [0], None, ValueError, r"shape \(N, 4\).*got \(1, 3\)"),
    (np.zeros((3, 0)), [0.5] * 3, [0] * 3, None, ValueError, r"shape \(N, 4\).*got \(3, 0\)"),
    ([1, 2, 3, 4], [0.5], [0], None, ValueError, r"shape \(N, 4\).*got \(4,\)"),
    ([[[1, 2, 3, 4]]], [0.5], [0], None, ValueError, r"shape \(N, 4\)"),
    ([[1, 2, np.nan, 4]], [0.5], [0], None, ValueError, "finite.*box 0"),
    ([[1, 2, np.inf, 4]], [0.5], [0], None, ValueError, "finite"),
    ([[5, 2, 3, 4]], [0.5], [0], None, ValueError, "x1 >= x0"),
    ([[1, 2, 3, 4]], [0.5, 0.2], [0], None, ValueError, r"scores must have shape \(N,\) = \(1,\).*\(2,\)"),
    ([[1, 2, 3, 4]], [np.nan], [0], None, ValueError, "scores must be finite"),
    ([[1, 2, 3, 4]], [0.5], [0, 1], None, ValueError, r"labels must have shape \(N,\) = \(1,\).*\(2,\)"),
    ([[1, 2, 3, 4]], [0.5], ["zebra"], ["cat", "dog"], ValueError, r"not in class_names: \['zebra'\]"),
    ([[1, 2, 3, 4]], [0.5], [7], ["cat", "dog"], ValueError, r"class ids not in class_names: \[7\]"),
    ([[1, 2, 3, 4]], [0.5], [0.5], None, TypeError, "integer class ids"),
    ([[1, 2, 3, 4]], [0.5], [None], None, TypeError, "integer class ids"),
    ([[1, 2, 3, 4]], [0.5], "cat", None, TypeError, "sequence of N"),
    ([["a", "b", "c", "d"]], [0.5], [0], None, TypeError, "numeric"),
    ([[1, 2, 3, 4]], [0.5], [0], "cat", TypeError, "class_names must be"),
])
def test_bad_detections(boxes, scores, labels, class_names, error, match):
    with pytest.raises(error, match=match):
        boxes_to_prompts(boxes, scores, labels, class_names=class_names)


def test_resolve_class_names():
    assert resolve_class_names(["a", "b"]) == {0: "a", 1: "b"}
    assert resolve_class_names({"3": "x"}) == {3: "x"}
    assert resolve_class_names(None) is None
    with pytest.raises(TypeError, match="integer class ids"):
        resolve_class_names({"a": "x"})


# -- as_prompt_source ---------------------------------------------------------------------------
def test_callable_returning_tuple():
    seen = []

    def detect(image):
        seen.append(image)
        return np.array(BOXES), np.array([0.8, 0.3]), np.array([1, 0])

    source = as_prompt_source(detect, class_names=["cat", "dog"])
    assert isinstance(source, PromptSource)
    p = source(IMAGE)
    assert seen[0] is IMAGE
    assert p.boxes.tolist() == BOXES and [m["label"] for m in p.meta] == ["dog", "cat"]
    assert p.meta[0]["source"] == "detect"
    assert as_prompt_source(source) is source


def test_callable_returning_prompts_passes_through():
    prompts = Prompts.from_points([[3, 4]])
    assert as_prompt_source(lambda image: prompts)(IMAGE) is prompts


def test_callable_returning_empty():
    p = as_prompt_source(lambda image: (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)))(IMAGE)
    assert len(p) == 0


@pytest.mark.parametrize("output, error, match", [
    ((np.zeros((2, 5)), np.zeros(2), np.zeros(2)), ValueError, r"detector 'bad' returned invalid.*\(N, 4\).*\(2, 5\)"),
    ((np.array([[0, 0, np.nan, 1.0]]), [0.1], [0]), ValueError, "detector 'bad'.*finite"),
    ((np.zeros((2, 4)), np.zeros(3), np.zeros(2)), ValueError, r"scores must have shape \(N,\) = \(2,\)"),
    ((np.zeros((1, 4)), [0.1], ["unicorn"]), ValueError, "unicorn"),
    ((np.zeros((2, 4)), np.zeros(2)), TypeError, "tuple of length 2"),
    ("boxes", TypeError, "got str"),
    (None, TypeError, "got NoneType"),
])
def test_callable_bad_output(output, error, match):
    def bad(image):
        return output

    with pytest.raises(error, match=match):
        as_prompt_source(bad, class_names=["cat"])(IMAGE)


def test_detect_batch_is_forwarded_and_checked():
    class Batched:
        def __init__(self, outputs):
            self.outputs = outputs

        def __call__(self, image):
            raise AssertionError("detect_batch should be used")

        def detect_batch(self, images):
            return self.outputs

    source = as_prompt_source(Batched([(BOXES, [0.1, 0.2], [0, 0]), Prompts.empty()]), class_names=["cat"])
    out = source.detect_batch([IMAGE, IMAGE])
    assert [len(p) for p in out] == [2, 0] and out[0].meta[0]["label"] == "cat"
    with pytest.raises(ValueError, match="returned 1 results for 2 images"):
        as_prompt_source(Batched([Prompts.empty()])).detect_batch([IMAGE, IMAGE])
    plain = as_prompt_source(lambda image: (BOXES[:1], None, None))
    assert [len(p) for p in plain.detect_batch([IMAGE, IMAGE, IMAGE])] == [1, 1, 1]


def test_not_callable():
    with pytest.raises(TypeError, match="detector must be"):
        as_prompt_source(42)


class FakeDetections:
    """Stands in for supervision.Detections (duck-typed, as the adapter reads it)."""

    def __init__(self, xyxy, confidence=None, class_id=None, tracker_id=None, data=None):
        self.xyxy, self.confidence, self.class_id = xyxy, confidence, class_id
        self.tracker_id, self.data = tracker_id, data or {}


def test_callable_returning_detections():
    det = FakeDetections(np.array(BOXES), np.array([0.7, 0.6]), np.array([1, 0]),
                         data={"class_name": np.array(["dog", "cat"])})
    p = as_prompt_source(lambda image: det)(IMAGE)
    assert [m["label"] for m in p.meta] == ["dog", "cat"] and [m["class_id"] for m in p.meta] == [1, 0]


def test_yolo_like_object_is_wrapped():
    from samkit.adapters.ultralytics import YOLODetector

    class FakeBoxes:
        xyxy = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        conf = torch.tensor([0.9])
        cls = torch.tensor([1.0])

    class FakeYOLO:
        names = {0: "person", 1: "bicycle"}

        def predict(self, source, **kwargs):
            return [SimpleNamespace(boxes=FakeBoxes(), names=self.names) for _ in source]

    source = as_prompt_source(FakeYOLO())
    assert isinstance(source, YOLODetector)
    p = source(IMAGE)
    assert p.meta[0]["label"] == "bicycle" and p.meta[0]["source"] == "ultralytics"


# -- supervision adapter ------------------------------------------------------------------------
def test_from_supervision_fake_all_fields():
    det = FakeDetections(np.array(BOXES), np.array([0.7, 0.6]), np.array([1, 0]), np.array([11, 12]),
                         {"class_name": np.array(["dog", "cat"]), "area": np.array([100, 800])})
    p = from_supervision_detections(det)
    assert p.boxes.tolist() == BOXES
    assert [m["tracker_id"] for m in p.meta] == [11, 12] and [m["area"] for m in p.meta] == [100, 800]
    assert [m["score"] for m in p.meta] == pytest.approx([0.7, 0.6])
    assert all(m["source"] == "supervision" for m in p.meta)
    named = from_supervision_detections(det, class_names={0: "kitten", 1: "puppy"})
    assert [m["label"] for m in named.meta] == ["puppy", "kitten"]


def test_from_supervision_minimal_and_empty():
    p = from_supervision_detections(SimpleNamespace(xyxy=np.array(BOXES)))
    assert [(m["label"], m["class_id"], m["score"]) for m in p.meta] == [(None, None, None)] * 2
    assert len(from_supervision_detections(FakeDetections(np.zeros((0, 4))))) == 0


@pytest.mark.parametrize("det, error, match", [
    (object(), TypeError, r"\.xyxy"),
    (FakeDetections(np.zeros((2, 4)), class_id=np.array([0, 1]), tracker_id=np.array([1])), ValueError,
     "'tracker_id' must have one value per box"),
    (FakeDetections(np.zeros((1, 4)), class_id=np.array([5])), ValueError, r"class ids not in class_names: \[5\]"),
])
def test_from_supervision_bad(det, error, match):
    with pytest.raises(error, match=match):
        from_supervision_detections(det, class_names=["a"] if "class ids" in match else None)


def test_from_real_supervision_detections():
    sv = pytest.importorskip("supervision")
    det = sv.Detections(xyxy=np.array(BOXES, np.float32), confidence=np.array([0.5, 0.25], np.float32),
                        class_id=np.array([0, 1]), data={"class_name": np.array(["cat", "dog"])})
    p = from_supervision_detections(det)
    assert p.boxes.tolist() == BOXES and [m["label"] for m in p.meta] == ["cat", "dog"]
    assert [m["class_id"] for m in p.meta] == [0, 1] and [m["score"] for m in p.meta] == [0.5, 0.25]
    assert len(from_supervision_detections(sv.Detections.empty())) == 0
