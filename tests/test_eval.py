"""samkit.eval: known answers for the click rules, the four protocols, the dataset loader and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samkit.eval import (ArrayDataset, CocoDataset, edge_counts, edge_scores, evaluate_edges, evaluate_instances,
                         evaluate_points, evaluate_proposals, format_table, ground_truth_detections, mask_boundaries,
                         mask_centers, masks_iou, match_pixels, next_clicks, write_coco_folder)
from samkit.eval.edges import bsds_thresholds
from samkit.results import Segmentation

pytest.importorskip("pycocotools")
pytest.importorskip("scipy")


def _rect(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def _scene(seed=0, size=64):
    """An image with two or three rectangles (distinct colours) and their masks."""
    rng = np.random.default_rng(seed)
    masks = [_rect(size, size, 4, 20, 6, 30), _rect(size, size, 30, 60, 8, 50)]
    if seed % 2:
        masks.append(_rect(size, size, 2, 12, 36, 54))
    image = np.full((size, size, 3), 20, dtype=np.uint8)
    for i, m in enumerate(masks):
        image[m] = (60 + 60 * i, 200 - 40 * i, int(rng.integers(0, 255)))
    return image, np.stack(masks)


class FakeSegmenter:
    """Answers a prompt with the ground-truth mask its first point lies in, shifted right by ``shift``.

    Multimask outputs are (shifted, exact, empty) with scores (0.9, 0.5, 0.1): the most confident
    mask is the shifted one, the oracle the exact one. Counts encoder and decoder calls.
    """

    def __init__(self, items, shift=0):
        self.by_image = {image.tobytes(): masks for image, masks in items}
        self.shift, self.encodes, self.segments = shift, 0, []

    def encode(self, image):
        self.encodes += 1
        return image.tobytes()

    def _answer(self, masks, xy):
        x, y = (int(v) for v in xy)
        inside = [m for m in masks if m[y, x]]
        mask = inside[0] if inside else np.zeros_like(masks[0])
        shifted = np.zeros_like(mask)
        shifted[:, self.shift:] = mask[:, :mask.shape[1] - self.shift]
        return shifted, mask

    def segment(self, embedding, *, points, labels, multimask, mask_input=None, return_logits=True, boxes=None,
                meta=None):
        masks = self.by_image[embedding]
        self.segments.append((len(points), multimask, mask_input is not None))
        out = []
        for p in points:
            shifted, exact = self._answer(masks, p[0])
            out.append([shifted, exact, np.zeros_like(exact)] if multimask else [shifted])
        out = np.asarray(out)
        scores = np.tile([0.9, 0.5, 0.1][:out.shape[1]], (len(out), 1))
        return Segmentation(out, scores, logits=np.zeros((*out.shape[:2], 8, 8), np.float32))


@pytest.fixture
def coco(tmp_path):
    items = [_scene(seed) for seed in range(3)]
    return items, CocoDataset(write_coco_folder(items, tmp_path / "data"))


# -- click rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows, cols, expected", [
    ((1, 4), (1, 6), [3, 2]),     # odd 3 x 5 block: its middle pixel
    ((0, 6), (0, 6), [2, 2]),     # 6 x 6 at the border: 2 x 2 tie, first in row-major order
    ((0, 3), (0, 9), [4, 1]),     # a ridge of equal depth: the pixel nearest its middle
])
def test_mask_center_is_the_distance_transform_maximum(rows, cols, expected):
    mask = _rect(8, 10, *rows, *cols)[None]
    assert mask_centers(mask).tolist() == [expected]


def test_next_click_goes_to_the_larger_error_region():
    target = _rect(20, 20, 2, 18, 2, 18)
    missed = target & ~_rect(20, 20, 2, 18, 2, 12)  # 6-column strip missing
    extra = _rect(20, 20, 2, 18, 2, 18) | _rect(20, 20, 2, 18, 18, 20)  # 2 columns too many
    exact = target.copy()
    points, labels, has_error = next_clicks(np.stack([target & ~missed, extra, exact]), np.stack([target] * 3))
    assert labels.tolist() == [1, 0, -1] and has_error.tolist() == [True, True, False]
    assert points[0].tolist() == [14, 9] and points[1, 0] in (18, 19)
    with pytest.raises(ValueError, match="rule must be"):
        next_clicks(target[None], target[None], rule="largest")


# -- points -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [0, 2, 5])
def test_points_give_the_hand_computed_iou_of_shifted_masks(shift):
    items = [_scene(seed) for seed in range(3)]
    fake = FakeSegmenter(items, shift)
    result = evaluate_points(fake, ArrayDataset(items), clicks=3)
    ious = [(w - shift) / (w + shift) for image, masks in items for w in masks.sum(axis=2).max(axis=1)]
    m = result.metrics
    assert m["num_objects"] == len(ious) and m["num_images"] == 3
    assert m["miou"][0] == pytest.approx(np.mean(ious)) and m["oracle_miou"][0] == pytest.approx(1.0)
    # single-mask output from the second click on: the shifted mask is the only answer
    assert m["oracle_miou"][1] == pytest.approx(np.mean(ious))
    assert fake.encodes == 3  # one encoder pass per image
    assert len(fake.segments) == (3 if shift == 0 else 9)  # one decoder call per step, all objects at once
    if shift:  # three masks for the first click, one with the previous logits afterwards
        assert [c[1:] for c in fake.segments[:3]] == [(True, False), (False, True), (False, True)]
    first = result.per_image[0]["objects"][0]
    if shift:  # the second click is foreground in the missed strip at the left
        assert first["clicks"][1][2] == 1 and first["clicks"][1][0] < first["clicks"][0][0]
    else:
        assert len(first["clicks"]) == 1 and first["iou"] == [1.0, 1.0, 1.0]


def test_points_by_area_and_table(coco):
    items, data = coco
    result = evaluate_points(FakeSegmenter(items), data, clicks=2)
    by_area = result.metrics["by_area"]
    assert by_area["small"]["num_objects"] + by_area["medium"]["num_objects"] == result.metrics["num_objects"]
    assert by_area["large"]["miou"] == [None, None]
    assert "oracle" in format_table(result)
    with pytest.raises(ValueError, match="clicks must be"):
        evaluate_points(FakeSegmenter(items), data, clicks=0)
    with pytest.raises(TypeError, match="encode"):
        evaluate_points(lambda image: None, data)


# -- dataset loader -------------------------------------------------------------------------------------
def test_bad_images_are_reported_and_the_run_goes_on(coco, tmp_path):
    items, data = coco
    raw = json.loads((tmp_path / "data" / "instances.json").read_text())
    h, w = items[0][1].shape[1:]
    polygon = {"id": 100, "image_id": 1, "category_id": 1, "segmentation": [[6, 4, 30, 4, 30, 20, 6, 20]],
               "iscrowd": 0}
    crowd = {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [h, w], "counts": [h * w]}}
    wrong_size = {"id": 102, "image_id": 2, "category_id": 1, "segmentation": {"size": [5, 5], "counts": [25]}}
    orphan = {"id": 103, "image_id": 77, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}
    raw["annotations"] += [polygon, crowd, wrong_size, orphan]
    raw["images"].append({"id": 4, "file_name": "images/missing.png"})
    data = CocoDataset(raw, tmp_path / "data")
    sample = data.load(data.images[0])
    assert masks_iou(sample.masks[-2:-1], items[0][1][:1]) == pytest.approx(1.0)  # polygon == the rectangle
    assert len(sample.evaluated()) == len(sample.objects) - 1  # the crowd region is not prompted
    result = evaluate_points(FakeSegmenter(items), data, clicks=1)
    errors = {r["image_id"]: r["error"] for r in result.per_image}
    assert errors[1] is None and errors[3] is None
    assert "image 2" in errors[2] and "RLE size" in errors[2] and "image 4" in errors[4]
    assert result.metrics["num_failed_images"] == 2 and any("image 77" in p for p in result.problems)
    with pytest.raises(ValueError, match="no images"):
        CocoDataset({"images": [], "annotations": []})
    with pytest.raises(ValueError, match="'images'"):
        CocoDataset({"annotations": []})


# -- proposals and instances ------------------------------------------------------------------------------
def _gt_generator(items, shift=0, categories=True):
    lookup = {image.tobytes(): masks for image, masks in items}

    def generate(image):
        masks = lookup[image.tobytes()]
        if shift:
            masks = np.roll(masks, shift, axis=2)
        meta = [{"category_id": 1, "score": 1.0 - 0.1 * i} for i in range(len(masks))] if categories else None
        return Segmentation(masks, np.linspace(1, 0.5, len(masks)), meta=meta)

    return generate


def test_ground_truth_masks_as_proposals_give_ar_one(coco):
    items, data = coco
    m = evaluate_proposals(_gt_generator(items, categories=False), data).metrics
    assert m["AR@1000"]["all"] == pytest.approx(1.0) and m["AR@10"]["medium"] == pytest.approx(1.0)
    assert m["AR@100"]["large"] is None and "by_frequency" not in m
    shifted = evaluate_proposals(_gt_generator(items, shift=12, categories=False), data).metrics
    assert shifted["AR@1000"]["all"] < 0.5


def test_proposals_by_lvis_frequency(coco, tmp_path):
    items, _ = coco
    raw = json.loads((tmp_path / "data" / "instances.json").read_text())
    raw["categories"] = [{"id": 1, "name": "box", "frequency": "f"}, {"id": 2, "name": "lid", "frequency": "r"}]
    data = CocoDataset(raw, tmp_path / "data")
    m = evaluate_proposals(_gt_generator(items), data).metrics
    assert m["by_frequency"] == {"frequent": {"AR@1000": pytest.approx(1.0)}, "rare": {"AR@1000": None},
                                 "common": {"AR@1000": None}}


def test_instance_ap_equals_pycocotools_on_the_same_results(coco):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from pycocotools import mask as mask_utils

    items, data = coco
    perfect = evaluate_instances(_gt_generator(items), data).metrics
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AP75"] == pytest.approx(1.0)
    result = evaluate_instances(_gt_generator(items, shift=3), data)
    gt = COCO()
    gt.dataset = data.coco_dict()
    gt.createIndex()
    dets = []
    for (image, masks), info in zip(items, data.images):
        masks = np.roll(masks, 3, axis=2)
        for i, rle in enumerate(mask_utils.encode(np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1)))):
            dets.append({"image_id": info["id"], "category_id": 1, "segmentation": rle, "score": 1.0 - 0.1 * i})
    run = COCOeval(gt, gt.loadRes(dets), iouType="segm")
    run.evaluate(); run.accumulate(); run.summarize()
    names = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    ours = [-1 if result.metrics[n] is None else result.metrics[n] for n in names]
    assert ours == pytest.approx(list(run.stats[:6]))
    assert 0 < result.metrics["AP"] < 1


class BoxSegmenter:
    """Fills each prompted box: exact masks for rectangular objects."""

    def encode(self, image):
        return image.shape[:2]

    def segment(self, embedding, *, boxes, multimask, meta, return_logits):
        masks = np.zeros((len(boxes), 1, *embedding), dtype=bool)
        for i, (x0, y0, x1, y1) in enumerate(np.rint(boxes).astype(int)):
            masks[i, 0, y0:y1, x0:x1] = True
        return Segmentation(masks, np.full((len(boxes), 1), 0.8), meta=meta)


def test_ground_truth_boxes_through_a_segmenter_give_ap_one(coco, tmp_path):
    items, data = coco
    detections = ground_truth_detections(data)
    assert len(detections) == sum(len(m) for _, m in items)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(detections))
    result = evaluate_instances(BoxSegmenter(), data, detections=path, score="product")
    assert result.metrics["AP"] == pytest.approx(1.0) and result.metrics["num_detections"] == len(detections)
    with pytest.raises(ValueError, match="score must be"):
        evaluate_instances(BoxSegmenter(), data, detections=detections, score="best")


# -- edges ----------------------------------------------------------------------------------------------
def test_pixel_matching_is_one_to_one_within_the_radius():
    target = np.zeros((10, 10), bool); target[5, 5] = True
    predicted = np.zeros((10, 10), bool); predicted[5, 6] = predicted[5, 7] = predicted[0, 0] = True
    p, t = match_pixels(predicted, target, radius=2.0)
    assert p.sum() == t.sum() == 1 and not p[0, 0]


@pytest.mark.parametrize("shape, shift, radius_fraction, expected_f", [
    ("square", 0, 0.0075, 1.0),  # perfect
    ("line", 2, 0.03, 1.0),      # a line moved within the tolerance (radius ~2.7 px on 64 x 64)
    ("line", 6, 0.03, 0.0),      # beyond it
])
def test_edge_scores_on_hand_made_maps(shape, shift, radius_fraction, expected_f):
    if shape == "square":
        boundary = mask_boundaries(_rect(64, 64, 10, 50, 10, 50)[None])
    else:
        boundary = _rect(64, 64, 20, 21, 5, 55)
    edges = np.roll(boundary, shift, axis=0).astype(float)
    levels = bsds_thresholds(9)
    scores = edge_scores([edge_counts(edges, [boundary], thresholds=levels, tolerance=radius_fraction)], levels)
    assert scores["ods"] == pytest.approx(expected_f, abs=1e-6) and scores["ois"] == pytest.approx(expected_f, abs=1e-6)
    assert scores["ap"] == pytest.approx(expected_f, abs=1e-6)


def test_half_the_boundary_gives_f_two_thirds_and_weak_noise_is_thresholded_away():
    boundary = mask_boundaries(_rect(64, 64, 10, 50, 10, 50)[None])
    half = boundary.copy(); half[:30] = False
    noise = np.zeros((64, 64)); noise[56:60, 2:60:3] = 0.3
    edges = np.maximum(half.astype(float), noise)
    levels = bsds_thresholds(9)
    counts = edge_counts(edges, [boundary], thresholds=levels)
    recall = half.sum() / boundary.sum()
    scores = edge_scores([counts], levels)
    assert scores["ods"] == pytest.approx(2 * recall / (1 + recall), abs=1e-6)
    assert scores["ods_recall"] == pytest.approx(recall) and scores["ods_precision"] == pytest.approx(1.0)
    assert scores["ap"] < recall + 1e-9


def test_evaluate_edges_with_perfect_maps(coco):
    items, data = coco
    lookup = {image.tobytes(): mask_boundaries(masks).astype(float) for image, masks in items}
    result = evaluate_edges(lambda image: lookup[image.tobytes()], data, thresholds=5)
    assert result.metrics["ods"] == pytest.approx(1.0) and result.metrics["ap"] == pytest.approx(1.0)
    assert "ODS" in format_table(result)


# -- command line ------------------------------------------------------------------------------------------
def test_cli_points_writes_the_documented_json(coco, tmp_path, capsys):
    from pathlib import Path

    from samkit.cli import main

    checkpoint = Path(__file__).resolve().parents[1] / "samkit" / "assets" / "tiny_synthetic.pth"
    out = tmp_path / "metrics.json"
    code = main(["eval", "points", "--dataset", str(tmp_path / "data" / "instances.json"), "--model",
                 str(checkpoint), "--clicks", "2", "--out", str(out), "--quiet", "--device", "cpu", "--no-plot"])
    assert code == 0
    saved = json.loads(out.read_text())
    assert set(saved) >= {"protocol", "model", "dataset", "metrics", "per_image"} and saved["protocol"] == "points"
    assert len(saved["metrics"]["miou"]) == len(saved["metrics"]["oracle_miou"]) == 2
    assert len(saved["per_image"]) == 3 and saved["per_image"][0]["objects"]
    assert "mIoU" in capsys.readouterr().out
    instances = ["eval", "instances", "--dataset", str(tmp_path / "data" / "instances.json"), "--model",
                 str(checkpoint), "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(instances + ["--gt-boxes"]) == 0
    saved = json.loads(out.read_text())
    assert saved["protocol"] == "instances" and 0 <= saved["metrics"]["AP"] <= 1
    with pytest.raises(SystemExit) as exit_info:  # one of --detections / --gt-boxes / --detector is required
        main(instances)
    assert exit_info.value.code == 2
