"""Segment everything vs Meta's SamAutomaticMaskGenerator on identical seeded random weights.

Random weights give near-zero mask logits (|logit| < 0.03), so every mask would be unstable;
the last layer of each hypernetwork MLP is scaled by ``SHARPEN`` in the shared state dict
(for both implementations) to get logits of a few units and masks that survive the filters.

Tolerances (float32 CPU; the decoders differ by float rounding, ~1e-5 in the logits), checked
per mask after matching masks by order: mask IoU >= 0.99, bbox within 1 px, area within 1% (+2 px),
predicted IoU within 1e-4, stability score within 2e-3; point_coords and crop_box equal; same
count. Measured deviations are printed with ``pytest -s``. OpenCV is not installed here, so the
reference's small-region removal runs on a ``cv2`` stand-in built on ``scipy.ndimage.label``
(an implementation independent of ours).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import types

import numpy as np
import pytest
import torch

from conftest import _resize, build_reference, random_state_dict

from samkit import Segmenter
from samkit.modeling import build_sam, get_config
from samkit.pipelines import amg_ops as ops
from samkit.pipelines.everything import (
    PRESETS,
    EverythingSettings,
    SegmentEverything,
    edge_map,
    segment_everything,
    write_coco_instances,
    write_sa1b_json,
)

SHARPEN = 1e4
IOU_MIN, BOX_TOL, AREA_REL, SCORE_TOL, STABILITY_TOL = 0.99, 1, 0.01, 1e-4, 2e-3

amg = pytest.importorskip("segment_anything.utils.amg")
mask_utils = pytest.importorskip("pycocotools.mask")


def sharpened_state_dict(config, seed):
    sd = random_state_dict(config, seed)
    for key in sd:
        if "output_hypernetworks_mlps" in key and ".layers.2." in key:
            sd[key] = sd[key] * SHARPEN
    return sd


def make_pair(config, seed):
    sd = sharpened_state_dict(config, seed)
    ref = build_reference(config)
    ref.load_state_dict(sd, strict=True)
    ours = build_sam(config)
    ours.load_state_dict(sd, strict=True)
    return ref, Segmenter(ours)


@pytest.fixture(scope="module")
def pair():
    return make_pair(get_config("tiny"), seed=2)


@pytest.fixture(scope="module")
def chelsea():
    from skimage import data

    return data.chelsea()


def fake_cv2():
    """``cv2.connectedComponentsWithStats`` on scipy, enough for segment_anything's amg.py."""
    from scipy import ndimage

    def connected_components_with_stats(image, connectivity):
        structure = np.ones((3, 3)) if connectivity == 8 else None
        labels, n = ndimage.label(image, structure=structure)
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        stats = np.zeros((n + 1, 5), np.int32)
        stats[:, -1] = areas
        return n + 1, labels.astype(np.int32), stats, np.zeros((n + 1, 2))

    return types.SimpleNamespace(connectedComponentsWithStats=connected_components_with_stats)


def reference_generate(ref, image, monkeypatch=None, **kw):
    from segment_anything import SamAutomaticMaskGenerator

    if kw.get("min_mask_region_area", 0) > 0:
        try:
            import cv2  # noqa: F401
        except ImportError:
            monkeypatch.setitem(sys.modules, "cv2", fake_cv2())
    return SamAutomaticMaskGenerator(ref, **kw).generate(image)


