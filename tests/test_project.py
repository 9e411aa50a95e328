"""Annotation projects (samkit.engine.projects): the SQLite store, import / export, the CLI, and
its reliability under concurrent writers and a killed writer."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit.cli import main
from samkit.engine.projects import (
    DB_NAME,
    SCHEMA_VERSION,
    Project,
    ProjectError,
    UnknownIdError,
)
from samkit.engine.projects.schema import connect, prepare
from samkit.formats.rle import masks_to_coco_rle, rle_to_mask
from samkit.formats.sa1b import read_sa1b_json

ROOT = Path(__file__).resolve().parents[1]


def _save_image(path: Path, height: int, width: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _mask(height: int, width: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A project with two images: 1 is 12x16, 2 is 10x20 (H x W)."""
    _save_image(tmp_path / "a.png", 12, 16, 0)
    _save_image(tmp_path / "sub" / "b.png", 10, 20, 1)
    with Project.init(tmp_path) as p:
        assert p.add_images([tmp_path]).added == [1, 2]
        yield p


# -- the store ---------------------------------------------------------------------------------------
def test_round_trip_add_edit_supersede_status_undo(project: Project) -> None:
    first = _mask(12, 16, 2, 3, 6, 9)
    a = project.add_annotation(1, first, label="cat", author="ann", seconds=10.0, score=0.9)
    record = project.annotations(1)[0]
    assert record.id == a and np.array_equal(record.mask(), first)
    assert record.bbox == (3.0, 2.0, 6.0, 4.0) and record.area == 24 and record.edited_at is None
    assert (record.label, record.stage, record.source, record.author, record.status) == \
        ("cat", 1, "manual", "ann", "accepted")

    second = _mask(12, 16, 0, 0, 3, 3)
    b = project.edit_annotation(a, second, author="bob", seconds=4.0)
    assert b != a
    old, new = project.annotation(a), project.annotation(b)
    assert old.superseded_by == b and np.array_equal(old.mask(), first)  # nothing overwritten
    assert np.array_equal(new.mask(), second) and new.author == "bob" and new.seconds == 14.0
    assert new.created_at == old.created_at and new.edited_at >= old.created_at and new.label == "cat"
    assert [r.id for r in project.annotations(1)] == [b]
    assert [r.id for r in project.annotations(1, current=False)] == [a, b]
    with pytest.raises(ValueError, match=f"superseded by annotation {b}"):
        project.edit_annotation(a, label="dog")

    relabelled = project.edit_annotation(b, label="dog")
    assert project.annotation(relabelled).label == "dog"
    assert np.array_equal(project.annotation(relabelled).mask(), second)

    c = project.add_annotation(1, _mask(12, 16, 8, 8, 12, 16), author="ann", status="pending", stage=2,
                               source="prefill", model_version="v1")
    project.set_status(c, "rejected", author="ann")
    assert project.annotation(c).status == "rejected"
    assert project.annotation(relabelled).author == "bob"             # an edit without author keeps it
    assert project.undo_last(1, author="ann") is None                 # ann's rows: superseded or rejected
    assert project.undo_last(1, author="bob") == relabelled
    assert project.annotation(relabelled).status == "withdrawn"
    assert project.undo_last(1) is None
    kinds = [(e["kind"], e["annotation_id"], e["old"], e["new"]) for e in project.events()]
    assert kinds == [("add", a, None, "accepted"), ("edit", b, str(a), str(b)),
                     ("edit", relabelled, str(b), str(relabelled)), ("add", c, None, "pending"),
                     ("status", c, "pending", "rejected"), ("status", relabelled, "accepted", "withdrawn")]
    assert [e["author"] for e in project.events(annotation_id=relabelled)] == [None, "bob"]


