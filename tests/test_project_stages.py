"""The data-engine stages over a project: prefill (stage 2), auto (stage 3), retrain, and their CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit import Segmenter, load_model
from samkit.cli import main
from samkit.engine.projects import Project
from samkit.engine.projects.stages import auto, prefill, retrain, split_images
from samkit.pipelines import EverythingSettings, SegmentEverything, detect_then_segment
from samkit.pipelines.everything import PRESETS
from samkit.train import SyntheticScenes, evaluate

TRAINED = Path(__file__).resolve().parents[1] / "samkit" / "assets" / "tiny_synthetic.pth"
# Loose thresholds so the tiny model keeps masks on 128 x 128 scenes; one small grid, no crops.
EVERYTHING = dict(points_per_side=4, crop_n_layers=0, pred_iou_thresh=0.3, stability_score_thresh=0.5,
                  min_mask_region_area=0)


def box_detector(image):
    """Three fixed boxes (XYXY) with scores 0.9, 0.6, 0.2; module level so Ray workers can unpickle it."""
    return ([[8, 8, 60, 60], [40, 36, 120, 110], [0, 0, 30, 30]], [0.9, 0.6, 0.2], ["disc", "blob", "corner"])


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(load_model(TRAINED))


@pytest.fixture(scope="module")
def scenes():
    return SyntheticScenes(8, seed=3)


def make_project(folder: Path, scenes, count: int, *, masks_on: tuple[int, ...] = ()) -> Project:
    """A project of ``count`` synthetic scenes; the ground-truth masks of ``masks_on`` stored as accepted."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(scenes[i][0]).save(folder / f"scene_{i}.png")
    project = Project.init(folder)
    report = project.add_images([folder])
    assert len(report.added) == count, report.skipped
    for i in masks_on:
        record = project.find_image(folder / f"scene_{i}.png")
        for mask in scenes[i][1]:
            project.add_annotation(record.id, mask, author="ann")
    return project


def rgb(record) -> np.ndarray:
    return np.asarray(Image.open(record.path).convert("RGB"))


# -- prefill ---------------------------------------------------------------------------------------
def test_prefill_stores_pending_stage_two_masks_of_the_pipeline(tmp_path, scenes, segmenter):
    project = make_project(tmp_path / "p", scenes, 3)
    version = project.register_model(TRAINED)
    report = prefill(project, segmenter, box_detector, min_score=0.5)
    assert report.stage == 2 and report.model_version == version and not report.skipped
    assert sorted(report.processed) == sorted(r.id for r in project.images())
    for record in project.images():
        expected = detect_then_segment(rgb(record), box_detector, segmenter, min_score=0.5, drop_empty=True)
        stored = project.annotations(record.id)
        assert len(stored) == len(expected) == 2  # the 0.2 box is below the threshold
        for annotation, mask, meta in zip(stored, expected.masks[:, 0], expected.meta):
            assert (annotation.stage, annotation.source, annotation.status) == (2, "prefill", "pending")
            assert annotation.model_version == version and annotation.label == meta["label"]
            assert annotation.score == pytest.approx(meta["score"])
            np.testing.assert_array_equal(annotation.mask(), mask)
    assert project.status().pending == 6 and project.status().accepted == 0

    again = prefill(project, segmenter, box_detector, min_score=0.5)  # idempotent
    assert again.added == [] and again.processed == [] and len(again.skipped) == 3
    assert all(reason == "already prefilled" for _, reason in again.skipped)
    assert len(project.annotations()) == 6


@pytest.mark.parametrize("min_score, per_image", [(0.0, 3), (0.7, 1), (0.95, 0)])
def test_prefill_respects_the_threshold(tmp_path, scenes, segmenter, min_score, per_image):
    project = make_project(tmp_path / "p", scenes, 1)
    report = prefill(project, segmenter, box_detector, min_score=min_score, label="thing")
    assert len(report.added) == per_image and report.model_version is None
    assert all(a.label == "thing" and a.model_version is None for a in project.annotations())
    assert all(a.score >= min_score for a in project.annotations())


def test_prefill_skips_corrupt_images_and_rejects_bad_arguments(tmp_path, scenes, segmenter):
    project = make_project(tmp_path / "p", scenes, 2)
    broken = project.images()[0]
    broken.path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    report = prefill(project, segmenter, box_detector)
    assert report.processed == [project.images()[1].id]
    assert [path for path, _ in report.skipped] == [str(broken.path)]
    assert "cannot read the image" in report.skipped[0][1]
    with pytest.raises(ValueError, match=r"min_score must be a number in \[0, 1\], got 1.5"):
        prefill(project, segmenter, box_detector, min_score=1.5)
    with pytest.raises(TypeError, match="detector"):
        prefill(project, segmenter, 42)


# -- auto ------------------------------------------------------------------------------------------
def everything_masks(segmenter, image) -> np.ndarray:
    pipeline = SegmentEverything(segmenter, **dict(PRESETS["sa1b"], **EVERYTHING))
    return pipeline(image).best().masks[:, 0]