def compare_records(ref, ours, label=""):
    """Assert the stated tolerances; return the measured worst deviations."""
    assert len(ours) == len(ref), f"{label}: {len(ours)} masks, reference {len(ref)}"
    worst = dict(iou=1.0, bbox=0, area=0.0, predicted_iou=0.0, stability=0.0)
    for i, (r, o) in enumerate(zip(ref, ours)):
        a, b = r["segmentation"], o["segmentation"]
        union = np.logical_or(a, b).sum()
        iou = 1.0 if union == 0 else np.logical_and(a, b).sum() / union
        worst["iou"] = min(worst["iou"], float(iou))
        worst["bbox"] = max(worst["bbox"], int(np.abs(np.subtract(r["bbox"], o["bbox"])).max()))
        worst["area"] = max(worst["area"], abs(r["area"] - o["area"]) / max(r["area"], 1))
        worst["predicted_iou"] = max(worst["predicted_iou"], abs(r["predicted_iou"] - o["predicted_iou"]))
        both_nan = np.isnan(r["stability_score"]) and np.isnan(o["stability_score"])  # empty masks
        stability = 0.0 if both_nan else abs(r["stability_score"] - o["stability_score"])
        worst["stability"] = max(worst["stability"], stability)
        where = f"{label} mask {i}"
        assert iou >= IOU_MIN, where
        assert np.abs(np.subtract(r["bbox"], o["bbox"])).max() <= BOX_TOL, where
        assert abs(r["area"] - o["area"]) <= AREA_REL * r["area"] + 2, where
        assert abs(r["predicted_iou"] - o["predicted_iou"]) <= SCORE_TOL, where
        assert stability <= STABILITY_TOL, where
        assert np.allclose(r["point_coords"], o["point_coords"], rtol=0, atol=1e-9), where
        assert r["crop_box"] == o["crop_box"], where
    print(f"\n{label}: {len(ref)} masks, worst deviations {worst}")
    return worst


# -- parity with the reference ------------------------------------------------------------------
PARITY_CASES = {
    "no_filters": dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0),
    "filters": dict(points_per_side=8, pred_iou_thresh=0.1, stability_score_thresh=0.3),
    "no_nms": dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.5, box_nms_thresh=1.0),
    "batch_5": dict(points_per_side=6, points_per_batch=5, pred_iou_thresh=-1.0, stability_score_thresh=0.2),
    "crops": dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.3, crop_n_layers=1),
    "crops_downscale": dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.3, crop_n_layers=2,
                            crop_n_points_downscale_factor=2, crop_overlap_ratio=0.25),
    "small_regions": dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.3,
                          min_mask_region_area=300),
    "point_grids": dict(points_per_side=None, point_grids=[np.random.default_rng(0).random((20, 2))],
                        pred_iou_thresh=0.0, stability_score_thresh=0.3),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_matches_reference(pair, chelsea, monkeypatch, case):
    ref, segmenter = pair
    kw = PARITY_CASES[case]
    expected = reference_generate(ref, chelsea, monkeypatch, **kw)
    ours = SegmentEverything(segmenter, **kw).generate(chelsea)
    assert len(expected) > 0, "the case should keep some masks"
    compare_records(expected, ours, case)


def test_matches_reference_non_square(pair, images, monkeypatch):
    ref, segmenter = pair
    image = images["astronaut_700x256"]
    kw = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.3, crop_n_layers=1,
              min_mask_region_area=100)
    compare_records(reference_generate(ref, image, monkeypatch, **kw),
                    SegmentEverything(segmenter, **kw).generate(image), "astronaut_700x256")


@pytest.mark.slow
def test_matches_reference_full_size_decoder(monkeypatch):
    """SAM's full-size decoder and 1024 input (vit_b's prompt encoder and decoder) on a 480x640
    image; the image encoder is shrunk (width 64, 2 blocks) to keep the test under a minute."""
    from skimage import data

    config = get_config("vit_b", encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                        encoder_global_attn_indexes=(1,))
    ref, segmenter = make_pair(config, seed=0)
    image = _resize(data.astronaut(), 480, 640)
    kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5, box_nms_thresh=1.0)
    compare_records(reference_generate(ref, image, monkeypatch, **kw),
                    SegmentEverything(segmenter, **kw).generate(image), "full-size decoder 480x640")