def test_add_annotations_is_all_or_nothing(project: Project) -> None:
    good, other = _mask(12, 16, 2, 3, 6, 9), _mask(12, 16, 0, 0, 3, 3)
    with pytest.raises(ValueError, match="mask 1 for image 1"):
        project.add_annotations(1, [good, np.ones((10, 20), bool)], stage=3, source="auto")
    with pytest.raises(ValueError, match="label must have one entry per mask: 2 masks, got 1"):
        project.add_annotations(1, [good, other], label=["cat"])
    assert project.annotations() == []
    ids = project.add_annotations(1, [good, other], label=["cat", "dog"], scores=[0.9, None], stage=2,
                                  source="prefill", status="pending")
    records = project.annotations(1, status="pending")
    assert [r.id for r in records] == ids and [r.label for r in records] == ["cat", "dog"]
    assert [r.score for r in records] == [pytest.approx(0.9), None]
    assert np.array_equal(records[0].mask(), good) and np.array_equal(records[1].mask(), other)


def test_history_survives_reopening(project: Project, tmp_path: Path) -> None:
    a = project.add_annotation(2, _mask(10, 20, 1, 1, 4, 4), author="ann")
    b = project.edit_annotation(a, _mask(10, 20, 1, 1, 5, 5))
    project.close()
    with Project.open(tmp_path / DB_NAME) as again:
        rows = again.annotations(current=False)
        assert [(r.id, r.superseded_by) for r in rows] == [(a, b), (b, None)]
        assert again.image(2).path == (tmp_path / "sub" / "b.png").resolve()
    raw = sqlite3.connect(tmp_path / DB_NAME)
    assert raw.execute("SELECT path FROM images ORDER BY id").fetchall() == [("a.png",), ("sub/b.png",)]
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_next_image_mark_done_and_models(project: Project, tmp_path: Path) -> None:
    assert project.next_image().id == 1
    project.add_annotation(1, _mask(12, 16, 0, 0, 2, 2), status="pending")
    assert project.next_image().id == 1                               # pending is not accepted
    project.add_annotation(1, _mask(12, 16, 0, 0, 2, 2))
    assert project.next_image().id == 2
    project.mark_done(2, author="ann")
    project.mark_done(2, author="ann")
    assert project.next_image() is None and project.image(2).done
    assert [(e["kind"], e["image_id"], e["author"]) for e in project.events()][-1:] == [("done", 2, "ann")]
    assert len(project.events(image_id=2)) == 1 and project.status().done_images == 1
    assert project.next_image(after=0) is None
    assert project.current_model() is None
    assert project.register_model(tmp_path / "m1.pth", metrics={"miou": 0.5}) == "v1"
    assert project.register_model("/elsewhere/m2.pth", parent="v1", notes="retrained") == "v2"
    models = project.models()
    assert [(m.version, m.parent) for m in models] == [("v1", None), ("v2", "v1")]
    assert models[0].checkpoint == (tmp_path / "m1.pth").resolve() and models[0].metrics == {"miou": 0.5}
    assert project.current_model().version == "v2" and project.status().model_version == "v2"
    with pytest.raises(UnknownIdError, match="'v9' is not registered"):
        project.register_model("m.pth", parent="v9")


