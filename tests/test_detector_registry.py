"""Tests for samkit.adapters.registry: names, paths and objects -> detector adapters."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samkit.adapters.base import CallableSource
from samkit.adapters.hf_detectors import ClosedSetDetector, ZeroShotDetector
from samkit.adapters.registry import (
    DETECTOR_FAMILIES,
    DetectorFamily,
    detector_families,
    detector_family,
    load_detector,
)
from samkit.adapters.ultralytics import YOLODetector
from samkit.errors import CheckpointError

IMAGE = np.zeros((24, 32, 3), np.uint8)


@pytest.fixture(scope="module")
def owlv2_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from tiny_hf_models import save_tiny_owl

    return save_tiny_owl(tmp_path_factory.mktemp("owlv2"), v2=True)


@pytest.fixture(scope="module")
def detr_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
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


class FakeYOLO:
    names = {0: "person", 1: "car"}

    def predict(self, source, **kwargs):
        boxes = SimpleNamespace(xyxy=torch.tensor([[1.0, 2.0, 8.0, 9.0]]), conf=torch.tensor([0.9]),
                                cls=torch.tensor([1.0]))
        return [SimpleNamespace(boxes=boxes, names=self.names) for _ in source]


def test_every_family_is_a_complete_entry():
    assert list(DETECTOR_FAMILIES) == ["yolo-world", "yolo", "zero-shot", "detr"]
    for name, family in DETECTOR_FAMILIES.items():
        assert isinstance(family, DetectorFamily) and family.name == name and family.label
        assert 0.0 < family.default_threshold < 1.0 and family.install.startswith("pip install samkit[")
        assert not family.needs_queries or family.open_vocabulary
    assert {f.name for f in detector_families(installed_only=False)} == set(DETECTOR_FAMILIES)
    assert all(f.installed() for f in detector_families())


@pytest.mark.parametrize("spec, queries, family", [
    ("yolov8n.pt", None, "yolo"),
    ("models/best.YAML", None, "yolo"),
    ("yolov8s-worldv2.pt", None, "yolo-world"),
    ("google/owlv2-base-patch16", ["a cat"], "zero-shot"),
    ("facebook/detr-resnet-50", None, "detr"),
])
def test_family_from_a_name(spec, queries, family):
    assert detector_family(spec, queries=queries).name == family


def test_family_from_objects_and_folders(owlv2_dir, detr_dir):
    assert detector_family(FakeYOLO()).name == "yolo"
    world = FakeYOLO()
    world.set_classes = lambda names: None
    assert detector_family(world).name == "yolo-world"
    assert detector_family(owlv2_dir).name == "zero-shot"  # from config.json, no queries needed
    assert detector_family(detr_dir, queries=["cat"]).name == "detr"


def test_yolo_with_family_defaults_and_overrides():
    pytest.importorskip("ultralytics")
    detector = load_detector("yolov8n.yaml")
    assert isinstance(detector, YOLODetector) and detector.conf == DETECTOR_FAMILIES["yolo"].default_threshold
    assert not detector.open_vocabulary and len(detector.categories) == 80
    tuned = load_detector("yolov8n.yaml", threshold=0.6, classes=[2], max_det=4, imgsz=64)
    assert (tuned.conf, tuned.classes, tuned.max_det, tuned.imgsz) == (0.6, [2], 4, 64)
    with pytest.raises(TypeError, match="YOLO-World"):
        load_detector("yolov8n.yaml", queries=["a cat"])


def test_zero_shot_folder(owlv2_dir):
    detector = load_detector(owlv2_dir, queries=["a cat", "a dog"])
    assert isinstance(detector, ZeroShotDetector) and detector.open_vocabulary
    assert detector.threshold == DETECTOR_FAMILIES["zero-shot"].default_threshold
    assert detector.categories == [{"id": 1, "name": "a cat"}, {"id": 2, "name": "a dog"}]
    with pytest.raises(ValueError, match="queries.*not classes"):
        load_detector(owlv2_dir, classes=["cat"])
    later = load_detector(owlv2_dir, threshold=0.0)  # queries may come later; detecting without them is an error
    with pytest.raises(ValueError, match="no queries"):
        later(IMAGE)
    later.queries = ["a cat"]
    with torch.no_grad():  # each patch then predicts its grid cell, so boxes fall inside the image
        later.model.box_head.dense2.weight.zero_()
        later.model.box_head.dense2.bias.zero_()
    found = later(np.random.default_rng(0).integers(0, 256, (30, 80, 3), dtype=np.uint8))
    assert len(found) > 0 and {m["label"] for m in found.meta} == {"a cat"}


def test_detr_folder(detr_dir):
    detector = load_detector(detr_dir, classes=["dog"])
    assert isinstance(detector, ClosedSetDetector) and not detector.open_vocabulary
    assert detector.threshold == DETECTOR_FAMILIES["detr"].default_threshold
    assert detector.categories == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]
    with pytest.raises(ValueError, match="not queries"):
        load_detector(detr_dir, queries=["a cat"])
    with pytest.raises(TypeError, match="open-vocabulary detector is needed"):
        load_detector(detr_dir, open_vocabulary=True)


def test_objects():
    yolo = load_detector(FakeYOLO(), threshold=0.4)
    assert isinstance(yolo, YOLODetector) and yolo.conf == 0.4
    assert yolo(IMAGE).meta[0]["label"] == "car"
    assert load_detector(yolo) is yolo
    with pytest.raises(ValueError, match="apply when a detector is loaded"):
        load_detector(yolo, threshold=0.3)
    plain = load_detector(lambda image: ([[0, 0, 4, 4]], [0.5], [1]), classes=["cat", "dog"])
    assert isinstance(plain, CallableSource) and not plain.open_vocabulary
    assert plain.categories == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]
    assert plain(IMAGE).meta[0]["label"] == "dog"


@pytest.mark.parametrize("threshold", [math.nan, -0.1, 1.5, "0.3", True])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold must be a number in"):
        load_detector("yolov8n.yaml", threshold=threshold)


def test_local_files_are_never_hub_ids(tmp_path):
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(b"PK\x03\x04\x00")
    with pytest.raises(ValueError, match="never read as a hub id"):
        load_detector(str(truncated))
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04\x00")
    pytest.importorskip("ultralytics")
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_detector(str(tmp_path / "trunc.pt"))
    with pytest.raises(ValueError, match="no config.json"):
        load_detector(str(tmp_path))


def test_missing_yolo_file_is_never_downloaded(monkeypatch, tmp_path):
    pytest.importorskip("ultralytics")
    import ultralytics

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(ultralytics, "YOLO", no_download)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    for name in ("nope.pt", "yolov8n.pt"):
        with pytest.raises(FileNotFoundError, match="YOLO_OFFLINE=1"):
            load_detector(name)
    monkeypatch.delenv("YOLO_OFFLINE")
    with pytest.raises(FileNotFoundError, match="not a local file nor an official"):
        load_detector("nope.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_detector(str(tmp_path / "sub" / "nope.pt"))


@pytest.mark.parametrize("spec, error, match", [
    ("", ValueError, "empty string"),
    ("detector", ValueError, "is not a YOLO file"),
    (42, TypeError, "ultralytics.YOLO-like"),
])
def test_bad_specs(spec, error, match):
    with pytest.raises(error, match=match):
        load_detector(spec)
    with pytest.raises(ValueError, match="family must be one of"):
        load_detector("yolov8n.yaml", family="nonsense")
