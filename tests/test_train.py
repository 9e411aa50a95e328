"""samkit.train: losses, simulated prompting, data, training steps, checkpoints, CLIP path, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from samkit.modeling import build_sam, get_config
from samkit.train import (CocoInstances, MaskFolder, PromptSimulation, SamLoss, SyntheticScenes, TrainSettings,
                          build_optimizer, dice_loss, evaluate, focal_loss, interactive_loss, load_training_state,
                          mask_iou, noisy_boxes, point_schedule, prepare_batch, sam_loss, sample_error_points,
                          sample_points_in_masks, synthetic_scene, train, train_step)
from samkit.train.geometry import interior_points, mask_boxes, polygon_mask
from samkit.train.prompting import masks_to_boxes

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("logits, targets, alpha, expected", [
    # p = 0.5 everywhere: FL = a_t * 0.25 * ln 2
    ([[0.0, 0.0]], [[1.0, 0.0]], 0.25, (0.25 + 0.75) / 2 * 0.25 * LN2),
    ([[0.0, 0.0]], [[1.0, 0.0]], -1.0, 0.25 * LN2),
    # logit ln 3: p = 0.75; foreground p_t = 0.75, background p_t = 0.25
    ([[math.log(3.0), math.log(3.0)]], [[1.0, 0.0]], 0.25,
     (0.25 * 0.25 ** 2 * -math.log(0.75) + 0.75 * 0.75 ** 2 * -math.log(0.25)) / 2),
])
def test_focal_loss_hand_computed(logits, targets, alpha, expected):
    got = focal_loss(torch.tensor(logits), torch.tensor(targets), alpha=alpha)
    assert got.shape == ()
    assert float(got) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("logits, targets, expected", [
    ([[0.0, 0.0]], [[1.0, 0.0]], 1 - (2 * 0.5 + 1) / (1.0 + 1.0 + 1)),  # p = 0.5: 1/3
    ([[30.0, -30.0]], [[1.0, 0.0]], 0.0),  # perfect
    ([[-30.0, -30.0]], [[0.0, 0.0]], 0.0),  # both empty: smooth term
    ([[-30.0, -30.0]], [[1.0, 1.0]], 1 - 1 / 3),  # nothing predicted
])
def test_dice_loss_hand_computed(logits, targets, expected):
    assert float(dice_loss(torch.tensor(logits), torch.tensor(targets))) == pytest.approx(expected, abs=1e-6)


def test_loss_shape_mismatch_says_expected_and_got():
    with pytest.raises(ValueError, match=r"same shape, got \(2, 2\) and \(2, 3\)"):
        focal_loss(torch.zeros(2, 2), torch.zeros(2, 3))


def test_mask_iou():
    a = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    b = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    assert mask_iou(a, b).tolist() == pytest.approx([1 / 3, 1.0])


def _three_outputs() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(1, 4, 4)
    target[0, :2] = 1
    big = 20.0
    wrong = torch.full((4, 4), big)  # everything foreground
    right = torch.where(target[0] > 0, big, -big)
    half = right.clone()
    half[:, 2:] = -big  # misses half of the object
    return torch.stack([wrong, right, half])[None].requires_grad_(True), target


def test_multimask_backpropagates_only_the_lowest_loss():
    logits, target = _three_outputs()
    iou_pred = torch.tensor([[0.5, 0.5, 0.5]], requires_grad=True)
    loss, parts = sam_loss(logits, iou_pred, target, multimask=True)
    assert parts["choice"].tolist() == [1]
    assert parts["iou"][0].tolist() == pytest.approx([0.5, 1.0, 0.5])
    # the chosen output is (nearly) perfect: only the IoU MSE remains
    expected_iou_mse = ((0.5 - 0.5) ** 2 + (0.5 - 1.0) ** 2 + (0.5 - 0.5) ** 2) / 3
    expected = expected_iou_mse + 20 * float(parts["focal"]) + float(parts["dice"])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.sum().backward()
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 2].abs().sum() == 0
    assert iou_pred.grad.abs().sum() > 0


def test_single_output_loss_and_weights():
    logits, target = _three_outputs()
    single = logits[:, 2:3].detach()
    loss, parts = sam_loss(single, torch.tensor([[0.5]]), target, multimask=False, focal_weight=0.0, dice_weight=1.0,
                           iou_weight=0.0)
    assert float(loss) == pytest.approx(float(dice_loss(single[:, 0], target)), rel=1e-6)
    with pytest.raises(ValueError, match="K = 1 output, got K = 3"):
        sam_loss(logits, torch.zeros(1, 3), target, multimask=False)


def test_loss_class_equals_function():
    logits, target = _three_outputs()
    iou_pred = torch.rand(1, 3)
    settings = SamLoss(focal_weight=5.0, supervise_all_iou=False)
    a, _ = settings(logits, iou_pred, target, multimask=True)
    b, _ = sam_loss(logits, iou_pred, target, multimask=True, focal_weight=5.0, supervise_all_iou=False)
    assert torch.equal(a, b)
    assert SamLoss() == SamLoss(focal_weight=20.0, dice_weight=1.0, iou_weight=1.0)


# --------------------------------------------------------------------------- prompting


def _random_masks(n: int = 24, size: int = 40, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        x0, y0 = rng.integers(0, size - 4, 2)
        w, h = rng.integers(1, size - max(x0, y0), 2) + 1
        masks[i, y0:y0 + h, x0:x0 + w] = True
        masks[i, rng.integers(0, size), rng.integers(0, size)] = True  # a stray pixel: not convex
    return torch.from_numpy(masks)


def test_first_point_lies_inside_the_mask():
    masks = _random_masks()
    for seed in range(5):
        pts = sample_points_in_masks(masks, torch.Generator().manual_seed(seed))
        assert pts.shape == (len(masks), 2) and pts.dtype == torch.float32
        assert masks[torch.arange(len(masks)), pts[:, 1].long(), pts[:, 0].long()].all()


def test_first_point_is_uniform_over_the_mask():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 2, 3] = True
    g = torch.Generator().manual_seed(0)
    hits = [tuple(sample_points_in_masks(mask, g)[0].tolist()) for _ in range(400)]
    assert set(hits) == {(1.0, 1.0), (3.0, 2.0)}
    assert 150 < hits.count((1.0, 1.0)) < 250


def test_points_cover_every_pixel_of_irregular_masks_equally():
    """Many masks at once, ragged rows (single pixels, gaps, full rows): each True pixel equally often."""
    base = torch.zeros(7, 9, dtype=torch.bool)
    base[0, 8] = base[2, 0:9] = base[3, [1, 4, 7]] = base[6, 0] = base[6, 5] = True  # 15 pixels
    masks = base.expand(3000, 7, 9)
    pts = sample_points_in_masks(masks, torch.Generator().manual_seed(1)).long()
    assert base[pts[:, 1], pts[:, 0]].all()
    counts = torch.bincount(pts[:, 1] * 9 + pts[:, 0], minlength=63)[base.flatten()]
    assert counts.numel() == 15 and (counts > 0).all()
    expected = 3000 / 15
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 36.1  # 14 degrees of freedom, p = 0.001


def test_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="must not be empty"):
        sample_points_in_masks(torch.zeros(2, 3, 3, dtype=torch.bool))


def test_box_noise_bounds_and_spread():
    masks = torch.zeros(2000, 400, 400, dtype=torch.bool)
    masks[:, 100:300, 50:350] = True  # box (50, 100, 350, 300): width 300, height 200
    gt = masks_to_boxes(masks[:1])[0]
    assert gt.tolist() == [50.0, 100.0, 350.0, 300.0]
    boxes = noisy_boxes(masks, torch.Generator().manual_seed(0), noise_fraction=0.1, max_noise=20.0)
    delta = boxes - gt
    assert delta.abs().max() <= 20.0 + 1e-4
    # std 10% of the side (30 px in x, 20 px in y) clipped at 20 px: most x noise hits the clip
    assert (delta[:, 0].abs() > 19.99).float().mean() > 0.4
    assert 0.1 < (delta[:, 1].abs() > 19.99).float().mean() < 0.5
    wide = noisy_boxes(masks, torch.Generator().manual_seed(1), noise_fraction=0.1, max_noise=1e9) - gt
    assert wide[:, 0].std() == pytest.approx(30.0, rel=0.1) and wide[:, 1].std() == pytest.approx(20.0, rel=0.1)
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_box_noise_stays_inside_bounds():
    masks = torch.zeros(500, 50, 60, dtype=torch.bool)
    masks[:, :30, 40:] = True
    boxes = noisy_boxes(masks, torch.Generator().manual_seed(0), noise_fraction=0.5, max_noise=100.0,
                        bounds=torch.tensor([[55.0, 45.0]]).expand(500, 2))
    assert boxes.min() >= 0 and boxes[:, 0::2].max() <= 55 and boxes[:, 1::2].max() <= 45


def test_error_points_fall_in_false_negative_or_false_positive_regions():
    targets = _random_masks(seed=1)
    predicted = _random_masks(seed=2)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        pts, labels = sample_error_points(predicted, targets, g)
        rows = torch.arange(len(pts))
        x, y = pts[:, 0].long(), pts[:, 1].long()
        fn = targets & ~predicted
        fp = predicted & ~targets
        assert torch.where(labels == 1, fn[rows, y, x], fp[rows, y, x]).all()
        assert (labels >= 0).all()


def test_error_points_without_error_and_valid_region():
    targets = _random_masks(4)
    pts, labels = sample_error_points(targets.clone(), targets)
    assert labels.tolist() == [-1] * 4 and pts.abs().sum() == 0
    predicted = torch.ones_like(targets)
    valid = torch.zeros(targets.shape[1:], dtype=torch.bool)
    valid[:10, :10] = True
    pts, labels = sample_error_points(predicted, targets, valid=valid)
    found = labels >= 0
    assert (pts[found] < 10).all()


@pytest.mark.parametrize("n, mask_only, expected_points", [(11, 2, 8), (3, 1, 1), (1, 0, 0), (4, 0, 3)])
def test_point_schedule(n, mask_only, expected_points):
    flags = point_schedule(n, mask_only, torch.Generator().manual_seed(0))
    assert len(flags) == n and flags[0] is False and sum(flags) == expected_points
    if mask_only:
        assert flags[-1] is False


@pytest.mark.parametrize("kwargs, error", [
    ({"num_iterations": 0}, "num_iterations >= 1"),
    ({"num_iterations": 3, "num_mask_only": 3}, "num_mask_only <= num_iterations - 1"),
    ({"box_probability": 1.5}, r"box_probability must lie in \[0, 1\], got 1.5"),
])
def test_prompt_simulation_validation(kwargs, error):
    with pytest.raises(ValueError, match=error):
        PromptSimulation(**kwargs)


# --------------------------------------------------------------------------- geometry, synthetic scenes


def test_polygon_mask_rectangle_and_triangle():
    rect = polygon_mask(np.array([[1, 1], [4, 1], [4, 3], [1, 3]]), 5, 6)
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:3, 1:4] = True
    assert np.array_equal(rect, expected)
    tri = polygon_mask(np.array([[0, 0], [10, 0], [0, 10]]), 10, 10)
    assert tri.sum() == 45  # pixel centres with x + y < 10 strictly: 10 * 9 / 2


def test_interior_points_and_boxes():
    masks = np.zeros((2, 20, 30), dtype=bool)
    masks[0, 2:9, 3:20] = True
    masks[1, 10:19, 0:5] = True
    pts = interior_points(masks)
    for m, (x, y) in zip(masks, pts):
        assert m[int(y), int(x)]
    assert pts[0].tolist() == pytest.approx([11.5, 5.5], abs=2)
    assert mask_boxes(masks).tolist() == [[3, 2, 20, 9], [0, 10, 5, 19]]


def test_synthetic_scenes_are_seeded_with_disjoint_visible_masks():
    scenes = SyntheticScenes(8, seed=3, size=(64, 80), min_area=30)
    for image, masks in scenes:
        assert image.shape == (64, 80, 3) and image.dtype == np.uint8
        assert masks.dtype == bool and masks.shape[1:] == (64, 80)
        assert (masks.sum(axis=(1, 2)) >= 30).all()
        assert masks.sum(axis=0).max() <= 1  # visible parts never overlap
    a, b = scenes[5], SyntheticScenes(8, seed=3, size=(64, 80), min_area=30)[5]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], SyntheticScenes(8, seed=4, size=(64, 80))[5][0])
    with pytest.raises(IndexError, match=r"\[0, 8\), got 8"):
        scenes[8]


def test_synthetic_scene_function():
    image, masks = synthetic_scene(np.random.default_rng(0), size=(32, 48), num_shapes=(2, 2), min_area=1)
    assert image.shape == (32, 48, 3) and 1 <= len(masks) <= 2


# --------------------------------------------------------------------------- data


def _config(**overrides):
    return get_config("tiny", image_size=64, patch_size=8, encoder_window_size=4, **overrides)


def _batch(model, items, **kw):
    return prepare_batch(items, image_size=model.image_encoder.img_size, pixel_mean=model.pixel_mean,
                         pixel_std=model.pixel_std, rng=np.random.default_rng(0), **kw)


def test_prepare_batch_uses_the_inference_transforms():
    from samkit.segmenter import Segmenter

    model = build_sam(_config())
    image = np.random.default_rng(0).integers(0, 255, (30, 60, 3), dtype=np.uint8)
    masks = np.zeros((2, 30, 60), dtype=bool)
    masks[0, :, :30] = True
    masks[1, 10:20, 40:50] = True
    batch = _batch(model, [(image, masks)])
    x, _, input_size, _ = Segmenter(model).preprocess(image)
    assert torch.equal(batch.images, x)
    assert batch.input_sizes == [tuple(input_size)] == [(32, 64)]
    assert batch.masks.shape == (2, 64, 64) and not batch.masks[:, 32:].any()
    assert batch.masks[0, :32, :32].all() and not batch.masks[0, :, 33:].any()
    assert batch.image_index.tolist() == [0, 0]


def test_prepare_batch_errors_and_sampling():
    model = build_sam(_config())
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"masks must have shape \(M, 16, 16\).*got \(2, 8, 8\)"):
        _batch(model, [(image, np.zeros((2, 8, 8), dtype=bool))])
    with pytest.raises(ValueError, match="no usable mask"):
        _batch(model, [(image, np.zeros((1, 16, 16), dtype=bool))])
    many = np.zeros((10, 16, 16), dtype=bool)
    for i in range(10):
        many[i, i, :] = True
    assert len(_batch(model, [(image, many)], max_masks_per_image=3).masks) == 3


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_coco_instances_polygons_rle_and_crowd(tmp_path, hide_pycocotools):
    from samkit.rle import masks_to_coco_rle

    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    _write_png(tmp_path / "imgs" / "a.png", image)
    blob = np.zeros((20, 30), dtype=bool)
    blob[12:18, 2:9] = True
    blob[15, 9:12] = True
    annotations = {
        "images": [{"id": 7, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 50,
             "segmentation": [[5, 2, 15, 2, 15, 7, 5, 7]]},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": int(blob.sum()),
             "segmentation": masks_to_coco_rle(blob)[0]},
            {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "area": 600,
             "segmentation": masks_to_coco_rle(np.ones((20, 30), dtype=bool))[0]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    data = CocoInstances(tmp_path / "ann.json", tmp_path / "imgs")
    assert len(data) == 1
    got_image, masks = data[0]
    assert np.array_equal(got_image, image)
    rect = np.zeros((20, 30), dtype=bool)
    rect[2:7, 5:15] = True
    assert masks.shape == (2, 20, 30)
    assert np.array_equal(masks[0], rect) and np.array_equal(masks[1], blob)
    assert len(CocoInstances(tmp_path / "ann.json", tmp_path / "imgs", include_crowd=True)[0][1]) == 3
    hide_pycocotools()  # without pycocotools the own rasteriser gives the same rectangle
    assert np.array_equal(CocoInstances(tmp_path / "ann.json", tmp_path / "imgs")[0][1][0], rect)


def test_coco_rejects_bad_files(tmp_path):
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="expected a COCO JSON object"):
        CocoInstances(tmp_path / "bad.json", tmp_path)


def test_mask_folder_id_map_and_per_instance_files(tmp_path):
    image = np.full((12, 16, 3), 90, dtype=np.uint8)
    _write_png(tmp_path / "images" / "one.png", image)
    _write_png(tmp_path / "images" / "two.png", image)
    ids = np.zeros((12, 16), dtype=np.uint8)
    ids[:4] = 3
    ids[6:, 8:] = 9
    _write_png(tmp_path / "masks" / "one.png", ids)
    single = np.zeros((12, 16), dtype=np.uint8)
    single[2:5, 2:5] = 255
    _write_png(tmp_path / "masks" / "two" / "cat.png", single)
    data = MaskFolder(tmp_path)
    assert len(data) == 2
    _, masks = data[0]
    assert masks.shape == (2, 12, 16) and np.array_equal(masks[0], ids == 3) and np.array_equal(masks[1], ids == 9)
    _, masks = data[1]
    assert masks.shape == (1, 12, 16) and masks[0].sum() == 9
    (tmp_path / "images" / "three.png").write_bytes((tmp_path / "images" / "one.png").read_bytes())
    with pytest.raises(FileNotFoundError, match="three.png"):
        MaskFolder(tmp_path)


# --------------------------------------------------------------------------- training


def _settings(**overrides) -> TrainSettings:
    values = dict(steps=4, images_per_step=2, masks_per_image=4, lr=2e-3, warmup_steps=1, schedule="constant",
                  train_image_encoder=True, prompting=PromptSimulation(num_iterations=3, num_mask_only=1))
    return TrainSettings(**dict(values, **overrides))


def _scenes(n: int = 4, seed: int = 0) -> SyntheticScenes:
    return SyntheticScenes(n, seed=seed, size=(64, 64))


def test_training_steps_decrease_the_loss():
    torch.manual_seed(0)
    model = build_sam(_config())
    settings = _settings(lr=5e-3, prompting=PromptSimulation(num_iterations=2, num_mask_only=0))
    optimizer, _ = build_optimizer(model, settings)
    batch = _batch(model, list(_scenes()))
    losses = [train_step(model, [batch], optimizer, settings, generator=torch.Generator().manual_seed(0))["loss"]
              for _ in range(6)]
    assert losses[-1] < 0.85 * losses[0] and losses[-1] < losses[1]


@pytest.mark.parametrize("kind", ["point", "box", "embedding", "input_resolution", "soft_targets"])
def test_interactive_loss_paths(kind):
    torch.manual_seed(0)
    model = build_sam(_config(embedding_prompt_dim=8))
    items = list(_scenes(2))
    rows = {"embedding": 1.0}.get(kind, 0.0)
    batch = _batch(model, items, embed_crops=lambda image, masks: (np.ones((len(masks), 8)), np.arange(len(masks))))
    prompting = PromptSimulation(num_iterations=2, num_mask_only=0, box_probability=float(kind == "box"),
                                 embedding_probability=rows)
    features = model.image_encoder(batch.images)
    loss, stats = interactive_loss(model, features, batch, prompting=prompting,
                                   loss_resolution={"input_resolution": "input",
                                                    "soft_targets": "low_res_soft"}.get(kind, "low_res"),
                                   generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert 0 <= stats["first_iou"] <= 1 and 0 <= stats["last_iou"] <= 1
    grad = model.embedding_prompt.proj.layers[0].weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == (kind == "embedding")


def test_shared_decoder_calls_equal_one_call_per_mask(monkeypatch):
    """Points, boxes and embeddings sharing decoder calls give the same loss and gradients as one call per mask."""
    torch.manual_seed(0)
    model = build_sam(_config(embedding_prompt_dim=8))
    batch = _batch(model, list(_scenes(3)), embed_crops=lambda image, masks: (np.ones((len(masks), 8)),
                                                                              np.arange(len(masks))))
    prompting = PromptSimulation(num_iterations=3, num_mask_only=1, box_probability=0.5, embedding_probability=0.3)

    def run():
        model.zero_grad(set_to_none=True)
        features = model.image_encoder(batch.images)
        loss, stats = interactive_loss(model, features, batch, prompting=prompting,
                                       generator=torch.Generator().manual_seed(3))
        loss.backward()
        return (loss.detach(), stats, model.mask_decoder.output_upscaling[0].weight.grad.clone(),
                model.prompt_encoder.no_mask_embed.weight.grad.clone())

    shared = run()
    original, sizes = model.mask_decoder.predict_masks, []

    def one_by_one(image, pe, sparse, dense, **kw):
        sizes.append(len(sparse))
        outs = [original(image[i:i + 1], pe, sparse[i:i + 1], dense[i:i + 1], **kw) for i in range(len(sparse))]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    monkeypatch.setattr(model.mask_decoder, "predict_masks", one_by_one)
    single = run()
    assert max(sizes) > 1  # the first run shared calls between masks
    torch.testing.assert_close(shared[0], single[0], rtol=1e-5, atol=1e-6)
    assert shared[1] == pytest.approx(single[1], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(shared[2], single[2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(shared[3], single[3], rtol=1e-4, atol=1e-6)  # through the shared no-mask broadcast


def test_soft_targets_are_cell_fractions_and_their_logits_are_optimal():
    """low_res_soft: targets are covered fractions; at t = 0.5 the focal loss is flat at logit 0."""
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    targets = torch.full((1, 2, 2), 0.5)
    focal_loss(logits, targets[:, None], alpha=-1).sum().backward()
    assert logits.grad.abs().max() < 1e-7
    torch.manual_seed(0)
    model = build_sam(_config())
    batch = _batch(model, list(_scenes(2)))
    features = model.image_encoder(batch.images).detach()
    seen = {}

    def spy(logits, iou_pred, targets, *, multimask):
        seen.setdefault("targets", []).append(targets)
        return SamLoss()(logits, iou_pred, targets, multimask=multimask)

    interactive_loss(model, features, batch, prompting=PromptSimulation(num_iterations=1, num_mask_only=0),
                     loss=spy, loss_resolution="low_res_soft", generator=torch.Generator().manual_seed(0))
    targets = torch.cat(seen["targets"])
    fractional = (targets > 0) & (targets < 1)
    assert fractional.any() and targets.min() >= 0 and targets.max() <= 1
    low = model.prompt_encoder.mask_input_size[0]
    expected = torch.nn.functional.interpolate(batch.masks.float()[:, None], size=(low, low), mode="area")[:, 0]
    assert sorted(targets.sum((1, 2)).tolist()) == pytest.approx(sorted(expected.sum((1, 2)).tolist()), rel=1e-5)
    with pytest.raises(ValueError, match="loss_resolution must be one of"):
        TrainSettings(loss_resolution="soft")


def test_frozen_encoder_gets_no_gradient():
    model = build_sam(_config())
    settings = _settings(train_image_encoder=False, prompting=PromptSimulation(num_iterations=1, num_mask_only=0))
    optimizer, _ = build_optimizer(model, settings)
    before = model.image_encoder.patch_embed.proj.weight.clone()
    train_step(model, [_batch(model, list(_scenes(2)))], optimizer, settings)
    assert torch.equal(before, model.image_encoder.patch_embed.proj.weight)
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert model.mask_decoder.iou_token.weight.grad is not None


def test_bf16_autocast_and_accumulation_run():
    model = build_sam(_config())
    settings = _settings(autocast_dtype="bfloat16", accumulation_steps=2,
                         prompting=PromptSimulation(num_iterations=1, num_mask_only=0))
    optimizer, _ = build_optimizer(model, settings)
    batches = [_batch(model, list(_scenes(2))), _batch(model, list(_scenes(2, seed=1)))]
    stats = train_step(model, batches, optimizer, settings)
    assert math.isfinite(stats["loss"])


@pytest.mark.parametrize("kwargs, error", [
    ({"steps": 0}, "must be >= 1"),
    ({"schedule": "linear"}, "schedule must be"),
    ({"autocast_dtype": "int8"}, "autocast_dtype must be"),
])
def test_train_settings_validation(kwargs, error):
    with pytest.raises(ValueError, match=error):
        TrainSettings(**kwargs)


def test_train_settings_round_trip():
    settings = _settings(autocast_dtype="bfloat16")
    assert TrainSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings


class _Interrupt(Exception):
    pass


def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path):
    import samkit

    settings = _settings(steps=4, checkpoint_every=2, prompting=PromptSimulation(num_iterations=2, num_mask_only=1))
    torch.manual_seed(0)
    straight = build_sam(_config())
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    train(straight, _scenes(), settings)

    interrupted = build_sam(_config())
    interrupted.load_state_dict(initial)

    def stop_at_three(step, stats):
        if step == 3:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(interrupted, _scenes(), settings, output_dir=tmp_path, on_step=stop_at_three)
    resumed = build_sam(_config())  # fresh weights: everything must come from the checkpoint
    state = load_training_state(tmp_path, build_sam(_config()))
    assert state["step"] == 2
    train(resumed, _scenes(), settings, output_dir=tmp_path, resume=True)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    loaded = samkit.load_model(tmp_path / "model.pth")  # Meta format + stored config
    assert loaded.config == straight.config
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_train_validates_per_epoch_and_evaluate_reports_mious():
    model = build_sam(_config())
    seen = []
    history = train(model, _scenes(4), _settings(steps=4, prompting=PromptSimulation(num_iterations=1,
                                                                                      num_mask_only=0)),
                    val_dataset=_scenes(2, seed=9), on_epoch=lambda epoch, metrics: seen.append(epoch))
    assert seen == [1, 2] and len(history) == 2 and history[-1]["step"] == 4
    metrics = evaluate(model, _scenes(2, seed=9))
    assert set(metrics) >= {"point_miou", "point_oracle_miou", "box_miou", "num_masks"}
    assert 0 <= metrics["point_miou"] <= metrics["point_oracle_miou"] <= 1 and 0 <= metrics["box_miou"] <= 1
    bins = evaluate(model, _scenes(2, seed=9), area_bins=(500,))["by_area"]
    assert [(b["min_area"], b["max_area"]) for b in bins] == [(0, 500), (500, None)]
    assert sum(b["num_masks"] for b in bins) == metrics["num_masks"]
    weighted = sum(b["num_masks"] * b["point_miou"] for b in bins if b["num_masks"]) / metrics["num_masks"]
    assert abs(weighted - metrics["point_miou"]) < 1e-9


def test_command_line_synthetic_run(tmp_path, capsys):
    from samkit.train.__main__ import main

    history = main(["--model", "tiny", "--data", "synthetic", "--synthetic-scenes", "4", "--val-limit", "2",
                    "--steps", "2", "--images-per-step", "2", "--masks-per-image", "2", "--warmup", "1",
                    "--iterations", "2", "--mask-only", "1", "--train-encoder", "--out", str(tmp_path),
                    "--no-progress"])
    assert history and (tmp_path / "model.pth").is_file() and (tmp_path / "training_state.pt").is_file()
    assert "val mIoU point" in capsys.readouterr().out


# --------------------------------------------------------------------------- CLIP path


@pytest.fixture(scope="module")
def clip_settings():
    pytest.importorskip("open_clip", reason="the CLIP path needs open_clip (pip install samkit[clip])")
    from samkit.train.clip_path import ClipSettings

    # the cheapest stock open_clip model, random weights (no download), small input
    return ClipSettings("ViT-S-32-alt", pretrained=None, image_size=64)


def test_clip_embeddings_and_crops(clip_settings):
    from samkit.train.clip_path import CropEmbedder, clip_image_embeddings, clip_text_embeddings, mask_crops

    image, masks = _scenes(1, seed=2)[0]
    crops, rows = mask_crops(image, masks, min_area=50)
    assert len(crops) == len(rows) > 0 and all(c.ndim == 3 and c.shape[2] == 3 for c in crops)
    image_emb = clip_image_embeddings(crops, clip_settings)
    text_emb = clip_text_embeddings(["a red circle", "a striped square"], clip_settings)
    assert image_emb.shape == (len(crops), 256) and text_emb.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(text_emb, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(TypeError, match="sequence of strings"):
        clip_text_embeddings("a red circle", clip_settings)
    emb, got_rows = CropEmbedder(clip_settings, min_area=10 ** 6)(image, masks)
    assert emb.shape == (0, 256) and got_rows.size == 0


def test_clip_path_trains_and_prompts_with_text(clip_settings):
    from samkit import Prompts, Segmenter
    from samkit.train.clip_path import CropEmbedder, clip_text_embeddings

    torch.manual_seed(0)
    model = build_sam(_config(embedding_prompt_dim=256))
    settings = _settings(steps=1, prompting=PromptSimulation(num_iterations=2, num_mask_only=0,
                                                             embedding_probability=1.0))
    optimizer, _ = build_optimizer(model, settings)
    batch = _batch(model, list(_scenes(2)), embed_crops=CropEmbedder(clip_settings, min_area=50))
    assert batch.has_embedding.any()
    before = model.embedding_prompt.proj.layers[0].weight.clone()
    train_step(model, [batch], optimizer, settings)
    assert not torch.equal(before, model.embedding_prompt.proj.layers[0].weight)
    segmenter = Segmenter(model)
    out = segmenter.segment(segmenter.encode(_scenes(1)[0][0]),
                            prompts=Prompts(embeddings=clip_text_embeddings(["a red circle"], clip_settings)))
    assert out.masks.shape == (1, 3, 64, 64)


def test_plain_scenes_are_solid_and_other_scenes_unchanged():
    from samkit.train import SyntheticScenes

    plain = SyntheticScenes(30, seed=4, plain_probability=1.0)
    for i in range(len(plain)):
        image, masks = plain[i]
        colours = np.unique(image.reshape(-1, 3), axis=0)
        assert len(colours) <= 7, len(colours)  # background + at most 6 shapes, no texture or noise
        for mask in masks:
            assert len(np.unique(image[mask], axis=0)) == 1  # each visible shape is one colour
    mixed = SyntheticScenes(40, seed=4, plain_probability=0.5)
    kinds = [len(np.unique(mixed[i][0].reshape(-1, 3), axis=0)) <= 7 for i in range(len(mixed))]
    assert 0 < sum(kinds) < len(kinds)
    # probability 0 (the default) draws nothing extra: scenes are the ones generated before the option
    # existed (fingerprint of scene 3 of seed 1 taken then), so held-out sets stay comparable
    image, masks = SyntheticScenes(5, seed=1)[3]
    assert (int(image.sum()), int(masks.sum())) == (3922419, 4158)
