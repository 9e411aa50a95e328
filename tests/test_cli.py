"""The ``samkit`` command line, run as a real process on tiny random checkpoints.

Every command runs through ``python -m samkit.cli`` (and the ``samkit`` console script when
installed); argument errors are also checked in-process, table-driven, to keep the suite fast.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit.cli import main
from samkit.rle import rle_to_mask

EVERYTHING_FAST = ["--preset", "proposals", "--points-per-side", "4"]


def make_image(path: Path, seed: int = 0, size: tuple[int, int] = (96, 128)) -> Path:
    rng = np.random.default_rng(seed)
    image = np.full((*size, 3), 210, np.uint8)
    x = int(rng.integers(0, size[1] - 40))
    image[20:70, x:x + 40] = rng.integers(0, 255, 3)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from samkit.weights import write_random_checkpoint

    root = tmp_path_factory.mktemp("cli")
    write_random_checkpoint(root / "tiny.pth", "tiny", seed=0)
    make_image(root / "photo.png", seed=0)
    (root / "photos").mkdir()
    for i in range(3):
        make_image(root / "photos" / f"im{i}.png", seed=i)
    (root / "cache").mkdir()
    return root


def cli_env(workspace: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, SAMKIT_CACHE=str(workspace / "cache"), HF_HUB_OFFLINE="1", YOLO_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    env.pop("SAMKIT_MODEL", None)
    env.update(extra)
    return env


def run_cli(workspace: Path, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "samkit.cli", *args], cwd=workspace, env=cli_env(workspace, **env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def run_main(workspace, monkeypatch, capsys):
    """Run the CLI in this process (faster than a new one): returns (exit status, stdout, stderr)."""
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("SAMKIT_CACHE", str(workspace / "cache"))
    monkeypatch.delenv("SAMKIT_MODEL", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))  # errors found by the commands
        except SystemExit as exit_info:  # errors found by argparse
            code = exit_info.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# -- usage errors (exit 2), in-process ------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    ([], "required: COMMAND"),
    (["nope"], "invalid choice: 'nope'"),
    (["segment", "a.png", "--out", "o", "--point", "1,a"], "expected X,Y or X,Y,LABEL"),
    (["segment", "a.png", "--out", "o", "--point", "1,2,3"], "LABEL 1 (foreground) or 0 (background), got '1,2,3'"),
    (["segment", "a.png", "--out", "o", "--box", "5,5,1,1"], "X1 > X0 and Y1 > Y0, got '5,5,1,1'"),
    (["segment", "a.png", "--out", "o", "--box", "1,2,3"], "expected X0,Y0,X1,Y1 (four numbers), got '1,2,3'"),
    (["segment", "a.png", "--out", "o"], "at least one --point"),
    (["segment", "a.png", "--out", "o", "--point", "1,1", "--box", "0,0,5,5", "--box", "1,1,6,6"],
     "at most one box, got 2 boxes"),
    (["segment", "a.png", "--point", "1,1"], "the following arguments are required: --out"),
    (["segment", "a.png", "--out", "o", "--point", "1,1", "--multimask", "--single"], "not allowed with"),
    (["--precision", "fp8", "models"], "invalid choice: 'fp8'"),
    (["models", "--device", "gpu0"], "expected a torch device"),
    (["download", "vit_x"], "invalid choice: 'vit_x'"),
    (["everything", "photos", "--out", "o.json", "--preset", "edges"], "invalid choice: 'edges'"),
    (["everything", "photos", "--out", "o.json", "--points-per-side", "0"], "expected an integer >= 1, got '0'"),
    (["detect-segment", "photos", "--out", "o.json"], "required: --detector"),
    (["detect-segment", "photos", "--out", "o.json", "--detector", "d.pt", "--conf", "2"],
     "expected a number in [0, 1], got '2'"),
    (["segment", "photo.png", "--out", "o", "--point", "1,1"], "no model given and none cached"),
    (["detect-segment", "photos", "--out", "o.json", "--detector", "weights.txt"], "--detector expects a YOLO file"),
    (["everything", "photos", "--format", "sa1b", "--out", "o.json"], "--out must be a folder"),
])
def test_bad_usage_exits_2_with_message(run_main, argv, message):
    code, _, err = run_main(*argv)
    assert code == 2
    assert message in err and "usage:" in err and "Traceback" not in err


def test_bad_usage_in_a_real_process(workspace):
    proc = run_cli(workspace, "segment", "photo.png", "--out", "o", "--point", "10,x")
    assert_clean_error(proc, 2, "usage: samkit segment", "--point: expected X,Y")


def test_help_lists_the_commands(run_main):
    code, out, _ = run_main("--help")
    assert code == 0
    for command in ("segment", "everything", "detect-segment", "models", "download", "demo"):
        assert command in out


# -- runtime errors (exit 1), no traceback -------------------------------------------------------
def test_missing_image_is_a_clean_runtime_error(workspace):
    proc = run_cli(workspace, "segment", "missing.png", "--point", "5,5", "--model", "tiny.pth", "--out", "o")
    assert_clean_error(proc, 1, "samkit: error: image file not found: missing.png")
    assert not (workspace / "o").exists()


def test_debug_lets_the_exception_through(run_main):
    with pytest.raises(FileNotFoundError, match="missing.png"):  # so Python prints the traceback
        run_main("--debug", "segment", "missing.png", "--point", "5,5", "--model", "tiny.pth", "--out", "o")


@pytest.mark.parametrize("model, message", [
    ("nope.pth", "cannot load weights from 'nope.pth'"),
    ("corrupt.pth", "not a valid torch checkpoint"),
])
def test_bad_checkpoint_is_a_clean_runtime_error(workspace, run_main, model, message):
    (workspace / "corrupt.pth").write_bytes(b"not a checkpoint")
    code, _, err = run_main("segment", "photo.png", "--point", "5,5", "--model", model, "--out", "o")
    assert code == 1 and message in err and "Traceback" not in err


def test_unavailable_device_is_a_clean_runtime_error(run_main):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error needs a machine without it")
    code, _, err = run_main("segment", "photo.png", "--point", "5,5", "--model", "tiny.pth", "--out", "o",
                            "--device", "cuda")
    assert code == 1 and "needs CUDA" in err and "use --device cpu" in err


# -- segment ----------------------------------------------------------------------------------------
def test_segment_point_matches_the_python_api(workspace):
    import samkit
    from samkit.transforms import load_image

    proc = run_cli(workspace, "segment", "photo.png", "--point", "50,40", "--model", "tiny.pth", "--out", "seg")
    assert proc.returncode == 0, proc.stderr
    out = workspace / "seg"
    assert {p.name for p in out.iterdir()} == {"mask_0.png", "mask_0_0.png", "mask_0_1.png", "mask_0_2.png",
                                               "overlay.png", "result.json"}
    segmenter = samkit.Segmenter(samkit.load_model(workspace / "tiny.pth"))
    image = load_image(workspace / "photo.png")
    expected = segmenter.segment(segmenter.encode(image), points=[[50, 40]], labels=[1], multimask=True)
    report = json.loads((out / "result.json").read_text())
    assert report["multimask"] is True and report["image_size"] == [96, 128]
    assert report["prompts"]["points"] == [[50.0, 40.0]] and report["prompts"]["labels"] == [1]
    assert len(report["masks"]) == 3
    best = int(np.argmax(expected.scores[0]))
    for entry in report["masks"]:
        k = entry["output"]
        np.testing.assert_allclose(entry["score"], expected.scores[0, k], rtol=1e-5)
        np.testing.assert_array_equal(rle_to_mask(entry["rle"]), expected.masks[0, k])
        np.testing.assert_array_equal(read_png(out / entry["file"]), expected.masks[0, k])
        assert entry["best"] == (k == best) and entry["area"] == int(expected.masks[0, k].sum())
    np.testing.assert_array_equal(read_png(out / "mask_0.png"), expected.masks[0, best])
    overlay = np.asarray(Image.open(out / "overlay.png"))
    assert overlay.shape == (96, 128, 3) and not np.array_equal(overlay, image)
    assert "prompt 0: mask" in proc.stdout


def test_segment_boxes_give_one_mask_each(workspace, run_main):
    code, out, err = run_main("segment", "photo.png", "--box", "10,10,60,50", "--box", "40,30,120,90",
                              "--model", "tiny.pth", "--out", "boxes", "--quiet")
    assert code == 0, err
    assert out == ""
    out = workspace / "boxes"
    assert {p.name for p in out.glob("mask_*.png")} == {"mask_0.png", "mask_1.png"}
    report = json.loads((out / "result.json").read_text())
    assert report["multimask"] is False and [m["prompt"] for m in report["masks"]] == [0, 1]
    assert report["prompts"]["boxes"] == [[10, 10, 60, 50], [40, 30, 120, 90]]


def test_segment_points_and_box_form_one_prompt(workspace, run_main):
    code, _, err = run_main("segment", "photo.png", "--point", "30,30", "--point", "90,80,0", "--box",
                            "10,10,100,90", "--model", "tiny.pth", "--out", "combined", "--precision", "bf16",
                            "--device", "cpu")
    assert code == 0, err
    report = json.loads((workspace / "combined" / "result.json").read_text())
    assert len(report["masks"]) == 1 and report["prompts"]["labels"] == [1, 0]


def test_console_script(workspace):
    script = Path(sys.executable).with_name("samkit")
    if not script.exists():
        pytest.skip(f"the samkit console script is not installed next to {sys.executable}")
    proc = subprocess.run([str(script), "models"], env=cli_env(workspace), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "vit_b" in proc.stdout


def test_python_dash_m_samkit(workspace):
    proc = subprocess.run([sys.executable, "-m", "samkit", "--version"], cwd=workspace, env=cli_env(workspace),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("samkit "), proc.stderr


# -- everything ------------------------------------------------------------------------------------
def test_everything_folder_to_coco_and_rerun_skips(workspace, run_main):
    out = workspace / "all.json"
    proc = run_cli(workspace, "everything", "photos", *EVERYTHING_FAST, "--model", "tiny.pth", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    coco = json.loads(out.read_text())
    assert [im["file_name"] for im in coco["images"]] == ["im0.png", "im1.png", "im2.png"]
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    ids = [a["id"] for a in coco["annotations"]]
    assert ids and ids == list(range(1, len(ids) + 1))
    assert coco["info"]["samkit"]["preset"] == "proposals"
    assert "everything [3/3] im2.png" in proc.stderr
    assert not (workspace / "all.json.parts").exists()

    code, _, err = run_main("everything", "photos", *EVERYTHING_FAST, "--model", "tiny.pth", "--out", str(out))
    assert code == 0 and err.count("(already done)") == 3
    assert json.loads(out.read_text()) == coco

    code, _, err = run_main("everything", "photos", "--preset", "sa1b", "--points-per-side", "4",
                            "--model", "tiny.pth", "--out", str(out))
    assert code == 1 and "holds results made with other settings" in err and "--restart" in err
    assert json.loads(out.read_text()) == coco


def test_everything_engine_local_writes_per_image_files_and_manifest(workspace, run_main, tmp_path):
    out = tmp_path / "engine_out"
    merged = tmp_path / "merged.json"
    code, stdout, err = run_main("everything", "photos", *EVERYTHING_FAST, "--model", "tiny.pth", "--engine", "local",
                                 "--out", str(out), "--merge-coco", str(merged))
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == ["photos/im0.png", "photos/im1.png", "photos/im2.png"]
    assert all(r["status"] == "ok" and (out / r["output"]).is_file() for r in rows)
    first = json.loads((out / rows[0]["output"]).read_text())
    assert set(first) >= {"image", "annotations"} and first["image"]["width"] == 128
    coco = json.loads(merged.read_text())
    assert len(coco["images"]) == 3 and len(coco["annotations"]) == sum(r["masks"] for r in rows)
    assert "samkit engine: 3/3" in err and "3 images done" in stdout

    code, stdout, _ = run_main("everything", "photos", *EVERYTHING_FAST, "--model", "tiny.pth", "--engine", "local",
                               "--out", str(out), "--quiet")
    assert code == 0 and stdout == ""
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("argv, message", [
    (["--engine", "local", "--out", "x.json"], "--out must be a folder"),
    (["--workers", "2", "--out", "o.json"], "--workers need --engine"),
    (["--engine", "local", "--workers", "2", "--out", "dir"], "--workers applies to --engine ray"),
    (["--engine", "local", "--format", "sa1b", "--out", "dir"], "drop --format"),
])
def test_engine_flags_usage_errors(workspace, run_main, argv, message):
    code, _, err = run_main("everything", "photos", "--model", "tiny.pth", *argv)
    assert code == 2 and message in err, err


def test_everything_sa1b_files_per_image(workspace, run_main):
    code, out, err = run_main("everything", "photos", *EVERYTHING_FAST, "--format", "sa1b", "--model", "tiny.pth",
                              "--out", "sa1b", "--quiet")
    assert code == 0, err
    assert out == err == ""  # --quiet: no progress bar, no summary
    files = sorted(p.name for p in (workspace / "sa1b").iterdir())
    assert files == ["im0.json", "im1.json", "im2.json"]
    record = json.loads((workspace / "sa1b" / "im1.json").read_text())
    assert record["image"]["file_name"] == "im1.png" and record["image"]["height"] == 96
    assert all("predicted_iou" in a and "point_coords" in a for a in record["annotations"])


def sa1b_run(run_main, folder: Path, out: Path, *settings: str) -> tuple[int, str]:
    code, _, err = run_main("everything", str(folder), *(settings or EVERYTHING_FAST), "--format", "sa1b",
                            "--model", "tiny.pth", "--out", str(out))
    return code, err


def sa1b_files(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def test_everything_sa1b_rerun_with_other_settings_is_refused(workspace, run_main, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(workspace / "photos", folder)
    assert sa1b_run(run_main, folder, out)[0] == 0
    before = sa1b_files(out)
    assert {f["samkit"]["settings"]["preset"] for f in before.values()} == {"proposals"}
    code, err = sa1b_run(run_main, folder, out, "--preset", "sa1b", "--points-per-side", "4")
    assert code == 1 and "holds results made with other settings" in err and "--restart" in err
    assert sa1b_files(out) == before
    code, err = sa1b_run(run_main, folder, out, "--preset", "sa1b", "--points-per-side", "4", "--restart")
    assert code == 0 and "(already done)" not in err
    assert {f["samkit"]["settings"]["preset"] for f in sa1b_files(out).values()} == {"sa1b"}


def test_everything_sa1b_ids_are_stable_and_changed_images_are_redone(workspace, run_main, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(workspace / "photos", folder)
    assert sa1b_run(run_main, folder, out)[0] == 0
    first = sa1b_files(out)
    ids = {name: f["image"]["image_id"] for name, f in first.items()}
    assert len(set(ids.values())) == 3

    make_image(folder / "im00.png", seed=7)  # sorts first: positions of the others shift
    make_image(folder / "im1.png", seed=9)  # replaced: other bytes under the same name
    (folder / "im2.png").unlink()  # deleted
    code, err = sa1b_run(run_main, folder, out)
    assert code == 0 and err.count("(already done)") == 1 and "im0.png (already done)" in err
    second = sa1b_files(out)
    assert sorted(second) == ["im0.json", "im00.json", "im1.json"]  # im2's result is gone with its image
    assert second["im0.json"] == first["im0.json"]
    assert second["im1.json"]["image"]["image_id"] == ids["im1.json"]
    assert second["im1.json"]["samkit"]["image_sha256"] != first["im1.json"]["samkit"]["image_sha256"]
    assert second["im00.json"]["image"]["image_id"] not in ids.values()

    shutil.rmtree(out)  # a fresh run gives the same ids
    assert sa1b_run(run_main, folder, out)[0] == 0
    assert {n: f["image"]["image_id"] for n, f in sa1b_files(out).items()} == \
        {n: f["image"]["image_id"] for n, f in second.items()}


def test_everything_sa1b_does_not_overwrite_foreign_files(workspace, run_main, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "im1.json").write_text('{"mine": true}')
    (out / "notes.json").write_text('{"also": "mine"}')
    code, err = sa1b_run(run_main, workspace / "photos", out)
    assert code == 1 and "was not written by this samkit" in err and "--restart" in err
    assert sorted(p.name for p in out.iterdir()) == ["im1.json", "notes.json"]
    code, err = sa1b_run(run_main, workspace / "photos", out, *EVERYTHING_FAST, "--restart")
    assert code == 0, err
    assert "samkit" in json.loads((out / "im1.json").read_text())
    assert json.loads((out / "notes.json").read_text()) == {"also": "mine"}  # not ours: left alone


def test_segment_into_a_used_folder_leaves_no_earlier_masks(run_main, tmp_path):
    out = tmp_path / "reused"
    code, _, err = run_main("segment", "photo.png", "--point", "50,40", "--model", "tiny.pth", "--out", str(out))
    assert code == 0, err
    assert {p.name for p in out.glob("mask_*.png")} == {"mask_0.png", "mask_0_0.png", "mask_0_1.png", "mask_0_2.png"}
    (out / "mask_final.png").write_bytes(b"a user's file")
    code, _, err = run_main("segment", "photo.png", "--box", "10,10,60,50", "--model", "tiny.pth", "--out", str(out))
    assert code == 0, err
    assert {p.name for p in out.glob("mask_*.png")} == {"mask_0.png", "mask_final.png"}
    report = json.loads((out / "result.json").read_text())
    assert [m["file"] for m in report["masks"]] == ["mask_0.png"]
    np.testing.assert_array_equal(read_png(out / "mask_0.png"), rle_to_mask(report["masks"][0]["rle"]))


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_interrupted_everything_leaves_no_output_and_resumes(workspace, tmp_path, how):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        make_image(folder / f"frame{i}.png", seed=10 + i)
    out, parts = tmp_path / "frames.json", tmp_path / "frames.json.parts"
    args = [sys.executable, "-m", "samkit.cli", "everything", str(folder), *EVERYTHING_FAST,
            "--model", str(workspace / "tiny.pth"), "--out", str(out)]
    proc = subprocess.Popen(args, cwd=workspace, env=cli_env(workspace), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    def finished() -> list[Path]:  # parts are named by a hash of the image name; run.json holds the settings
        return [p for p in parts.glob("*.json") if p.name != "run.json" and not p.name.startswith(".")]

    while not finished():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no image finished in 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    if how == "sigkill":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130 and "samkit: interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".frames.json.*"))  # no temporary output either
    done = finished()
    assert 1 <= len(done) < 6

    resumed = run_cli(workspace, "everything", str(folder), *EVERYTHING_FAST, "--model", "tiny.pth",
                      "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("(already done)") == len(done)
    assert not parts.exists()
    coco = json.loads(out.read_text())
    assert [im["file_name"] for im in coco["images"]] == [f"frame{i}.png" for i in range(6)]
    assert [im["id"] for im in coco["images"]] == list(range(1, 7))
    # the same annotations as an uninterrupted run through the Python API
    import samkit
    from samkit.pipelines.everything import SegmentEverything

    everything = SegmentEverything.preset("proposals", samkit.Segmenter(samkit.load_model(workspace / "tiny.pth")),
                                          points_per_side=4)
    expected = [a for i in range(6) for a in everything(str(folder / f"frame{i}.png")).to_coco(i + 1)]
    assert [{k: v for k, v in a.items() if k != "id"} for a in coco["annotations"]] == \
        [{k: v for k, v in a.items() if k != "id"} for a in json.loads(json.dumps(expected))]


def test_everything_restart_discards_parts(run_main, tmp_path):
    out = tmp_path / "one.json"
    parts = tmp_path / "one.json.parts"
    parts.mkdir()
    (parts / "run.json").write_text(json.dumps({"command": "something else"}))
    code, _, err = run_main("everything", "photo.png", *EVERYTHING_FAST, "--model", "tiny.pth", "--out", str(out))
    assert code == 1 and "holds results made with other settings" in err
    code, _, err = run_main("everything", "photo.png", *EVERYTHING_FAST, "--model", "tiny.pth", "--out", str(out),
                            "--restart")
    assert code == 0, err
    assert json.loads(out.read_text())["images"][0]["file_name"] == "photo.png" and not parts.exists()


def test_everything_empty_folder_is_a_runtime_error(run_main, tmp_path):
    code, _, err = run_main("everything", str(tmp_path), "--model", "tiny.pth", "--out", str(tmp_path / "x.json"))
    assert code == 1 and "holds no images" in err


# -- detect-segment ---------------------------------------------------------------------------------
def test_detect_segment_with_a_yolo_built_from_yaml(workspace, run_main):
    pytest.importorskip("ultralytics")
    out = workspace / "instances.json"
    args = ["detect-segment", "photos", "--detector", "yolov8n.yaml", "--conf", "0", "--imgsz", "64",
            "--max-det", "2", "--model", "tiny.pth", "--out", str(out)]
    proc = run_cli(workspace, *args)
    assert proc.returncode == 0, proc.stderr
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 3 and 0 < len(coco["annotations"]) <= 6
    category_ids = {c["id"] for c in coco["categories"]}
    assert len(category_ids) == 80 and all(a["category_id"] in category_ids for a in coco["annotations"])
    assert all(a["segmentation"]["size"] == [96, 128] for a in coco["annotations"])
    code, _, err = run_main(*args)
    assert code == 0 and err.count("(already done)") == 3


def test_detect_segment_missing_detector_file(run_main):
    pytest.importorskip("ultralytics")
    code, _, err = run_main("detect-segment", "photos", "--detector", "models/missing.pt", "--model", "tiny.pth",
                            "--out", "x.json")
    assert code == 1 and "YOLO model file not found: models/missing.pt" in err


# -- text -------------------------------------------------------------------------------------------
needs_text = pytest.mark.skipif(not __import__("samkit.cli.text").cli.text.available(),
                                reason="this samkit has no text-to-mask pipeline, so no `samkit text`")
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@needs_text
@pytest.mark.parametrize("extra, message", [
    ([], "--strategy grounded needs --detector"),
    (["--strategy", "sam3", "--detector", "d"], "--detector does not apply to --strategy sam3"),
    (["--strategy", "clip_rerank"], "--strategy clip_rerank needs --clip-weights"),
    (["--strategy", "clip_prompt", "--clip-weights", "none", "--threshold", "0.3"],
     "--threshold does not apply to --strategy clip_prompt"),
    (["--strategy", "grounded", "--detector", "d", "--point", "3,4"], "--point does not apply to --strategy grounded"),
    (["--strategy", "magic"], "invalid choice: 'magic'"),
])
def test_text_bad_usage(run_main, extra, message):
    code, _, err = run_main("text", "photo.png", "a box", "--model", "tiny.pth", "--out", "o", *extra)
    assert code == 2 and message in err


@needs_text
def test_text_clip_rerank_with_a_tiny_random_clip(workspace):
    pytest.importorskip("open_clip")
    folder = workspace / "clip"
    folder.mkdir(exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    proc = run_cli(workspace, "text", "photo.png", "a box", "the floor", "--strategy", "clip_rerank",
                   "--clip", f"local-dir:{folder}", "--clip-weights", "none", "--threshold", "-1", "--preset",
                   "proposals", "--points-per-side", "4", "--model", "tiny.pth", "--out", "text")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((workspace / "text" / "result.json").read_text())
    assert report["strategy"] == "clip_rerank" and report["phrases"] == ["a box", "the floor"]
    assert report["masks"], "threshold -1 keeps every proposal"
    for entry in report["masks"]:
        assert entry["phrase"] in ("a box", "the floor") and entry["meta"]["strategy"] == "clip_rerank"
        np.testing.assert_array_equal(read_png(workspace / "text" / entry["file"]), rle_to_mask(entry["rle"]))
    assert (workspace / "text" / "overlay.png").is_file() and "for 'a box', 'the floor'" in proc.stdout


# -- models, download ------------------------------------------------------------------------------
def test_models_lists_names_cache_status_and_sizes(workspace, run_main, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "sam_vit_b_01ec64.pth").write_bytes(b"x" * 2048)
    proc = run_cli(workspace, "models", SAMKIT_CACHE=str(cache))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:4]}
    assert rows["vit_b"][2:] == ["93.7M", "yes", "2.0", "KiB"]
    assert rows["vit_h"][3:] == ["no", "-"]
    monkeypatch.setenv("SAMKIT_CACHE", str(cache))
    code, out, _ = run_main("models", "--json")
    assert code == 0
    listing = json.loads(out)
    assert listing["cache_dir"] == str(cache)
    assert [(m["name"], m["cached"], m["size_bytes"]) for m in listing["models"]][:3] == [
        ("vit_b", True, 2048), ("vit_l", False, None), ("vit_h", False, None)]


def test_download_cached_prints_the_path(run_main, monkeypatch, tmp_path):
    (tmp_path / "sam_vit_l_0b3195.pth").write_bytes(b"weights")
    monkeypatch.setenv("SAMKIT_CACHE", str(tmp_path))
    code, out, err = run_main("download", "vit_l")
    assert code == 0 and out.strip() == str(tmp_path / "sam_vit_l_0b3195.pth") and "already cached" in err


def test_download_offline_is_a_clean_runtime_error(workspace, tmp_path):
    closed = "http://127.0.0.1:9"  # nothing listens there: the connection is refused at once
    proc = run_cli(workspace, "download", "vit_b", SAMKIT_CACHE=str(tmp_path), https_proxy=closed, HTTPS_PROXY=closed,
                   http_proxy=closed, HTTP_PROXY=closed, no_proxy="", NO_PROXY="")
    assert_clean_error(proc, 1, "cannot download sam_vit_b_01ec64.pth", "put it at")
    assert list(tmp_path.iterdir()) == []  # no partial file left in the cache


# -- demo -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_without_weights_serves_a_page_that_says_so(workspace):
    pytest.importorskip("gradio")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "samkit.cli", "demo", "--port", str(port)], cwd=workspace,
                            env=cli_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, config = time.monotonic() + 120, None
        while config is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the demo did not answer in 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    config = response.read().decode()
            except OSError:
                time.sleep(0.25)
        assert "No SAM weights are available" in config and "samkit download vit_b" in config
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_demo_missing_gradio_names_the_extra(workspace, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)
    monkeypatch.setenv("SAMKIT_CACHE", str(workspace / "cache"))
    assert main(["demo", "--model", str(workspace / "tiny.pth")]) == 1
    assert "pip install samkit[demo]" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _no_stray_outputs(workspace):
    yield
    for name in ("o", "x.json"):
        path = workspace / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@needs_text
def test_text_engine_local_equals_the_pipeline(workspace, run_main, tmp_path):
    """`samkit text SOURCE --engine local` writes per-image COCO results equal to TextToMask's."""
    pytest.importorskip("transformers")
    from tiny_hf_models import save_tiny_owl

    from samkit.engine.output import read_output
    from samkit.pipelines import TextToMask
    from samkit.transforms import load_image
    from samkit.weights import load_model

    import samkit

    owl = save_tiny_owl(tmp_path / "owl", v2=True)
    out = tmp_path / "text_engine"
    code, stdout, err = run_main("text", "photos", "a box", "the floor", "--strategy", "grounded", "--detector", owl,
                                 "--threshold", "0", "--model", "tiny.pth", "--engine", "local", "--out", str(out))
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok"] * 3
    pipeline = TextToMask(samkit.Segmenter(load_model(workspace / "tiny.pth")), strategy="grounded", detector=owl,
                          threshold=0.0)
    total = 0
    for row in rows:
        data = read_output(out / row["output"])
        expected = pipeline(load_image(workspace / "photos" / data["samkit"]["file_name"]), ["a box", "the floor"])
        got = data["annotations"]
        assert len(got) == len(expected)
        for annotation, mask in zip(got, expected.masks[:, 0]):
            np.testing.assert_array_equal(rle_to_mask(annotation["segmentation"]), mask)
        total += len(got)
    assert total > 0, "threshold 0 keeps the tiny detector's boxes"


@needs_text
def test_text_engine_refuses_clip_strategies(run_main):
    code, _, err = run_main("text", "photos", "a box", "--strategy", "clip_rerank", "--clip-weights", "none",
                            "--model", "tiny.pth", "--engine", "local", "--out", "o")
    assert code == 2 and "--engine runs --strategy grounded or sam3" in err
