"""samkit.formats: what real readers (pycocotools, PIL, a plain YOLO-seg parser) read back from our files.

RLE encoding itself is covered by test_rle.py, Segmentation's own exports by test_results.py;
here each file format is written and read back by the client that consumes it.
"""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from samkit.formats import (
    category_of,
    coco_annotations,
    coco_dataset,
    coco_results,
    json_default,
    mask_png_bytes,
    mask_to_polygons,
    normalize_categories,
    read_mask_png,
    read_sa1b_json,
    read_yolo_seg,
    save_mask_png,
    save_masks_zip,
    to_python,
    write_coco_json,
    write_sa1b_json,
    write_yolo_seg,
    yolo_seg_lines,
)
from samkit.formats.polygons import polygon_signed_area
from samkit.results import Segmentation

H, W = 40, 56
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2


def blob_masks(n: int = 4, seed: int = 0) -> np.ndarray:
    """Random filled ellipses (some touching the border), bool (n, H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    masks = np.zeros((n, H, W), bool)
    for i in range(n):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        ry, rx = rng.uniform(4, 14), rng.uniform(4, 18)
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


# -- COCO -----------------------------------------------------------------------------------------
def test_coco_dataset_reads_back_in_pycocotools_and_evaluates(tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    masks = [blob_masks(4, seed=1), blob_masks(3, seed=2)]
    names = ["cat", "dog"]
    images = [{"id": 11, "file_name": "a.png", "height": H, "width": W},
              {"id": 12, "file_name": "b.png", "height": H, "width": W}]
    annotations = []
    for image, m in zip(images, masks):
        meta = [{"label": names[i % 2]} for i in range(len(m))]
        annotations += coco_annotations(m, np.linspace(0.9, 0.5, len(m)), meta, image["id"], categories=names)
    dataset = coco_dataset(images, annotations, names, info={"description": "test"})
    path = write_coco_json(tmp_path / "gt.json", dataset)
    gt = coco_module.COCO(str(path))
    assert sorted(gt.getImgIds()) == [11, 12] and sorted(gt.getCatIds()) == [1, 2]
    assert [a["id"] for a in dataset["annotations"]] == list(range(1, 8))
    for image, m in zip(images, masks):
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image["id"]]))
        for ann, mask in zip(anns, m):
            np.testing.assert_array_equal(gt.annToMask(ann).astype(bool), mask)
            assert ann["area"] == int(mask.sum())
            assert ann["category_id"] == gt.getCatIds(catNms=[names[anns.index(ann) % 2]])[0]

    def evaluate(results):
        detections = gt.loadRes(json.loads(json.dumps(results)))
        run = cocoeval.COCOeval(gt, detections, "segm")
        run.params.areaRng = [[0, 1e10]] * 4  # every mask counts as small, medium and large
        run.evaluate(); run.accumulate(); run.summarize()
        return run.stats[0]

    assert evaluate(coco_results(dataset["annotations"])) == pytest.approx(1.0)
    wrong = [dict(r, category_id=3 - r["category_id"]) for r in coco_results(dataset["annotations"])]
    assert evaluate(wrong) < 0.5


@pytest.mark.parametrize("meta, categories, category_id, expected", [
    ({"category_id": 7}, None, 1, 7),
    ({"category_id": 2, "label": "cat"}, ["cat", "dog"], None, 2),  # an explicit category id wins
    ({"label": "dog", "class_id": 0}, ["cat", "dog"], None, 2),  # the name wins over the detector's index
    ({"class_name": "dog"}, ["cat", "dog"], None, 2),
    ({"label": "cow", "class_id": 1}, ["cat", "dog"], None, 1),  # unknown name: the class id, when a category
    ({"class_id": 3}, {0: "person", 3: "car"}, None, 3),
    ({"class_id": 5}, None, 1, 5),
    ({"label": "cat"}, None, 4, 4),  # without a list labels are not read
    ({}, None, 9, 9),
    ({}, ["object"], None, 1),  # the only category
    ({}, [{"id": 4, "name": "a"}, {"id": 6, "name": "b"}], 6, 6),
    ({"label": "cow"}, ["cat", "dog"], None, "which match no category"),
    ({"label": "cow"}, ["object"], None, "which match no category"),  # a label never falls back
    ({}, ["cat", "dog"], None, "which match no category"),
    ({}, None, None, "which match no category"),
    ({"category_id": 5}, ["cat", "dog"], None, "meta 'category_id' 5 is not a category id"),
    ({"class_id": 5}, ["cat", "dog"], None, "meta 'class_id' 5 is not a category id"),
    ({}, ["cat", "dog"], 3, "category_id argument 3 is not a category id"),
])
def test_category_rule(meta, categories, category_id, expected):
    cats = None if categories is None else normalize_categories(categories)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            category_of(meta, cats, category_id)
    else:
        assert category_of(meta, cats, category_id) == expected


def test_every_coco_writer_follows_the_one_rule(tmp_path):
    from samkit.pipelines import to_coco_instances, write_coco_instances

    masks = blob_masks(4, seed=3)
    meta = [{"label": "dog", "class_id": 0}, {"category_id": 1}, {"label": "zebra", "class_id": 7}, {"class_id": 1}]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    seg = Segmentation(masks, np.linspace(0.9, 0.6, 4), meta=meta)
    expected = [2, 1, None, 1]  # mask 2: unknown label, and class id 7 is no category
    with pytest.raises(ValueError, match="mask 2 of image 5"):
        seg.to_coco(5, categories=categories)
    with pytest.raises(ValueError, match="mask 2 of image 5"):
        to_coco_instances([seg], [5], categories)
    with pytest.raises(ValueError, match="mask 2 of image 5"):
        write_coco_instances(tmp_path / "x.json", [({"id": 5}, seg)], categories)
    keep = np.array([0, 1, 3])
    direct = seg[keep].to_coco(5, categories=categories)
    pipeline = to_coco_instances([seg[keep]], [5], categories)["annotations"]
    write_coco_instances(tmp_path / "y.json", [({"id": 5}, seg[keep])], categories)
    written = json.loads((tmp_path / "y.json").read_text())["annotations"]
    for annotations in (direct, pipeline, written):
        assert [a["category_id"] for a in annotations] == [expected[i] for i in keep]
    assert direct == json.loads(json.dumps(pipeline)) == written


def test_coco_annotations_equal_segmentation_to_coco():
    masks = np.stack([blob_masks(3, seed=4), blob_masks(3, seed=5)], axis=1)  # (3, 2, H, W)
    seg = Segmentation(masks, np.array([[0.2, 0.9], [0.8, 0.1], [0.5, 0.6]]), meta=[{"score": 0.3}, {}, {}])
    best = seg.best()
    assert seg.to_coco(2, score_key="score") == coco_annotations(
        best.masks[:, 0], best.scores[:, 0], best.meta, 2, category_id=1, score_key="score")
    assert seg.to_coco(2, score_key="score")[0]["score"] == 0.3


@pytest.mark.parametrize("call, error, match", [
    (lambda: coco_annotations(np.zeros((H, W), bool), [1.0], None, 1), ValueError, r"\(M, H, W\)"),
    (lambda: coco_annotations(np.zeros((2, H, W), bool), [1.0], None, 1), ValueError, "one score and one meta"),
    (lambda: coco_dataset([{"id": 1}, {"id": 1}], [], ["a"]), ValueError, "image ids must differ"),
    (lambda: coco_dataset([{"file_name": "a"}], [], ["a"]), ValueError, "needs an 'id'"),
    (lambda: coco_dataset([{"id": 1}], [{"image_id": 2, "category_id": 1}], ["a"]), ValueError, "not among"),
    (lambda: coco_dataset([{"id": 1}], [{"image_id": 1, "category_id": 9}], ["a"]), ValueError, "categories are"),
    (lambda: normalize_categories([3]), TypeError, "names or"),
    (lambda: normalize_categories([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]), ValueError, "must differ"),
])
def test_coco_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- SA-1B ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_sa1b_json_decodes_with_pycocotools(tmp_path, output_mode):
    mask_utils = pytest.importorskip("pycocotools.mask")
    masks = blob_masks(3, seed=6)
    seg = Segmentation(masks, [0.9, 0.8, 0.7], meta=[{"stability_score": 0.5}] * 3)
    path = write_sa1b_json(tmp_path / "sa_1.json", {"image_id": 1, "file_name": "sa_1.jpg"},
                           seg.to_records(output_mode), extra={"samkit": {"settings_sha256": "x"}})
    data = read_sa1b_json(path)
    assert data["image"] == {"image_id": 1, "file_name": "sa_1.jpg", "height": H, "width": W}
    assert data["samkit"] == {"settings_sha256": "x"}
    assert [a["id"] for a in data["annotations"]] == [0, 1, 2]
    for annotation, mask in zip(data["annotations"], masks):
        rle = annotation["segmentation"]
        assert isinstance(rle["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode(dict(rle, counts=rle["counts"].encode())).astype(bool), mask)
        assert annotation["stability_score"] == 0.5 and annotation["area"] == int(mask.sum())
    assert read_sa1b_json(write_sa1b_json(tmp_path / "seg.json", {"image_id": 2}, seg))["annotations"][2]["area"] \
        == int(masks[2].sum())  # a Segmentation is taken as its records


def test_sa1b_errors(tmp_path):
    with pytest.raises(ValueError, match="must not replace"):
        write_sa1b_json(tmp_path / "a.json", {"image_id": 1}, [], extra={"image": {}})
    with pytest.raises(ValueError, match="no 'segmentation'"):
        write_sa1b_json(tmp_path / "a.json", {"image_id": 1}, [{"area": 3}])
    (tmp_path / "b.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not an SA-1B per-image file"):
        read_sa1b_json(tmp_path / "b.json")
    assert not (tmp_path / "a.json").exists()


# -- PNG ------------------------------------------------------------------------------------------
def test_png_and_zip_read_back_with_pil(tmp_path):
    masks = blob_masks(3, seed=7)
    path = save_mask_png(masks[0], tmp_path / "m.png")
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (W, H)
        pixels = np.asarray(image)
    assert set(np.unique(pixels)) <= {0, 255}
    np.testing.assert_array_equal(pixels == 255, masks[0])
    np.testing.assert_array_equal(read_mask_png(mask_png_bytes(masks[1])), masks[1])
    archive = save_masks_zip(masks, tmp_path / "m.zip", names=["a.png", "b.png", "c.png"])
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["a.png", "b.png", "c.png"]
        for name, mask in zip(z.namelist(), masks):
            with z.open(name) as file, Image.open(file) as image:
                np.testing.assert_array_equal(np.asarray(image) > 0, mask)


@pytest.mark.parametrize("call, match", [
    (lambda p: save_mask_png(np.zeros((2, H, W), bool), p / "x.png"), r"\(H, W\)"),
    (lambda p: save_masks_zip(np.zeros((H, W), bool), p / "x.zip"), r"\(M, H, W\)"),
    (lambda p: save_masks_zip(np.zeros((2, H, W), bool), p / "x.zip", names=["a"]), "one name per mask"),
    (lambda p: save_masks_zip(np.zeros((2, H, W), bool), p / "x.zip", names=["a", "a"]), "must differ"),
    (lambda p: save_mask_png(np.full((H, W), 3), p / "x.png"), "values outside"),
])
def test_png_errors(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path)


# -- YOLO-seg -------------------------------------------------------------------------------------
def parse_yolo_lines(text: str, w: int, h: int) -> list[tuple[int, np.ndarray]]:
    """A plain reader of the YOLO-seg format, as a training loader does it."""
    out = []
    for line in text.splitlines():
        values = line.split()
        coords = np.array(values[1:], dtype=np.float64).reshape(-1, 2)
        assert ((coords >= 0) & (coords <= 1)).all()
        out.append((int(values[0]), coords * [w, h]))
    return out


def test_yolo_seg_parses_back_to_the_mask_outlines(tmp_path):
    masks = blob_masks(4, seed=8)
    masks[3] = False  # an empty mask writes no line
    path = tmp_path / "labels.txt"
    assert write_yolo_seg(path, masks, [0, 5, 2, 1]) == 3
    parsed = parse_yolo_lines(path.read_text(), W, H)
    assert [c for c, _ in parsed] == [0, 5, 2]
    for (_, polygon), mask in zip(parsed, masks):
        rings = mask_to_polygons(mask, holes=False)
        largest = max(rings, key=polygon_signed_area)
        np.testing.assert_allclose(polygon, largest, atol=1e-6 * max(H, W))
        if len(rings) == 1:
            assert polygon_signed_area(polygon) == pytest.approx(mask.sum(), abs=1e-3)
    ours = read_yolo_seg(path, (H, W))
    for (c, polygon), (c2, polygon2) in zip(ours, parsed):
        assert c == c2
        np.testing.assert_allclose(polygon, polygon2)


def test_yolo_seg_multipart():
    two = np.zeros((1, 10, 20), bool)
    two[0, 1:3, 1:3] = True
    two[0, 5:9, 10:18] = True
    assert len(yolo_seg_lines(two, [0])) == 1 and len(yolo_seg_lines(two, [0], multipart="all")) == 2
    largest = np.array(yolo_seg_lines(two, [0])[0].split()[1:], dtype=float).reshape(-1, 2) * [20, 10]
    assert polygon_signed_area(largest) == pytest.approx(32.0)


@pytest.mark.parametrize("masks, ids, kwargs, match", [
    (np.zeros((1, 4, 4), bool), [0], {"multipart": "some"}, "multipart must be one of"),
    (np.zeros((4, 4), bool), [0], {}, r"\(M, H, W\)"),
    (np.zeros((2, 4, 4), bool), [0], {}, "one id per mask"),
    (np.zeros((1, 4, 4), bool), [-1], {}, "integers >= 0"),
    (np.zeros((1, 4, 4), bool), [1.5], {}, "integers >= 0"),
])
def test_yolo_seg_errors(masks, ids, kwargs, match):
    with pytest.raises(ValueError, match=match):
        yolo_seg_lines(masks, ids, **kwargs)


def test_read_yolo_seg_errors(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("0 0.1 0.2 0.3 0.4\n")
    with pytest.raises(ValueError, match="line 1: expected a class id"):
        read_yolo_seg(path, (10, 10))


# -- JSON values ----------------------------------------------------------------------------------
def test_to_python_and_json_default():
    torch = pytest.importorskip("torch")
    assert to_python(np.float32(0.5)) == 0.5 and type(to_python(np.int64(3))) is int
    assert to_python(np.arange(4).reshape(2, 2)) == [[0, 1], [2, 3]]
    assert to_python(torch.tensor([1.5, 2.0], dtype=torch.bfloat16)) == [1.5, 2.0]
    assert to_python("x") == "x"
    assert json.dumps({"a": np.float64(1.0), "b": np.array([1, 2])}, default=json_default) == '{"a": 1.0, "b": [1, 2]}'
    with pytest.raises(TypeError, match="cannot write object"):
        json.dumps({"a": object()}, default=json_default)
