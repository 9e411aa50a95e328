"""Every encoder family / decoder kind through the front ends, not only the core.

MobileSAM (``tiny_vit`` encoder, released ``vit_t`` architecture) and HQ-SAM (the HQ decoder on a
small ViT) are saved as plain state dicts with seeded random weights, as their official
packages save them, and then used by file path through: the ``samkit segment`` command, the
data engine's local runner (segment everything) and the demo's model service. Each result is
compared with the core :class:`samkit.Segmenter` / pipeline on the same model: identical masks.
The core's parity with the official packages is in test_mobilesam_parity.py / test_hq_parity.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_

import samkit
from samkit.modeling import build_sam, get_config

EVERYTHING = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
SMALL_HQ = get_config("hq_vit_b").replace(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                                           encoder_global_attn_indexes=(1,))


@pytest.fixture(scope="module", params=["mobile_sam", "hq_small_vit"])
def family(request, tmp_path_factory):
    """(name, checkpoint path, loaded model) of one family, saved as a plain Meta-format state dict."""
    config = get_config("mobile_sam") if request.param == "mobile_sam" else SMALL_HQ
    model = randomize_(build_sam(config), seed=5).eval()
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.pth"
    torch.save(model.state_dict(), path)
    loaded = samkit.load_model(path)
    assert loaded.config == config  # inferred from the tensors alone
    return request.param, path, loaded


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("family_photos")
    Image.fromarray(images["chelsea_300x451"]).save(folder / "cat.png")
    Image.fromarray(images["astronaut_700x256"]).save(folder / "astronaut.png")
    return folder


def test_segment_command(family, photo_folder, tmp_path):
    from samkit.cli import main
    from samkit.formats.png import read_mask_png
    from samkit.transforms import load_image

    name, path, model = family
    out = tmp_path / "out"
    assert main(["segment", str(photo_folder / "cat.png"), "--point", "200,150", "--point", "60,40,0",
                 "--model", str(path), "--out", str(out), "--quiet"]) == 0
    segmenter = samkit.Segmenter(model)
    image = load_image(photo_folder / "cat.png")
    expected = segmenter.segment(segmenter.encode(image), points=[[200, 150], [60, 40]], labels=[1, 0],
                                 multimask=False)
    result = json.loads((out / "result.json").read_text())
    assert [m["score"] for m in result["masks"]] == pytest.approx(expected.scores[0].tolist(), abs=1e-5)
    np.testing.assert_array_equal(read_mask_png(out / "mask_0.png"), expected.masks[0, 0])


def test_local_engine_segment_everything(family, photo_folder, tmp_path):
    from samkit.engine import EverythingTask, run_job
    from samkit.engine.output import read_output
    from samkit.pipelines import SegmentEverything
    from samkit.transforms import load_image

    name, path, model = family
    out = tmp_path / "engine"
    summary = run_job(photo_folder, EverythingTask(str(path), settings=EVERYTHING), out, engine="local")
    assert (summary.ok, summary.errors) == (2, 0)
    pipeline = SegmentEverything(samkit.Segmenter(model), **EVERYTHING)
    for row in (json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()):
        data = read_output(out / row["output"])
        expected = pipeline(load_image(photo_folder / data["samkit"]["file_name"])).to_records("coco_rle")
        assert [a["segmentation"] for a in data["annotations"]] == [e["segmentation"] for e in expected]


def test_demo_service(family, images):
    from samkit.demos.app import load_service

    name, path, model = family
    service = load_service(str(path), device="cpu")
    image = images["astronaut_700x256"]
    got = service.segment(service.encode(image), boxes=[[30, 100, 200, 500]])
    segmenter = samkit.Segmenter(model)
    want = segmenter.segment(segmenter.encode(image), boxes=[[30, 100, 200, 500]])
    np.testing.assert_array_equal(got.masks, want.masks)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
