"""Tests for samkit.rle: COCO RLE parity with pycocotools, boxes and polygon tracing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samkit.rle import (
    compress_counts,
    decompress_counts,
    mask_to_polygons,
    masks_to_boxes,
    masks_to_coco_rle,
    masks_to_rle,
    polygon_signed_area,
    rle_area,
    rle_to_bbox,
    rle_to_mask,
)

mask_utils = pytest.importorskip("pycocotools.mask")


def _random(shape, p, seed=0):
    return np.random.default_rng(seed).random(shape) < p


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _frame(h, w, t=1):
    m = np.zeros((h, w), dtype=bool)
    m[:t], m[-t:], m[:, :t], m[:, -t:] = True, True, True, True
    return m


def _pixel(h, w, r, c):
    m = np.zeros((h, w), dtype=bool)
    m[r, c] = True
    return m


MASKS = {
    "random_half": _random((23, 31), 0.5),
    "random_sparse": _random((40, 17), 0.05, seed=1),
    "random_dense": _random((17, 40), 0.95, seed=2),
    "all_zero": np.zeros((9, 13), dtype=bool),
    "all_one": np.ones((9, 13), dtype=bool),
    "row_1xN": _random((1, 57), 0.5, seed=3),
    "col_Nx1": _random((57, 1), 0.5, seed=4),
    "single_pixel_image": np.ones((1, 1), dtype=bool),
    "single_pixel_image_empty": np.zeros((1, 1), dtype=bool),
    "odd_size_disc": _disc(33, 47, 16, 20, 11),
    "disc_touching_borders": _disc(21, 21, 10, 10, 12),
    "frame": _frame(15, 11),
    "top_left_pixel": _pixel(7, 5, 0, 0),
    "bottom_right_pixel": _pixel(7, 5, 6, 4),
    "checkerboard": (np.indices((9, 8)).sum(0) % 2).astype(bool),
    "wide_runs": np.tile(np.arange(600) % 200 < 150, (3, 1)),
}


def _reference(mask):
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
@pytest.mark.parametrize("name", sorted(MASKS))
def test_matches_pycocotools(name):
    mask = MASKS[name]
    ref = _reference(mask)
    rle = masks_to_rle(mask)[0]
    assert rle["size"] == list(mask.shape)
    assert compress_counts(rle["counts"]) == ref["counts"].decode()
    assert decompress_counts(ref["counts"]) == rle["counts"]
    coco = masks_to_coco_rle(mask)[0]
    assert coco == {"size": list(mask.shape), "counts": ref["counts"].decode()}
    assert rle_area(rle) == rle_area(coco) == int(mask_utils.area(ref)) == int(mask.sum())
    assert rle_to_bbox(rle) == rle_to_bbox(coco) == mask_utils.toBbox(ref).tolist()
    np.testing.assert_array_equal(mask_utils.decode(dict(coco, counts=coco["counts"].encode())), mask)


@pytest.mark.parametrize("name", sorted(MASKS))
@pytest.mark.parametrize("form", ["list", "str", "bytes"])
def test_round_trip(name, form):
    mask = MASKS[name]
    rle = masks_to_rle(mask)[0]
    if form != "list":
        rle = dict(rle, counts=compress_counts(rle["counts"]))
    if form == "bytes":
        rle["counts"] = rle["counts"].encode()
    decoded = rle_to_mask(rle)
    assert decoded.dtype == bool and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, mask)


def test_batch_equals_single_masks_and_matches_pycocotools():
    masks = np.stack([_random((19, 23), p, seed=i) for i, p in enumerate([0, 0.1, 0.5, 0.9, 1.0, 0.5])])
    masks[2, 0, 0] = True  # first pixel set: counts start with 0
    rles = masks_to_rle(masks)
    assert rles == [masks_to_rle(m)[0] for m in masks]
    refs = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    assert [r["counts"].decode() for r in refs] == [x["counts"] for x in masks_to_coco_rle(masks)]
    assert rles[2]["counts"][0] == 0
    json.dumps(masks_to_coco_rle(masks))


def test_batch_chunking(monkeypatch):
    import samkit.formats.rle as rle_module

    masks = np.stack([_random((6, 7), 0.4, seed=i) for i in range(5)])
    expected = masks_to_rle(masks)
    monkeypatch.setattr(rle_module, "_CHUNK_PIXELS", 2 * 6 * 7)  # two masks per chunk
    assert masks_to_rle(masks) == expected


@pytest.mark.parametrize("counts", [
    [0],
    [6_000_000],
    [0, 6_000_000],
    [5, 1, 5_999_990, 3, 1],
    [1_000_000, 1, 2, 4_999_996, 1],
    [31, 32, 15, 16, 17, 5_999_889],
    [1, 2, 3, 4, 100, 1, 3, 5_999_886],
])
def test_compress_large_and_negative_deltas(counts):
    h, w = 2000, 3000
    ref = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)["counts"].decode()
    assert compress_counts(counts) == ref
    assert decompress_counts(ref) == counts
    assert decompress_counts(ref.encode()) == counts


def test_empty_counts():
    assert compress_counts([]) == ""
    assert decompress_counts("") == []
    assert masks_to_rle(np.zeros((0, 4), dtype=bool)) == [{"size": [0, 4], "counts": [0]}]


@pytest.mark.parametrize("masks, error, match", [
    (np.zeros((2, 2, 3, 3), dtype=bool), ValueError, r"\(H, W\) or \(N, H, W\), got \(2, 2, 3, 3\)"),
    (np.zeros(5, dtype=bool), ValueError, r"got \(5,\)"),
    (np.full((3, 3), 0.5), ValueError, "values outside"),
    (np.full((3, 3), 2, dtype=np.uint8), ValueError, "threshold logits"),
    (np.array([["a", "b"]]), TypeError, "dtype <U1"),
])
def test_masks_to_rle_errors(masks, error, match):
    with pytest.raises(error, match=match):
        masks_to_rle(masks)


def test_masks_to_rle_accepts_numbers_and_tensors():
    mask = MASKS["random_half"]
    expected = masks_to_rle(mask)
    assert masks_to_rle(mask.astype(np.uint8)) == expected
    assert masks_to_rle(mask.astype(np.float32)) == expected
    torch = pytest.importorskip("torch")
    assert masks_to_rle(torch.from_numpy(mask)) == expected


@pytest.mark.parametrize("rle, match", [
    ({"size": [2, 2], "counts": [1, 2]}, r"add up to H \* W = 4 .* got 3"),
    ({"size": [2, 2], "counts": [5, -1]}, ">= 0, got -1"),
    ({"size": [2, 2], "counts": "0\x7f"}, "characters"),
    ({"size": [2, 2], "counts": "0P"}, "middle of a value"),
    ({"counts": [4]}, "'size' and 'counts'"),
    ({"size": [4], "counts": [4]}, r"\[H, W\]"),
    ([4], "'size' and 'counts'"),
])
def test_rle_to_mask_errors(rle, match):
    with pytest.raises(ValueError, match=match):
        rle_to_mask(rle)


@pytest.mark.parametrize("name", sorted(MASKS))
def test_masks_to_boxes(name):
    mask = MASKS[name]
    box = masks_to_boxes(mask[None])[0]
    assert box.dtype == np.float32
    if not mask.any():
        assert box.tolist() == [0, 0, 0, 0]
        return
    rows, cols = np.nonzero(mask)
    assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    x, y, w, h = mask_utils.toBbox(_reference(mask)).tolist()
    assert box.tolist() == [x, y, x + w, y + h]


def test_masks_to_boxes_keeps_leading_axes():
    masks = np.stack([np.stack([MASKS["frame"], np.zeros((15, 11), bool)])] * 3)  # (3, 2, 15, 11)
    boxes = masks_to_boxes(masks)
    assert boxes.shape == (3, 2, 4)
    assert boxes[:, 0].tolist() == [[0, 0, 11, 15]] * 3 and not boxes[:, 1].any()
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\), got \(4,\)"):
        masks_to_boxes(np.ones(4, dtype=bool))


# -- polygons ---------------------------------------------------------------------------------
def _rasterize_even_odd(rings, shape):
    """Even-odd point-in-polygon test at every pixel centre (independent of the tracer)."""
    h, w = shape
    cy, cx = np.mgrid[:h, :w] + 0.5
    inside = np.zeros(shape, dtype=bool)
    for ring in rings:
        a, b = ring.astype(np.float64), np.roll(ring, -1, axis=0).astype(np.float64)
        for (x1, y1), (x2, y2) in zip(a, b):
            if y1 == y2:
                continue
            straddles = (y1 > cy) != (y2 > cy)
            x_cross = x1 + (cy - y1) * (x2 - x1) / (y2 - y1)
            inside ^= straddles & (cx < x_cross)
    return inside


def _count_components(mask, connectivity):
    ndimage = pytest.importorskip("scipy.ndimage")
    structure = ndimage.generate_binary_structure(2, connectivity)
    return ndimage.label(mask, structure=structure)[1]


def _ring_with_island():
    m = _frame(11, 11, t=2)
    m[5, 5] = True  # an island inside the hole
    return m


POLYGON_MASKS = dict(MASKS, **{
    "frame_with_island": _ring_with_island(),
    "two_holes": np.pad(np.array([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [1, 1, 1, 1, 1]], bool), 1),
    "diagonal_pair": np.eye(2, dtype=bool),
    "diagonal_hole": np.array([[1, 1, 1, 0], [1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], bool),
    "several_components": _disc(30, 40, 8, 8, 5) | _disc(30, 40, 20, 30, 7) | _pixel(30, 40, 29, 0),
    "u_shape": np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1]], bool),
})


@pytest.mark.parametrize("name", sorted(POLYGON_MASKS))
def test_polygons_enclose_exactly_the_mask(name):
    mask = POLYGON_MASKS[name]
    rings = mask_to_polygons(mask)
    np.testing.assert_array_equal(_rasterize_even_odd(rings, mask.shape), mask)
    areas = [polygon_signed_area(r) for r in rings]
    assert sum(areas) == pytest.approx(mask.sum())
    outer = [r for r, a in zip(rings, areas) if a > 0]
    holes = [r for r, a in zip(rings, areas) if a < 0]
    assert len(outer) == _count_components(mask, connectivity=1)  # regions are 4-connected
    background = ~np.pad(mask, 1)
    assert len(holes) == _count_components(background, connectivity=2) - 1  # holes 8-connected
    for ring in rings:
        assert ring.dtype == np.float32 and ring.ndim == 2 and ring.shape[1] == 2 and len(ring) >= 4
        assert (ring == np.round(ring)).all()
        assert ((ring >= 0) & (ring <= [mask.shape[1], mask.shape[0]])).all()
        step = np.roll(ring, -1, axis=0) - ring
        assert ((step[:, 0] == 0) ^ (step[:, 1] == 0)).all()  # axis-aligned, no repeated vertex
        turn = step[:, 0] * np.roll(step, -1, axis=0)[:, 1] - step[:, 1] * np.roll(step, -1, axis=0)[:, 0]
        assert (turn != 0).all()  # no collinear vertices
        key = ring[:, 1] * (mask.shape[1] + 1) + ring[:, 0]
        assert key[0] == key.min()  # starts at its top-most, then left-most vertex
    starts = [(r[0, 1], r[0, 0]) for r in rings]
    assert starts == sorted(starts)
    kept = mask_to_polygons(mask, holes=False)
    assert len(kept) == len(outer) and all(polygon_signed_area(r) > 0 for r in kept)


@pytest.mark.parametrize("seed", range(6))
def test_polygons_random_masks(seed):
    mask = _random((16, 21), 0.3 + 0.08 * seed, seed=seed)
    np.testing.assert_array_equal(_rasterize_even_odd(mask_to_polygons(mask), mask.shape), mask)


@pytest.mark.parametrize("mask, expected", [
    (np.ones((2, 3), bool), [[[0, 0], [3, 0], [3, 2], [0, 2]]]),
    (_pixel(3, 3, 1, 1), [[[1, 1], [2, 1], [2, 2], [1, 2]]]),
    (np.eye(2, dtype=bool), [[[0, 0], [1, 0], [1, 1], [0, 1]], [[1, 1], [2, 1], [2, 2], [1, 2]]]),
    (_frame(3, 3), [[[0, 0], [3, 0], [3, 3], [0, 3]], [[1, 1], [1, 2], [2, 2], [2, 1]]]),
    (np.zeros((3, 3), bool), []),
])
def test_polygon_vertices(mask, expected):
    assert [r.tolist() for r in mask_to_polygons(mask)] == expected


@pytest.mark.parametrize("value, error, match", [
    (np.zeros((2, 3, 3), bool), ValueError, r"\(H, W\), got \(2, 3, 3\)"),
    (np.full((2, 2), 3), ValueError, "values outside"),
])
def test_mask_to_polygons_errors(value, error, match):
    with pytest.raises(error, match=match):
        mask_to_polygons(value)


def test_polygon_signed_area_errors():
    assert polygon_signed_area([[0, 0], [2, 0], [2, 1], [0, 1]]) == 2.0
    with pytest.raises(ValueError, match=r"\(M, 2\).*got \(4,\)"):
        polygon_signed_area([0, 1, 2, 3])
