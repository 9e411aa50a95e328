"""samkit.modeling.families: the encoder-family seam.

A toy family (a two-convolution encoder with its own key pattern) is registered here, as a
third-party module would: one settings class, one builder, ``matches`` and ``infer``, one
registry entry. A Sam built from it saves with ``save_checkpoint`` and loads back through
``load_model`` with its config inferred from the keys, with no change to samkit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import samkit
from samkit.errors import CheckpointError
from samkit.modeling import (FAMILIES, EncoderFamily, SamConfig, build_sam, family_of, get_config, get_family,
                             register_family, unregister_family)
from samkit.modeling.common import module_dtype


@dataclass(frozen=True)
class ToySettings:
    width: int = 8

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")


class ToyEncoder(nn.Module):
    """(B, 3, S, S) -> (B, C, S/P, S/P): a strided conv, GELU, a 1x1 conv, plus a learned grid."""

    def __init__(self, *, img_size: int, patch_size: int, width: int, out_chans: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.stem = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.head = nn.Conv2d(width, out_chans, kernel_size=1)
        self.grid = nn.Parameter(torch.zeros(1, out_chans, img_size // patch_size, img_size // patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.gelu(self.stem(x))) + self.grid


def build_toy(config: SamConfig) -> ToyEncoder:
    settings = TOY.settings_of(config)
    return ToyEncoder(img_size=config.image_size, patch_size=config.patch_size, width=settings.width,
                      out_chans=config.prompt_embed_dim)


def infer_toy(state_dict) -> dict:
    width, _, patch, _ = state_dict["image_encoder.stem.weight"].shape
    grid = state_dict["image_encoder.grid"].shape[-1]
    return {"image_size": grid * patch, "patch_size": patch, "encoder_options": {"width": width}}


TOY = EncoderFamily(name="toy", settings=ToySettings, build=build_toy,
                    matches=lambda keys: "image_encoder.stem.weight" in keys, infer=infer_toy)

@pytest.fixture()
def toy_family():
    register_family(TOY)
    try:
        yield TOY
    finally:
        unregister_family("toy")


def toy_config(**changes) -> SamConfig:
    # decoder_num_heads=8 is what inference assumes, so the shapes alone give this config back.
    return SamConfig(**dict(dict(image_size=64, patch_size=16, encoder_family="toy", encoder_options={"width": 8},
                                 prompt_embed_dim=32, mask_in_chans=4, decoder_depth=1, decoder_num_heads=8,
                                 decoder_mlp_dim=32, iou_head_hidden_dim=16), **changes))


def test_vit_is_the_first_family():
    assert list(FAMILIES)[0] == "vit" and get_family("vit").name == "vit"
    assert get_config("vit_b").encoder_family == "vit"
    assert get_config("vit_b").encoder.embed_dim == 768
    with torch.device("meta"):
        keys = build_sam(get_config("tiny")).state_dict()
    assert family_of(keys) is get_family("vit")
    assert family_of(["backbone.weight"]) is None


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown encoder family 'toy'; expected one of \['tiny_vit', 'vit'\]"):
        SamConfig(encoder_family="toy")


def test_toy_family_round_trip(tmp_path, toy_family, images):
    torch.manual_seed(0)
    config = toy_config()
    model = build_sam(config)
    assert isinstance(model.image_encoder, ToyEncoder)
    with torch.no_grad():
        model.image_encoder.grid.normal_()
    path = samkit.save_checkpoint(model, tmp_path / "toy.pth")
    raw = torch.load(path, weights_only=True)
    # The toy decoder is not 256 wide, so no shape fixes its head count: the config is stored, and
    # the same weights as a plain state dict load only with config=.
    assert "samkit_config" in raw
    plain = tmp_path / "toy_plain.pth"
    torch.save(raw["model"], plain)
    with pytest.raises(CheckpointError, match="head count is not stored in the weights; pass config="):
        samkit.load_model(plain)
    assert samkit.load_model(plain, config=config).config == config
    raw = raw["model"]
    loaded = samkit.load_model(path)
    assert loaded.config == config and loaded.config.encoder_options == (("width", 8),)
    assert isinstance(loaded.image_encoder, ToyEncoder)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert samkit.infer_config(raw) == config
    image = images["chelsea_300x451"]
    a, b = samkit.Segmenter(model), samkit.Segmenter(loaded)
    out_a = a.segment(a.encode(image), points=[[100, 80]])
    out_b = b.segment(b.encode(image), points=[[100, 80]])
    assert out_b.masks.shape == (1, 3, 300, 451)
    np.testing.assert_array_equal(out_a.logits, out_b.logits)
    assert module_dtype(loaded.image_encoder) == loaded.dtype == b.dtype == torch.float32


def test_toy_config_stored_and_checked(tmp_path, toy_family):
    model = build_sam(toy_config(decoder_num_heads=2))  # heads differ from the guess: the config is stored
    path = samkit.save_checkpoint(model, tmp_path / "toy.safetensors")
    assert samkit.load_model(path).config == toy_config(decoder_num_heads=2)
    assert samkit.SamConfig.from_dict(toy_config().to_dict()) == toy_config()
    with pytest.raises(CheckpointError, match=r"encoder_options\['width'\]: the config passed in says 16, "
                                              r"the tensors imply 8"):
        samkit.load_model(path, config=toy_config(encoder_options={"width": 16}))
    with pytest.raises(CheckpointError, match="encoder_family: the config passed in says 'vit', the tensors "
                                              "imply 'toy'"):
        samkit.load_model(path, config=get_config("tiny"))


@pytest.mark.parametrize("options, message", [
    ({"depth": 3}, r"encoder_options of the 'toy' family: .*depth"),
    ({"width": 0}, "width must be >= 1, got 0"),
    ([1, 2], "encoder_options must be a mapping"),
])
def test_toy_settings_are_validated(toy_family, options, message):
    with pytest.raises(ValueError, match=message):
        toy_config(encoder_options=options)


def test_register_refuses_duplicates_and_unregister_removes(toy_family):
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register_family(TOY)
    with pytest.raises(TypeError, match="family must be an EncoderFamily, got dict"):
        register_family({"name": "x"})
    assert "toy" in FAMILIES


def test_old_stored_configs_without_a_family_load_as_vit():
    """Dicts stored before families existed have the flat encoder_* fields only."""
    from pathlib import Path

    stored = torch.load(Path(samkit.__file__).parent / "assets" / "tiny_synthetic.pth",
                        weights_only=True)["samkit_config"]
    assert "encoder_family" not in stored
    config = SamConfig.from_dict(stored)
    assert config.encoder_family == "vit" and config.encoder.embed_dim == stored["encoder_embed_dim"]
    assert SamConfig.from_dict(config.to_dict()) == config
