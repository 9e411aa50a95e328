"""Parity of samkit's Segmenter with Meta's segment_anything SamPredictor on identical random weights.

Tolerances (fp32): image embedding and low-res logits max |diff| <= 1e-4 (measured values are
printed with -s); predicted IoU <= 1e-5; full-size masks identical except at pixels whose
reference logit lies within 1e-3 of the threshold.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import build_reference, random_state_dict, reference_predict

import samkit
from samkit.modeling import build_sam, get_config

LOGIT_TOL = 1e-4
EMBED_TOL = 1e-4
SCORE_TOL = 1e-5
BORDER = 1e-3


def make_pair(config, seed=0):
    sd = random_state_dict(config, seed)
    ref = build_reference(config)
    ref.load_state_dict(sd, strict=True)
    ours = build_sam(config)
    ours.load_state_dict(sd, strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def tiny_pair():
    return make_pair(get_config("tiny"))


def compare(out, ref_full, ref_iou, ref_low, report):
    d_logit = float(np.abs(out.logits - ref_low).max())
    d_score = float(np.abs(out.scores - ref_iou).max())
    ref_masks = ref_full > 0
    differ = out.masks != ref_masks
    near = np.abs(ref_full) < BORDER
    report.update(logits=d_logit, scores=d_score, mask_pixels_differing=int(differ.sum()))
    assert out.masks.shape == ref_masks.shape
    assert d_logit <= LOGIT_TOL, report
    assert d_score <= SCORE_TOL, report
    assert not np.any(differ & ~near), report


def reference_inputs(kw):
    """Segmenter keyword prompts -> reference inputs with a leading N axis (points repeated per box)."""
    ref_kw = {}
    n = len(np.atleast_2d(kw["boxes"])) if "boxes" in kw else None
    if "points" in kw:
        pts = np.asarray(kw["points"], np.float64)
        lab = np.asarray(kw["labels"])
        if pts.ndim == 2:
            pts, lab = pts[None], lab[None]
        n = n or pts.shape[0]
        ref_kw["points"] = np.repeat(pts, n // pts.shape[0], 0)
        ref_kw["labels"] = np.repeat(lab, n // lab.shape[0], 0)
    if "boxes" in kw:
        ref_kw["boxes"] = np.atleast_2d(kw["boxes"])
    return ref_kw


def _cases(h, w):
    rng = np.random.default_rng(h * 1000 + w)
    pts3 = np.stack([rng.uniform(0, w, 3), rng.uniform(0, h, 3)], -1)
    box = np.array([0.2 * w, 0.1 * h, 0.7 * w, 0.8 * h])
    boxes = np.array([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.3 * w, 0.2 * h, 0.9 * w, 0.95 * h],
                      [0, 0, w - 1, h - 1]])
    multi_pts = np.stack([np.stack([rng.uniform(0, w, 2), rng.uniform(0, h, 2)], -1) for _ in range(4)])
    return {
        "single_point": dict(points=[[0.4 * w, 0.6 * h]], labels=[1]),
        "points_with_background": dict(points=pts3, labels=[1, 0, 0]),
        "box": dict(boxes=box),
        "box_and_points": dict(boxes=box, points=[[0.45 * w, 0.45 * h], [0.3 * w, 0.7 * h]], labels=[1, 0]),
        "several_boxes": dict(boxes=boxes),
        "several_point_prompts": dict(points=multi_pts, labels=np.array([[1, 0]] * 4)),
        "point_outside_image": dict(points=[[w + 25.0, -10.0]], labels=[1]),
    }


CASES = list(_cases(1, 1))


@pytest.mark.parametrize("image_name", ["chelsea_300x451", "astronaut_700x256"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("multimask", [True, False])
def test_tiny_parity(tiny_pair, images, image_name, case, multimask):
    from segment_anything import SamPredictor

    ref, ours = tiny_pair
    image = images[image_name]
    h, w = image.shape[:2]
    predictor = SamPredictor(ref)
    predictor.set_image(image)
    seg = samkit.Segmenter(ours)
    emb = seg.encode(image)
    d_embed = float((emb.features - predictor.features).abs().max())
    assert d_embed <= EMBED_TOL

    kw = _cases(h, w)[case]
    out = seg.segment(emb, multimask=multimask, **kw)

    ref_kw = reference_inputs(kw)
    full, iou, low = reference_predict(predictor, multimask=multimask, **ref_kw)
    report = {"embedding": d_embed}
    compare(out, full, iou, low, report)
    assert out.masks.shape == (full.shape[0], 3 if multimask else 1, h, w)


@pytest.mark.parametrize("image_name", ["chelsea_300x451", "astronaut_700x256"])
def test_tiny_parity_mask_input(tiny_pair, images, image_name):
    """A previous result's logits fed back as mask_input, with a refining point."""
    from segment_anything import SamPredictor

    ref, ours = tiny_pair
    image = images[image_name]
    h, w = image.shape[:2]
    predictor = SamPredictor(ref)
    predictor.set_image(image)
    seg = samkit.Segmenter(ours)
    emb = seg.encode(image)
    first = seg.segment(emb, points=[[0.5 * w, 0.5 * h]], labels=[1], multimask=True)
    best = int(np.argmax(first.scores[0]))
    mask_input = first.logits[:, best:best + 1]
    out = seg.segment(emb, points=[[0.5 * w, 0.5 * h], [0.2 * w, 0.3 * h]], labels=[1, 0], mask_input=mask_input,
                      multimask=False)
    full, iou, low = reference_predict(predictor, points=[[[0.5 * w, 0.5 * h], [0.2 * w, 0.3 * h]]],
                                       labels=[[1, 0]], mask_input=mask_input, multimask=False)
    compare(out, full, iou, low, {})
    # mask input alone is a valid prompt
    out = seg.segment(emb, mask_input=mask_input, multimask=False)
    full, iou, low = reference_predict(predictor, mask_input=mask_input, multimask=False)
    compare(out, full, iou, low, {})


