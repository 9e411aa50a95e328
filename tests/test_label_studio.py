"""The Label Studio ML backend: brush RLE against label_studio_converter, /predict against the
Segmenter, bad requests, image paths, hostile XML, the webhook into a project, the CLI server."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from samkit.formats.label_studio import (brush_result, brush_rle_to_mask, decode_brush_values, encode_brush_values,
                                         keypoint_to_pixels, mask_to_brush_rle, rectangle_to_pixels)

brush = pytest.importorskip("label_studio_converter.brush")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

CONFIG = """<View>
  <Image name="img" value="$photo" zoom="true"/>
  <BrushLabels name="mask" toName="img">
    <Label value="cat" background="#ff0000"/><Label value="dog" background="#00ff00"/>
  </BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="dog"/></KeyPointLabels>
  <RectangleLabels name="box" toName="img" smart="true"><Label value="cat"/></RectangleLabels>
</View>"""
BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10))
                  + ']><View><Image name="img" value="$photo"/><BrushLabels name="mask" toName="img">'
                    '<Label value="&lol9;"/></BrushLabels></View>')
XXE = ('<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       '<View><Image name="img" value="$photo"/><BrushLabels name="mask" toName="img"><Label value="&x;"/>'
       '</BrushLabels></View>')


# -- the brush format ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (37, 51), (130, 700)])
def test_brush_rle_reads_in_label_studio_converter_and_back(shape):
    rng = np.random.default_rng(shape[0])
    for mask in (rng.random(shape) > 0.6, np.zeros(shape, bool), np.ones(shape, bool)):
        rle = mask_to_brush_rle(mask)
        rgba = brush.decode_rle(rle).reshape(*shape, 4)
        np.testing.assert_array_equal(rgba, np.repeat(mask[..., None].astype(np.uint8) * 255, 4, axis=2))
        np.testing.assert_array_equal(brush_rle_to_mask(rle, *shape), mask)
        # Label Studio's own encoder (literal chunks included) read by ours
        np.testing.assert_array_equal(brush_rle_to_mask(brush.mask2rle(mask.astype(np.uint8) * 255), *shape), mask)
    values = rng.integers(0, 256, 5000).astype(np.uint8)
    values[1000:4000] = 9  # one long run among literals
    np.testing.assert_array_equal(decode_brush_values(brush.encode_rle(values)), values)
    np.testing.assert_array_equal(brush.decode_rle(encode_brush_values(values)), values)


def test_brush_runs_longer_than_the_widest_length_field():
    values = np.full(3 * 65536 + 5, 255, np.uint8)
    np.testing.assert_array_equal(brush.decode_rle(encode_brush_values(values)), values)


@pytest.mark.parametrize("rle, size, message", [
    ([1, 2, 3], (2, 2), "ends early"),
    (mask_to_brush_rle(np.ones((2, 2), bool)), (3, 3), "holds 16 values"),
    ("abc", (2, 2), "list of byte values"),
    ([300, 1], (2, 2), "ints in [0, 255]"),
    (encode_brush_values(np.zeros(10 ** 6, np.uint8)), (2, 2), "more than the 16 expected"),
])
def test_bad_brush_rle_is_refused(rle, size, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[").replace("]", r"\]")):
        brush_rle_to_mask(rle, *size)


def test_percent_coordinates_to_pixels():
    assert keypoint_to_pixels({"x": 50, "y": 25}, 200, 100) == (100.0, 25.0)
    assert rectangle_to_pixels({"x": 10, "y": 20, "width": 50, "height": 30}, 200, 100) == (20.0, 20.0, 120.0, 50.0)
    # 90 degrees clockwise about the top-left corner (y points down): the box hangs below and to the left
    x0, y0, x1, y1 = rectangle_to_pixels({"x": 50, "y": 10, "width": 10, "height": 20, "rotation": 90}, 200, 100)
    assert np.allclose([x0, y0, x1, y1], [80, 10, 100, 30])
    for value, message in [({"x": float("nan"), "y": 1}, "finite"), ({"x": 101, "y": 1}, r"\[0, 100\]"),
                           ({"x": 1}, "needs 'y'"), ({"x": "1", "y": 1}, "finite number")]:
        with pytest.raises(ValueError, match=message):
            keypoint_to_pixels(value, 10, 10)
    with pytest.raises(ValueError, match="inside the image"):
        rectangle_to_pixels({"x": 60, "y": 0, "width": 50, "height": 10}, 10, 10)
    result = brush_result(np.eye(3, dtype=bool), from_name="m", to_name="i", label="cat", score=0.5)
    assert (result["type"], result["original_width"], result["value"]["brushlabels"]) == ("brushlabels", 3, ["cat"])


# -- the app ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def segmenter(tiny_model):
    import samkit

    return samkit.Segmenter(tiny_model, cache_size=0)  # the backend's own cache is what is tested


@pytest.fixture()
def root(tmp_path, images):
    from PIL import Image

    folder = tmp_path / "root"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(images["chelsea_300x451"]).save(folder / "sub" / "cat.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(images["astronaut_700x256"][:50, :40]).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", folder / "link.png")
    return folder


@pytest.fixture()
def client(segmenter, root):
    from samkit.engine.serve import create_app

    return TestClient(create_app(segmenter, root=root, model_version="test-v1"))


def keypoint(x, y, positive=True, width=451, height=300, label="dog"):
    return {"type": "keypointlabels", "from_name": "kp", "to_name": "img", "original_width": width,
            "original_height": height, "is_positive": positive, "value": {"x": x, "y": y, "width": 0.5,
                                                                          "keypointlabels": [label]}}


def rectangle(x, y, w, h, width=451, height=300):
    return {"type": "rectanglelabels", "from_name": "box", "to_name": "img", "original_width": width,
            "original_height": height, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                                                 "rectanglelabels": ["cat"]}}


def predict_payload(regions, photo="sub/cat.png", **extra):
    payload = {"tasks": [{"id": 1, "data": {"photo": photo}}], "label_config": CONFIG,
               "params": {"context": {"result": regions}}}
    payload.update(extra)
    return payload


def test_health_and_setup(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "UP"
    assert health.json()["model_version"] == "test-v1"
    setup = client.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": "http://localhost:8080"})
    assert setup.status_code == 200 and setup.json() == {"model_version": "test-v1"}
    # the remembered config serves a predict request that has none
    payload = predict_payload([keypoint(40, 50)])
    del payload["label_config"]
    assert client.post("/predict", json=payload).status_code == 200


@pytest.mark.parametrize("regions, points, labels, box, label", [
    ([keypoint(40.5, 52.25)], [[40.5, 52.25]], [1], None, "dog"),
    ([keypoint(40, 50), keypoint(70, 20, positive=False)], [[40, 50], [70, 20]], [1, 0], None, "dog"),
    ([rectangle(20, 25, 45.5, 50)], None, None, [20, 25, 65.5, 75], "cat"),
    ([rectangle(20, 25, 45, 50), keypoint(30, 40, label="bird")], [[30, 40]], [1], [20, 25, 65, 75], "cat"),
])
def test_predict_returns_the_segmenters_mask(client, segmenter, images, regions, points, labels, box, label):
    response = client.post("/predict", json=predict_payload(regions))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "test-v1" and len(body["results"]) == 1
    (region,) = body["results"][0]["result"]
    assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "mask", "img")
    assert (region["original_width"], region["original_height"]) == (451, 300)
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == [label]
    decoded = brush.decode_rle(region["value"]["rle"]).reshape(300, 451, 4)[:, :, 3] == 255
    # the same prompt through samkit directly, percent -> pixels computed here
    fields = {}
    if points is not None:
        fields["points"] = np.array(points, np.float64) / 100 * [451, 300]
        fields["labels"] = np.array(labels)
    if box is not None:
        fields["boxes"] = np.array(box, np.float64) / 100 * [451, 300, 451, 300]
    expected = segmenter.segment(segmenter.encode(images["chelsea_300x451"]), best_only=True,
                                 multimask=box is None and len(points) == 1, **fields)
    np.testing.assert_array_equal(decoded, expected.masks[0, 0])
    assert decoded.any() and not decoded.all()
    assert region["score"] == pytest.approx(float(expected.scores[0, 0]), abs=1e-6)
    assert body["results"][0]["score"] == region["score"]


def test_repeated_clicks_reuse_the_embedding(segmenter, root):
    from samkit.engine.serve import LabelStudioBackend

    backend = LabelStudioBackend(segmenter, root=root)
    first = backend.predict(predict_payload([keypoint(40, 50)]))
    second = backend.predict(predict_payload([keypoint(40, 50), keypoint(10, 10, positive=False)]))
    assert backend.stats == {"encoded": 1, "cache_hits": 1}
    assert first["results"][0]["result"][0]["value"]["rle"] != second["results"][0]["result"][0]["value"]["rle"]
    assert backend.model_version == f"samkit-{segmenter.model_fingerprint}"


@pytest.mark.parametrize("extra", [{"params": {}}, {"params": {"context": None}}, {"params": {"context": {}}},
                                   {"params": {"context": {"result": []}}},
                                   {"params": {"context": {"result": [{"type": "choices", "value": {}}]}}}])
def test_no_context_gives_no_results(client, extra):
    payload = predict_payload([], **extra)
    response = client.post("/predict", json=payload)
    assert response.status_code == 200 and response.json() == {"results": [], "model_version": "test-v1"}


def _drop(key):
    def edit(p):
        del p[key]
    return edit


def _set(path, value):
    def edit(p):
        target = p
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


BAD_PREDICTS = [
    (_drop("tasks"), 400, "needs 'tasks'"),
    (_set(["tasks"], "one"), 400, "must be list"),
    (_set(["tasks"], []), 400, "empty"),
    (_set(["tasks"], [5]), 400, "tasks[0] must be an object"),
    (_set(["tasks"], [{"data": {"photo": "sub/cat.png"}}] * 2), 400, "one task"),
    (_set(["tasks", 0, "data"], {}), 400, "needs 'photo'"),
    (_set(["tasks", 0, "data", "photo"], 7), 400, "must be str"),
    (_set(["params"], [1]), 400, "'params' must be an object"),
    (_set(["params", "context"], "click"), 400, "context must be an object"),
    (_set(["params", "context", "result"], {"x": 1}), 400, "must be a list"),
    (_set(["params", "context", "result", 0], "p"), 400, "must be an object"),
    (_set(["params", "context", "result", 0, "value", "x"], float("nan")), 400, "NaN"),
    (_set(["params", "context", "result", 0, "value", "x"], "40"), 400, "finite number"),
    (_set(["params", "context", "result", 0, "value", "x"], 100.5), 400, "[0, 100]"),
    (_set(["params", "context", "result", 0, "value", "y"], -3), 400, "[0, 100]"),
    (_set(["params", "context", "result", 0, "value"], []), 400, "must be dict"),
    (_set(["params", "context", "result", 0, "original_width"], 0), 400, "original_width"),
    (_set(["params", "context", "result", 0, "original_width"], True), 400, "original_width"),
    (_set(["params", "context", "result", 0, "original_width"], 452), 400, "452 x 300"),
    (_set(["params", "context", "result", 0, "is_positive"], "yes"), 400, "is_positive"),
    (_set(["params", "context", "result", 0, "value", "keypointlabels"], "dog"), 400, "list of label strings"),
    (_set(["label_config"], 5), 400, "string of XML"),
    (_set(["label_config"], "<View><Image name='img' value='$photo'/></View>"), 400, "no <BrushLabels>"),
    (_set(["label_config"], "<View><BrushLabels name='m' toName='x'/></View>"), 400, "no <Image name='x'>"),
    (_set(["label_config"], "<View><Image name='img' value='photo'/><BrushLabels name='m' toName='img'/></View>"),
     400, "value=\"$key\""),
    (_set(["label_config"], "<View><Image"), 400, "not well-formed"),
    (_set(["label_config"], BILLION_LAUGHS), 400, "DTD"),
    (_set(["label_config"], XXE), 400, "DTD"),
    (_set(["tasks", 0, "data", "photo"], "missing.png"), 404, "not found"),
    (_set(["tasks", 0, "data", "photo"], "broken.png"), 400, "cannot be read"),
    (_set(["tasks", 0, "data", "photo"], "sub"), 404, "not found"),
]


@pytest.mark.parametrize("edit, status, message", BAD_PREDICTS)
def test_bad_predict_requests_get_4xx_with_a_message(client, edit, status, message):
    payload = predict_payload([keypoint(40, 50)])
    edit(payload)
    response = client.post("/predict", content=json.dumps(payload), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize("body, message", [(b"{not json", "must be JSON"), (b"[1, 2]", "JSON object"),
                                           (b'"text"', "JSON object"), (b"\xff\xfe", "must be JSON"),
                                           (b'{"tasks": [{"data": {}}], "x": NaN}', "NaN"),
                                           (b"[" * 100000 + b"]" * 100000, "")])
@pytest.mark.parametrize("path", ["/predict", "/setup", "/webhook"])
def test_malformed_bodies_get_400(client, body, message, path):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]


def test_hostile_label_config_in_setup_is_refused_fast(client):
    started = time.monotonic()
    response = client.post("/setup", json={"schema": BILLION_LAUGHS})
    assert response.status_code == 400 and "DTD" in response.json()["detail"]
    assert time.monotonic() - started < 30  # refused, not expanded (a billion laughs would not return)


@pytest.mark.parametrize("reference, status, message", [
    ("../outside.png", 403, "outside the served root"),
    ("sub/../../outside.png", 403, "outside the served root"),
    ("/etc/passwd", 403, "outside the served root"),
    ("link.png", 403, "outside the served root"),
    ("/data/local-files/?d=../outside.png", 403, "outside the served root"),
    ("/data/local-files/?d=%2Fetc%2Fpasswd", 403, "outside the served root"),
    ("/data/upload/../../outside.png", 403, "outside the served root"),
    ("/data/local-files/?x=1", 400, "needs ?d=PATH"),
    ("http://images.example.com/cat.png", 400, "never fetches"),
    ("https://169.254.169.254/latest/meta-data", 400, "never fetches"),
    ("file:///etc/passwd", 400, "scheme is not served"),
    ("s3://bucket/cat.png", 400, "scheme is not served"),
    ("sub/cat.png\x00.txt", 400, "non-empty path"),
])
def test_image_paths_outside_the_root_are_refused(client, reference, status, message):
    response = client.post("/predict", json=predict_payload([keypoint(40, 50)], photo=reference))
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize("reference", ["sub/cat.png", "/data/local-files/?d=sub/cat.png",
                                       "http://localhost:8080/data/local-files/?d=sub%2Fcat.png"])
def test_local_files_urls_resolve_under_the_root(client, root, reference):
    response = client.post("/predict", json=predict_payload([keypoint(40, 50)], photo=reference))
    assert response.status_code == 200, response.text
    absolute = client.post("/predict", json=predict_payload([keypoint(40, 50)], photo=str(root / "sub" / "cat.png")))
    assert absolute.status_code == 200
    rle = [r.json()["results"][0]["result"][0]["value"]["rle"] for r in (response, absolute)]
    assert rle[0] == rle[1]


# -- the webhook ----------------------------------------------------------------------------------
def brush_region(mask, region_id="r1", label="cat", origin="manual"):
    region = brush_result(mask, from_name="mask", to_name="img", label=label, region_id=region_id)
    region["origin"] = origin
    return region


def event(action, regions, annotation_id=11, lead_time=20.0, user=3):
    return {"action": action, "project": {"id": 1, "label_config": CONFIG},
            "task": {"id": 5, "data": {"photo": "/data/local-files/?d=sub/cat.png"}},
            "annotation": {"id": annotation_id, "result": regions, "completed_by": user, "lead_time": lead_time,
                           "was_cancelled": False}}


def box_mask(x0, y0, x1, y1):
    mask = np.zeros((300, 451), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_webhook_stores_and_edits_supersede(segmenter, root):
    from samkit.engine.projects import Project
    from samkit.engine.serve import create_app

    Project.init(root).close()
    client = TestClient(create_app(segmenter, root=root, project=root, model_version="test-v1"))
    a, b, c = box_mask(10, 10, 60, 80), box_mask(100, 50, 200, 150), box_mask(300, 200, 400, 280)
    created = client.post("/webhook", json=event("ANNOTATION_CREATED", [
        brush_region(a), brush_region(b, "samkit-abc", "dog", origin="prediction"),
        {"type": "keypointlabels", "id": "k", "value": {"x": 1, "y": 1}}]))
    assert created.status_code == 200, created.text
    assert created.json()["added"] == 2
    with Project.open(root) as project:
        (image,) = project.images()
        assert image.path == root / "sub" / "cat.png"
        first = {r.label: r for r in project.annotations(image.id)}
        np.testing.assert_array_equal(first["cat"].mask(), a)
        assert (first["cat"].stage, first["cat"].source, first["cat"].author) == (1, "manual", "label-studio:3")
        assert (first["dog"].source, first["dog"].model_version) == ("assisted", "test-v1")
        assert first["cat"].seconds == pytest.approx(10.0)
    # Label Studio sends the whole annotation again: r1 moved, the prediction region deleted, r3 new
    updated = client.post("/webhook", json=event("ANNOTATION_UPDATED", [brush_region(c), brush_region(a, "r3")],
                                                lead_time=26.0, user={"id": 4, "email": "ann@example.com"}))
    assert updated.status_code == 200, updated.text
    assert {k: updated.json()[k] for k in ("added", "edited", "unchanged", "withdrawn")} == \
        {"added": 1, "edited": 1, "unchanged": 0, "withdrawn": 1}
    again = client.post("/webhook", json=event("ANNOTATION_UPDATED", [brush_region(c), brush_region(a, "r3")],
                                              lead_time=26.0))
    assert again.json()["unchanged"] == 2 and again.json()["added"] == again.json()["edited"] == 0
    with Project.open(root) as project:
        rows = {r.id: r for r in project.annotations(current=False)}
        old = first["cat"]
        new = rows[rows[old.id].superseded_by]
        np.testing.assert_array_equal(rows[old.id].mask(), a)  # the old row is kept, not overwritten
        np.testing.assert_array_equal(new.mask(), c)
        assert new.author == "label-studio:ann@example.com" and new.seconds == pytest.approx(13.0)
        assert rows[first["dog"].id].status == "withdrawn"
        assert sorted(r.label for r in project.annotations(status="accepted")) == ["cat", "cat"]
    deleted = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 11}]})
    assert deleted.status_code == 200 and deleted.json()["withdrawn"] == 2
    with Project.open(root) as project:
        assert project.annotations(status="accepted") == []
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}).json()["status"] == "ignored"
    bad = event("ANNOTATION_CREATED", [brush_region(box_mask(0, 0, 5, 5)[:200])])
    response = client.post("/webhook", json=bad)
    assert response.status_code == 400 and "451 x 200 image" in response.json()["detail"]
    bad = event("ANNOTATION_CREATED", [brush_region(a)])
    bad["annotation"]["result"][0]["value"]["rle"] = [1, 2, 3]
    response = client.post("/webhook", json=bad)
    assert response.status_code == 400 and "ends early" in response.json()["detail"]
    outside = event("ANNOTATION_CREATED", [brush_region(a)])
    outside["task"]["data"]["photo"] = "../outside.png"
    assert client.post("/webhook", json=outside).status_code == 403


def test_webhook_without_a_project_is_a_409(client):
    response = client.post("/webhook", json=event("ANNOTATION_CREATED", []))
    assert response.status_code == 409 and "--project" in response.json()["detail"]


# -- the command line ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_samkit_serve_label_studio_binds_localhost(tiny_checkpoint, root):
    psutil = pytest.importorskip("psutil")
    port = free_port()
    env = dict(os.environ, YOLO_OFFLINE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "samkit", "serve", "label-studio", "--model", str(tiny_checkpoint),
                             "--port", str(port), "--root", str(root), "--device", "cpu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 90, None
        while health is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the backend did not answer in 90 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    health = json.loads(response.read())
            except OSError:
                time.sleep(0.25)
        assert health["status"] == "UP" and health["model_version"].startswith("samkit-")
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
        # one click and one bad request over real HTTP
        def post(payload):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(payload).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        status, body = post(predict_payload([keypoint(40, 50)]))
        assert status == 200, body
        rle = body["results"][0]["result"][0]["value"]["rle"]
        assert brush.decode_rle(rle).size == 300 * 451 * 4
        status, body = post(predict_payload([keypoint(40, 50)], photo="../outside.png"))
        assert status == 403 and "outside the served root" in body["detail"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_serve_without_fastapi_names_the_extra(monkeypatch, capsys, tiny_checkpoint):
    from samkit.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve", "label-studio", "--model", str(tiny_checkpoint)]) == 1
    assert "pip install samkit[serve]" in capsys.readouterr().err
    assert main(["serve", "label-studio", "--port", "0"]) == 2


@pytest.fixture()
def project_client(segmenter, root):
    from samkit.engine.projects import Project
    from samkit.engine.serve import create_app

    Project.init(root).close()
    app = create_app(segmenter, root=root, project=root, model_version="test-v1")
    yield TestClient(app), app.state.backend
    app.state.backend.close()  # closes the project it opened too
    with pytest.raises(Exception, match="closed"):
        app.state.backend.project.images()


BAD_WEBHOOKS = [
    (_drop("action"), 400, "needs 'action'"),
    (_set(["action"], 3), 400, "must be str"),
    (_drop("annotation"), 400, "needs 'annotation'"),
    (_drop("task"), 400, "needs 'task'"),
    (_set(["annotation", "id"], True), 400, "annotation']['id'] must be int or str"),
    (_set(["annotation", "result"], {}), 400, "must be list"),
    (_set(["annotation", "result", 0], 1), 400, "must be an object"),
    (_set(["annotation", "result", 0, "id"], None), 400, "integer or string id"),
    (_set(["annotation", "result", 0, "value", "format"], "png"), 400, "is not read"),
    (_set(["annotation", "result", 0, "value", "rle"], "xyz"), 400, "must be list"),
    (_set(["annotation", "result", 0, "value", "rle"], [999]), 400, "ints in [0, 255]"),
    (_set(["annotation", "result", 0, "original_width"], 451.5), 400, "must be int"),
    (_set(["annotation", "result", 0, "value", "brushlabels"], [3]), 400, "list of strings"),
    (_set(["task", "data", "photo"], "nope.png"), 404, "not found"),
    (_set(["task", "data", "photo"], "broken.png"), 400, "cannot join the project"),
    (_set(["project", "label_config"], BILLION_LAUGHS), 400, "DTD"),
]


@pytest.mark.parametrize("edit, status, message", BAD_WEBHOOKS)
def test_bad_webhooks_get_4xx_and_store_nothing(project_client, edit, status, message):
    client, backend = project_client
    payload = event("ANNOTATION_CREATED", [brush_region(box_mask(10, 10, 60, 80))])
    edit(payload)
    response = client.post("/webhook", content=json.dumps(payload), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert backend.project.annotations(current=False) == []


def test_redelivery_after_a_crash_between_the_two_writes_adds_nothing_twice(project_client):
    """The project write happened, the link write did not (process killed): the retry finds the twin."""
    client, backend = project_client
    payload = event("ANNOTATION_CREATED", [brush_region(box_mask(10, 10, 60, 80))])
    assert client.post("/webhook", json=payload).json()["added"] == 1
    backend._sync._links.execute("DELETE FROM regions")  # what a kill before the link commit leaves
    retry = client.post("/webhook", json=payload).json()
    assert (retry["added"], retry["unchanged"]) == (0, 1)
    assert len(backend.project.annotations(current=False)) == 1


def test_concurrent_webhooks_lose_nothing(project_client):
    from concurrent.futures import ThreadPoolExecutor

    client, backend = project_client
    masks = [box_mask(10 * i, 5 * i, 10 * i + 30, 5 * i + 40) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda i: backend.webhook(event("ANNOTATION_CREATED", [brush_region(masks[i])],
                                                                annotation_id=100 + i, user=i)), range(8)))
    assert [r["added"] for r in replies] == [1] * 8
    stored = {r.author: r.mask() for r in backend.project.annotations(status="accepted")}
    for i, mask in enumerate(masks):
        np.testing.assert_array_equal(stored[f"label-studio:{i}"], mask)


def _deliver_repeatedly(root: str, count: int, start, errors) -> None:
    """One backend process's webhook handler receiving the same CREATED event ``count`` times."""
    import time

    from samkit.engine.projects import Project
    from samkit.engine.serve.webhook import AnnotationSync

    try:
        with Project.open(root) as project:
            add = project.add_annotation

            def slow_add(*args, **kwargs):  # widens the look-up -> write window so a race shows
                time.sleep(0.5)
                return add(*args, **kwargs)

            project.add_annotation = slow_add
            sync = AnnotationSync(project, root=root)
            start.wait(60)
            for _ in range(count):
                sync.handle("ANNOTATION_CREATED", event("ANNOTATION_CREATED", [brush_region(box_mask(10, 10, 60, 80))]),
                            None)
            sync.close()
    except Exception as error:  # reported to the parent
        errors.put(repr(error))


