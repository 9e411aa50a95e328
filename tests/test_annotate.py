"""The Annotate tab's handlers (demos/annotate.py) on a real project and the tiny model, no browser.

Masks are checked pixel for pixel against SAM's own output for the same prompt (samkit's
Segmenter on the same image), OR the brushed pixels, AND NOT the erased ones.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from samkit.cli.demo import load_demo_module

an = load_demo_module("annotate")
h = load_demo_module("handlers")


def picture(seed: int, size=(72, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((*size, 3), 210, np.uint8)
    image[15:50, 20:60] = rng.integers(0, 255, 3)
    return image


@pytest.fixture(scope="module")
def service(tiny_checkpoint):
    import samkit

    return h.SamService(samkit.Segmenter(samkit.load_model(tiny_checkpoint, device="cpu")), str(tiny_checkpoint))


@pytest.fixture()
def project(tmp_path):
    from samkit.engine.projects import Project

    for i in range(3):
        Image.fromarray(picture(i)).save(tmp_path / f"img{i}.png")
    project = Project.init(tmp_path)
    report = project.add_images(tmp_path)
    assert len(report.added) == 3
    yield project
    project.close()


def sam_mask(service, rgb, points, labels) -> np.ndarray:
    """SAM's mask for one prompt, as the tab must use it: best of three for one point, else single."""
    segmenter = service.segmenter
    result = segmenter.segment(segmenter.encode(rgb), points=np.asarray(points, float), labels=np.asarray(labels),
                               multimask=len(points) == 1)
    return result.masks[0, int(np.argmax(result.scores[0]))]


def edited_layer(value: dict, add: np.ndarray, erase: np.ndarray) -> dict:
    """What the editor sends back after brushing ``add`` and erasing ``erase`` on the layer it got."""
    layer = value["layers"][0].copy()
    layer[add] = (30, 144, 255, 255)
    layer[erase] = 0
    return {"background": value["background"], "layers": [layer], "composite": None}


def test_read_layer_rule():
    layer = np.zeros((4, 5, 4), np.uint8)
    layer[0, 0, 3], layer[1, 1, 3], layer[2, 2, 3] = 127, 128, 255
    second = np.zeros_like(layer)
    second[3, 4, 3] = 200
    got = an.read_layer({"layers": [layer, second]}, (4, 5))
    expected = np.zeros((4, 5), bool)
    expected[1, 1] = expected[2, 2] = expected[3, 4] = True
    np.testing.assert_array_equal(got, expected)
    assert an.read_layer(None, (4, 5)) is None and an.read_layer({"layers": []}, (4, 5)) is None
    with pytest.raises(ValueError, match="5 x 4 px, the image 6 x 4"):
        an.read_layer({"layers": [layer]}, (4, 6))
    with pytest.raises(ValueError, match=r"\(H, W, 4\) RGBA"):
        an.read_layer({"layers": [layer[..., :3]]}, (4, 5))


def test_click_brush_erase_accept_stores_exactly_that_mask(service, project):
    session = an.load_next(service, project, an.AnnotateSession(author="ann"))
    first = session.record
    assert first.id == project.images()[0].id
    rgb = np.asarray(Image.open(first.path).convert("RGB"))
    an.click(service, session, 40, 30, h.MODES[0])
    sam = sam_mask(service, rgb, [[40, 30]], [1])
    np.testing.assert_array_equal(session.sam, sam)
    value = an.editor_value(session)
    np.testing.assert_array_equal(value["layers"][0][..., 3] >= an.OPAQUE, sam)
    add = np.zeros(sam.shape, bool)
    add[60:66, 5:30] = True  # brushed: a stripe (partly outside SAM's mask)
    erase = np.zeros(sam.shape, bool)
    erase[28:34, 35:45] = True  # erased: across the click
    expected = (sam | add) & ~erase
    assert (expected != sam).any()
    annotation_id = an.accept(project, session, " box ", edited_layer(value, add, erase), model_version="v7")
    (stored,) = project.annotations(first.id)
    assert stored.id == annotation_id
    np.testing.assert_array_equal(stored.mask(), expected)
    assert (stored.label, stored.stage, stored.source, stored.author, stored.status) == ("box", 1, "assisted", "ann",
                                                                                           "accepted")
    assert stored.model_version == "v7" and stored.seconds is not None and stored.seconds >= 0
    # the next object starts clean, on the same image
    assert session.record.id == first.id and not an.current_mask(session).any()


