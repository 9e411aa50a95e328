"""Parity with ``transformers.SamModel`` on the same seeded random weights.

A small random ``SamModel`` is saved with ``save_pretrained`` and loaded by samkit (and, through
``builder=``, into Meta's ``segment_anything`` modules). Both sides get the same preprocessed
pixel tensor and the same prompt coordinates in model-input space, so the networks are compared,
not the preprocessing.

Tolerance: max abs difference <= 1e-4 on image embeddings, low-res mask logits and IoU scores.
Measured on CPU float32 (``measure_max_diffs``): embeddings 2.9e-6, logits up to 4.2e-5, IoU up to
7.5e-6. Nearly all of the logit gap is transformers' decoder LayerNorm eps (1e-6, Meta: 1e-5):
with the eps made equal the logits agree to 1.6e-6, which ``test_mapping_is_exact`` checks at 1e-5.
"""
from __future__ import annotations

import json

import pytest
import torch

from conftest import build_reference
from samkit import hf_mapping
from samkit.modeling import build_sam
from samkit.modeling.config import SamConfig, get_config
from samkit.weights import CheckpointError, load_model

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4

HF_CONFIG = dict(
    vision_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=128, patch_size=16,
                       window_size=4, global_attn_indexes=[1], output_channels=32, num_pos_feats=16),
    prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=8),
    mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=4,
                             iou_head_hidden_dim=32),
)
EXPECTED_CONFIG = SamConfig(image_size=128, patch_size=16, encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=4,
                            encoder_global_attn_indexes=(1,), encoder_window_size=4, prompt_embed_dim=32,
                            mask_in_chans=8, decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=64,
                            iou_head_hidden_dim=32)


BUILDERS = {"samkit": build_sam, "reference": build_reference}


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded weights of trained-like scale: unit-variance embeddings, fan-in scaled matrices,
    norms near 1, nonzero positional tables (which the default initialisations leave at 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            is_norm = "layernorm" in type(module).__name__.lower()
            for name, param in module.named_parameters(recurse=False):
                noise = torch.randn(param.shape, generator=generator)
                if name in ("pos_embed", "rel_pos_h", "rel_pos_w"):
                    param.copy_(0.1 * noise)
                elif isinstance(module, torch.nn.Embedding) or param.ndim == 2 and param.shape[0] == 2:
                    param.copy_(noise)  # tokens, point embeddings and the (2, C/2) Fourier matrix
                elif param.ndim >= 2:
                    param.copy_(noise / param[0].numel() ** 0.5)
                elif is_norm and name == "weight":
                    param.copy_(1 + 0.1 * noise)
                else:
                    param.copy_(0.1 * noise)
    return model


def make_hf_model(seed: int = 0, config: dict | None = None):
    torch.manual_seed(seed)
    model = transformers.SamModel(transformers.SamConfig(**(config or HF_CONFIG))).eval()
    return randomize_(model, seed)


@pytest.fixture(scope="module")
def hf_model():
    return make_hf_model()


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-sam")
    hf_model.save_pretrained(folder)
    return folder


# Prompts in model-input pixels (the 128 x 128 padded input), as (points, labels, boxes, mask) with
# a leading batch of prompts; HF takes them with an extra image-batch dimension in front.
PROMPTS = {
    "point": (torch.tensor([[[37.0, 81.5]]]), torch.tensor([[1]]), None, False),
    "points+negative": (torch.tensor([[[37.0, 81.5], [100.0, 12.0], [64.0, 64.0]]]), torch.tensor([[1, 0, 1]]),
                        None, False),
    "box": (None, None, torch.tensor([[10.0, 20.0, 90.0, 100.5]]), False),
    "two boxes": (None, None, torch.tensor([[10.0, 20.0, 90.0, 100.5], [0.0, 0.0, 127.0, 60.0]]), False),
    "point+box": (torch.tensor([[[50.0, 60.0]]]), torch.tensor([[1]]), torch.tensor([[10.0, 20.0, 90.0, 100.5]]),
                  False),
    "point+mask": (torch.tensor([[[37.0, 81.5]]]), torch.tensor([[1]]), None, True),
}


def run_both(hf, model, pixels, prompt, multimask):
    """(image embedding, low-res logits, IoU) from transformers and from a Meta-layout model."""
    points, labels, boxes, use_mask = prompt
    generator = torch.Generator().manual_seed(5)
    mask = torch.randn(1, 1, 32, 32, generator=generator) if use_mask else None
    with torch.no_grad():
        hf_embedding = hf.get_image_embeddings(pixels)
        out = hf(image_embeddings=hf_embedding, multimask_output=multimask,
                 input_points=None if points is None else points[None],
                 input_labels=None if labels is None else labels[None],
                 input_boxes=None if boxes is None else boxes[None], input_masks=mask)
        embedding = model.image_encoder(pixels)
        count = (points if points is not None else boxes).shape[0]
        masks = None if mask is None else mask.expand(count, -1, -1, -1)
        sparse, dense = model.prompt_encoder(points=None if points is None else (points, labels), boxes=boxes,
                                             masks=masks)
        logits, iou = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                         multimask_output=multimask)
    return (hf_embedding, out.pred_masks[0], out.iou_scores[0]), (embedding, logits, iou)