def check_auto_masks(project, segmenter, image_ids, version) -> int:
    total = 0
    for image_id in image_ids:
        expected = everything_masks(segmenter, rgb(project.image(image_id)))
        stored = project.annotations(image_id)
        assert len(stored) == len(expected)
        for annotation, mask in zip(stored, expected):
            assert (annotation.stage, annotation.source, annotation.status) == (3, "auto", "accepted")
            assert annotation.model_version == version
            np.testing.assert_array_equal(annotation.mask(), mask)
        total += len(stored)
    return total


def test_auto_local_segments_images_without_accepted_masks(tmp_path, scenes, segmenter):
    project = make_project(tmp_path / "p", scenes, 3, masks_on=(0,))
    annotated = project.find_image(tmp_path / "p" / "scene_0.png").id
    before = len(project.annotations())
    version = project.register_model(TRAINED)
    report = auto(project, settings=EVERYTHING)  # the current model version's checkpoint
    others = [r.id for r in project.images() if r.id != annotated]
    assert report.stage == 3 and sorted(report.processed) == others and report.model_version == version
    assert report.skipped == [(str(project.image(annotated).path), "has accepted masks")]
    assert report.out.is_dir() and (report.out / "manifest.jsonl").is_file()
    assert report.out.is_relative_to(project.root / ".samkit")
    assert len(project.annotations(annotated)) == before  # untouched
    added = check_auto_masks(project, segmenter, others, version)
    assert added == len(report.added) > 0

    again = auto(project, settings=EVERYTHING)  # nothing left: every image has accepted masks
    assert again.added == [] and len(project.annotations()) == before + added


def test_auto_skips_corrupt_images_and_resumes_after_a_failed_import(tmp_path, scenes, segmenter, monkeypatch):
    project = make_project(tmp_path / "p", scenes, 3)
    broken, first, second = project.images()
    broken.path.write_bytes(b"not an image at all")
    real_add = Project.add_annotations

    def failing_add(self, *args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Project, "add_annotations", failing_add)
    with pytest.raises(RuntimeError, match="went away"):  # the job ran; storing its masks failed
        auto(project, str(TRAINED), settings=EVERYTHING)
    assert project.annotations() == []
    monkeypatch.setattr(Project, "add_annotations", real_add)
    summaries = []
    report = auto(project, str(TRAINED), settings=EVERYTHING, progress=summaries.append)
    assert summaries[-1].skipped == 2  # the two good images' outputs of the first run are reused
    assert sorted(report.processed) == [first.id, second.id]
    assert [path for path, _ in report.skipped] == [str(broken.path)]
    assert report.skipped[0][1].startswith("segment-everything failed: ")
    assert check_auto_masks(project, segmenter, [first.id, second.id], None) == len(report.added) > 0


def test_auto_ray_matches_segment_everything(ray_cluster, tmp_path, scenes, segmenter):
    project = make_project(tmp_path / "p", scenes, 2)
    report = auto(project, str(TRAINED), engine="ray", workers=1, settings=EVERYTHING, batch_size=1)
    assert sorted(report.processed) == [r.id for r in project.images()] and report.model_version is None
    assert check_auto_masks(project, segmenter, report.processed, None) == len(report.added) > 0


def test_auto_needs_a_model(tmp_path, scenes):
    project = make_project(tmp_path / "p", scenes, 1)
    with pytest.raises(ValueError, match="no model given and the project has no registered model"):
        auto(project)
    with pytest.raises(ValueError, match="engine must be one of"):
        auto(project, str(TRAINED), engine="spark", settings=EVERYTHING)


# -- retrain ---------------------------------------------------------------------------------------
def test_split_is_seeded_disjoint_and_keeps_both_sides():
    train_ids, held = split_images(range(1, 11), holdout=0.2, seed=0)
    assert len(held) == 2 and not set(train_ids) & set(held) and sorted(train_ids + held) == list(range(1, 11))
    assert split_images(range(1, 11), holdout=0.2, seed=0) == (train_ids, held)
    assert split_images([4, 9], holdout=0.9, seed=1)[0] and split_images([4, 9], holdout=0.01, seed=1)[1]