@pytest.mark.parametrize("call, error, message", [
    (lambda p: p.add_annotation(1, np.ones((16, 12), bool)), ValueError, r"\(12, 16\), got \(16, 12\)"),
    (lambda p: p.add_annotation(1, np.zeros((12, 16), bool)), ValueError, "empty"),
    (lambda p: p.add_annotation(1, {"size": [12, 17], "counts": [0, 204]}), ValueError, "RLE of size"),
    (lambda p: p.add_annotation(1, np.full((12, 16), 2)), ValueError, r"outside \{0, 1\}"),
    (lambda p: p.add_annotation(1, np.ones((12, 16), bool), stage=4), ValueError, r"stage must be one of \[1, 2, 3\]"),
    (lambda p: p.add_annotation(1, np.ones((12, 16), bool), source="robot"), ValueError, "source must be one of"),
    (lambda p: p.add_annotation(1, np.ones((12, 16), bool), status="ok"), ValueError, "status must be one of"),
    (lambda p: p.add_annotation(1, np.ones((12, 16), bool), seconds=-1), ValueError, "seconds must be"),
    (lambda p: p.add_annotation(99, np.ones((12, 16), bool)), UnknownIdError, "no image with id 99"),
    (lambda p: p.image(0), UnknownIdError, "no image with id 0"),
    (lambda p: p.edit_annotation(42, label="x"), UnknownIdError, "no annotation with id 42"),
    (lambda p: p.set_status(42, "accepted"), UnknownIdError, "no annotation with id 42"),
    (lambda p: p.annotations(99), UnknownIdError, "no image with id 99"),
    (lambda p: p.undo_last(99), UnknownIdError, "no image with id 99"),
    (lambda p: p.mark_done(99), UnknownIdError, "no image with id 99"),
    (lambda p: p.export("x.json", format="yolo"), ValueError, "format must be one of"),
])
def test_bad_input_is_refused_clearly(project: Project, call, error, message) -> None:
    with pytest.raises(error, match=message):
        call(project)
    assert project.annotations(current=False) == [] and project.events() == []  # nothing half-written


def test_edit_with_wrong_shape_keeps_the_old_row(project: Project) -> None:
    a = project.add_annotation(1, _mask(12, 16, 0, 0, 4, 4))
    with pytest.raises(ValueError, match=r"\(12, 16\)"):
        project.edit_annotation(a, np.ones((3, 3), bool))
    assert project.annotation(a).superseded_by is None and len(project.annotations(current=False)) == 1


def test_status_numbers_match_an_independent_count(project: Project, tmp_path: Path) -> None:
    _save_image(tmp_path / "c.png", 8, 8, 2)
    assert project.add_images([tmp_path / "c.png"]).added == [3]
    rng = np.random.default_rng(3)
    plan = []  # (image, stage, status, seconds, edited)
    for i in range(14):
        plan.append((int(rng.integers(1, 3)), int(rng.integers(1, 4)), ["accepted", "pending", "rejected"][i % 3],
                     None if i % 4 == 0 else float(rng.integers(1, 40)), i % 5 == 0))
    for image, stage, status, seconds, edited in plan:
        h, w = (12, 16) if image == 1 else (10, 20)
        a = project.add_annotation(image, _mask(h, w, 0, 0, 2, 3), stage=stage, status=status, seconds=seconds,
                                   source="auto" if stage == 3 else "manual")
        if edited:
            project.edit_annotation(a, _mask(h, w, 1, 1, 3, 3), seconds=1.0)
    accepted = [p for p in plan if p[2] == "accepted"]
    seconds = [(s or 0.0) + 1.0 if e else s for _, _, st, s, e in plan if st == "accepted" and (s is not None or e)]
    status = project.status()
    assert status.images == 3
    assert status.annotated_images == len({p[0] for p in accepted})
    assert status.accepted_per_stage == {k: sum(p[1] == k for p in accepted) for k in (1, 2, 3)}
    assert status.pending == sum(p[2] == "pending" for p in plan)
    assert status.rejected == sum(p[2] == "rejected" for p in plan)
    assert status.masks_per_image == pytest.approx(len(accepted) / len({p[0] for p in accepted}))
    assert status.median_seconds_per_mask == pytest.approx(statistics.median(seconds))


def test_empty_project_status(tmp_path: Path) -> None:
    with Project.init(tmp_path / "empty", name="nothing") as p:
        status = p.status()
        assert (status.images, status.annotated_images, status.masks_per_image, status.median_seconds_per_mask) == \
            (0, 0, 0.0, None)
        assert p.name == "nothing" and p.next_image() is None