def max_diffs(hf, model, prompt, multimask, seed=3):
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(seed))
    theirs, ours = run_both(hf, model, pixels, prompt, multimask)
    for a, b in zip(theirs, ours):
        assert a.shape == b.shape
    return [float((a - b).abs().max()) for a, b in zip(theirs, ours)]


def measure_max_diffs() -> dict[str, list[float]]:
    """Max abs differences (embedding, logits, IoU) per case; run by hand to report tolerances."""
    hf = make_hf_model()
    model = load_model(hf.state_dict(), config=hf_mapping.sam_config_from_hf(hf.config))
    return {f"{name}/multimask={m}": max_diffs(hf, model, PROMPTS[name], m) for name in PROMPTS for m in (True, False)}


# --------------------------------------------------------------------------- config and keys


def test_config_from_hf(hf_model, hf_folder):
    assert hf_mapping.sam_config_from_hf(hf_model.config) == EXPECTED_CONFIG
    assert hf_mapping.sam_config_from_hf(json.loads((hf_folder / "config.json").read_text())) == EXPECTED_CONFIG
    assert load_model(hf_folder).config == EXPECTED_CONFIG


def test_every_hf_key_is_mapped_and_back(hf_model):
    hf_sd = hf_model.state_dict()
    meta_sd = hf_mapping.hf_to_meta_state_dict(hf_sd)
    with torch.device("meta"):
        expected = build_reference(EXPECTED_CONFIG).state_dict()
    assert {k: v.shape for k, v in meta_sd.items()} == {k: v.shape for k, v in expected.items()}
    back = hf_mapping.meta_to_hf_state_dict(meta_sd)
    assert set(back) == set(hf_sd)
    assert all(torch.equal(back[k], hf_sd[k]) for k in hf_sd)


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.update({"vision_encoder.adapter.weight": torch.zeros(1)}),
     "1 keys are not Hugging Face SAM parameter names: vision_encoder.adapter.weight"),
    (lambda sd: sd.update({"prompt_encoder.shared_embedding.positional_embedding": torch.zeros(2, 16)}),
     "tied tensors .* differ"),
])
def test_bad_hf_keys(hf_model, change, message):
    state_dict = dict(hf_model.state_dict())
    change(state_dict)
    with pytest.raises(ValueError, match=message):
        hf_mapping.hf_to_meta_state_dict(state_dict)
    with pytest.raises(CheckpointError, match=message):
        load_model(state_dict, config=EXPECTED_CONFIG)


@pytest.mark.parametrize("section, field, value, message", [
    ("vision_config", "use_rel_pos", False, r"vision_config.use_rel_pos=False; expected True"),
    ("mask_decoder_config", "attention_downsample_rate", 4, r"attention_downsample_rate=4; expected 2"),
    ("vision_config", "num_pos_feats", 8, "num_pos_feats must be half the prompt width 32, got 8"),
    ("prompt_encoder_config", "hidden_size", 64, "must be equal, got 32, 64 and 32"),
])
def test_unsupported_hf_config(section, field, value, message):
    config = json.loads(json.dumps(HF_CONFIG))
    config[section][field] = value
    with pytest.raises(ValueError, match=message):
        hf_mapping.sam_config_from_hf(config)


def test_other_model_type_is_refused():
    with pytest.raises(ValueError, match="expected a Hugging Face config with model_type 'sam', got 'sam2'"):
        hf_mapping.sam_config_from_hf({**HF_CONFIG, "model_type": "sam2"})


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_outputs_match_transformers(hf_model, hf_folder, builder, prompt, multimask):
    model = load_model(hf_folder, builder=BUILDERS[builder])
    embedding, logits, iou = max_diffs(hf_model, model, PROMPTS[prompt], multimask)
    assert embedding <= TOLERANCE and logits <= TOLERANCE and iou <= TOLERANCE, (embedding, logits, iou)


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_mapping_is_exact(builder, tmp_path):
    """With transformers' decoder LayerNorm eps set to Meta's 1e-5, only float rounding remains."""
    config = json.loads(json.dumps(HF_CONFIG))
    config["mask_decoder_config"]["layer_norm_eps"] = 1e-5
    hf = make_hf_model(seed=1, config=config)
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path, builder=BUILDERS[builder])
    for name in ("points+negative", "point+box", "point+mask"):
        assert max(max_diffs(hf, model, PROMPTS[name], True)) <= 1e-5


def test_pytorch_model_bin_and_sharded_folders(hf_model, hf_folder, tmp_path):
    expected = load_model(hf_folder).state_dict()
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "config.json").write_text((hf_folder / "config.json").read_text())
    torch.save(hf_model.state_dict(), bin_folder / "pytorch_model.bin")
    sharded = tmp_path / "sharded"
    hf_model.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    for folder in (bin_folder, sharded):
        loaded = load_model(folder).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_samkit_model_exports_to_transformers(tmp_path):
    """The inverse mapping: a samkit model, renamed, loads strictly into SamModel and agrees."""
    config = get_config("tiny", decoder_num_heads=4)
    model = randomize_(build_sam(config), seed=11)
    hf = transformers.SamModel(transformers.SamConfig(**hf_mapping.hf_config_from_sam(config))).eval()
    hf.load_state_dict(hf_mapping.meta_to_hf_state_dict(model.state_dict()), strict=True)
    for name in ("points+negative", "point+box"):
        assert max(max_diffs(hf, model, PROMPTS[name], True)) <= TOLERANCE