def test_a_new_click_keeps_the_corrections(service, project):
    session = an.load_next(service, project, an.AnnotateSession(author="ann"))
    rgb = session.rgb
    an.click(service, session, 40, 30, h.MODES[0])
    add = np.zeros(rgb.shape[:2], bool)
    add[2:6, 2:12] = True
    erase = np.zeros(rgb.shape[:2], bool)
    erase[30:33, 38:42] = True
    an.click(service, session, 10, 60, h.MODES[1], edited_layer(an.editor_value(session), add, erase))
    sam = sam_mask(service, rgb, [[40, 30], [10, 60]], [1, 0])
    np.testing.assert_array_equal(an.current_mask(session), (sam | add) & ~erase)
    # a box: two clicks, decoded once the second corner arrives (points stay part of the prompt)
    an.click(service, session, 15, 10, h.MODES[2], an.editor_value(session))
    assert session.clicks.corner == [15.0, 10.0]
    an.click(service, session, 65, 55, h.MODES[2], an.editor_value(session))
    assert session.clicks.box == [15.0, 10.0, 65.0, 55.0]
    result = service.segmenter.segment(service.segmenter.encode(rgb), points=np.asarray([[40, 30], [10, 60]], float),
                                       labels=np.asarray([1, 0]), boxes=np.asarray([15, 10, 65, 55], float),
                                       multimask=False)
    np.testing.assert_array_equal(an.current_mask(session), (result.masks[0, 0] | add) & ~erase)


def test_only_brushed_is_manual_and_empty_is_refused(service, project):
    session = an.load_next(service, project, an.AnnotateSession(author="ann"))
    value = an.editor_value(session)
    assert not value["layers"][0][..., 3].any()
    with pytest.raises(ValueError, match="mask is empty"):
        an.accept(project, session, "x", value)
    add = np.zeros(session.rgb.shape[:2], bool)
    add[10:20, 10:20] = True
    an.accept(project, session, "", edited_layer(value, add, np.zeros_like(add)))
    (stored,) = project.annotations(session.record.id)
    assert (stored.source, stored.label, stored.model_version) == ("manual", "object", None)
    np.testing.assert_array_equal(stored.mask(), add)


def test_two_annotators_interleaved_keep_their_own_state_and_saves(service, project):
    a = an.load_next(service, project, an.AnnotateSession(author="alice"))
    b = an.load_next(service, project, an.AnnotateSession(author="bob"))
    assert a.record.id == b.record.id  # both start on the first open image
    an.click(service, a, 40, 30, h.MODES[0])
    an.click(service, b, 10, 60, h.MODES[0])
    assert a.clicks.points == [[40.0, 30.0]] and b.clicks.points == [[10.0, 60.0]]
    add = np.zeros(a.rgb.shape[:2], bool)
    add[0:5, 0:5] = True
    ida = an.accept(project, a, "cup", an.editor_value(a))
    idb = an.accept(project, b, "table", edited_layer(an.editor_value(b), add, np.zeros_like(add)))
    assert an.undo(project, a) == ida  # alice's undo withdraws hers, never bob's
    assert an.undo(project, a) is None
    rows = {r.id: r for r in project.annotations(a.record.id)}
    assert rows[ida].status == "withdrawn" and rows[idb].status == "accepted" and rows[idb].author == "bob"
    np.testing.assert_array_equal(rows[idb].mask(), sam_mask(service, b.rgb, [[10, 60]], [1]) | add)