# -- opening, schema and migrations -------------------------------------------------------------------
def test_init_twice_and_open_missing(tmp_path: Path) -> None:
    Project.init(tmp_path).close()
    with pytest.raises(FileExistsError, match="already exists"):
        Project.init(tmp_path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="not a samkit project"):
        Project.open(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="no such project"):
        Project.open(tmp_path / "missing.sqlite")


def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png", 4, 5, 0)
    path = tmp_path / DB_NAME
    connection = connect(path)
    prepare(connection, path, create=True, name="old", target=1)      # what the first release wrote
    connection.execute("INSERT INTO images (path, width, height, added_at) VALUES ('a.png', 5, 4, 0)")
    rle = json.dumps(masks_to_coco_rle(_mask(4, 5, 0, 0, 4, 1))[0])
    connection.execute("INSERT INTO annotations (image_id, rle, bbox, area, label, stage, source, created_at, status) "
                       "VALUES (1, ?, '[0, 0, 1, 4]', 4, 'x', 1, 'manual', 0, 'accepted')", (rle,))
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
    connection.close()
    with Project.open(tmp_path) as p:
        assert p.annotations()[0].mask()[:, 0].all() and p.annotations()[0].area == 4
        p.set_status(1, "rejected", author="ann")                     # the v2 events table exists now
        assert p.events()[0]["new"] == "rejected"
        assert p.add_images([tmp_path / "a.png"]).skipped[0][1].startswith("already in the project")
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Project.init(tmp_path).close()
    raw = sqlite3.connect(tmp_path / DB_NAME)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(ProjectError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        Project.open(tmp_path)


@pytest.mark.parametrize("content, message", [
    (b"this is not a database at all" * 40, "not a readable SQLite database"),
    (None, "SQLite database but not a samkit project"),
    (b"", "SQLite database but not a samkit project"),
])
def test_other_files_are_refused(tmp_path: Path, content, message) -> None:
    path = tmp_path / DB_NAME
    if content is None:
        other = sqlite3.connect(path)
        other.execute("CREATE TABLE things (x)")
        other.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(ProjectError, match=message):
        Project.open(tmp_path)
    assert path.read_bytes() == before                                 # left untouched


# -- import and export --------------------------------------------------------------------------------
def test_import_folder_skips_corrupt_and_duplicate_images(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _save_image(images / "1.png", 6, 7, 0)
    _save_image(images / "2.jpg", 9, 5, 1)
    (images / "copy.png").write_bytes((images / "1.png").read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "notes.txt").write_text("not an image")
    truncated = (images / "2.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(truncated[: len(truncated) // 2])
    with Project.init(tmp_path) as p:
        report = p.add_images([images])
        assert [(i.path.name, i.width, i.height) for i in p.images()] == [("1.png", 7, 6), ("2.jpg", 5, 9)]
        reasons = {Path(path).name: reason for path, reason in report.skipped}
        assert set(reasons) == {"broken.jpg", "copy.png", "cut.jpg"}
        assert "cannot read image file" in reasons["broken.jpg"] and "cannot read image" in reasons["cut.jpg"]
        assert reasons["copy.png"].startswith("duplicate of image 1")
        again = p.add_images([images / "1.png", tmp_path / "missing.png"])
        assert again.added == [] and sorted(r for _, r in again.skipped) == ["already in the project as image 1",
                                                                               "no such file or folder"]


def _coco_file(tmp_path: Path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    mask_utils = pytest.importorskip("pycocotools.mask")

    _save_image(tmp_path / "src" / "x.png", 10, 12, 0)
    _save_image(tmp_path / "src" / "y.png", 8, 9, 1)
    cat = _mask(10, 12, 2, 2, 6, 7)
    rle = mask_utils.encode(np.asfortranarray(cat.astype(np.uint8)))
    polygon = [[1.0, 1.0, 7.0, 1.0, 7.0, 5.0, 1.0, 5.0]]
    poly_rle = mask_utils.merge(mask_utils.frPyObjects(polygon, 8, 9))
    dataset = {"images": [{"id": 7, "file_name": "x.png", "width": 12, "height": 10},
                          {"id": 8, "file_name": "y.png", "width": 9, "height": 8},
                          {"id": 9, "file_name": "gone.png", "width": 9, "height": 8}],
               "categories": [{"id": 3, "name": "cat"}, {"id": 4, "name": "dog"}],
               "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0,
                                "segmentation": {"size": [10, 12], "counts": rle["counts"].decode()}},
                               {"id": 2, "image_id": 8, "category_id": 4, "iscrowd": 0, "segmentation": polygon}]}
    path = tmp_path / "src" / "instances.json"
    path.write_text(json.dumps(dataset))
    return path, {"x.png": [cat], "y.png": [mask_utils.decode(poly_rle).astype(bool)]}


def test_import_coco(tmp_path: Path) -> None:
    coco_path, expected = _coco_file(tmp_path)
    with Project.init(tmp_path / "project") as p:
        report = p.import_coco(coco_path)
        assert len(report.added) == 2 and [Path(s).name for s, _ in report.skipped] == ["gone.png"]
        for image in p.images():
            rows = p.annotations(image.id)
            assert [(r.stage, r.source, r.status, r.author) for r in rows] == [(1, "import", "accepted", "import")]
            assert np.array_equal(rows[0].mask(), expected[image.path.name][0])
        assert [r.label for r in p.annotations()] == ["cat", "dog"]
        assert p.images()[0].path == (tmp_path / "src" / "x.png").resolve()   # outside the folder: absolute
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}],
                               "annotations": [{"image_id": 2, "segmentation": {}}]}))
    with Project.open(tmp_path / "project") as p, pytest.raises(ValueError, match="image 2, which is not among"):
        p.import_coco(bad)


