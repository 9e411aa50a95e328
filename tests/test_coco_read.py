"""samkit.formats.coco_read: the one COCO instances reader, against pycocotools and on bad input."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from samkit.formats import (
    CocoAnnotationError,
    load_coco_json,
    masks_to_coco_rle,
    masks_to_rle,
    parse_coco_instances,
    read_coco_instances,
    segmentation_to_mask,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2


def _blob(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, h / 2), rng.uniform(3, w / 2)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _dataset() -> dict:
    """Two images; polygons (fractional, several per annotation, past the border), both RLE forms, a crowd."""
    blob_a, blob_b, crowd = _blob(30, 41, 0), _blob(17, 23, 1), _blob(30, 41, 2)
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 30, "width": 41},
                   {"id": 2, "file_name": "b.png", "height": 17, "width": 23}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1,
             "segmentation": [[2.5, 3.2, 20.7, 1.1, 15.3, 18.9, 4.4, 12.0]]},
            {"id": 11, "image_id": 1, "category_id": 2,
             "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10], [25.5, 20.5, 45, 22, 30, 31.5],
                              [12, 14, 13, 14, 12.5, 15]]},
            {"id": 12, "image_id": 2, "category_id": 1, "segmentation": masks_to_rle(blob_b)[0]},
            {"id": 13, "image_id": 1, "category_id": 2, "segmentation": masks_to_coco_rle(blob_a)[0],
             "bbox": [1, 2, 3, 4]},
            {"id": 14, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": masks_to_rle(crowd)[0]},
            {"id": 15, "image_id": 2, "category_id": 2,
             "segmentation": [[3.0, 3.0, 19.25, 4.75, 11.5, 15.5, 11.5, 9.0, 3.0, 14.0]]},
        ],
    }


def test_masks_and_boxes_equal_pycocotools(tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco")
    mask_utils = pytest.importorskip("pycocotools.mask")
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_dataset()))
    reference = coco_module.COCO(str(path))
    coco = read_coco_instances(path)
    assert [image.id for image in coco.images] == [1, 2] and len(coco.annotations) == 6 and not coco.rejected
    sizes = {image.id: (image.height, image.width) for image in coco.images}
    for annotation in coco.annotations:
        expected = reference.annToMask(reference.anns[annotation.id]).astype(bool)
        got = annotation.mask(*sizes[annotation.image_id])
        assert got.dtype == bool and got.shape == expected.shape and got.flags.c_contiguous
        assert np.array_equal(got, expected), annotation.where
        assert expected.any()
        box = mask_utils.toBbox(reference.annToRLE(reference.anns[annotation.id])).tolist()
        assert annotation.box(*sizes[annotation.image_id]) == (box if annotation.bbox is None else [1, 2, 3, 4])
    assert [a.iscrowd for a in coco.annotations] == [False, False, False, False, True, False]
    assert {k: [a.id for a in v] for k, v in coco.by_image().items()} == {1: [10, 11, 13, 14], 2: [12, 15]}


def test_a_dict_reads_like_its_file(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_dataset()))
    from_file, from_dict = read_coco_instances(path), read_coco_instances(_dataset())
    assert from_file.name == str(path) and from_dict.name == ""
    assert [a.raw for a in from_file.annotations] == [a.raw for a in from_dict.annotations]
    assert from_file.annotations[0].where == f"{path}: annotation 10"
    assert from_dict.annotations[0].where == "annotation 10"


def _change(edit):
    data = _dataset()
    edit(data)
    return data


def _set_annotation(index: int, **fields):
    return lambda data: data["annotations"][index].update(fields)


def _drop_annotation_key(index: int, key: str):
    return lambda data: data["annotations"][index].pop(key)


BAD = [
    # top level, images, categories
    (lambda d: d.clear(), r"expected a COCO JSON object with an 'images' list, got dict with keys \[\]"),
    (lambda d: d.update(images={"id": 1}), "with an 'images' list, got dict"),
    (lambda d: d.update(annotations={}), "'annotations' must be a list, got dict"),
    (lambda d: d["images"][1].pop("id"), r"images\[1\] must be an object with an int or str 'id', got id None"),
    (lambda d: d["images"][0].update(id=[1]), r"images\[0\] must be an object .* got id \[1\]"),
    (lambda d: d["images"][0].update(height="30"), "image 1: 'height' must be an int >= 1, got '30'"),
    (lambda d: d["images"][1].update(width=0), "image 2: 'width' must be an int >= 1, got 0"),
    (lambda d: d["images"][0].update(file_name=3), "image 1: 'file_name' must be a str, got 3"),
    (lambda d: d["images"][1].update(id=1), "image ids must differ, got 1 twice"),
    (lambda d: d["categories"][0].pop("name"), r"categories\[0\] must be an object with an int 'id' and a str 'name'"),
    (lambda d: d["categories"][1].update(id=1), "category ids must differ, got 1 twice"),
    # annotations: missing keys, wrong types, references
    (lambda d: d["annotations"].append([1, 2]), r"annotations\[6\] must be an object, got list"),
    (_set_annotation(0, id=1.5), r"annotations\[0\] has id 1.5; expected an int or str"),
    (_drop_annotation_key(1, "image_id"), r"annotation 11 needs an 'image_id', got keys \['category_id', 'id', "),
    (_set_annotation(1, image_id=3), "annotation 11 names image 3, which is not among the images"),
    (_set_annotation(1, image_id="1"), "annotation 11 names image '1', which is not among the images"),
    (_set_annotation(2, category_id=7), r"annotation 12 names category 7; categories are \[1, 2\]"),
    (_drop_annotation_key(2, "category_id"), r"annotation 12 needs a 'category_id'; categories are \[1, 2\]"),
    (_set_annotation(2, category_id="1"), "annotation 12 has category_id '1'; expected an int"),
    (_set_annotation(0, iscrowd=2), "annotation 10 has iscrowd 2; expected 0 or 1"),
    (_set_annotation(0, area="12"), "annotation 10 has area '12'; expected a finite number >= 0"),
    (_set_annotation(0, area=math.nan), "annotation 10 has area nan; expected a finite number"),
    (_set_annotation(0, bbox=[1, 2, 3]), r"annotation 10 has bbox \[1, 2, 3\]; expected \[x, y, w, h\]"),
    (_set_annotation(0, bbox=[1, 2, -3, 4]), r"has bbox \[1, 2, -3, 4\]; expected .* w and h >= 0"),
    (_drop_annotation_key(3, "segmentation"), "annotation 13 needs a 'segmentation', got keys"),
    # segmentations
    (_set_annotation(0, segmentation=7), "annotation 10 has a bad segmentation: segmentation must be a list of "
                                         r"polygons .* or an RLE dict .*, got int"),
    (_set_annotation(0, segmentation=[[1, 2, 3, 4, 5, 6, 7]]), "polygon 0 must have an even number of coordinates "
                                                               r"\(x, y pairs\), got 7"),
    (_set_annotation(1, segmentation=[[0, 0, 4, 0, 4, 4], [1, 1, 2, 2]]), "polygon 1 needs at least 3 points"),
    (_set_annotation(0, segmentation=[[0, 0, 4, math.nan, 4, 4]]), "polygon 0 must hold finite numbers, got nan"),
    (_set_annotation(0, segmentation=[[0, 0, 4, math.inf, 4, 4]]), "polygon 0 must hold finite numbers, got inf"),
    (_set_annotation(0, segmentation=[[0, 0, "4", 0, 4, 4]]), r"polygon 0 must be a list of numbers \[x0, y0"),
    (_set_annotation(0, segmentation=[[0, 0, True, 0, 4, 4]]), "polygon 0 must be a list of numbers"),
    (_set_annotation(0, segmentation=[[[0, 0], [4, 0], [4, 4]]]), "polygon 0 must be a list of numbers"),
    (_set_annotation(0, segmentation=[0, 0, 4, 0, 4, 4]), "polygon 0 must be a list of numbers"),
    (_set_annotation(2, segmentation={"counts": [391]}), r"an RLE needs 'size' and 'counts', got keys \['counts'\]"),
    (_set_annotation(2, segmentation={"size": [17], "counts": [391]}), r"RLE size must be \[H, W\] with ints >= 0"),
    (_set_annotation(2, segmentation={"size": [17, 23], "counts": [390.5, 1]}),
     r"RLE counts must be a str \(compressed\) or a list of ints >= 0 \(uncompressed\), got list"),
    (_set_annotation(2, segmentation={"size": [17, 23], "counts": [-1, 392]}), "RLE counts must be a str"),
]


@pytest.mark.parametrize("edit, match", BAD)
def test_bad_json_is_a_clear_value_error_naming_the_file(tmp_path, edit, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_change(edit)))
    with pytest.raises(ValueError, match=match) as error:
        read_coco_instances(path)
    assert str(error.value).startswith(f"{path}: ")


def test_annotation_errors_carry_the_annotation_and_its_image():
    data = _change(_set_annotation(1, segmentation=[[1, 2, 3]]))
    with pytest.raises(CocoAnnotationError) as error:
        parse_coco_instances(data)
    assert (error.value.index, error.value.image_id, error.value.raw["id"]) == (1, 1, 11)
    orphan = _change(_set_annotation(4, image_id=99))
    with pytest.raises(CocoAnnotationError) as error:
        parse_coco_instances(orphan)
    assert error.value.image_id is None


def test_collect_keeps_the_good_annotations_and_lists_the_bad():
    data = _dataset()
    data["annotations"][1]["segmentation"] = [[1, 2, 3]]
    data["annotations"][4]["image_id"] = 99
    data["annotations"][5]["category_id"] = 9
    coco = parse_coco_instances(data, name="x.json", errors="collect")
    assert [a.id for a in coco.annotations] == [10, 12, 13]
    assert [(e.index, e.image_id) for e in coco.rejected] == [(1, 1), (4, None), (5, 2)]
    assert str(coco.rejected[1]) == "x.json: annotation 14 names image 99, which is not among the images"
    unchecked = parse_coco_instances(data, errors="collect", check_categories=False)
    assert [a.id for a in unchecked.annotations] == [10, 12, 13, 15] and len(unchecked.rejected) == 2
    with pytest.raises(ValueError, match="errors must be 'raise' or 'collect', got 'skip'"):
        parse_coco_instances(data, errors="skip")


def test_optional_fields_and_defaults():
    data = {"images": [{"id": "a"}], "annotations": [{"image_id": "a", "segmentation": []}]}
    (annotation,) = parse_coco_instances(data).annotations
    assert (annotation.id, annotation.category_id, annotation.iscrowd, annotation.area, annotation.bbox) == \
        (None, None, False, None, None)
    assert annotation.where == "annotations[0]"
    assert not annotation.mask(3, 4).any() and annotation.mask(3, 4).shape == (3, 4)
    assert annotation.box(3, 4) == [0.0, 0.0, 0.0, 0.0]
    image = parse_coco_instances(data).images[0]
    assert (image.file_name, image.height, image.width) == (None, None, None)
    assert parse_coco_instances({"images": [], "annotations": None, "categories": None}).annotations == []


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="COCO instances file not found: .*missing.json"):
        load_coco_json(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not a JSON file"):
        read_coco_instances(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="list.json: expected a COCO JSON object with an 'images' list, got list"):
        read_coco_instances(tmp_path / "list.json")


def test_segmentation_to_mask_checks_the_image_size():
    rle = masks_to_rle(np.eye(3, 4, dtype=bool))[0]
    assert np.array_equal(segmentation_to_mask(rle, 3, 4), np.eye(3, 4, dtype=bool))
    with pytest.raises(ValueError, match=r"RLE size \[3, 4\] differs from the image's \[H, W\] = \[4, 3\]"):
        segmentation_to_mask(rle, 4, 3)
    with pytest.raises(ValueError, match="RLE counts must add up to H \\* W = 12"):
        segmentation_to_mask({"size": [3, 4], "counts": [5, 2]}, 3, 4)
    annotation = parse_coco_instances({"images": [{"id": 1}], "annotations": [
        {"id": 4, "image_id": 1, "segmentation": rle}]}, name="f.json").annotations[0]
    with pytest.raises(ValueError, match=r"^f.json: annotation 4: RLE size \[3, 4\] differs"):
        annotation.mask(5, 5)


def test_polygons_without_pycocotools(hide_pycocotools):
    hide_pycocotools()
    square = [[1, 1, 3, 1, 3, 3, 1, 3], [0, 3, 1, 3, 1, 4, 0, 4]]
    with pytest.raises(ImportError, match=r"pip install samkit\[eval\]"):
        segmentation_to_mask(square, 4, 4)
    seen = []

    def rasterize(vertices, height, width):
        seen.append(vertices.tolist())
        out = np.zeros((height, width), dtype=bool)
        x0, y0 = vertices.min(axis=0).astype(int)
        x1, y1 = vertices.max(axis=0).astype(int)
        out[y0:y1, x0:x1] = True
        return out

    mask = segmentation_to_mask(square, 4, 4, polygon_fallback=rasterize)
    assert seen == [[[1, 1], [3, 1], [3, 3], [1, 3]], [[0, 3], [1, 3], [1, 4], [0, 4]]]
    assert mask.astype(int).tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 0]]
    rle = masks_to_coco_rle(mask)[0]  # RLE needs no pycocotools
    assert np.array_equal(segmentation_to_mask(rle, 4, 4), mask)


def test_the_three_readers_give_the_same_masks(tmp_path):
    pytest.importorskip("pycocotools")
    from PIL import Image

    from samkit.engine.projects.io import read_coco
    from samkit.eval import CocoDataset
    from samkit.formats import rle_to_mask
    from samkit.train import CocoInstances

    data = _dataset()
    for image in data["images"]:
        Image.fromarray(np.zeros((image["height"], image["width"], 3), np.uint8)).save(tmp_path / image["file_name"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    coco = read_coco_instances(path)
    sizes = {image.id: (image.height, image.width) for image in coco.images}
    expected = {i: [a.mask(*sizes[i]) for a in anns] for i, anns in coco.by_image().items()}
    project = {entry.path.name: [rle_to_mask(rle) for _, rle in entry.annotations] for entry in read_coco(path)}
    evaluation = CocoDataset(path)
    training = CocoInstances(path, tmp_path, include_crowd=True)
    for k, image in enumerate(data["images"]):
        want = np.stack(expected[image["id"]])
        assert np.array_equal(np.stack(project[image["file_name"]]), want)
        assert np.array_equal(evaluation.load(evaluation.images[k]).masks, want)
        assert np.array_equal(training[k][1], want)
    assert [label for label, _ in read_coco(path)[1].annotations] == ["cat", "dog"]


def test_inputs_are_not_modified():
    data = _dataset()
    before = copy.deepcopy(data)
    coco = parse_coco_instances(data)
    coco.annotations[0].raw["id"] = 99
    assert data == before