def test_single_prompt_predict_api_matches(tiny_pair, images):
    """The reference's numpy predict() (one prompt) gives the same as segment()."""
    from segment_anything import SamPredictor

    ref, ours = tiny_pair
    image = images["chelsea_300x451"]
    predictor = SamPredictor(ref)
    predictor.set_image(image)
    masks, iou, low = predictor.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]),
                                        box=np.array([100, 50, 350, 280]), multimask_output=True)
    out = samkit.Segmenter(ours).segment(samkit.Segmenter(ours).encode(image), points=[[200.0, 150.0]], labels=[1],
                                         boxes=[100, 50, 350, 280])
    assert np.abs(out.logits[0] - low).max() <= LOGIT_TOL
    assert np.abs(out.scores[0] - iou).max() <= SCORE_TOL
    assert (out.masks[0] != masks).mean() <= 1e-4


@pytest.mark.slow
def test_vit_b_full_size_parity(images):
    """One full-size vit_b case: embedding, logits, scores and masks."""
    from segment_anything import SamPredictor

    ref, ours = make_pair(get_config("vit_b"), seed=1)
    image = images["chelsea_300x451"]
    predictor = SamPredictor(ref)
    predictor.set_image(image)
    seg = samkit.Segmenter(ours)
    emb = seg.encode(image)
    d_embed = float((emb.features - predictor.features).abs().max())
    assert d_embed <= EMBED_TOL, d_embed
    pts = np.array([[[120.0, 80.0], [300.0, 200.0]], [[50.0, 250.0], [400.0, 30.0]]])
    lab = np.array([[1, 0], [1, 1]])
    out = seg.segment(emb, points=pts, labels=lab, multimask=True)
    full, iou, low = reference_predict(predictor, points=pts, labels=lab, multimask=True)
    report = {"embedding": d_embed}
    compare(out, full, iou, low, report)
    print("vit_b parity", report)


@pytest.mark.parametrize("fast_decoder", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("case", ["several_point_prompts", "box_and_points", "several_boxes", "single_point"])
def test_plain_and_fast_decoder_paths(tiny_pair, images, fast_decoder, case):
    """The fast decoder (absorbed projections, token-major upscaling: the default) and the plain
    one, chosen when the model is built, both match the reference."""
    from segment_anything import SamPredictor

    ref, ours = tiny_pair
    model = build_sam(ours.config, fast_decoder=fast_decoder)
    model.load_state_dict(ours.state_dict())
    image = images["chelsea_300x451"]
    h, w = image.shape[:2]
    predictor = SamPredictor(ref)
    predictor.set_image(image)
    seg = samkit.Segmenter(model)
    kw = _cases(h, w)[case]
    out = seg.segment(seg.encode(image), **kw)
    ref_kw = reference_inputs(kw)
    full, iou, low = reference_predict(predictor, **ref_kw)
    compare(out, full, iou, low, {})