def test_retrain_registers_the_next_version_with_held_out_measurements(tmp_path, scenes):
    project = make_project(tmp_path / "p", scenes, 6, masks_on=(0, 1, 2, 3, 4, 5))
    parent = project.register_model(TRAINED)
    report = retrain(project, steps=3, holdout=0.34, seed=1, device="cpu", prompt_iterations=1, images_per_step=2,
                     train_options={"masks_per_image": 4})
    assert report.version == "v2" and report.parent == parent and project.current_model().version == "v2"
    assert report.checkpoint.is_file() and project.current_model().checkpoint == report.checkpoint
    assert len(report.held_out_images) == 2 and len(report.train_images) == 4
    assert not set(report.held_out_images) & set(report.train_images)

    # The numbers are measurements of the two models on the held-out images, and only on them.
    held = [(rgb(project.image(i)), np.stack([a.mask() for a in project.annotations(i)]))
            for i in report.held_out_images]
    expected_before = evaluate(load_model(TRAINED), held)
    expected_after = evaluate(load_model(report.checkpoint), held)
    for key in ("point_miou", "box_miou", "num_masks", "num_images"):
        assert report.before[key] == pytest.approx(expected_before[key], abs=1e-6)
        assert report.after[key] == pytest.approx(expected_after[key], abs=1e-6)
    assert report.before["num_images"] == 2
    assert report.before["num_masks"] == sum(len(project.annotations(i)) for i in report.held_out_images)
    stored = project.current_model().metrics
    assert stored["before"] == report.before and stored["after"] == report.after
    assert stored["held_out_images"] == report.held_out_images and stored["steps"] == 3
    changed = any(not np.array_equal(a, b) for a, b in zip(load_model(TRAINED).state_dict().values(),
                                                           load_model(report.checkpoint).state_dict().values()))
    assert changed  # three optimiser steps moved the decoder


def test_retrain_refuses_too_few_masks_and_a_missing_base(tmp_path, scenes):
    project = make_project(tmp_path / "p", scenes, 2, masks_on=(0,))
    with pytest.raises(ValueError, match=r"at least 2 images .* has \d+ accepted masks on 1 images"):
        retrain(project, base=TRAINED, steps=1)
    record = project.find_image(tmp_path / "p" / "scene_1.png")
    project.add_annotation(record.id, scenes[1][1][0])
    with pytest.raises(ValueError, match="no model version yet: pass base="):
        retrain(project, steps=1)
    with pytest.raises(ValueError, match="holdout must be a fraction"):
        retrain(project, base=TRAINED, holdout=1.0)


# -- command line ----------------------------------------------------------------------------------
def test_cli_auto_and_retrain(tmp_path, scenes, capsys):
    folder = tmp_path / "p"
    make_project(folder, scenes, 4, masks_on=(0, 1, 2)).close()
    assert main(["project", "auto", str(folder), "--model", str(TRAINED), "--points-per-side", "4", "-q"]) == 0
    with Project.open(folder) as project:
        auto_masks = project.annotations(stage=3)
        assert {a.image_id for a in auto_masks} <= {project.find_image(folder / "scene_3.png").id}
    assert main(["project", "retrain", str(folder), "--steps", "2", "--iterations", "1", "--model", str(TRAINED)]) == 0
    out = capsys.readouterr().out
    assert "registered v1" in out and "held-out mIoU" in out
    with Project.open(folder) as project:
        assert project.current_model().version == "v1" and "after" in project.current_model().metrics
    # with a version registered, --model would be ignored: refused instead
    assert main(["project", "retrain", str(folder), "--steps", "1", "--model", str(TRAINED)]) == 2
    assert "retraining continues it" in capsys.readouterr().err


def test_cli_prefill_with_a_registry_detector(tmp_path, scenes, capsys):
    pytest.importorskip("ultralytics")
    folder = tmp_path / "p"
    make_project(folder, scenes, 2).close()
    code = main(["project", "prefill", str(folder), "--detector", "yolov8n.yaml", "--min-score", "0.0",
                 "--model", str(TRAINED)])
    assert code == 0
    out = capsys.readouterr().out
    assert "prefilled 2 images" in out
    with Project.open(folder) as project:
        count = len(project.annotations())
        assert all((a.stage, a.source, a.status) == (2, "prefill", "pending") for a in project.annotations())
    assert f"with {count} pending mask" in out
    assert main(["project", "prefill", str(folder), "--detector", "yolov8n.yaml", "--model", str(TRAINED), "-q"]) == 0


@pytest.mark.parametrize("argv, code, message", [
    (["project", "prefill", "{missing}", "--detector", "yolov8n.yaml"], 2, "does not exist"),
    (["project", "prefill", "{project}", "--detector", "no_such_detector.pt", "--model", str(TRAINED)], 1,
     "no_such_detector"),
    (["project", "auto", "{project}", "--engine", "local", "--workers", "2", "--model", str(TRAINED)], 2,
     "--workers and --address apply to --engine ray"),
    (["project", "auto", "{project}", "--model", "missing/model.pth"], 1, "model not found"),
    (["project", "retrain", "{project}", "--model", str(TRAINED)], 1, "at least 2 images"),
    (["project", "retrain", "{project}", "--holdout", "0", "--model", str(TRAINED)], 2, "strictly between 0 and 1"),
    (["project", "prefill", "{project}", "--detector", "x.pt", "--min-score", "2"], "exit", "expected a number in [0, 1]"),
    (["project", "auto", "{project}", "--engine", "spark"], "exit", "invalid choice: 'spark'"),
])
def test_cli_bad_input(tmp_path, scenes, capsys, argv, code, message):
    make_project(tmp_path / "p", scenes, 1).close()
    argv = [a.format(missing=tmp_path / "nothing", project=tmp_path / "p") for a in argv]
    if code == "exit":  # argparse rejects the value itself
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    else:
        assert main(argv) == code
    assert message in capsys.readouterr().err