def _annotated(tmp_path: Path) -> tuple[Project, dict[int, np.ndarray]]:
    _save_image(tmp_path / "a.png", 12, 16, 0)
    _save_image(tmp_path / "sub" / "b.png", 10, 20, 1)
    p = Project.init(tmp_path)
    p.add_images([tmp_path])
    masks = {}
    rng = np.random.default_rng(5)
    for image, (h, w) in ((1, (12, 16)), (2, (10, 20)), (1, (12, 16))):
        mask = rng.random((h, w)) > 0.6
        masks[p.add_annotation(image, mask, label="cat" if image == 1 else "dog", score=0.75)] = mask
    rejected = p.add_annotation(2, np.ones((10, 20), bool), status="pending")
    p.set_status(rejected, "rejected")
    return p, masks


def test_coco_export_reads_back_with_pycocotools(tmp_path: Path) -> None:
    COCO = pytest.importorskip("pycocotools.coco").COCO

    project, masks = _annotated(tmp_path / "p")
    out = project.export(tmp_path / "out" / "instances.json")
    coco = COCO(str(out))
    assert {im["file_name"] for im in coco.dataset["images"]} == {"a.png", "sub/b.png"}
    assert {c["name"] for c in coco.dataset["categories"]} == {"cat", "dog"}
    annotations = coco.dataset["annotations"]
    assert len(annotations) == len(masks)                             # the rejected one is left out
    for annotation in annotations:
        mask = masks[annotation["samkit_id"]]
        assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)
        assert coco.cats[annotation["category_id"]]["name"] == ("cat" if annotation["image_id"] == 1 else "dog")
    everything = COCO(str(project.export(tmp_path / "all.json", status="any")))
    assert len(everything.dataset["annotations"]) == len(masks) + 1
    project.close()


