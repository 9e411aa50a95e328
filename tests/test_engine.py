"""The data engine (samkit.engine): sources, output layout, resume, the local engine's parity with
the single-process pipelines, bad input, and on a shared local Ray: parity with the local engine
and a worker process killed mid-job."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit.engine import (
    DetectTask,
    EngineError,
    EverythingTask,
    JobProgress,
    RetryPolicy,
    TextProgress,
    TextTask,
    list_inputs,
    run_job,
)
from samkit.engine.output import MANIFEST, output_name, stable_image_id

EVERYTHING = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


# -- picklable test parts (module level, so Ray workers import them) ------------------------------
def two_boxes(image):
    """A detector that knows the answer: two labelled boxes inside any image of at least 40x40."""
    return [[2, 3, 30, 25], [10, 12, 38, 36]], [0.9, 0.6], ["cat", "dog"]


def phrase_boxes(image, phrases):
    return [[2, 3, 30, 25], [12, 10, 36, 30]], [0.8, 0.4], [1, 0]


@dataclasses.dataclass(frozen=True)
class CrashOnceTask:
    """Kills its worker process (SIGKILL) on ``victim`` the first time; a marker file remembers."""

    inner: EverythingTask
    victim: str
    marker: str

    def check(self):
        self.inner.check()

    def describe(self):
        return self.inner.describe()

    def build(self, device=None, cache_size=4):
        return _CrashRunner(self.inner.build(device, cache_size), self.victim, self.marker)


class _CrashRunner:
    def __init__(self, runner, victim, marker):
        self.runner, self.victim, self.marker = runner, victim, marker

    def run(self, image, *, image_id, file_name):
        if file_name == self.victim and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.runner.run(image, image_id=image_id, file_name=file_name)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from samkit.weights import write_random_checkpoint

    path = tmp_path_factory.mktemp("engine_ckpt") / "tiny.pth"
    write_random_checkpoint(path, "tiny", seed=3)
    return path


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    from samkit import Segmenter, load_model

    return Segmenter(load_model(checkpoint))


def _write_images(folder: Path, bad: bool = True) -> None:
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    for name, (h, w) in {"a.png": (48, 64), "b.jpg": (64, 40), "sub/c.png": (40, 56), "d.png": (50, 50)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    if bad:
        (folder / "garbage.jpg").write_bytes(b"this is not an image")
        whole = (folder / "a.png").read_bytes()
        (folder / "truncated.png").write_bytes(whole[:len(whole) // 2])
        (folder / "notes.txt.bak").write_text("ignored")


@pytest.fixture
def photos(tmp_path):
    _write_images(tmp_path / "photos")
    return tmp_path / "photos"


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def _annotations(out: Path) -> dict[str, list]:
    """file_name -> [(RLE counts, predicted IoU or score)] of every output in ``out``."""
    found = {}
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        found[data["samkit"]["file_name"]] = [(a["segmentation"]["counts"], round(a.get("predicted_iou", 0.0), 4))
                                              for a in data["annotations"]]
    return found


# -- sources and naming ---------------------------------------------------------------------------
def test_output_names_are_stable_safe_and_distinct():
    names = ["a.jpg", "sub/a.jpg", "sub__a.jpg", "ü ber/x y.png", "../../etc.png", "x" * 300 + ".jpg"]
    out = [output_name(n) for n in names]
    assert out == [output_name(n) for n in names]
    assert len(set(out)) == len(out)
    assert all(o.endswith(".json") and "/" not in o and not o.startswith(".") and len(o) < 120 for o in out)
    assert out[1].startswith("sub__a.jpg-")
    assert stable_image_id("sub/a.jpg") == stable_image_id("sub/a.jpg") < 2 ** 53
    assert stable_image_id("a.jpg") != stable_image_id("sub/a.jpg")


def test_sources_folder_glob_list_and_uri(photos):
    expected = ["a.png", "b.jpg", "d.png", "garbage.jpg", "sub/c.png", "truncated.png"]
    assert [i.file_name for i in list_inputs(photos)] == expected
    assert [i.file_name for i in list_inputs(f"{photos}/**/*.png")] == ["a.png", "d.png", "sub/c.png",
                                                                         "truncated.png"]
    assert [i.file_name for i in list_inputs(photos.as_uri())] == expected
    listing = photos / "list.txt"
    listing.write_text(f"# a comment\nsub/c.png\n\n{photos / 'a.png'}\n")
    inputs = list_inputs(listing)
    assert [i.file_name for i in inputs] == ["sub/c.png", "a.png"]
    assert all(Path(i.path).is_file() for i in inputs)
    assert [i.file_name for i in list_inputs(photos / "b.jpg")] == ["b.jpg"]
    listing.write_text("/elsewhere/x.jpg\n")
    assert [i.file_name for i in list_inputs(listing)] == ["elsewhere/x.jpg"]


@pytest.mark.parametrize("make, error, match", [
    (lambda d: d / "missing", FileNotFoundError, "no such folder"),
    (lambda d: d / "missing/*.jpg", FileNotFoundError, "matches no image"),
    (lambda d: (d / "empty").mkdir() or d / "empty", ValueError, "holds no images"),
    (lambda d: (d / "x.csv").write_text("a") and d / "x.csv", ValueError, "neither an image"),
    (lambda d: (d / "l.txt").write_text("a.jpg\nb.jpg\na.jpg\n") and d / "l.txt", ValueError, "twice"),
])
def test_sources_errors(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        list_inputs(make(tmp_path))


# -- the local engine -----------------------------------------------------------------------------
def test_local_everything_matches_the_pipeline_and_records_bad_images(photos, tmp_path, checkpoint, segmenter):
    from pycocotools.coco import COCO
    from samkit.pipelines import SegmentEverything
    from samkit.transforms import load_image

    events = []
    out = tmp_path / "out"
    summary = run_job(photos, EverythingTask(checkpoint, settings=EVERYTHING), out, engine="local",
                      merge_coco_path=tmp_path / "all.json", progress=events.append)
    assert (summary.total, summary.ok, summary.errors, summary.skipped) == (6, 4, 2, 0)
    rows = _manifest(out)
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg", "d.png", "garbage.jpg", "c.png", "truncated.png"]
    bad = {Path(r["path"]).name: r for r in rows if r["status"] == "error"}
    assert sorted(bad) == ["garbage.jpg", "truncated.png"]
    assert all("cannot read image" in r["error"] for r in bad.values()), {k: r["error"] for k, r in bad.items()}
    assert all(r["output"] is None for r in bad.values())
    assert events[-1].finished and events[-1].done == 6 and [e.done for e in events] == sorted(e.done for e in events)

    pipeline = SegmentEverything(segmenter, **EVERYTHING)
    for row in (r for r in rows if r["status"] == "ok"):
        data = json.loads((out / row["output"]).read_text())
        name = data["samkit"]["file_name"]
        expected = pipeline(load_image(photos / name)).to_records("coco_rle")
        assert data["image"]["image_id"] == stable_image_id(name) and data["image"]["file_name"] == name
        assert row["masks"] == len(data["annotations"]) == len(expected) > 0
        for got, want in zip(data["annotations"], expected):
            assert set(got) >= {"id", "segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box",
                                "point_coords"}
            assert got["segmentation"] == want["segmentation"] and got["bbox"] == want["bbox"]
            assert got["predicted_iou"] == pytest.approx(want["predicted_iou"], abs=1e-6)
    coco = COCO(str(tmp_path / "all.json"))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == sum(r["masks"] for r in rows)
    assert stable_image_id("sub/c.png") in coco.getImgIds()


def test_local_resume_skips_done_refuses_other_settings_and_restarts(photos, tmp_path, checkpoint):
    out = tmp_path / "out"
    task = EverythingTask(checkpoint, settings=EVERYTHING)
    run_job(photos, task, out, engine="local")
    first = _annotations(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    (photos / "e.png").write_bytes((photos / "d.png").read_bytes())
    again = run_job(photos, task, out, engine="local")
    assert (again.ok, again.errors, again.skipped) == (1, 2, 4)  # e.png new; the bad two are retried
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in stamps.items())
    rows = _manifest(out)
    assert len(rows) == 7 and len({r["path"] for r in rows}) == 7
    assert _annotations(out)["e.png"] == first["d.png"]

    other = EverythingTask(checkpoint, settings=dict(EVERYTHING, points_per_side=3))
    with pytest.raises(ValueError, match="other settings.*points_per_side.*restart"):
        run_job(photos, other, out, engine="local")
    assert _annotations(out) == dict(first, **{"e.png": first["d.png"]})  # nothing touched
    redo = run_job(photos, other, out, engine="local", restart=True)
    assert (redo.ok, redo.skipped) == (5, 0) and len(_manifest(out)) == 7


def test_local_detect_matches_the_pipeline(photos, tmp_path, checkpoint, segmenter):
    from samkit.pipelines import DetectThenSegment
    from samkit.transforms import load_image

    out = tmp_path / "out"
    task = DetectTask(checkpoint, two_boxes, settings={"refine_iterations": 1})
    summary = run_job(photos, task, out, engine="local", merge_coco_path=tmp_path / "all.json")
    assert (summary.ok, summary.errors) == (4, 2)
    pipeline = DetectThenSegment(two_boxes, segmenter, refine_iterations=1)
    for name in ("a.png", "sub/c.png"):
        data = json.loads((out / output_name(name)).read_text())
        want = pipeline(load_image(photos / name)).to_coco(stable_image_id(name), score_key="score")
        assert [a["segmentation"] for a in data["annotations"]] == [a["segmentation"] for a in want]
        assert [a["label"] for a in data["annotations"]] == ["cat", "dog"]
        assert [a["score"] for a in data["annotations"]] == pytest.approx([0.9, 0.6])
    merged = json.loads((tmp_path / "all.json").read_text())
    assert merged["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert {(a["category_id"], a["label"]) for a in merged["annotations"]} == {(1, "cat"), (2, "dog")}


def test_local_text_matches_the_pipeline(photos, tmp_path, checkpoint, segmenter):
    from samkit.pipelines import TextToMask
    from samkit.transforms import load_image

    out = tmp_path / "out"
    task = TextTask(checkpoint, ["wheel", "grille"], strategy="grounded",
                    strategy_settings={"detector": phrase_boxes, "min_area": 0})
    assert run_job(photos, task, out, engine="local").ok == 4
    pipeline = TextToMask(segmenter, strategy="grounded", detector=phrase_boxes, min_area=0)
    data = json.loads((out / output_name("b.jpg")).read_text())
    want = pipeline(load_image(photos / "b.jpg"), ["wheel", "grille"])
    assert [a["segmentation"]["counts"] for a in data["annotations"]] == [r[0]["counts"] for r in want.to_rle()]
    assert [a["label"] for a in data["annotations"]] == [m["phrase"] for m in want.meta]
    assert data["categories"] == [{"id": 1, "name": "wheel"}, {"id": 2, "name": "grille"}]
    assert [a["category_id"] for a in data["annotations"]] == [m["phrase_index"] + 1 for m in want.meta]


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, error, match", [
    (dict(source="missing"), FileNotFoundError, "no such folder"),
    (dict(source="empty"), ValueError, "holds no images"),
    (dict(out="a_file"), NotADirectoryError, "not a folder"),
    (dict(model="nowhere/tiny.pth"), FileNotFoundError, "model not found"),
    (dict(engine="spark"), ValueError, "engine must be one of"),
    (dict(workers=0), ValueError, "workers must be"),
    (dict(batch_size=0), ValueError, "batch_size must be"),
    (dict(engine="local", workers=2), ValueError, "one worker in this process"),
    (dict(preset="nope"), ValueError, "unknown preset"),
    (dict(settings={"points_per_side": 0}), ValueError, "points_per_side"),
])
def test_bad_input_fails_before_writing(photos, tmp_path, checkpoint, change, error, match):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    source = {"missing": tmp_path / "missing", "empty": tmp_path / "empty"}.get(change.get("source"), photos)
    out = tmp_path / change.get("out", "out")
    task = EverythingTask(change.get("model", checkpoint), preset=change.get("preset"),
                          settings=change.get("settings", EVERYTHING))
    options = {k: v for k, v in change.items() if k in ("engine", "workers", "batch_size")}
    with pytest.raises(error, match=match):
        run_job(source, task, out, **dict({"engine": "local"}, **options))
    assert not (tmp_path / "out").exists()


def test_ray_not_installed_names_the_extra(photos, tmp_path, checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EngineError, match=r"pip install samkit\[ray\]"):
        run_job(photos, EverythingTask(checkpoint, settings=EVERYTHING), tmp_path / "out", engine="ray")
    assert not (tmp_path / "out").exists()


def test_unreachable_address_is_one_clear_error(photos, tmp_path, checkpoint):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process; the address would be ignored")
    with pytest.raises(EngineError, match="cannot reach a Ray cluster at 127.0.0.1:9"):
        run_job(photos, EverythingTask(checkpoint, settings=EVERYTHING), tmp_path / "out", address="127.0.0.1:9")
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


@pytest.mark.parametrize("value, match", [(dict(max_restarts=-2), "max_restarts"),
                                          (dict(max_task_retries=1.5), "max_task_retries")])
def test_retry_policy_is_validated(value, match):
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**value)


def test_text_progress_lines():
    lines = []

    class Stream:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    show = TextProgress(Stream(), interval=0.0)
    show(JobProgress(done=5, total=10, ok=3, errors=1, skipped=1, elapsed=2.0))
    show(JobProgress(done=10, total=10, ok=8, errors=1, skipped=1, elapsed=4.5, finished=True))
    assert lines[0] == "samkit engine: 5/10 (50%) 2.00 img/s, 1 error, 1 skipped, ETA 0:02\n"
    assert lines[1].endswith("done in 0:04\n") and "2.00 img/s, 1 error" in lines[1]


# -- on Ray ---------------------------------------------------------------------------------------
def test_ray_matches_the_local_engine(ray_cluster, photos, tmp_path, checkpoint):
    task = EverythingTask(checkpoint, settings=EVERYTHING)
    local = run_job(photos, task, tmp_path / "local", engine="local")
    on_ray = run_job(photos, task, tmp_path / "ray", engine="ray", workers=2, batch_size=2,
                     merge_coco_path=tmp_path / "all.json")
    assert (on_ray.ok, on_ray.errors, on_ray.skipped) == (local.ok, local.errors, 0) == (4, 2, 0)
    assert _annotations(tmp_path / "ray") == _annotations(tmp_path / "local")
    rows, local_rows = _manifest(tmp_path / "ray"), _manifest(tmp_path / "local")
    assert [(r["path"], r["status"], r["masks"]) for r in rows] == [(r["path"], r["status"], r["masks"])
                                                                     for r in local_rows]
    assert len({r["worker"] for r in rows}) >= 1 and ray_cluster.is_initialized()
    resumed = run_job(photos, task, tmp_path / "ray", engine="ray", workers=2)
    assert (resumed.skipped, resumed.ok, resumed.errors) == (4, 0, 2) and len(_manifest(tmp_path / "ray")) == 6


def test_ray_loses_nothing_when_a_worker_process_dies(ray_cluster, tmp_path, checkpoint):
    photos = tmp_path / "photos"
    _write_images(photos, bad=False)
    clean = EverythingTask(checkpoint, settings=EVERYTHING)
    run_job(photos, clean, tmp_path / "clean", engine="local")
    marker = tmp_path / "killed"
    crashing = CrashOnceTask(clean, victim="d.png", marker=str(marker))
    summary = run_job(photos, crashing, tmp_path / "out", engine="ray", workers=1, batch_size=1)
    assert marker.exists()  # the worker was killed once
    rows = _manifest(tmp_path / "out")
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos.rglob("*.*"))
    assert all(r["status"] == "ok" for r in rows) and summary.ok == 4
    assert _annotations(tmp_path / "out") == _annotations(tmp_path / "clean")


def test_batch_encoding_gives_the_same_masks(tmp_path, checkpoint):
    photos = tmp_path / "photos"
    _write_images(photos)
    task = EverythingTask(checkpoint, settings=EVERYTHING)
    one = run_job(photos, task, tmp_path / "one", engine="local", batch_size=3, batch_encode=False)
    batched = run_job(photos, task, tmp_path / "batched", engine="local", batch_size=3, batch_encode=True)
    assert (batched.ok, batched.errors) == (one.ok, one.errors) == (4, 2)
    assert _annotations(tmp_path / "batched") == _annotations(tmp_path / "one")
