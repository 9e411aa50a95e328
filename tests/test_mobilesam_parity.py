"""MobileSAM (the tiny_vit encoder family) against the official ``mobile_sam`` package.

The reference is ``mobile_sam.sam_model_registry["vit_t"]`` (the released architecture) with
seeded random weights, saved as a plain state dict and loaded with ``samkit.load_model``, so
the test covers key recognition, config inference and inference. Tolerances (fp32): image
embedding and low-res logits max |diff| <= 1e-4, scores <= 1e-5, full-size masks identical
except where the reference logit lies within 1e-3 of the threshold.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import randomize_, reference_predict

import samkit
from samkit.errors import CheckpointError
from samkit.modeling import SamConfig, build_sam, get_config

EMBED_TOL = 1e-4
LOGIT_TOL = 1e-4
SCORE_TOL = 1e-5
BORDER = 1e-3


def randomize_batch_norms_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """conftest.randomize_ plus what it leaves near zero: batch-norm statistics and affine
    parameters and channel layer norms near identity, attention-bias tables of a visible size."""
    randomize_(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1 + 0.1 * torch.randn(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(1 + 0.2 * torch.rand(n, generator=gen))
            if type(module).__name__ == "LayerNorm2d":  # every package's channel layer norm
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
            if hasattr(module, "attention_biases"):
                module.attention_biases.copy_(0.5 * torch.randn(module.attention_biases.shape, generator=gen))
    return model


def official_pair(registry, name: str, path, seed: int = 0):
    """(official model with seeded random weights, samkit model loaded from its saved state dict)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation and registry-overwrite warnings
        ref = registry[name]()
    randomize_batch_norms_(ref, seed)
    ref.eval()  # TinyViT caches its attention biases when switched to eval: after the weights change
    torch.save(ref.state_dict(), path)
    return ref, samkit.load_model(path)


def compare(out, full, iou, low) -> dict:
    """Assert samkit's Segmentation matches the reference outputs; returns the measured differences."""
    report = dict(logits=float(np.abs(out.logits - low).max()), scores=float(np.abs(out.scores - iou).max()))
    differ = out.masks != (full > 0)
    assert out.masks.shape == full.shape
    assert report["logits"] <= LOGIT_TOL and report["scores"] <= SCORE_TOL, report
    assert not np.any(differ & (np.abs(full) >= BORDER)), report
    return report


def prompt_cases(h: int, w: int) -> dict[str, tuple[dict, dict]]:
    """name -> (samkit segment() keywords, reference keywords with a leading prompt axis)."""
    box = [0.2 * w, 0.1 * h, 0.7 * w, 0.8 * h]
    boxes = [[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.3 * w, 0.2 * h, 0.9 * w, 0.95 * h], [0, 0, w - 1, h - 1]]
    pts = [[0.4 * w, 0.6 * h], [0.1 * w, 0.2 * h], [0.8 * w, 0.9 * h]]
    two = [[[0.3 * w, 0.3 * h], [0.6 * w, 0.7 * h]], [[0.7 * w, 0.2 * h], [0.2 * w, 0.8 * h]]]
    return {
        "point": (dict(points=pts[:1], labels=[1]), dict(points=[pts[:1]], labels=[[1]])),
        "points_with_background": (dict(points=pts, labels=[1, 0, 0]), dict(points=[pts], labels=[[1, 0, 0]])),
        "several_point_prompts": (dict(points=two, labels=[[1, 0], [1, 1]]), dict(points=two, labels=[[1, 0], [1, 1]])),
        "box": (dict(boxes=box), dict(boxes=[box])),
        "several_boxes": (dict(boxes=boxes), dict(boxes=boxes)),
        "box_and_points": (dict(boxes=box, points=pts[:2], labels=[1, 0]),
                           dict(boxes=[box], points=[pts[:2]], labels=[[1, 0]])),
    }


CASES = list(prompt_cases(1, 1))