def test_sa1b_export_reads_back(tmp_path: Path) -> None:
    project, masks = _annotated(tmp_path / "p")
    out = project.export(tmp_path / "sa1b", format="sa1b")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert files == ["a.json", "sub/b.json"]
    seen = 0
    for name in files:
        data = read_sa1b_json(out / name)
        for annotation in data["annotations"]:
            assert np.array_equal(rle_to_mask(annotation["segmentation"]), masks[annotation["samkit_id"]])
            assert annotation["predicted_iou"] == 0.75
            seen += 1
        assert (data["image"]["height"], data["image"]["width"]) == ((12, 16) if name == "a.json" else (10, 20))
    assert seen == len(masks)
    with pytest.raises(ValueError, match="is a file"):
        project.export(out / "a.json", format="sa1b")
    project.close()


# -- reliability: concurrent writers and a killed writer -------------------------------------------------
def _write_many(folder: str, writer: str, count: int) -> list[int]:
    """Add ``count`` annotations as ``writer`` (runs in a spawned process or a thread)."""
    ids = []
    with Project.open(folder) as p:
        for i in range(count):
            mask = _mask(12, 16, i % 10, i % 14, i % 10 + 2, i % 14 + 2)
            ids.append(p.add_annotation(1, mask, author=writer, seconds=float(i)))
    return ids


def _write_many_in_threads(project: Project, writer: str, count: int, out: list) -> None:
    for i in range(count):
        out.append(project.add_annotation(1, _mask(12, 16, 0, 0, 1 + i % 11, 1 + i % 15), author=writer))