def test_two_annotators_saving_at_once_lose_nothing(service, project):
    sessions = [an.load_next(service, project, an.AnnotateSession(author=name)) for name in ("alice", "bob")]
    saved, errors = {s.author: [] for s in sessions}, []

    def work(session, offset):
        try:
            for i in range(8):
                value = an.editor_value(session)
                add = np.zeros(session.rgb.shape[:2], bool)
                add[i * 4:i * 4 + 3, offset:offset + 10] = True
                saved[session.author].append((an.accept(project, session, f"o{i}", edited_layer(
                    value, add, np.zeros_like(add))), add))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(s, 10 + 40 * k)) for k, s in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = {r.id: r for r in project.annotations(sessions[0].record.id, status="accepted")}
    assert len(rows) == 16
    for author, items in saved.items():
        for annotation_id, add in items:
            assert rows[annotation_id].author == author
            np.testing.assert_array_equal(rows[annotation_id].mask(), add)


def test_next_marks_done_skips_corrupt_images_and_ends(service, project):
    images = project.images()
    images[1].path.write_bytes(b"not an image any more")
    session = an.load_next(service, project, an.AnnotateSession(author="ann"))
    assert session.record.id == images[0].id
    an.next_image(service, project, session)
    assert project.image(images[0].id).done
    assert session.record.id == images[2].id and f"skipped image {images[1].id}" in session.message
    an.next_image(service, project, session)
    assert session.record is None and "no image is left" in session.message
    with pytest.raises(ValueError, match="no image is loaded"):
        an.click(service, session, 1, 1, h.MODES[0])


def test_prefilled_masks_are_reviewed(service, project):
    image = project.images()[0]
    masks = [np.zeros((image.height, image.width), bool) for _ in range(2)]
    masks[0][10:30, 10:30] = True
    masks[1][40:60, 50:80] = True
    ids = [project.add_annotation(image.id, m, stage=2, source="prefill", status="pending", score=0.9,
                                  author="prefill") for m in masks]
    session = an.load_next(service, project, an.AnnotateSession(author="ann"))
    assert [i for _, i in an._pending_choices(project, session)] == ids
    session.review = ids[1]
    over = an.overlay(project, session)
    assert over.shape == (*masks[0].shape, 3) and (over[masks[1]] != session.rgb[masks[1]]).any()
    assert an.decide_prefill(project, session, "rejected") == ids[1]
    assert an.decide_prefill(project, session, "accepted") == ids[0]
    assert {r.id: r.status for r in project.annotations(image.id)} == {ids[0]: "accepted", ids[1]: "rejected"}
    with pytest.raises(ValueError, match="no pending"):
        an.decide_prefill(project, session, "accepted")


def test_model_version_and_edits_json(service, project, tiny_checkpoint):
    import json

    from samkit.rle import rle_to_mask

    assert an.model_version_for(project, str(tiny_checkpoint)) is None
    version = project.register_model(tiny_checkpoint)
    assert an.model_version_for(project, str(tiny_checkpoint)) == version
    session = an.load_next(service, project, an.AnnotateSession(author="ann"))
    an.click(service, session, 40, 30, h.MODES[0])
    data = json.loads(an._edits_json(session))
    np.testing.assert_array_equal(rle_to_mask(data["mask"]), an.current_mask(session))
    np.testing.assert_array_equal(rle_to_mask(data["sam"]), session.sam)


def test_cli_demo_project_options_are_checked(tmp_path, capsys):
    from samkit.cli import main

    assert main(["demo", "--project", str(tmp_path)]) != 0  # not a project: refused before anything starts
    assert "project" in capsys.readouterr().err.lower()
    assert main(["demo", "--web", "--project", str(tmp_path), "image.png"]) != 0
    assert "--project and --author go with the Gradio demo" in capsys.readouterr().err
