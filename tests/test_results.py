"""Tests for samkit.results.Segmentation."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from samkit.results import Segmentation
from samkit.rle import masks_to_boxes, rle_to_mask

H, W = 12, 16
LABELS = ["cat", "dog", "cow", "owl"]


def _boxes_mask(boxes, h=H, w=W):
    m = np.zeros((len(boxes), h, w), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, y0:y1, x0:x1] = True
    return m


def make(n=4, k=3, logits=True, seed=0):
    """N prompts x K outputs; output j of prompt i is the XYXY box (i + j, i, i + 2j + 2, i + 3)."""
    masks = np.stack([_boxes_mask([(i + j, i, i + 2 * j + 2, i + 3) for j in range(k)]) for i in range(n)])
    scores = np.random.default_rng(seed).random((n, k))
    lg = np.random.default_rng(seed + 1).standard_normal((n, k, 4, 4)) if logits else None
    meta = [{"label": LABELS[i % 4], "class_id": i % 2, "rank": i} for i in range(n)]
    return Segmentation(masks, scores, lg, meta)


# -- validation -------------------------------------------------------------------------------
OK_MASKS = np.zeros((2, 3, H, W), dtype=bool)
OK_SCORES = np.zeros((2, 3))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(masks=np.zeros((H, W), bool), scores=np.zeros((1, 1))), ValueError, r"\(N, K, H, W\) or \(N, H, W\), got \(12, 16\)"),
    (dict(masks=np.zeros((1, 1, 1, H, W), bool), scores=np.zeros((1, 1))), ValueError, r"got \(1, 1, 1, 12, 16\)"),
    (dict(masks=np.full((2, 3, H, W), 0.5), scores=OK_SCORES), ValueError, "values outside"),
    (dict(masks=np.full((2, 3, H, W), "x"), scores=OK_SCORES), TypeError, "masks must be boolean"),
    (dict(masks=OK_MASKS, scores=np.zeros((2,))), ValueError, r"scores must have shape \(N, K\) = \(2, 3\).*got \(2,\)"),
    (dict(masks=OK_MASKS, scores=np.zeros((3, 2))), ValueError, r"got \(3, 2\)"),
    (dict(masks=OK_MASKS, scores=np.full((2, 3), np.nan)), ValueError, "finite"),
    (dict(masks=OK_MASKS, scores=np.full((2, 3), np.inf)), ValueError, "finite"),
    (dict(masks=OK_MASKS, scores=np.full((2, 3), "a")), TypeError, "scores must be numeric"),
    (dict(masks=OK_MASKS, scores=OK_SCORES, logits=np.zeros((2, 3, 4))), ValueError, r"logits must have shape \(N, K, h, w\).*got \(2, 3, 4\)"),
    (dict(masks=OK_MASKS, scores=OK_SCORES, logits=np.zeros((2, 1, 4, 4))), ValueError, r"\(N, K\) = \(2, 3\)"),
    (dict(masks=OK_MASKS, scores=OK_SCORES, logits=np.full((2, 3, 4, 4), "a")), TypeError, "logits must be numeric"),
    (dict(masks=OK_MASKS, scores=OK_SCORES, meta=[{}]), ValueError, r"one dict per prompt \(2\), got 1"),
    (dict(masks=OK_MASKS, scores=OK_SCORES, meta=[{}, "x"]), TypeError, "meta must hold dicts, got str"),
    (dict(masks=OK_MASKS, scores=OK_SCORES, meta=5), TypeError, "list of dicts.*got int"),
])
def test_validation_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        Segmentation(**kwargs)


def test_conversions():
    seg = Segmentation(np.ones((2, H, W), np.uint8), np.array([0.5, 0.25]), np.zeros((2, 4, 4)), None)
    assert seg.masks.dtype == bool and seg.masks.shape == (2, 1, H, W)
    assert seg.scores.dtype == np.float32 and seg.scores.shape == (2, 1)
    assert seg.logits.dtype == np.float32 and seg.logits.shape == (2, 1, 4, 4)
    assert seg.meta == [{}, {}]
    shared = {"source": "test"}
    seg = Segmentation(np.zeros((3, 1, 2, 2), bool), np.zeros((3, 1)), meta=shared)
    assert seg.meta == [shared] * 3 and seg.meta[0] is not seg.meta[1]
    original = [{"a": 1}]
    seg = Segmentation(np.zeros((1, 1, 2, 2), bool), np.zeros((1, 1)), meta=original)
    seg.meta[0]["a"] = 2
    assert original == [{"a": 1}]


def test_torch_inputs():
    torch = pytest.importorskip("torch")
    seg = Segmentation(torch.ones(2, 3, 4, 5, dtype=torch.bool), torch.rand(2, 3), torch.zeros(2, 3, 4, 4))
    assert isinstance(seg.masks, np.ndarray) and seg.masks.shape == (2, 3, 4, 5)
    assert seg.scores.dtype == np.float32 and seg.logits.dtype == np.float32


def test_properties_and_repr():
    seg = make()
    assert seg.image_size == (H, W) and seg.num_outputs == 3 and len(seg) == 4
    assert repr(seg) == "Segmentation(n=4, k=3, image_size=(12, 16), logits=(4, 4))"
    assert "logits=None" in repr(make(logits=False))


def test_empty():
    seg = Segmentation.empty((H, W), num_outputs=3)
    assert len(seg) == 0 and seg.image_size == (H, W) and seg.num_outputs == 3
    assert seg.boxes().shape == (0, 3, 4) and seg.areas().shape == (0, 3)
    assert len(seg.best()) == 0 and seg.best().num_outputs == 1
    assert seg.to_coco(1) == [] and seg.to_records() == [] and seg.to_rle() == []
    assert len(seg.sorted()) == 0 and len(seg.filter(min_score=0.5)) == 0


# -- selection --------------------------------------------------------------------------------
@pytest.mark.parametrize("index, rows", [
    (0, [0]),
    (-1, [3]),
    (np.int64(2), [2]),
    (slice(1, 3), [1, 2]),
    (slice(None, None, -1), [3, 2, 1, 0]),
    ([3, 0], [3, 0]),
    (np.array([2, 2, -4]), [2, 2, 0]),
    (np.array([True, False, True, False]), [0, 2]),
    ([], []),
])
def test_getitem_keeps_meta_aligned(index, rows):
    seg = make()
    sub = seg[index]
    assert len(sub) == len(rows) and sub.num_outputs == 3
    assert [m["rank"] for m in sub.meta] == rows
    np.testing.assert_array_equal(sub.masks, seg.masks[rows])
    np.testing.assert_array_equal(sub.scores, seg.scores[rows])
    np.testing.assert_array_equal(sub.logits, seg.logits[rows])


@pytest.mark.parametrize("index, error, match", [
    (4, IndexError, "index 4 is out of range for 4 prompts"),
    (-5, IndexError, "out of range"),
    (np.array([True, False]), IndexError, r"shape \(4,\), got \(2,\)"),
    (np.array([[0, 1]]), IndexError, r"shape \(M,\)"),
    (np.array([0.5]), TypeError, "float64"),
    (True, TypeError, "got bool"),
    ([7], IndexError, "out of bounds"),
])
def test_getitem_errors(index, error, match):
    with pytest.raises(error, match=match):
        make()[index]


def test_best():
    seg = make()
    best = seg.best()
    choice = seg.scores.argmax(axis=1)
    assert best.num_outputs == 1 and len(best) == 4
    assert [m["output_index"] for m in best.meta] == choice.tolist()
    assert [m["label"] for m in best.meta] == LABELS
    for i, j in enumerate(choice):
        np.testing.assert_array_equal(best.masks[i, 0], seg.masks[i, j])
        np.testing.assert_array_equal(best.logits[i, 0], seg.logits[i, j])
        assert best.scores[i, 0] == seg.scores[i, j]
    again = best.best()
    assert [m["output_index"] for m in again.meta] == choice.tolist()  # kept, not reset to 0
    assert make(k=1).best().meta[0]["output_index"] == 0
    assert "output_index" not in seg.meta[0]  # best() does not touch the original


@pytest.mark.parametrize("by, descending, key", [
    ("score", True, lambda s: -s.scores.max(1)),
    ("score", False, lambda s: s.scores.max(1)),
    ("area", True, lambda s: -s.areas()[np.arange(len(s)), s.scores.argmax(1)]),
    ("rank", True, lambda s: -np.arange(len(s))),
    ("rank", False, lambda s: np.arange(len(s))),
])
def test_sorted(by, descending, key):
    seg = make(n=6)
    out = seg.sorted(by=by, descending=descending)
    expected = np.argsort(key(seg), kind="stable")
    assert [m["rank"] for m in out.meta] == expected.tolist()
    np.testing.assert_array_equal(out.masks, seg.masks[expected])


def test_sorted_is_stable_and_checks_keys():
    seg = Segmentation(np.zeros((3, 1, 2, 2), bool), np.ones((3, 1)), meta=[{"i": 0}, {"i": 1}, {"i": 2}])
    assert [m["i"] for m in seg.sorted().meta] == [0, 1, 2]
    with pytest.raises(KeyError, match="prompt 0 has meta keys \\['i'\\]"):
        seg.sorted(by="label")


def test_filter():
    seg = make()
    best_scores = seg.scores.max(axis=1)
    threshold = float(np.median(best_scores))
    out = seg.filter(min_score=threshold)
    assert [m["rank"] for m in out.meta] == np.flatnonzero(best_scores >= threshold).tolist()
    keep = np.array([True, False, False, True])
    assert [m["rank"] for m in seg.filter(keep).meta] == [0, 3]
    best_areas = seg.areas()[np.arange(4), seg.scores.argmax(1)]
    assert [m["rank"] for m in seg.filter(min_area=10).meta] == np.flatnonzero(best_areas >= 10).tolist()
    assert len(seg.filter(keep, min_score=2.0)) == 0
    with pytest.raises(ValueError, match=r"boolean array of shape \(4,\), got int64 \(4,\)"):
        seg.filter(np.array([1, 0, 0, 1]))


def test_concat():
    a, b = make(n=2), make(n=3, seed=5)
    out = Segmentation.concat([a, b])
    assert len(out) == 5 and out.logits.shape == (5, 3, 4, 4)
    assert [m["rank"] for m in out.meta] == [0, 1, 0, 1, 2]
    np.testing.assert_array_equal(out.masks[2:], b.masks)
    with_empty = Segmentation.concat([Segmentation.empty((H, W), 3), a, make(logits=False)[:0]])
    assert len(with_empty) == 2 and with_empty.logits.shape == (2, 3, 4, 4)
    assert Segmentation.concat([Segmentation.empty((H, W), 3)]).logits is None


@pytest.mark.parametrize("items, error, match", [
    ([], ValueError, "at least one"),
    ([make(), "x"], TypeError, "got str"),
    ([make(), Segmentation.empty((H + 1, W), 3)], ValueError, "equal image_size and num_outputs"),
    ([make(), make(k=2)], ValueError, "equal image_size and num_outputs"),
    ([make(), make(logits=False)], ValueError, "logits on all non-empty items"),
])
def test_concat_errors(items, error, match):
    with pytest.raises(error, match=match):
        Segmentation.concat(items)


# -- exports ----------------------------------------------------------------------------------
def test_boxes_and_areas():
    seg = make()
    boxes = seg.boxes()
    assert boxes.shape == (4, 3, 4) and boxes.dtype == np.float32
    assert boxes[1, 2].tolist() == [3, 1, 7, 4]  # box (i + j, i, i + 2j + 2, i + 3) for i=1, j=2
    np.testing.assert_array_equal(boxes, masks_to_boxes(seg.masks))
    assert seg.areas().dtype == np.int64
    np.testing.assert_array_equal(seg.areas(), [[3 * (j + 2) for j in range(3)]] * 4)


@pytest.mark.parametrize("compressed", [True, False])
def test_rle_round_trip(compressed):
    seg = make()
    rles = seg.to_rle(compressed=compressed)
    assert len(rles) == 4 and all(len(r) == 3 for r in rles)
    assert isinstance(rles[0][0]["counts"], str if compressed else list)
    json.dumps(rles)
    back = Segmentation.from_rle(rles, seg.scores, meta=seg.meta)
    np.testing.assert_array_equal(back.masks, seg.masks)
    assert back.meta == seg.meta and back.logits is None
    flat = Segmentation.from_rle([r[0] for r in rles])
    assert flat.num_outputs == 1 and (flat.scores == 1).all()
    np.testing.assert_array_equal(flat.masks[:, 0], seg.masks[:, 0])


@pytest.mark.parametrize("rles, match", [
    ([], "at least one RLE"),
    ([{"size": [2, 2], "counts": [4]}, {"size": [3, 2], "counts": [6]}], r"sizes \[\(2, 2\), \(3, 2\)\]"),
    ([[{"size": [2, 2], "counts": [4]}], []], "N lists of K"),
])
def test_from_rle_errors(rles, match):
    with pytest.raises(ValueError, match=match):
        Segmentation.from_rle(rles)


def test_to_polygons():
    seg = make(n=2, k=2)
    polygons = seg.to_polygons()
    assert len(polygons) == 2 and all(len(p) == 2 for p in polygons)
    ring = polygons[1][1][0]  # prompt 1, output 1: box (2, 1, 5, 4)
    assert ring.tolist() == [[2, 1], [5, 1], [5, 4], [2, 4]]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_to_coco():
    mask_utils = pytest.importorskip("pycocotools.mask")
    seg = make()
    seg.meta[2]["category_id"] = 7
    seg.meta[3].pop("class_id")
    anns = seg.to_coco(42, category_id=9, start_id=100)
    json.dumps(anns)
    best = seg.best()
    assert [a["id"] for a in anns] == [100, 101, 102, 103]
    assert all(a["image_id"] == 42 and a["iscrowd"] == 0 for a in anns)
    assert [a["category_id"] for a in anns] == [0, 1, 7, 9]
    for ann, mask, score in zip(anns, best.masks[:, 0], best.scores[:, 0]):
        assert set(ann) == {"id", "image_id", "category_id", "segmentation", "area", "bbox", "score", "iscrowd"}
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_utils.decode(rle), mask)
        assert ann["area"] == int(mask_utils.area(rle)) and isinstance(ann["area"], int)
        assert ann["bbox"] == mask_utils.toBbox(rle).tolist()
        assert ann["score"] == pytest.approx(float(score))


SAM_RECORD_KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}


@pytest.mark.parametrize("output_mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_to_records(output_mode):
    seg = make()
    seg.meta[0].update(point_coords=np.array([[3.0, 4.0]]), stability_score=np.float32(0.5), crop_box=[0, 0, 8, 6])
    records = seg.to_records(output_mode=output_mode)
    best = seg.best()
    assert len(records) == 4 and all(set(r) == SAM_RECORD_KEYS for r in records)
    for r, mask, score in zip(records, best.masks[:, 0], best.scores[:, 0]):
        decoded = r["segmentation"] if output_mode == "binary_mask" else rle_to_mask(r["segmentation"])
        np.testing.assert_array_equal(decoded, mask)
        rows, cols = np.nonzero(mask)
        assert r["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert r["area"] == int(mask.sum()) and r["predicted_iou"] == pytest.approx(float(score))
    assert records[0]["point_coords"] == [[3.0, 4.0]] and records[0]["stability_score"] == 0.5
    assert records[0]["crop_box"] == [0, 0, 8, 6]
    assert records[1]["point_coords"] is None and records[1]["stability_score"] is None
    assert records[1]["crop_box"] == [0, 0, W, H]
    if output_mode == "binary_mask":
        assert records[0]["segmentation"].dtype == bool and records[0]["segmentation"].shape == (H, W)
    else:
        json.dumps(records)
    if output_mode == "coco_rle":
        assert isinstance(records[0]["segmentation"]["counts"], str)


def test_to_records_rejects_unknown_mode():
    with pytest.raises(ValueError, match="output_mode must be one of .* got 'polygon'"):
        make().to_records(output_mode="polygon")


# -- supervision ------------------------------------------------------------------------------
def test_to_supervision_without_supervision(monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)  # makes `import supervision` fail
    with pytest.raises(ImportError, match="pip install supervision"):
        make().to_supervision()


@pytest.fixture
def fake_supervision(monkeypatch):
    module = SimpleNamespace(Detections=lambda **kwargs: SimpleNamespace(tracker_id=None, **kwargs))
    monkeypatch.setitem(sys.modules, "supervision", module)
    return module


def test_to_supervision(fake_supervision):
    seg = make()
    seg.meta[1]["only_here"] = 1
    det = seg.to_supervision()
    best = seg.best()
    assert det.xyxy.shape == (4, 4) and det.xyxy.dtype == np.float32
    np.testing.assert_array_equal(det.xyxy, best.boxes()[:, 0])
    np.testing.assert_array_equal(det.mask, best.masks[:, 0])
    np.testing.assert_array_equal(det.confidence, best.scores[:, 0])
    assert det.class_id.tolist() == [0, 1, 0, 1]
    assert sorted(det.data) == ["label", "output_index", "rank"]
    assert det.data["label"].tolist() == LABELS
    seg.meta[0].pop("class_id")
    assert seg.to_supervision().class_id is None


def test_supervision_round_trip(fake_supervision):
    seg = make().best()
    back = Segmentation.from_supervision(seg.to_supervision())
    np.testing.assert_array_equal(back.masks, seg.masks)
    np.testing.assert_allclose(back.scores, seg.scores)
    for original, restored in zip(seg.meta, back.meta):
        assert restored == dict(original, box=restored["box"])


def test_from_supervision_duck_typed():
    masks = _boxes_mask([(0, 0, 4, 4), (5, 2, 9, 7)])
    det = SimpleNamespace(
        xyxy=np.array([[0, 0, 4, 4], [5, 2, 9, 7]], np.float32), mask=masks,
        confidence=np.array([0.9, 0.4]), class_id=np.array([3, 5]), tracker_id=np.array([11, 12]),
        data={"class_name": np.array(["cat", "dog"])},
    )
    seg = Segmentation.from_supervision(det)
    assert len(seg) == 2 and seg.num_outputs == 1 and seg.image_size == (H, W)
    np.testing.assert_array_equal(seg.masks[:, 0], masks)
    np.testing.assert_allclose(seg.scores[:, 0], [0.9, 0.4])
    assert seg.meta == [
        {"class_id": 3, "tracker_id": 11, "box": [0, 0, 4, 4], "class_name": "cat"},
        {"class_id": 5, "tracker_id": 12, "box": [5, 2, 9, 7], "class_name": "dog"},
    ]
    assert isinstance(seg.meta[0]["class_id"], int)
    minimal = Segmentation.from_supervision(SimpleNamespace(mask=masks))
    assert (minimal.scores == 1).all() and minimal.meta == [{}, {}]


@pytest.mark.parametrize("det, match", [
    (SimpleNamespace(mask=None, xyxy=np.zeros((1, 4))), "got mask=None"),
    (SimpleNamespace(mask=np.zeros((H, W), bool)), r"\(N, H, W\), got \(12, 16\)"),
    (SimpleNamespace(mask=np.zeros((2, H, W), bool), class_id=np.array([1])), "'class_id' must have one value per mask \\(2\\), got 1"),
    (SimpleNamespace(mask=np.zeros((2, H, W), bool), confidence=np.ones(3)), r"scores must have shape"),
])
def test_from_supervision_errors(det, match):
    with pytest.raises(ValueError, match=match):
        Segmentation.from_supervision(det)
