"""Untrusted detector files never run code: each crafted file would create a marker file when
unpickled or built; loading it must refuse with a clear error and leave no marker."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch

from samkit.adapters.registry import load_detector
from samkit.adapters.ultralytics import YOLODetector, load_yolo
from samkit.errors import CheckpointError

pytest.importorskip("ultralytics")


class TouchByFunction:
    """Unpickling calls ``pathlib.Path.touch(marker)``."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


class TouchByGetattr:
    """Unpickling calls ``getattr(Path(marker), "touch")()``: a pickled bound method."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return self.marker.touch, ()


class TouchBySystem:
    """Unpickling calls ``os.system("touch marker")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture(scope="module")
def tiny_yolo_pt(tmp_path_factory):
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("yolo") / "tiny.pt"
    torch.manual_seed(0)
    YOLO("yolov8n.yaml").save(str(path))  # random weights, written the way ultralytics writes checkpoints
    return str(path)


def evil_pt(tmp_path, payload):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"model": payload(marker), "train_args": {}}, path)
    return str(path), marker


@pytest.mark.parametrize("payload", [TouchByFunction, TouchByGetattr, TouchBySystem])
@pytest.mark.parametrize("load", [
    lambda path: YOLODetector(path),
    lambda path: load_yolo(path),
    lambda path: load_detector(path),
])
def test_evil_checkpoint_is_refused_before_it_runs(tmp_path, payload, load):
    path, marker = evil_pt(tmp_path, payload)
    with pytest.raises(CheckpointError, match=r"refused to load YOLO file .*evil\.pt.*trust_file=True"):
        load(path)
    assert not marker.exists()


def test_trust_file_hands_the_file_to_ultralytics(tmp_path):
    # the check is what protects: with it switched off, ultralytics runs the payload
    path, marker = evil_pt(tmp_path, TouchByFunction)
    with pytest.raises(Exception):
        YOLODetector(path, trust_file=True)
    assert marker.exists()


def test_evil_model_inside_a_real_checkpoint(tmp_path, tiny_yolo_pt):
    checkpoint = torch.load(tiny_yolo_pt, weights_only=False)
    marker = tmp_path / "marker"
    checkpoint["train_args"] = {"hook": TouchByGetattr(marker)}
    path = tmp_path / "best.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="best.pt"):
        load_detector(str(path))
    assert not marker.exists()


def test_real_checkpoint_still_loads(tiny_yolo_pt):
    detector = YOLODetector(tiny_yolo_pt, conf=0.0, imgsz=64, max_det=3)
    assert len(detector.class_names) == 80
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert detector(image).boxes.shape[1] == 4
    loaded = load_detector(tiny_yolo_pt)
    assert isinstance(loaded, YOLODetector) and loaded.conf == 0.25 and not loaded.open_vocabulary
    assert loaded.categories == [{"id": k, "name": v} for k, v in sorted(detector.class_names.items())]


@pytest.mark.parametrize("content, match", [
    ("not: [a, zip", "not a readable"),
    (b"PK\x03\x04truncated", "not a readable"),
])
def test_broken_checkpoint_is_a_clear_error(tmp_path, content, match):
    path = tmp_path / "broken.pt"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(CheckpointError, match=match):
        load_yolo(str(path))


@pytest.mark.parametrize("activation, layer", [
    ("__import__('pathlib').Path('{marker}').touch()", "Conv"),
    ("nn.SiLU()", "torch_safe_load"),
    ("nn.SiLU(__import__('os'))", "Conv"),
])
def test_evil_yaml_is_refused(tmp_path, activation, layer):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.yaml"
    path.write_text(f"nc: 2\nactivation: \"{activation.format(marker=marker)}\"\n"
                    f"backbone:\n  - [-1, 1, {layer}, ['{marker}']]\nhead:\n  - [-1, 1, nn.Identity, []]\n")
    with pytest.raises(CheckpointError, match="evil.yaml"):
        YOLODetector(str(path))
    assert not marker.exists()


def test_plain_activation_yaml_is_accepted(tmp_path):
    import ultralytics

    source = pathlib.Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    path = tmp_path / "custom.yaml"
    path.write_text("activation: nn.ReLU()\n" + source.read_text())
    detector = YOLODetector(str(path))
    assert isinstance(detector.model.model.model[0].act, torch.nn.ReLU)


# -- transformers detector folders ------------------------------------------------------------------
@pytest.fixture()
def owl_folder(tmp_path):
    pytest.importorskip("transformers")
    from tiny_hf_models import save_tiny_owl

    return pathlib.Path(save_tiny_owl(tmp_path / "owl", v2=True))


@pytest.mark.parametrize("payload", [TouchByFunction, TouchBySystem])
def test_pickled_weights_in_a_transformers_folder_do_not_run(owl_folder, tmp_path, payload):
    marker = tmp_path / "marker"
    for weights in owl_folder.glob("*.safetensors"):
        weights.unlink()
    torch.save({"hook": payload(marker)}, owl_folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        load_detector(str(owl_folder), queries=["a cat"])
    assert not marker.exists()


def test_remote_code_in_a_transformers_folder_does_not_run(owl_folder, tmp_path):
    import json

    marker = tmp_path / "marker"
    (owl_folder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                                        "from transformers import Owlv2Config as EvilConfig\n")
    config = json.loads((owl_folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForZeroShotObjectDetection": "evil.EvilConfig"}
    (owl_folder / "config.json").write_text(json.dumps(config))
    try:
        load_detector(str(owl_folder), queries=["a cat"])  # the folder's own model class is used, not evil.py
    except (ValueError, OSError):
        pass  # refusing the folder is fine too
    assert not marker.exists()