def test_concurrent_writers_lose_nothing(project: Project, tmp_path: Path) -> None:
    per_writer = 40
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        processes = [pool.apply_async(_write_many, (str(tmp_path), f"process{k}", per_writer)) for k in range(2)]
        thread_ids: dict[str, list[int]] = {f"thread{k}": [] for k in range(3)}
        threads = [threading.Thread(target=_write_many_in_threads, args=(project, name, per_writer, ids))
                   for name, ids in thread_ids.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        process_ids = [r.get(timeout=120) for r in processes]
    written = [i for ids in process_ids for i in ids] + [i for ids in thread_ids.values() for i in ids]
    assert len(written) == 5 * per_writer and len(set(written)) == len(written)
    rows = project.annotations()
    assert sorted(r.id for r in rows) == sorted(written)
    by_author = {}
    for row in rows:
        by_author[row.author] = by_author.get(row.author, 0) + 1
        assert row.mask().shape == (project.image(row.image_id).height, project.image(row.image_id).width)
    assert by_author == {name: per_writer for name in ["process0", "process1", *thread_ids]}
    assert len(project.events()) == len(written)
    raw = sqlite3.connect(tmp_path / DB_NAME)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from samkit.engine.projects import Project

    rng = np.random.default_rng(0)
    with Project.open(sys.argv[1]) as p:
        image = p.image(1)
        for i in range(24):
            mask = rng.random((image.height, image.width)) > 0.5  # a long RLE
            a = p.add_annotation(1, mask, author="killed", seconds=1.0)
            if i % 3 == 0:
                a = p.edit_annotation(a, rng.random((image.height, image.width)) > 0.5)
            print("committed", a, flush=True)
        event = Project._event

        def stall(db, kind, *args, **kwargs):  # the new row and the old row's superseded_by are written
            event(db, kind, *args, **kwargs)
            print("inside", kwargs["annotation_id"], kwargs["old"], flush=True)
            time.sleep(120)  # killed here, before COMMIT

        Project._event = staticmethod(stall)
        p.edit_annotation(a, rng.random((image.height, image.width)) > 0.5)
""")


def test_killed_writer_leaves_a_consistent_database(tmp_path: Path) -> None:
    _save_image(tmp_path / "big.png", 240, 320, 0)
    with Project.init(tmp_path) as p:
        p.add_images([tmp_path / "big.png"])
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env=dict(os.environ, YOLO_OFFLINE="1"))
    committed, inside = [], None
    try:
        for line in child.stdout:
            kind, *numbers = line.split()
            if kind == "committed":
                committed.append(int(numbers[0]))
            else:
                inside = int(numbers[0]), int(numbers[1])  # (the uncommitted new id, the row it supersedes)
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL and len(committed) == 24 and inside is not None
    raw = sqlite3.connect(tmp_path / DB_NAME)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    with Project.open(tmp_path) as p:
        rows = p.annotations(current=False)
        ids = {r.id for r in rows}
        assert set(committed) <= ids                                   # every commit is there
        assert inside[0] not in ids                                    # the killed edit left nothing:
        assert p.annotation(inside[1]).superseded_by is None           # not even the old row's pointer
        assert len(p.annotations()) == 24
        for row in rows:
            mask = row.mask()
            assert mask.shape == (240, 320) and mask.sum() == row.area
            assert row.superseded_by is None or row.superseded_by in ids
        # each row has its "add"/"edit" event: the row and its history were one transaction
        assert len([e for e in p.events() if e["kind"] in ("add", "edit")]) == len(rows)
        assert p.edit_annotation(inside[1], label="again") > max(ids)  # writable again


# -- the command line -------------------------------------------------------------------------------------
def test_cli_init_import_status_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "proj"
    _save_image(folder / "a.png", 12, 16, 0)
    (folder / "bad.png").write_bytes(b"nope")
    coco_path, _ = _coco_file(tmp_path)
    assert main(["project", "init", str(folder), "--name", "demo"]) == 0
    assert main(["project", "init", str(folder)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["project", "import", str(folder), str(folder), str(coco_path)]) == 0
    captured = capsys.readouterr()
    assert "added 3 images and 2 masks; skipped 2" in captured.out
    assert "bad.png" in captured.err and "gone.png" in captured.err
    with Project.open(folder) as p:
        p.add_annotation(p.find_image(folder / "a.png").id, _mask(12, 16, 0, 0, 3, 3), seconds=6.0, stage=2,
                         source="prefill")
        p.register_model(folder / "m.pth")
    assert main(["project", "status", str(folder), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["images"], status["annotated_images"], status["accepted_per_stage"]) == \
        (3, 3, {"1": 2, "2": 1, "3": 0})
    assert status["median_seconds_per_mask"] == 6.0 and status["model_version"] == "v1" and status["project"] == "demo"
    assert main(["project", "status", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "accepted masks: 3 (stage 1: 2, stage 2: 1, stage 3: 0)" in text and "model version: v1" in text
    assert main(["project", "export", str(folder), "--format", "coco", "--out", str(tmp_path / "o.json")]) == 0
    assert len(json.loads((tmp_path / "o.json").read_text())["annotations"]) == 3
    assert main(["project", "export", str(folder), "--format", "sa1b", "--out", str(tmp_path / "sa")]) == 0
    assert len(list((tmp_path / "sa").rglob("*.json"))) == 3


@pytest.mark.parametrize("argv, code, message", [
    (["project", "status", "{tmp}/missing"], 2, "does not exist"),
    (["project", "status", "{tmp}"], 2, "is not a samkit project"),
    (["project", "export", "{project}", "--format", "yolo", "--out", "{tmp}/x"], 2, "--format expects one of coco"),
    (["project", "export", "{project}", "--format", "coco", "--out", "{tmp}"], 2, "is a folder"),
    (["project", "export", "{project}", "--format", "coco", "--status", "maybe", "--out", "{tmp}/x.json"], 2,
     "--status expects"),
    (["project", "import", "{project}", "{tmp}/nothing.png"], 1, "no such file or folder"),
    (["project", "import", "{project}", "{tmp}/garbage.json"], 1, "not a JSON file"),
    (["project", "status", "{tmp}/garbage.sqlite"], 1, "not a readable SQLite database"),
])
def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, argv, code, message) -> None:
    Project.init(tmp_path / "project").close()
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "garbage.sqlite").write_bytes(b"garbage" * 100)
    args = [a.format(tmp=tmp_path, project=tmp_path / "project") for a in argv]
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
