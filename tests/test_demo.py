"""The Gradio demo: each tab's API through ``gradio_client`` on a live local server, plus its logic.

The app runs in a background thread on 127.0.0.1 with a tiny random checkpoint, offline.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs gradio: pip install samkit[demo]")
gradio_client = pytest.importorskip("gradio_client", reason="the API tests need gradio_client")

from samkit.cli.demo import load_demo_module  # noqa: E402
from samkit.rle import rle_to_mask  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scene(seed: int = 0, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((*size, 3), 220, np.uint8)
    x = int(rng.integers(0, size[1] - 40))
    image[20:70, x:x + 40] = (200, 120, 40)
    return image


def fake_phrase_detector(image: np.ndarray, phrases: list[str]):
    """A phrase detector stand-in: the first phrase at a fixed box, the others nowhere."""
    return [[10, 10, 60, 50]], [0.8], [phrases[0]]


def fake_detector(image: np.ndarray):
    """A detector stand-in: two fixed boxes with scores and labels (as a plain function may return)."""
    return [[10, 10, 60, 50], [40, 30, 120, 90]], [0.9, 0.6], ["cube", "shadow"]


@pytest.fixture(scope="module")
def demo():
    return load_demo_module()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from samkit.weights import write_random_checkpoint

    root = tmp_path_factory.mktemp("demo")
    write_random_checkpoint(root / "tiny.pth", "tiny", seed=0)
    Image.fromarray(scene(0)).save(root / "scene.png")
    Image.fromarray(scene(1)).save(root / "other.png")
    for i in range(4):
        Image.fromarray(scene(0)).save(root / f"frame{i}.png")
    t = np.arange(0, 0.2, 0.004)  # 50 samples at 250 Hz resting on one spot: one fixation
    rows = "\n".join(f"{v:.3f},{60 + 0.5 * np.sin(40 * v):.2f},{45:.2f}" for v in t)
    (root / "gaze.csv").write_text("t,x,y\n" + rows + "\n")
    return root


@pytest.fixture(scope="module")
def server(demo, files):
    app = demo.build_app(str(files / "tiny.pth"), device="cpu", detectors={"Fixed boxes (test)": fake_detector},
                         phrase_detectors={"Fixed phrase box (test)": fake_phrase_detector})
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield app, url
    app.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server[1], verbose=False)


@pytest.fixture(scope="module")
def segmenter(files):
    import samkit

    return samkit.Segmenter(samkit.load_model(files / "tiny.pth"))


def read_mask(path: str) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def test_each_tab_has_one_named_endpoint(demo, client):
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    text = {"/text"} if demo.prompt_sources.text_available() else set()
    assert endpoints == {"/segment", "/everything", "/detect_segment", "/gaze"} | text


def test_segment_api_matches_the_python_api(client, files, segmenter):
    handle = gradio_client.handle_file(str(files / "scene.png"))
    prompts = json.dumps({"points": [[70, 40], [10, 90]], "labels": [1, 0]})
    overlay, candidates, mask_file, coco_file, prompts_out, info, *_ = client.predict(
        handle, prompts, True, api_name="/segment")
    expected = segmenter.segment(segmenter.encode(scene(0)), points=[[70, 40], [10, 90]], labels=[1, 0])
    best = int(np.argmax(expected.scores[0]))
    assert candidates["value"] == best and len(candidates["choices"]) == 3
    assert f"{expected.scores[0, best]:.3f}" in candidates["choices"][best][0]
    np.testing.assert_array_equal(read_mask(mask_file), expected.masks[0, best])
    coco = json.loads(open(coco_file).read())
    assert coco["images"][0]["height"] == 96 and len(coco["annotations"]) == 1
    np.testing.assert_array_equal(rle_to_mask(coco["annotations"][0]["segmentation"]), expected.masks[0, best])
    assert json.loads(prompts_out) == {"points": [[70.0, 40.0], [10.0, 90.0]], "labels": [1, 0], "box": None}
    picture = np.asarray(Image.open(overlay).convert("RGB"))
    assert picture.shape == (96, 128, 3) and not np.array_equal(picture, scene(0))
    assert "predicted IoU" in info


def test_segment_api_box_single_mask(client, files, segmenter):
    handle = gradio_client.handle_file(str(files / "scene.png"))
    _, candidates, mask_file, *_ = client.predict(handle, json.dumps({"box": [20, 10, 90, 80]}), False,
                                                  api_name="/segment")
    expected = segmenter.segment(segmenter.encode(scene(0)), boxes=[20, 10, 90, 80], multimask=False)
    assert len(candidates["choices"]) == 1
    np.testing.assert_array_equal(read_mask(mask_file), expected.masks[0, 0])


@pytest.mark.parametrize("prompts, message", [
    ("{not json", "prompts must be JSON"),
    ('{"points": [[1, 2, 3]]}', "points must be [[x, y], ...]"),
    ('{"points": [[1, 2]], "labels": [3]}', "labels must hold one 1 (foreground) or 0 (background)"),
    ('{"box": [5, 5, 1, 1]}', "box must be [x0, y0, x1, y1] with x1 > x0"),
])
def test_segment_api_bad_prompts_say_what_was_expected(client, files, prompts, message):
    with pytest.raises(Exception, match=re.escape(message)):
        client.predict(gradio_client.handle_file(str(files / "scene.png")), prompts, True, api_name="/segment")


def test_everything_api(client, files, segmenter):
    from samkit.pipelines.everything import SegmentEverything

    overlay, info, zip_file, coco_file = client.predict(gradio_client.handle_file(str(files / "scene.png")),
                                                        "proposals", 4, api_name="/everything")
    expected = SegmentEverything.preset("proposals", segmenter, points_per_side=4)(scene(0))
    assert info.startswith(f"{len(expected)} mask")
    with zipfile.ZipFile(zip_file) as archive:
        assert len(archive.namelist()) == len(expected)
    coco = json.loads(open(coco_file).read())
    assert len(coco["annotations"]) == len(expected)
    assert np.asarray(Image.open(overlay)).shape[:2] == (96, 128)


def test_detect_segment_api_with_an_injected_detector(client, files):
    overlay, rows, zip_file, coco_file = client.predict(
        gradio_client.handle_file(str(files / "scene.png")), "Fixed boxes (test)", "", "", 0.5,
        api_name="/detect_segment")
    assert [r["label"] for r in rows] == ["cube", "shadow"]
    assert [r["score"] for r in rows] == pytest.approx([0.9, 0.6])
    coco = json.loads(open(coco_file).read())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert [names[a["category_id"]] for a in coco["annotations"]] == ["cube", "shadow"]
    with zipfile.ZipFile(zip_file) as archive:
        assert archive.namelist() == ["mask_000_cube.png", "mask_001_shadow.png"]
    rows_high = client.predict(gradio_client.handle_file(str(files / "scene.png")), "Fixed boxes (test)", "", "",
                               0.7, api_name="/detect_segment")[1]
    assert [r["label"] for r in rows_high] == ["cube"]  # the minimum score filters detections


def test_detect_segment_api_needs_weights_for_a_library_detector(demo, client, files):
    kinds = list(demo.prompt_sources.detector_kinds())
    if not kinds:
        pytest.skip("neither ultralytics nor transformers is installed: no library detector is offered")
    with pytest.raises(Exception, match="needs weights"):
        client.predict(gradio_client.handle_file(str(files / "scene.png")), kinds[0], "", "", 0.25,
                       api_name="/detect_segment")


def test_text_api_with_an_injected_phrase_detector(demo, client, files, segmenter):
    if not demo.prompt_sources.text_available():
        pytest.skip("this samkit has no text-to-mask pipeline")
    overlay, rows, zip_file, coco_file = client.predict(
        gradio_client.handle_file(str(files / "scene.png")), "a cube, a shadow", "Fixed phrase box (test)", "", "",
        None, api_name="/text")
    assert [r["label"] for r in rows] == ["a cube"] and rows[0]["score"] == pytest.approx(0.8)
    expected = segmenter.segment(segmenter.encode(scene(0)), boxes=[10, 10, 60, 50], multimask=False)
    with zipfile.ZipFile(zip_file) as archive:
        assert archive.namelist() == ["mask_000_a_cube.png"]
        np.testing.assert_array_equal(np.asarray(Image.open(archive.open("mask_000_a_cube.png"))) > 0,
                                      expected.masks[0, 0])
    coco = json.loads(open(coco_file).read())
    assert coco["categories"] == [{"id": 1, "name": "a cube"}]
    with pytest.raises(Exception, match="comma-separated phrases"):
        client.predict(gradio_client.handle_file(str(files / "scene.png")), " , ", "Fixed phrase box (test)", "",
                       "", None, api_name="/text")


def test_gaze_api(client, files):
    frames = [gradio_client.handle_file(str(files / f"frame{i}.png")) for i in range(4)]
    gallery, info, zip_file, coco_file = client.predict(gradio_client.handle_file(str(files / "gaze.csv")), frames,
                                                        25, "pixels", api_name="/gaze")
    # frames at 0, 0.04, 0.08, 0.12 s all lie inside the 0-0.2 s fixation
    assert len(gallery) == 4 and all("fixation 0" in item["caption"] for item in gallery)
    assert "4 frames, 4 frames with a fixation, 3 carried over" in info
    with zipfile.ZipFile(zip_file) as archive:
        assert archive.namelist() == [f"frame_{i:04d}.png" for i in range(4)]
    coco = json.loads(open(coco_file).read())
    assert [a["image_id"] for a in coco["annotations"]] == [1, 2, 3, 4]


def test_sessions_are_isolated_and_each_image_is_encoded_once(demo, files):
    h = demo.handlers
    service = demo.load_service(str(files / "tiny.pth"), "cpu")
    calls = []
    encode = service.segmenter.encode
    service.segmenter.encode = lambda image: calls.append(1) or encode(image)
    try:
        first = h.use_image(service, None, scene(0))
        second = h.use_image(service, None, scene(0))
        h.add_click(first, 70, 40, h.MODES[0])
        h.segment_session(service, first, True)
        assert second.points == [] and second.result is None  # the other user's clicks are not seen
        for x in (10, 20, 30):
            first = h.use_image(service, first, scene(0))
            h.add_click(first, x, 50, h.MODES[1])
            h.segment_session(service, first, True)
        assert first.labels == [1, 0, 0, 0] and len(calls) == 2  # one encode per session, not per click
        first = h.use_image(service, first, scene(1))  # a new image starts afresh
        assert first.points == [] and len(calls) == 3
    finally:
        service.segmenter.encode = encode


def test_box_by_two_clicks_undo_and_reset(demo, files, tmp_path):
    h = demo.handlers
    service = demo.load_service(str(files / "tiny.pth"), "cpu")
    session = h.use_image(service, None, scene(0))
    h.add_click(session, 90, 80, h.MODES[2])
    assert session.corner == [90.0, 80.0] and session.box is None
    view = h.render_click(scene(0), session, tmp_path)
    assert "opposite corner" in view.info and view.mask_file is None
    h.add_click(session, 20, 10, h.MODES[2])
    assert session.box == [20.0, 10.0, 90.0, 80.0] and session.corner is None
    h.segment_session(service, session, False)
    view = h.render_click(scene(0), session, tmp_path)
    assert len(view.choices) == 1 and os.path.exists(view.mask_file)
    session.undo()
    assert session.box is None and session.corner == [90.0, 80.0]
    session.clear()
    h.segment_session(service, session, True)
    assert session.result is None and session.prompts_text() == '{"points": [], "labels": [], "box": null}'


def test_the_model_loads_once_per_process(demo, files, monkeypatch):
    import samkit

    loads = []
    real = samkit.load_model
    monkeypatch.setattr(samkit, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    first = demo.load_service(str(files / "tiny.pth"), "cpu")
    demo.build_app(str(files / "tiny.pth"), device="cpu")
    assert demo.load_service(str(files / "tiny.pth"), "cpu") is first and loads == []


def page_text(app) -> str:
    return json.dumps(app.get_config_file(), default=str)


def test_without_weights_the_page_says_so(demo, monkeypatch, tmp_path):
    monkeypatch.setenv("SAMKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("SAMKIT_MODEL", raising=False)
    text = page_text(demo.build_app(None))
    assert "No SAM weights are available" in text and "samkit download vit_b" in text
    text = page_text(demo.build_app(str(tmp_path / "missing.pth")))
    assert "The model could not be loaded" in text and "missing.pth" in text


def test_model_from_the_environment(demo, files, monkeypatch):
    monkeypatch.setenv("SAMKIT_MODEL", str(files / "tiny.pth"))
    assert demo.resolve_model_source(None) == str(files / "tiny.pth")
    assert "Click to segment" in page_text(demo.build_app(device="cpu"))


def test_missing_gradio_names_the_extra(demo, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(ImportError, match=r"pip install samkit\[demo\]"):
        demo.build_app(None)


def test_gaze_csv_errors(demo, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("t,x,y\n0.0,1,2\n0.1,oops,2\n")
    with pytest.raises(ValueError, match="line 3: expected numbers t, x, y"):
        demo.prompt_sources.read_gaze_csv(path)
    path.write_text("0.0,1\n")
    with pytest.raises(ValueError, match="expected 3 or 4 columns"):
        demo.prompt_sources.read_gaze_csv(path)