@pytest.mark.parametrize("mode", ["uncompressed_rle", "coco_rle"])
def test_rle_outputs_equal_pycocotools(pair, chelsea, mode):
    _, segmenter = pair
    kw = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.3)
    masks = SegmentEverything(segmenter, **kw)(chelsea).masks[:, 0]
    records = SegmentEverything(segmenter, output_mode=mode, **kw).generate(chelsea)
    assert len(records) == len(masks) > 0
    for mask, record in zip(masks, records):
        expected = mask_utils.encode(np.asfortranarray(mask))
        rle = record["segmentation"]
        if mode == "coco_rle":
            assert rle == {"size": list(expected["size"]), "counts": expected["counts"].decode()}
        else:
            assert rle["counts"] == amg.mask_to_rle_pytorch(torch.from_numpy(mask)[None])[0]["counts"]
            assert mask_utils.encode(np.asfortranarray(mask_utils.decode(
                mask_utils.frPyObjects(rle, *rle["size"]))))["counts"] == expected["counts"]
        assert record["area"] == int(mask_utils.area(expected))


# -- stages against the reference's functions ---------------------------------------------------
@pytest.mark.parametrize("n,layers,factor", [(1, 0, 1), (7, 0, 1), (32, 2, 2), (16, 3, 2), (10, 1, 3)])
def test_point_grids(n, layers, factor):
    ours = ops.build_layer_point_grids(n, layers, factor)
    expected = amg.build_all_layer_point_grids(n, layers, factor)
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [(300, 451), (480, 640), (700, 256), (33, 31), (1, 5)])
@pytest.mark.parametrize("layers,ratio", [(0, 512 / 1500), (1, 512 / 1500), (2, 512 / 1500), (3, 0.1), (2, 0.0)])
def test_crop_boxes(size, layers, ratio):
    # the reference's boxes and layers, less the crops without a pixel (which it lists and fails on)
    boxes, crop_layers = amg.generate_crop_boxes(size, layers, ratio)
    kept = [i for i, (x0, y0, x1, y1) in enumerate(boxes) if x1 > x0 and y1 > y0]
    assert ops.crop_boxes_for_layers(size, layers, ratio) == ([boxes[i] for i in kept], [crop_layers[i] for i in kept])


def test_stability_and_boxes_match_reference():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 37, 53, generator=gen) * 3
    logits[3] = -5.0  # empty mask: NaN stability, zero box
    logits[4, 10:12, 20] = 5.0
    expected = amg.calculate_stability_score(logits, 0.0, 1.0)
    np.testing.assert_array_equal(ops.stability_score(logits, 0.0, 1.0).numpy(), expected.numpy())
    boxes = amg.batched_mask_to_box(logits > 0)
    assert torch.equal(ops.mask_boxes(logits > 0), boxes)
    assert torch.equal(ops.mask_boxes(logits, 0.0), boxes)


def test_near_crop_edge_matches_reference():
    gen = torch.Generator().manual_seed(1)
    boxes = torch.randint(0, 200, (200, 4), generator=gen)
    for crop in ([0, 0, 300, 200], [50, 0, 250, 150], [100, 60, 300, 200]):
        expected = amg.is_box_near_crop_edge(boxes, crop, [0, 0, 300, 200])
        assert torch.equal(ops.near_crop_edge(boxes, crop, [0, 0, 300, 200]), expected)


@pytest.mark.parametrize("n", [0, 1, 50, 1200])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_box_nms_matches_torchvision(n, threshold):
    tv = pytest.importorskip("torchvision.ops")
    gen = torch.Generator().manual_seed(n)
    xy = torch.randint(0, 100, (n, 2), generator=gen)
    wh = torch.randint(0, 40, (n, 2), generator=gen)  # zero-size boxes included
    boxes = torch.cat([xy, xy + wh], 1).float()
    scores = torch.randint(0, 4, (n,), generator=gen).float()  # many ties
    expected = tv.nms(boxes, scores, threshold)
    np.testing.assert_array_equal(ops.box_nms(boxes, scores, threshold), expected.numpy())
    batched = tv.batched_nms(boxes, scores, torch.zeros(n), threshold)  # same set, ties may reorder
    assert sorted(ops.box_nms(boxes, scores, threshold).tolist()) == sorted(batched.tolist())


