"""Fast-core features: reduced precision, batching, caching, chunking, compile fallback, exact crop-before-upsample."""
from __future__ import annotations

import os  # noqa: F401  (used by the skipif condition)

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import samkit
from samkit.modeling import build_sam
from samkit.transforms import upscale_masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture()
def segmenter(tiny_model):
    return samkit.Segmenter(tiny_model)


def test_bf16_close_to_fp32(tiny_config, tiny_state_dict, images):
    """bf16 encoder (as load_model(dtype=bf16) sets it up) vs fp32 on random weights.

    Random weights give low-contrast logits (|logit| <= ~0.03 here), so a few pixels near the
    threshold flip; measured: mean mask IoU 0.987, min 0.88 over 60 masks. Stated tolerance:
    mean IoU >= 0.98, min >= 0.8, logits within 2% of their range, scores within 0.01.
    """
    image = images["chelsea_300x451"]
    fp32 = build_sam(tiny_config)
    fp32.load_state_dict(tiny_state_dict)
    mixed = build_sam(tiny_config)
    mixed.load_state_dict(tiny_state_dict)
    mixed.image_encoder.to(torch.bfloat16)
    pts = np.random.default_rng(0).uniform(0, 300, (20, 1, 2))
    seg32 = samkit.Segmenter(fp32)
    out32 = seg32.segment(seg32.encode(image), points=pts)
    seg16 = samkit.Segmenter(mixed)
    emb16 = seg16.encode(image)
    assert emb16.features.dtype == torch.bfloat16
    out16 = seg16.segment(emb16, points=pts)
    assert out16.logits.dtype == np.float32 and out16.scores.dtype == np.float32
    ious = [iou(out16.masks[i, k], out32.masks[i, k]) for i in range(20) for k in range(3)]
    assert np.mean(ious) >= 0.98 and min(ious) >= 0.8, (np.mean(ious), min(ious))
    assert np.abs(out16.logits - out32.logits).max() <= 0.02 * np.abs(out32.logits).max()
    assert np.abs(out16.scores - out32.scores).max() <= 0.01


def test_load_model_bf16_string(tiny_checkpoint):
    model = samkit.load_model(tiny_checkpoint, dtype="bf16")
    assert model.image_encoder.patch_embed.proj.weight.dtype == torch.bfloat16
    assert model.mask_decoder.iou_token.weight.dtype == torch.float32


def test_fp16_on_cpu_warns(tiny_checkpoint):
    with pytest.warns(RuntimeWarning, match="float16 on the CPU"):
        samkit.load_model(tiny_checkpoint, dtype=torch.float16)


def test_encode_batch_matches_single(segmenter, images):
    a, b = images["chelsea_300x451"], images["astronaut_700x256"]
    singles = [samkit.Segmenter(segmenter.model, cache_size=0).encode(x).features for x in (a, b)]
    batch = samkit.Segmenter(segmenter.model, cache_size=0).encode_batch([a, b, a], batch_size=3)
    for emb, ref in zip(batch, singles + singles[:1]):
        assert torch.allclose(emb.features, ref, atol=1e-5)
    assert batch[0].original_size == (300, 451) and batch[1].original_size == (700, 256)


def test_embedding_cache_encodes_once_and_is_bounded(segmenter, images):
    calls = []
    handle = segmenter.model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        seg = samkit.Segmenter(segmenter.model, cache_size=1)
        a, b = images["chelsea_300x451"], images["astronaut_700x256"]
        first = seg.encode(a)
        again = seg.encode(a.copy())  # same content, different object
        assert len(calls) == 1 and again is first
        seg.encode(b)  # evicts a
        seg.encode(a)
        assert len(calls) == 3
        seg.clear_cache()
        with pytest.raises(ValueError, match="call encode"):
            seg.segment(points=[[1, 1]])
    finally:
        handle.remove()


def test_segment_uses_last_encoded_image(segmenter, images):
    emb = segmenter.encode(images["chelsea_300x451"])
    a = segmenter.segment(points=[[100, 100]])
    b = segmenter.segment(emb, points=[[100, 100]])
    assert np.array_equal(a.masks, b.masks)


def test_prompt_chunking_is_identical(tiny_model, images):
    image = images["astronaut_700x256"]
    pts = np.random.default_rng(1).uniform(0, 256, (10, 2, 2))
    lab = np.tile([1, 0], (10, 1))
    whole = samkit.Segmenter(tiny_model, prompt_batch_size=64)
    chunked = samkit.Segmenter(tiny_model, prompt_batch_size=3)
    a = whole.segment(whole.encode(image), points=pts, labels=lab)
    b = chunked.segment(chunked.encode(image), points=pts, labels=lab)
    assert np.array_equal(a.masks, b.masks)
    assert np.allclose(a.logits, b.logits, atol=1e-5)


