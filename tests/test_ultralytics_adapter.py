"""Tests for samkit.adapters.ultralytics with a real YOLOv8n built from its yaml (random weights)."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samkit.adapters.ultralytics import YOLODetector, detect_with_yolo, load_yolo, yolo_result_to_prompts


@pytest.fixture(scope="module")
def yolo():
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    torch.manual_seed(0)
    return YOLO("yolov8n.yaml")  # random weights, built offline (YOLO_OFFLINE=1 in conftest)


def rgb_image(h=40, w=100, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_importing_adapters_does_not_import_ultralytics():
    code = ("import sys, samkit, samkit.adapters.base, samkit.adapters.ultralytics, "
            "samkit.pipelines.detect_segment; print('ultralytics' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_ultralytics_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ImportError, match=r"pip install samkit\[ultralytics\]"):
        load_yolo("yolov8n.yaml")


def test_missing_file_and_bad_model():
    with pytest.raises(FileNotFoundError, match="not found"):
        load_yolo(os.path.join("no", "such", "model.pt"))
    with pytest.raises(TypeError, match="ultralytics.YOLO-like"):
        load_yolo(42)


def test_real_predict_boxes_are_original_pixels(yolo):
    image = rgb_image()  # non-square: 40 x 100
    detector = YOLODetector(yolo, conf=0.0, imgsz=64, max_det=7)
    prompts = detector(image)
    assert 0 < len(prompts) <= 7 and prompts.boxes.shape == (len(prompts), 4)
    b = prompts.boxes
    assert np.all(b[:, [0, 2]] >= 0) and np.all(b[:, [0, 2]] <= 100)
    assert np.all(b[:, [1, 3]] >= 0) and np.all(b[:, [1, 3]] <= 40)
    # the same boxes as ultralytics' own predict on the BGR array, in the same order
    [direct] = yolo.predict(np.ascontiguousarray(image[:, :, ::-1]), conf=0.0, imgsz=64, max_det=7, verbose=False)
    np.testing.assert_allclose(b, direct.boxes.xyxy.numpy(), atol=1e-4)
    for meta, cls, conf in zip(prompts.meta, direct.boxes.cls.tolist(), direct.boxes.conf.tolist()):
        assert meta["class_id"] == int(cls) and meta["label"] == yolo.names[int(cls)]
        assert meta["score"] == pytest.approx(conf) and meta["source"] == "ultralytics"
    assert [m["box"] for m in prompts.meta] == b.tolist()


def test_colour_order_reaches_the_network_as_rgb(yolo):
    seen = []
    detector = YOLODetector(yolo, conf=0.0, imgsz=64)
    detector(rgb_image())  # creates ultralytics' predictor, which wraps the network in an AutoBackend
    network = yolo.predictor.model
    hook = network.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        image = np.zeros((40, 100, 3), np.uint8)
        image[..., 0] = 255  # pure red in RGB
        detector(image)
    finally:
        hook.remove()
    x = seen[-1]  # (1, 3, h, w) float in [0, 1], RGB, letterboxed
    assert x.shape[1] == 3
    np.testing.assert_allclose(x[0, :, x.shape[2] // 2, x.shape[3] // 2].numpy(), [1.0, 0.0, 0.0])


def test_detect_batch_matches_single_calls_and_function(yolo):
    detector = YOLODetector(yolo, conf=0.0, imgsz=64, max_det=5, batch_size=2)
    same_size = [rgb_image(40, 100, 1), rgb_image(40, 100, 2)]  # letterboxed alike alone or together
    for image, prompts in zip(same_size, detector.detect_batch(same_size)):
        single = detector(image)
        np.testing.assert_allclose(prompts.boxes, single.boxes, atol=1e-3)
        np.testing.assert_allclose([m["score"] for m in prompts.meta], [m["score"] for m in single.meta], atol=1e-5)
    images = [rgb_image(40, 100, 1), rgb_image(64, 48, 2)]
    batch = detector.detect_batch(images)
    assert len(batch) == 2
    for (h, w, _), prompts in zip([im.shape for im in images], batch):  # each in its own image's pixels
        assert len(prompts) and prompts.boxes[:, [0, 2]].max() <= w and prompts.boxes[:, [1, 3]].max() <= h
    # the class only holds settings for the function
    functional = detect_with_yolo(yolo, images, conf=0.0, imgsz=64, max_det=5, batch_size=2)
    for a, b in zip(batch, functional):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.meta == b.meta


def test_high_conf_gives_empty_prompts(yolo):
    prompts = YOLODetector(yolo, conf=1.0, imgsz=64)(rgb_image())
    assert len(prompts) == 0


def test_classes_by_name_and_id(yolo):
    names = dict(yolo.names)  # a yaml-built model names its classes "0", "1", ...
    detector = YOLODetector(yolo, conf=0.0, imgsz=64, max_det=50, classes=[names[0], 2])
    prompts = detector(rgb_image())
    assert len(prompts) and {m["class_id"] for m in prompts.meta} <= {0, 2}
    assert {m["label"] for m in prompts.meta} <= {names[0], names[2]}
    everything = YOLODetector(yolo, conf=0.0, imgsz=64, max_det=50)(rgb_image())
    assert len({m["class_id"] for m in everything.meta} - {0, 2}) > 0  # the filter did filter


@pytest.mark.parametrize("kwargs, error, match", [
    ({"classes": ["unicorn"]}, ValueError, "'unicorn', which the model does not know"),
    ({"classes": [999]}, ValueError, "id 999"),
    ({"classes": [1.5]}, TypeError, "class ids"),
    ({"prompts": []}, ValueError, "non-empty list"),
    ({"prompts": "cat"}, ValueError, "non-empty list"),
])
def test_bad_settings(yolo, kwargs, error, match):
    with pytest.raises(error, match=match):
        YOLODetector(yolo, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"conf": 1.5}, "conf and iou"), ({"iou": -0.1}, "conf and iou"), ({"max_det": 0}, "max_det"),
])
def test_bad_call_settings(yolo, kwargs, match):
    with pytest.raises(ValueError, match=match):
        YOLODetector(yolo, **kwargs)(rgb_image())


def test_prompts_need_yolo_world(yolo):
    with pytest.raises(TypeError, match="YOLO-World"):
        YOLODetector(SimpleNamespace(predict=yolo.predict, names=yolo.names), prompts=["cat"])


def test_from_yaml_path():
    pytest.importorskip("ultralytics")
    detector = YOLODetector("yolov8n.yaml", conf=0.0, imgsz=64, max_det=3)
    assert len(detector.class_names) == 80
    assert detector(rgb_image()).boxes.shape[1] == 4


class FakeWorld:
    """Records set_classes and predicts one box of the last class (YOLO-World's interface)."""

    def __init__(self):
        self.names = {0: "person"}
        self.calls = []

    def set_classes(self, classes):
        self.calls.append(list(classes))
        self.names = dict(enumerate(classes))

    def predict(self, source, **kwargs):
        self.calls.append(kwargs)
        boxes = SimpleNamespace(xyxy=torch.tensor([[1.0, 2.0, 30.0, 20.0]]), conf=torch.tensor([0.5]),
                                cls=torch.tensor([float(len(self.names) - 1)]))
        return [SimpleNamespace(boxes=boxes, names=self.names) for _ in source]


def test_world_prompts_call_set_classes():
    model = FakeWorld()
    detector = YOLODetector(model, prompts=["red mug", "spoon"], classes=["spoon"])
    assert model.calls[0] == ["red mug", "spoon"]
    prompts = detector(rgb_image())
    assert model.calls[1]["classes"] == [1]
    assert prompts.meta[0]["label"] == "spoon" and prompts.meta[0]["class_id"] == 1


def test_real_yolo_world_offline():
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    model = YOLO("yolov8s-worldv2.yaml")  # the architecture builds offline
    try:
        model.set_classes(["cat", "dog"])
    except Exception as exc:  # needs ultralytics' CLIP package + downloaded text-encoder weights
        pytest.skip(f"YOLO-World set_classes cannot run offline: {type(exc).__name__}: {exc}")
    prompts = YOLODetector(model, conf=0.0, imgsz=64, max_det=3)(rgb_image())
    assert {m["label"] for m in prompts.meta} <= {"cat", "dog"}


def test_result_without_boxes():
    with pytest.raises(ValueError, match="OBB"):
        yolo_result_to_prompts(SimpleNamespace(boxes=None, obb=object(), names={}))