def remove_small_regions_scipy(mask, area, mode):
    """Independent implementation of the reference's semantics with scipy's labelling."""
    from scipy import ndimage

    holes = mode == "holes"
    labels, n = ndimage.label(holes ^ mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n + 1) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("density", [0.1, 0.45, 0.55, 0.9])
@pytest.mark.parametrize("area", [1, 3, 20, 10_000])
def test_remove_small_regions_matches_scipy(mode, density, area):
    rng = np.random.default_rng(int(density * 100) + area)
    for shape in [(1, 1), (1, 40), (40, 1), (37, 53)]:
        mask = rng.random(shape) < density
        ours, changed = ops.remove_small_regions(mask, area, mode)
        expected, expected_changed = remove_small_regions_scipy(mask, area, mode)
        assert changed == expected_changed
        np.testing.assert_array_equal(ours, expected)


def test_remove_small_regions_spiral_and_diagonals():
    mask = np.zeros((9, 9), bool)
    mask[np.arange(9), np.arange(9)] = True  # one 8-connected diagonal of 9 pixels
    mask[0, 8] = True  # an isolated pixel
    out, changed = ops.remove_small_regions(mask, 2, "islands")
    assert changed and out.sum() == 9 and not out[0, 8]
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    filled, changed = ops.remove_small_regions(ring, 2, "holes")
    assert changed and filled[3, 3] and filled.sum() == 25


def test_packed_mask_round_trip():
    rng = np.random.default_rng(0)
    mask = np.zeros((30, 40), bool)
    mask[5:17, 9:31] = rng.random((12, 22)) < 0.5
    mask[5, 9] = mask[16, 30] = True
    box = ops.mask_boxes(torch.from_numpy(mask)).numpy()
    packed = ops.PackedMask.pack(mask, box)
    assert packed.bits.nbytes <= (12 * 22 + 7) // 8 and packed.area == mask.sum()
    np.testing.assert_array_equal(packed.paste(np.zeros_like(mask)), mask)
    empty = ops.PackedMask.pack(np.zeros((4, 4), bool), [0, 0, 0, 0])
    assert empty.area == 0 and not empty.paste(np.zeros((4, 4), bool)).any()