def test_best_only_selects_highest_score(segmenter, images):
    emb = segmenter.encode(images["chelsea_300x451"])
    pts = np.array([[[50.0, 60.0]], [[400.0, 250.0]]])
    full = segmenter.segment(emb, points=pts)
    best = segmenter.segment(emb, points=pts, best_only=True)
    assert best.masks.shape == (2, 1, 300, 451)
    for i in range(2):
        k = int(np.argmax(full.scores[i]))
        assert best.meta[i]["output_index"] == k
        assert np.array_equal(best.masks[i, 0], full.masks[i, k])
        assert best.scores[i, 0] == pytest.approx(full.scores[i, k])


@pytest.mark.parametrize("original,image_size,low", [((300, 451), 128, 32), ((700, 256), 128, 32),
                                                      ((1500, 1000), 1024, 256), ((1024, 1024), 1024, 256),
                                                      ((17, 5), 128, 32)])
def test_crop_before_upsample_is_exact(original, image_size, low):
    """upscale_masks equals the reference order: upsample to the padded square, crop, resize."""
    from samkit.transforms import preprocess_shape

    torch.manual_seed(0)
    logits = torch.randn(2, 3, low, low)
    input_size = preprocess_shape(*original, image_size)
    ref = F.interpolate(logits, (image_size, image_size), mode="bilinear", align_corners=False)
    ref = ref[..., : input_size[0], : input_size[1]]
    ref = F.interpolate(ref, original, mode="bilinear", align_corners=False)
    ours = upscale_masks(logits, input_size=input_size, original_size=original, image_size=image_size)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-6)


def test_compile_falls_back_with_warning(tiny_model, images, monkeypatch):
    """When torch.compile cannot run here, the encoder warns and runs eagerly with the same result."""
    def broken_compile(module, **kwargs):
        def run(x):
            raise RuntimeError("no compiler toolchain")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    seg = samkit.Segmenter(tiny_model, compile=True, cache_size=0)
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        emb = seg.encode(images["chelsea_300x451"])
    ref = samkit.Segmenter(tiny_model, cache_size=0).encode(images["chelsea_300x451"])
    assert torch.equal(emb.features, ref.features)


@pytest.mark.skipif("os.environ.get('SAMKIT_TEST_COMPILE') != '1'",
                    reason="real torch.compile takes ~1-2 min on 2 CPU cores; set SAMKIT_TEST_COMPILE=1 to run")
def test_compile_real(tiny_model, images):
    seg = samkit.Segmenter(tiny_model, compile=True, cache_size=0)
    emb = seg.encode(images["chelsea_300x451"])
    ref = samkit.Segmenter(tiny_model, cache_size=0).encode(images["chelsea_300x451"])
    assert torch.allclose(emb.features, ref.features, atol=1e-4)


