"""HQ-SAM (``decoder_kind="hq"``) against the official ``segment_anything_hq`` package.

References with seeded random weights, saved as plain state dicts and loaded with
``samkit.load_model``: a small ViT from the official builder's ``_build_sam`` (it takes the
encoder's width, depth, heads and global blocks; image 1024, SAM's decoder), and the registry's
``vit_tiny`` (HQ on MobileSAM's TinyViT). Both ``hq_token_only`` settings; tolerances as in
test_mobilesam_parity.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from test_mobilesam_parity import (EMBED_TOL, compare, official_pair, prompt_cases, randomize_batch_norms_,
                                   reference_predict)

import samkit
from samkit.errors import CheckpointError
from samkit.modeling import build_sam, get_config
from samkit.modeling.hq_decoder import MaskDecoderHQ

SMALL_VIT = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])


def _official():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation and registry-overwrite warnings
        import importlib

        import segment_anything_hq
        official_build = importlib.import_module("segment_anything_hq.build_sam")  # the package rebinds build_sam
    return segment_anything_hq, official_build


def _registry():
    hq, official_build = _official()
    return dict(hq.sam_model_registry, small_vit=lambda: official_build._build_sam(**SMALL_VIT))


@pytest.fixture(scope="module", params=["small_vit", "vit_tiny"])
def hq(request, tmp_path_factory, images):
    """(predictor, segmenter, embedding, samkit model) of one HQ architecture on a non-square image."""
    hq_package, _ = _official()
    ref, ours = official_pair(_registry(), request.param, tmp_path_factory.mktemp("hq") / "sam_hq.pth", seed=3)
    image = images["astronaut_700x256"]
    predictor = hq_package.SamPredictor(ref)
    predictor.set_image(image)
    segmenter = samkit.Segmenter(ours)
    return predictor, segmenter, segmenter.encode(image), ours


def test_hq_checkpoint_is_recognised(hq):
    ours = hq[3]
    assert ours.config.decoder_kind == "hq" and isinstance(ours.mask_decoder, MaskDecoderHQ)
    if ours.config.encoder_family == "tiny_vit":
        assert ours.config == get_config("hq_vit_tiny")
    else:
        assert ours.config == get_config("hq_vit_b", **{k: tuple(v) if isinstance(v, list) else v
                                                        for k, v in SMALL_VIT.items()})


def test_hq_embedding_and_early_features(hq):
    predictor, _, embedding, _ = hq
    assert float((embedding.features - predictor.features).abs().max()) <= EMBED_TOL
    early = predictor.interm_features[0].permute(0, 3, 1, 2)
    assert embedding.early_features.shape == early.shape
    assert float((embedding.early_features - early).abs().max()) <= EMBED_TOL


# Each prompt kind, each multimask setting and each hq_token_only setting, in pairs that keep it short
# (one HQ decode per prompt convolves four 256 x 256 feature maps).
@pytest.mark.parametrize("case, multimask, hq_token_only", [
    ("point", True, False), ("point", False, True), ("points_with_background", False, False),
    ("box_and_points", True, True), ("box_and_points", False, False), ("several_boxes", True, False),
])
def test_hq_prompts(hq, case, multimask, hq_token_only):
    predictor, segmenter, embedding, ours = hq
    h, w = embedding.original_size
    ours_kw, ref_kw = prompt_cases(h, w)[case]
    ours.mask_decoder.hq_token_only = hq_token_only
    try:
        out = segmenter.segment(embedding, multimask=multimask, **ours_kw)
    finally:
        ours.mask_decoder.hq_token_only = False
    compare(out, *reference_predict(predictor, multimask=multimask, hq_token_only=hq_token_only, **ref_kw))
    assert out.masks.shape[1:] == (1, h, w)  # HQ-SAM gives one mask per prompt


def test_hq_mask_input_and_default(hq):
    """A mask prompt; the default (hq_token_only=False) equals the official predictor's default."""
    predictor, segmenter, embedding, _ = hq
    h, w = embedding.original_size
    mask_input = segmenter.segment(embedding, points=[[0.5 * w, 0.5 * h]]).logits
    pts = [[0.5 * w, 0.5 * h], [0.2 * w, 0.3 * h]]
    out = segmenter.segment(embedding, points=pts, labels=[1, 0], mask_input=mask_input, multimask=False)
    compare(out, *reference_predict(predictor, points=[pts], labels=[[1, 0]], mask_input=mask_input,
                                    multimask=False))


def test_hq_embedding_without_early_features_is_refused(hq):
    _, segmenter, embedding, _ = hq
    bare = samkit.ImageEmbedding(embedding.features, embedding.original_size, embedding.input_size)
    with pytest.raises(ValueError, match="fuses early encoder features"):
        segmenter.segment(bare, points=[[10, 10]])
    with pytest.raises(ValueError, match="needs early_features"):
        hq[3].mask_decoder(embedding.features, hq[3].prompt_encoder.get_dense_pe(),
                           torch.zeros(1, 1, 256), torch.zeros(1, 256, 64, 64), True)


def test_hq_fast_and_plain_transformers_agree(images):
    config = get_config("hq_vit_b", image_size=256, **{k: tuple(v) if isinstance(v, list) else v
                                                       for k, v in SMALL_VIT.items()})
    torch.manual_seed(0)
    fast = randomize_batch_norms_(build_sam(config), seed=5)
    plain = build_sam(config, fast_decoder=False)
    plain.load_state_dict(fast.state_dict())
    image = images["chelsea_300x451"]
    outs = []
    for model in (fast, plain):
        segmenter = samkit.Segmenter(model)
        outs.append(segmenter.segment(segmenter.encode(image), points=[[100, 80], [300, 200]], labels=[1, 0]))
    np.testing.assert_allclose(outs[0].logits, outs[1].logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(outs[0].scores, outs[1].scores, atol=1e-5, rtol=0)


def test_decoder_kind_is_validated_and_inferred():
    with pytest.raises(ValueError, match=r"decoder_kind must be one of \['sam', 'hq'\], got 'hd'"):
        get_config("vit_b", decoder_kind="hd")
    with torch.device("meta"):
        state = build_sam(get_config("tiny", decoder_kind="hq")).state_dict()
    assert samkit.infer_config(state).decoder_kind == "hq"
    with pytest.raises(CheckpointError, match="decoder_kind: the config passed in says 'sam', the tensors "
                                                     "imply 'hq'"):
        samkit.load_model(state, config=get_config("tiny"))