def test_decode_selected_equals_decode(pair, chelsea):
    _, segmenter = pair
    embedding = segmenter.encode(chelsea)
    points = ops.build_point_grid(5) * np.array([[451, 300]])
    from samkit.prompts import Prompts

    low_res, scores = segmenter.decode(embedding, Prompts(points=points[:, None]), multimask=True)
    iou, pairs, selected = ops.decode_selected(segmenter, embedding, points, lambda s: torch.ones_like(s, dtype=bool))
    torch.testing.assert_close(iou, scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(selected, low_res.flatten(0, 1), rtol=1e-5, atol=1e-3)
    some = (scores > scores.median()).to(torch.bool)
    _, pairs, selected = ops.decode_selected(segmenter, embedding, points, lambda s: some)
    assert torch.equal(pairs, some.nonzero())
    torch.testing.assert_close(selected, low_res[some], rtol=1e-5, atol=1e-3)


# -- API -----------------------------------------------------------------------------------------
def test_defaults_equal_reference():
    from segment_anything import SamAutomaticMaskGenerator

    ours = inspect.signature(SegmentEverything).parameters
    for name, param in inspect.signature(SamAutomaticMaskGenerator).parameters.items():
        if name != "model":
            assert ours[name].default == param.default, name
    for field in dataclasses.fields(EverythingSettings):  # the function's defaults
        assert ours[field.name].default == field.default, field.name


def test_class_equals_function(pair, chelsea):
    _, segmenter = pair
    kw = dict(points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.3)
    a = SegmentEverything(segmenter, **kw)(chelsea)
    b = segment_everything(segmenter, chelsea, **kw)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.meta == b.meta and len(a) > 0
    assert a.num_outputs == 1 and a.masks.dtype == bool and a.masks.shape[2:] == chelsea.shape[:2]
    for m, area in zip(a.meta, a.areas()[:, 0]):
        assert set(m) >= {"point_coords", "stability_score", "crop_box", "bbox", "area"} and m["area"] == area


def test_progress_reports_every_batch(pair, chelsea):
    _, segmenter = pair
    calls = []
    SegmentEverything(segmenter, points_per_side=4, points_per_batch=5, crop_n_layers=1,
                      progress=lambda done, total: calls.append((done, total)))(chelsea)
    total = 16 * 5
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 5 * 4


def test_empty_result(pair, chelsea):
    _, segmenter = pair
    result = SegmentEverything(segmenter, points_per_side=2, pred_iou_thresh=100.0)(chelsea)
    assert len(result) == 0 and result.image_size == chelsea.shape[:2]
    with_crops = SegmentEverything(segmenter, points_per_side=2, pred_iou_thresh=100.0, crop_n_layers=1)
    assert with_crops.generate(chelsea) == []  # the reference raises IndexError here


def test_fast_mode_is_close(pair, chelsea):
    """fast=True (stability from low-res logits): report how far it moves from the exact path."""
    _, segmenter = pair
    kw = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.3)
    exact = SegmentEverything(segmenter, **kw).generate(chelsea)
    fast = SegmentEverything(segmenter, fast=True, **kw).generate(chelsea)
    matched, deviation = 0, []
    for f in fast:
        for e in exact:
            if f["point_coords"] == e["point_coords"] and f["predicted_iou"] == e["predicted_iou"]:
                matched += 1
                deviation.append(abs(f["stability_score"] - e["stability_score"]))
    print(f"\nfast: {len(fast)} masks, exact: {len(exact)}, same masks {matched}, "
          f"max stability deviation {max(deviation, default=0):.4f}")
    assert matched >= 0.8 * len(exact) and len(fast) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(chelsea):
    config = get_config("tiny")
    sd = sharpened_state_dict(config, 2)
    models = []
    for device in ("cpu", "cuda"):
        model = build_sam(config)
        model.load_state_dict(sd)
        models.append(Segmenter(model, device=device))
    kw = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.3, crop_n_layers=1)
    cpu, cuda = (SegmentEverything(s, **kw).generate(chelsea) for s in models)
    compare_records(cpu, cuda, "cuda vs cpu")


BAD_SETTINGS = [
    (dict(points_per_side=None), ValueError, "exactly one of points_per_side and point_grids"),
    (dict(point_grids=[np.zeros((4, 2))]), ValueError, "exactly one"),
    (dict(points_per_side=0), ValueError, "points_per_side to be an int >= 1, got 0"),
    (dict(points_per_side=2.5), ValueError, "points_per_side"),
    (dict(points_per_batch=0), ValueError, "points_per_batch to be an int >= 1, got 0"),
    (dict(box_nms_thresh=1.5), ValueError, r"box_nms_thresh in \[0, 1\], got 1.5"),
    (dict(crop_nms_thresh=-0.1), ValueError, "crop_nms_thresh"),
    (dict(crop_n_layers=-1), ValueError, "crop_n_layers to be an int >= 0, got -1"),
    (dict(crop_overlap_ratio=1.0), ValueError, "crop_overlap_ratio"),
    (dict(crop_n_points_downscale_factor=0), ValueError, "crop_n_points_downscale_factor"),
    (dict(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2), ValueError, r"\[2, 1, 0\]"),
    (dict(stability_score_offset=-1.0), ValueError, "stability_score_offset >= 0"),
    (dict(stability_score_thresh=1.5), ValueError, "stability_score_thresh <= 1"),
    (dict(pred_iou_thresh=float("nan")), ValueError, "pred_iou_thresh to be a number, got nan"),
    (dict(stability_score_thresh=None), ValueError, "stability_score_thresh to be a number, got None"),
    (dict(min_mask_region_area=-5), ValueError, "min_mask_region_area >= 0, got -5"),
    (dict(max_area_fraction=0.0), ValueError, "max_area_fraction"),
    (dict(max_masks=0), ValueError, "max_masks"),
    (dict(points_per_side=None, point_grids=[np.zeros((4, 3))]), ValueError, r"\(P, 2\).*got shape \(4, 3\)"),
    (dict(points_per_side=None, point_grids=[np.full((4, 2), 1.5)]), ValueError, r"in \[0, 1\]"),
    (dict(points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1), ValueError, r"\(2\), got 1"),
    (dict(output_mode="polygons"), ValueError, "output_mode must be one of"),
    (dict(progress=3), TypeError, "progress must be a callable"),
    (dict(points_per_sid=3), TypeError, "points_per_sid"),
]