def test_bf16_on_trained_model():
    """bf16 encoder vs fp32 on the committed tiny trained model, one point per shape on synthetic scenes.

    Measured: 66 masks, mean IoU 0.996, min 0.981. Tolerance: mean >= 0.98, min >= 0.9.
    """
    from pathlib import Path

    from samkit.train import synthetic_scene

    asset = Path(samkit.__file__).parent / "assets" / "tiny_synthetic.pth"
    fp32 = samkit.Segmenter(samkit.load_model(asset))
    bf16 = samkit.Segmenter(samkit.load_model(asset, dtype="bf16"))
    ious = []
    for seed in range(5):
        image, masks = synthetic_scene(np.random.default_rng([5, seed]), size=(128, 128))
        points = []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            points.append([[xs[len(xs) // 2], ys[len(ys) // 2]]])
        points = np.asarray(points, float)
        a = fp32.segment(fp32.encode(image), points=points)
        b = bf16.segment(bf16.encode(image), points=points)
        ious += [iou(x, y) for x, y in zip(a.masks.reshape(-1, 128, 128), b.masks.reshape(-1, 128, 128))]
    assert np.mean(ious) >= 0.98 and min(ious) >= 0.9, (np.mean(ious), min(ious))


@pytest.mark.parametrize("shared_image", [True, False])
def test_absorbed_decoder_gradients_match_plain_and_input_is_kept(tiny_config, tiny_state_dict, shared_image):
    """The absorbed two-way transformer (fused residuals, positions kept apart from the image
    tokens) gives the plain path's outputs and gradients, and never writes into its inputs.
    Tolerance: 1e-4 (absolute and relative) on outputs and every parameter gradient."""
    models = {}
    for fast in (False, True):
        models[fast] = build_sam(tiny_config, fast_decoder=fast)
        models[fast].load_state_dict(tiny_state_dict)
    assert type(models[True].mask_decoder.transformer) is not type(models[False].mask_decoder.transformer)
    gen = torch.Generator().manual_seed(3)
    c, (h, w) = tiny_config.prompt_embed_dim, models[True].prompt_encoder.image_embedding_size
    image = torch.randn(1 if shared_image else 5, c, h, w, generator=gen)
    pe = models[True].prompt_encoder.get_dense_pe()
    tokens = torch.randn(5, 7, c, generator=gen)
    results = {}
    for fast, model in models.items():
        transformer = model.mask_decoder.transformer
        img = image.clone().requires_grad_(True)
        queries, keys = transformer(img, pe, tokens)
        (queries.square().sum() + keys.expand(5, -1, -1).sin().sum()).backward()
        grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                 for n, p in transformer.named_parameters()}
        results[fast] = (queries.detach(), keys.detach(), img.grad.clone(), grads)
    plain, fast = results[False], results[True]
    for a, b in zip(plain[:3], fast[:3]):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    for name, grad in plain[3].items():
        torch.testing.assert_close(fast[3][name], grad, atol=1e-4, rtol=1e-4, msg=f"gradient of {name}")
    before = image.clone()
    with torch.no_grad():
        no_grad_out = models[True].mask_decoder.transformer(image, pe, tokens)
    torch.testing.assert_close(image, before, atol=0, rtol=0)  # nothing written into the input
    torch.testing.assert_close(no_grad_out[0], fast[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, None])
def test_blocked_upscaling_equals_batched(tiny_config, tiny_state_dict, rows, monkeypatch):
    """Inference upscaling in cache-sized row blocks (one row, a ragged last block, one block)
    writes exactly the values of the batched path autograd uses, and agrees with the plain
    decoder's conv path (1e-5)."""
    from samkit.modeling import fast_decoder

    model = build_sam(tiny_config)
    model.load_state_dict(tiny_state_dict)
    plain = build_sam(tiny_config, fast_decoder=False)
    plain.load_state_dict(tiny_state_dict)
    decoder = model.mask_decoder
    gen = torch.Generator().manual_seed(5)
    h, w = model.prompt_encoder.image_embedding_size
    keys = torch.randn(3, h * w, tiny_config.prompt_embed_dim, generator=gen)
    tokens = torch.randn(3, decoder.num_mask_tokens, tiny_config.prompt_embed_dim, generator=gen)
    batched = fast_decoder.upscale_and_predict(decoder, keys, tokens, (h, w), range(1, 4)).detach()
    c2 = decoder.output_upscaling[3].out_channels
    assert h % 3 != 0  # rows=3 leaves a ragged last block; None: one block per prompt
    monkeypatch.setattr(fast_decoder, "_BLOCK_VALUES", (rows or h) * w * 16 * c2)
    with torch.no_grad():
        blocked = decoder.masks_from_tokens(keys, tokens, (h, w), range(1, 4))
        conv = plain.mask_decoder.masks_from_tokens(keys, tokens, (h, w), range(1, 4))
    assert blocked.shape == (3, 3, 4 * h, 4 * w)
    torch.testing.assert_close(blocked, batched, atol=0, rtol=0)
    torch.testing.assert_close(blocked, conv, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["several_point_prompts", "box_and_points", "several_boxes", "single_point"])
def test_fast_and_plain_decoders_match_each_other_and_the_reference(images, case):
    """``build_sam(fast_decoder=False)`` (plain modules) and the default fast parts give the same
    Segmenter outputs on the same weights (logits within 1e-5, scores within 1e-6, >= 99.9% of
    mask pixels equal), and the plain path meets test_parity's tolerances against Meta's
    reference."""
    pytest.importorskip("segment_anything")
    from segment_anything import SamPredictor
    from test_parity import _cases, compare, make_pair, reference_inputs, reference_predict

    ref, fast_model = make_pair(samkit.get_config("tiny"))
    plain_model = build_sam(fast_model.config, fast_decoder=False)
    plain_model.load_state_dict(fast_model.state_dict())
    image = images["chelsea_300x451"]
    kw = _cases(*image.shape[:2])[case]
    fast = samkit.Segmenter(fast_model).segment(samkit.Segmenter(fast_model).encode(image), **kw)
    seg = samkit.Segmenter(plain_model)
    plain = seg.segment(seg.encode(image), **kw)
    np.testing.assert_allclose(fast.logits, plain.logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast.scores, plain.scores, atol=1e-6, rtol=0)
    assert (fast.masks == plain.masks).mean() >= 0.999  # flips only where a logit rounds across 0
    predictor = SamPredictor(ref)
    predictor.set_image(image)
    compare(plain, *reference_predict(predictor, **reference_inputs(kw)), {})


def test_load_model_passes_the_decoder_choice(tiny_checkpoint):
    from samkit.modeling.fast_decoder import FastMaskDecoder, FastTwoWayTransformer

    fast = samkit.load_model(tiny_checkpoint)
    plain = samkit.load_model(tiny_checkpoint, fast_decoder=False)
    assert isinstance(fast.mask_decoder, FastMaskDecoder)
    assert isinstance(fast.mask_decoder.transformer, FastTwoWayTransformer)
    assert type(plain.mask_decoder).__name__ == "MaskDecoder"
    assert type(plain.mask_decoder.transformer).__name__ == "TwoWayTransformer"
    with pytest.raises(ValueError, match="fast_decoder= applies to the default builder"):
        samkit.load_model(tiny_checkpoint, builder=build_sam, fast_decoder=False)


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_sign_skip_upsampling_is_exact(factor, threshold, monkeypatch):
    """Deciding uniform-sign blocks without interpolating gives F.interpolate(...) > t exactly."""
    import samkit.transforms as transforms

    monkeypatch.setattr(transforms, "_MIXED_FRACTION_LIMIT", 1.0)  # exercise the path on small inputs
    gen = torch.Generator().manual_seed(factor)
    x = F.interpolate(torch.randn(5, 1, 6, 7, generator=gen), size=(19, 23), mode="bilinear")[:, 0]
    expected = F.interpolate(x[:, None], scale_factor=factor, mode="bilinear", align_corners=False)[:, 0] > threshold
    got = transforms._binary_upsample_integer(x, factor, threshold)
    assert got.dtype == torch.bool and got.shape == expected.shape
    assert torch.equal(got, expected)


@pytest.mark.parametrize("input_size", [(128, 128), (96, 128), (128, 70)])
def test_binary_upscale_fast_path_matches_interpolation(input_size):
    """Smooth logits (as trained models give) take the sign-skip path; noisy ones fall back; both exact."""
    from samkit.transforms import _binary_upsample_integer, upscale_masks_binary

    gen = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.randn(2, 3, 4, 4, generator=gen), size=(32, 32), mode="bilinear") * 4
    noisy = torch.randn(2, 3, 32, 32, generator=gen)
    assert _binary_upsample_integer(smooth.reshape(6, 32, 32), 4, 0.0) is not None
    assert _binary_upsample_integer(noisy.reshape(6, 32, 32), 4, 0.0) is None
    for logits in (smooth, noisy):
        expected = upscale_masks(logits, input_size=input_size, original_size=input_size, image_size=128) > 0
        got = upscale_masks_binary(logits, input_size=input_size, original_size=input_size, image_size=128)
        assert got.shape == (2, 3, *input_size) and got.is_contiguous()
        assert torch.equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_segmenter_matches_cpu(tiny_config, tiny_state_dict, images):
    """The GPU-only branches (larger relative-position bias blocks, batched output upscaling,
    larger thresholding chunks) against the CPU paths, on the same weights and prompts.

    PyTorch runs cuDNN convolutions in TF32 by default, so embeddings differ by rounding
    (bench_gpu.py measured 8.6e-5 relative on vit_b); tolerances: embedding relative error
    <= 1e-3, scores within 1e-3, >= 99.9% of mask pixels equal.
    """
    image = images["chelsea_300x451"]
    segmenters = {}
    for device in ("cpu", "cuda"):
        model = build_sam(tiny_config)
        model.load_state_dict(tiny_state_dict)
        segmenters[device] = samkit.Segmenter(model, device=device, cache_size=0)
    points = np.random.default_rng(0).uniform(0, 300, (64, 1, 2))
    emb = {d: s.encode(image) for d, s in segmenters.items()}
    cpu_features, cuda_features = emb["cpu"].features, emb["cuda"].features.cpu()
    assert float((cuda_features - cpu_features).norm() / cpu_features.norm()) <= 1e-3
    out = {d: s.segment(emb[d], points=points) for d, s in segmenters.items()}
    np.testing.assert_allclose(out["cuda"].scores, out["cpu"].scores, atol=1e-3)
    assert (out["cuda"].masks == out["cpu"].masks).mean() >= 0.999