def test_two_backend_processes_on_one_project_store_a_region_once(root):
    """Label Studio retries deliveries; two backend processes get the same event at once."""
    import multiprocessing

    from samkit.engine.projects import Project

    Project.init(root).close()
    context = multiprocessing.get_context("spawn")
    start, errors = context.Event(), context.Queue()
    workers = [context.Process(target=_deliver_repeatedly, args=(str(root), 5, start, errors)) for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    assert all(w.exitcode == 0 for w in workers) and errors.empty()
    with Project.open(root) as project:
        rows = project.annotations(current=False)
        assert len(rows) == 1 and rows[0].status == "accepted"
        np.testing.assert_array_equal(rows[0].mask(), box_mask(10, 10, 60, 80))


def test_random_garbage_never_gets_a_500(client):
    """Seeded random edits of a good request: every answer is 200 or a 4xx with a message."""
    rng = np.random.default_rng(0)
    garbage = [None, True, -1, 0, 1e308, -1e-300, "", "x", [], {}, [None], {"x": 1}, 10 ** 30, "../../etc/passwd"]

    def paths(value, prefix=()):
        yield prefix
        if isinstance(value, dict):
            for key, item in value.items():
                yield from paths(item, prefix + (key,))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from paths(item, prefix + (index,))

    for _ in range(150):
        payload = predict_payload([keypoint(40, 50), rectangle(10, 10, 30, 30)])
        candidates = [p for p in paths(payload) if p]
        target = candidates[rng.integers(len(candidates))]
        _set(list(target), garbage[rng.integers(len(garbage))])(payload)
        response = client.post("/predict", json=payload)
        assert response.status_code == 200 or (400 <= response.status_code < 500 and response.json()["detail"]), \
            (target, response.text)