@pytest.mark.parametrize("settings,error,message", BAD_SETTINGS)
def test_bad_settings(pair, settings, error, message):
    _, segmenter = pair
    with pytest.raises(error, match=message):
        SegmentEverything(segmenter, **settings)


def test_bad_inputs(pair):
    _, segmenter = pair
    with pytest.raises(TypeError, match="Segmenter"):
        SegmentEverything(object())
    with pytest.raises(TypeError, match="Segmenter"):
        segment_everything(object(), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown preset 'coco'"):
        SegmentEverything.preset("coco", segmenter)
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        SegmentEverything(segmenter, points_per_side=2)(np.zeros((4, 4, 5), np.uint8))


# -- presets and edges ---------------------------------------------------------------------------
def test_presets(pair, chelsea):
    _, segmenter = pair
    h, w = chelsea.shape[:2]
    sa1b = SegmentEverything.preset("sa1b", segmenter, points_per_side=8, pred_iou_thresh=0.0,
                                    stability_score_thresh=0.3)
    assert (sa1b.settings.crop_n_layers, sa1b.settings.crop_n_points_downscale_factor) == (2, 2)
    result = sa1b(chelsea)
    assert len(result) > 0 and result.areas().max() < 0.95 * h * w
    assert {tuple(m["crop_box"]) for m in result.meta} - {(0, 0, w, h)}, "crop masks expected"
    proposals = SegmentEverything.preset("proposals", segmenter, points_per_side=12, max_masks=20)(chelsea)
    assert len(proposals) == 20 and np.all(np.diff(proposals.scores[:, 0]) <= 0)
    edges = SegmentEverything.preset("edges", segmenter)
    assert edges.settings.points_per_side == 16 and PRESETS["edges"]["points_per_side"] == 16


def test_edges(pair, chelsea):
    _, segmenter = pair
    edges = SegmentEverything.preset("edges", segmenter, points_per_side=6).edges(chelsea)
    assert edges.shape == chelsea.shape[:2] and edges.dtype == np.float32
    assert edges.min() >= 0.0 and edges.max() <= 1.0 and edges.max() > 0
    assert (edges > 0).mean() < 0.5  # thinned, not a filled probability map
    again = edge_map(segmenter, chelsea, **dict(PRESETS["edges"], points_per_side=6))
    np.testing.assert_array_equal(edges, again)


def test_edge_nms_thins_a_soft_step():
    x = torch.linspace(-6, 6, 40)
    probabilities = torch.sigmoid(x)[None, None, None, :].expand(1, 1, 30, 40)
    strength = ops.sobel_magnitude(probabilities)[0, 0]
    thin = ops.edge_nms(strength)
    rows = thin[8:22]  # away from the damped border
    assert torch.all((rows > 0).sum(dim=1) <= 2) and torch.all((rows > 0).sum(dim=1) >= 1)
    assert torch.all(rows.argmax(dim=1).sub(19.5).abs() <= 1)
    assert float(thin.max()) <= 1.0 and float(strength.max()) <= 1.0


# -- writers -------------------------------------------------------------------------------------
def test_write_sa1b_json(pair, chelsea, tmp_path):
    _, segmenter = pair
    everything = SegmentEverything(segmenter, points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.3)
    result = everything(chelsea)
    path = tmp_path / "sa_1.json"
    for records in (everything.generate(chelsea), result, SegmentEverything(
            segmenter, output_mode="uncompressed_rle", **{k: v for k, v in everything._kwargs().items()
                                                          if k in ("points_per_side", "pred_iou_thresh",
                                                                   "stability_score_thresh")}).generate(chelsea)):
        write_sa1b_json(path, {"image_id": 1, "file_name": "sa_1.jpg"}, records)
        data = json.loads(path.read_text())
        assert data["image"] == {"image_id": 1, "file_name": "sa_1.jpg", "height": 300, "width": 451}
        assert len(data["annotations"]) == len(result)
        for ann, mask, meta in zip(data["annotations"], result.masks[:, 0], result.meta):
            assert isinstance(ann["segmentation"]["counts"], str)
            np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)
            assert ann["bbox"] == meta["bbox"] and ann["point_coords"] == meta["point_coords"]
    assert os.listdir(tmp_path) == ["sa_1.json"]