@pytest.fixture(scope="module")
def mobile(tmp_path_factory, images):
    """Official and samkit MobileSAM on one non-square image: (predictor, segmenter, embedding, model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation and registry-overwrite warnings
        from mobile_sam import SamPredictor, sam_model_registry

    ref, ours = official_pair(sam_model_registry, "vit_t", tmp_path_factory.mktemp("mobile") / "mobile_sam.pt")
    image = images["chelsea_300x451"]
    predictor = SamPredictor(ref)
    predictor.set_image(image)
    segmenter = samkit.Segmenter(ours)
    return predictor, segmenter, segmenter.encode(image), ours


def test_mobile_sam_checkpoint_is_recognised(mobile):
    ours = mobile[3]
    assert ours.config == get_config("mobile_sam") == get_config("vit_t")
    assert ours.config.encoder_family == "tiny_vit" and ours.config.encoder.embed_dims == (64, 128, 160, 320)
    assert sum(p.numel() for p in ours.parameters()) == 10_130_092  # the released model's count


def test_mobile_sam_embedding(mobile):
    predictor, _, embedding, _ = mobile
    assert embedding.features.shape == predictor.features.shape == (1, 256, 64, 64)
    assert float((embedding.features - predictor.features).abs().max()) <= EMBED_TOL


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("multimask", [True, False])
def test_mobile_sam_prompts(mobile, case, multimask):
    predictor, segmenter, embedding, _ = mobile
    h, w = embedding.original_size
    ours_kw, ref_kw = prompt_cases(h, w)[case]
    out = segmenter.segment(embedding, multimask=multimask, **ours_kw)
    compare(out, *reference_predict(predictor, multimask=multimask, **ref_kw))
    assert out.masks.shape[1:] == (3 if multimask else 1, h, w)


def test_mobile_sam_mask_input(mobile):
    predictor, segmenter, embedding, _ = mobile
    h, w = embedding.original_size
    first = segmenter.segment(embedding, points=[[0.5 * w, 0.5 * h]], labels=[1])
    mask_input = first.logits[:, :1]
    pts = [[0.5 * w, 0.5 * h], [0.2 * w, 0.3 * h]]
    out = segmenter.segment(embedding, points=pts, labels=[1, 0], mask_input=mask_input, multimask=False)
    compare(out, *reference_predict(predictor, points=[pts], labels=[[1, 0]], mask_input=mask_input,
                                    multimask=False))
    out = segmenter.segment(embedding, mask_input=mask_input, multimask=True)
    compare(out, *reference_predict(predictor, mask_input=mask_input, multimask=True))


def small_tiny_vit_config(**changes) -> SamConfig:
    """A small TinyViT SAM (image 256) for pipeline tests."""
    options = dict(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2), window_sizes=(4, 4, 4),
                   num_classes=0)
    return get_config("mobile_sam", image_size=256, encoder_options=options, prompt_embed_dim=32, mask_in_chans=4,
                      decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32, **changes)


def test_small_tiny_vit_round_trip_and_segment_everything(tmp_path, images):
    from samkit.pipelines import SegmentEverything

    torch.manual_seed(0)
    config = small_tiny_vit_config()
    model = randomize_batch_norms_(build_sam(config))
    path = samkit.save_checkpoint(model, tmp_path / "small.safetensors")
    loaded = samkit.load_model(path)
    assert loaded.config == config
    segmenter = samkit.Segmenter(loaded)
    result = SegmentEverything(segmenter, points_per_side=4, pred_iou_thresh=0.0,
                               stability_score_thresh=0.0)(images["astronaut_700x256"])
    assert result.masks.ndim == 4 and result.masks.shape[2:] == (700, 256)
    assert len(result) == len(result.scores)


@pytest.mark.parametrize("options, message", [
    ({"embed_dims": (8, 16, 24)}, r"embed_dims must be 4 positive ints, got \(8, 16, 24\)"),
    ({"embed_dims": (8, 16, 24, 30), "num_heads": (1, 2, 4)},
     r"divisible by their heads, got \(width, heads\) \[\(30, 4\)\]"),
    ({"local_conv_size": 2}, "local_conv_size must be odd"),
    ({"depth": 3}, r"encoder_options of the 'tiny_vit' family: .*depth"),
])
def test_tiny_vit_settings_are_validated(options, message):
    with pytest.raises(ValueError, match=message):
        get_config("mobile_sam", encoder_options=dict(get_config("mobile_sam").encoder_options, **options))


def test_tiny_vit_needs_stride_16():
    with pytest.raises(ValueError, match="patch_size must be 16, got 8"):
        build_sam(get_config("mobile_sam", patch_size=8))


def test_unknown_family_error_lists_families_and_keys():
    with torch.device("meta"):
        state = build_sam(small_tiny_vit_config()).state_dict()
    state = {k.replace("image_encoder.patch_embed.", "image_encoder.stem."): v for k, v in state.items()}
    with pytest.raises(CheckpointError) as error:
        samkit.infer_config(state)
    text = str(error.value)
    assert "['tiny_vit', 'vit']" in text
    assert "image_encoder.stem.seq.0.c.weight" in text and "image_encoder.layers.0.blocks.0.conv1.c.weight" in text


@pytest.mark.parametrize("name, config_name, family, decoder_kind", [
    ("mobile_sam", "mobile_sam", "tiny_vit", "sam"), ("sam_hq_vit_b", "hq_vit_b", "vit", "hq"),
    ("sam_hq_vit_l", "hq_vit_l", "vit", "hq"), ("sam_hq_vit_h", "hq_vit_h", "vit", "hq"),
    ("sam_hq_vit_tiny", "hq_vit_tiny", "tiny_vit", "hq"),
])
def test_known_checkpoints_of_the_new_families(name, config_name, family, decoder_kind):
    from samkit.pretrained import PRETRAINED_WEIGHTS, known_name

    entry = PRETRAINED_WEIGHTS[name]
    config = get_config(entry.config_name)
    assert (entry.config_name, entry.family, entry.license) == (config_name, family, "Apache-2.0")
    assert (config.encoder_family, config.decoder_kind) == (family, decoder_kind)
    assert entry.url.endswith("/" + entry.file_name) and known_name(entry.file_name) == name
    assert entry.sha256 is None or len(entry.sha256) == 64