def test_write_coco_instances(pair, chelsea, images, tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco")
    _, segmenter = pair
    everything = SegmentEverything(segmenter, points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.3)
    astronaut = images["astronaut_700x256"]
    first, second = everything(chelsea), everything.generate(astronaut)
    path = tmp_path / "instances.json"
    write_coco_instances(path, [({"id": 7, "file_name": "chelsea.png"}, first),
                                ({"id": 8, "file_name": "astronaut.png"}, second)])
    coco = coco_module.COCO(str(path))
    assert sorted(coco.getImgIds()) == [7, 8] and coco.imgs[8]["height"] == 700
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[7]))
    assert len(anns) == len(first)
    for ann, mask in zip(anns, first.masks[:, 0]):
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["bbox"] == list(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))))
    assert len(coco.getAnnIds(imgIds=[8])) == len(second)
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert ids == list(range(1, len(ids) + 1))


def test_writers_are_atomic(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(TypeError, match="cannot write object"):
        write_sa1b_json(path, {"image_id": 1, "bad": object()}, [])
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
    with pytest.raises(ValueError, match="needs an 'id'"):
        write_coco_instances(path, [({"file_name": "a.png"}, [])])
    assert path.read_text() == "old"


def test_decode_selected_falls_back_for_other_decoders(pair, chelsea):
    """A decoder without the reference's attributes is decoded whole, then selected."""
    import copy

    _, segmenter = pair

    class Opaque(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.iou_token = inner.iou_token  # Segmenter.decode reads the decoder's dtype from it

        def forward(self, *args):
            return self.inner(*args)

    model = copy.deepcopy(segmenter.model)
    model.mask_decoder = Opaque(model.mask_decoder)
    other = Segmenter(model)
    points = ops.build_point_grid(3) * np.array([[451, 300]])
    some = lambda s: s > s.median()  # noqa: E731
    expected = ops.decode_selected(segmenter, segmenter.encode(chelsea), points, some)
    got = ops.decode_selected(other, other.encode(chelsea), points, some)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-5)
    assert torch.equal(got[1], expected[1])
    torch.testing.assert_close(got[2], expected[2], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (5, 5), (6, 6), (3, 500), (1, 9)])
def test_tiny_images_segment_with_every_preset(size):
    import samkit

    asset = os.path.join(os.path.dirname(__file__), "..", "samkit", "assets", "tiny_synthetic.pth")
    segmenter = Segmenter(samkit.load_model(asset))
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    for name in PRESETS:
        result = SegmentEverything.preset(name, segmenter, points_per_side=4)(image)
        assert result.masks.shape[-2:] == size
    edges = SegmentEverything.preset("edges", segmenter, points_per_side=4).edges(image)
    assert edges.shape == size and np.isfinite(edges).all()


def test_crops_without_pixels_are_not_listed():
    boxes, layers = ops.crop_boxes_for_layers((1, 9), 2, 512 / 1500)
    assert len(boxes) == len(layers) and all(x1 > x0 and y1 > y0 for x0, y0, x1, y1 in boxes)
    assert boxes[0] == [0, 0, 9, 1]
