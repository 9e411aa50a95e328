"""samkit.weights: resolution order, safe loading, strict keys, architecture inference, downloads.

No test touches the network: the downloader (``samkit.pretrained._fetch``) and
``huggingface_hub.snapshot_download`` are replaced, and SAMKIT_CACHE points at a temporary folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import urllib.error
from pathlib import Path

import pytest
import torch

from conftest import build_reference
from samkit import hf_mapping, pretrained, weights
from samkit.modeling import build_sam
from samkit.modeling.config import SamConfig, get_config
from samkit.weights import CheckpointError, WeightsNotFoundError, infer_config, load_model

# A config unlike any variant: odd sizes everywhere, several global blocks, 2 masks, deep IoU head.
CUSTOM = SamConfig(image_size=96, patch_size=8, encoder_embed_dim=48, encoder_depth=3, encoder_num_heads=3,
                   encoder_global_attn_indexes=(0, 2), encoder_window_size=3, encoder_mlp_ratio=2.0,
                   prompt_embed_dim=64, mask_in_chans=8, decoder_depth=1, decoder_num_heads=8, decoder_mlp_dim=32,
                   num_multimask_outputs=2, iou_head_depth=4, iou_head_hidden_dim=24)


BUILDERS = {"samkit": build_sam, "reference": build_reference}


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def write_hf_folder(folder: Path, model: torch.nn.Module) -> Path:
    """A Hugging Face SAM folder (config.json + model.safetensors) made without transformers."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_mapping.hf_config_from_sam(model.config)))
    save_file(hf_mapping.meta_to_hf_state_dict(model.state_dict()), str(folder / "model.safetensors"))
    return folder


REAL_FETCH = pretrained._fetch


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Cache in tmp; any download attempt fails as if offline."""
    monkeypatch.setenv("SAMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(url, destination, *, progress):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(pretrained, "_fetch", no_network)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded random tiny checkpoint (config stored) and its state dict."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pth"
    model = weights.write_random_checkpoint(path, "tiny", seed=1)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "tiny"])
def test_infer_config_from_shapes(name, builder):
    config = get_config(name)
    with torch.device("meta"):  # shapes only: no memory, even for vit_h
        state_dict = BUILDERS[builder](config).state_dict()
    heads = {} if name != "tiny" else {"decoder_num_heads": config.decoder_num_heads}
    assert infer_config(state_dict, **heads) == config


@pytest.mark.parametrize("config", [CUSTOM, get_config("tiny", encoder_global_attn_indexes=(), encoder_depth=1)],
                         ids=["custom", "windowed-only"])
def test_infer_config_custom(config):
    with torch.device("meta"):
        state_dict = build_reference(config).state_dict()
    assert infer_config(state_dict, decoder_num_heads=config.decoder_num_heads) == config


def test_samkit_and_reference_share_the_checkpoint_layout():
    for config in (get_config("vit_h"), CUSTOM):
        with torch.device("meta"):
            ours, ref = build_sam(config).state_dict(), build_reference(config).state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


def test_infer_config_rejects_non_sam():
    with pytest.raises(CheckpointError, match="expected key 'image_encoder.patch_embed.proj.weight'"):
        infer_config({"backbone.weight": torch.zeros(2)})


def test_decoder_heads_are_guessed_with_a_warning(tiny, caplog):
    path, _ = tiny
    plain = torch.load(path, weights_only=True)["model"]
    with caplog.at_level("WARNING", logger="samkit.weights"):
        assert infer_config(plain).decoder_num_heads == 8
    assert "decoder head count is not stored" in caplog.text


# --------------------------------------------------------------------------- resolution order


def test_state_dict_passed_directly(tiny):
    _, expected = tiny
    model = load_model(expected, config="tiny")
    assert_same_weights(model, expected)
    assert not model.training


@pytest.mark.parametrize("as_path", [str, Path])
def test_file_path(tiny, as_path):
    path, expected = tiny
    model = load_model(as_path(path))
    assert model.config == get_config("tiny")  # stored with the weights: decoder heads round-trip
    assert_same_weights(model, expected)


def test_hf_folder_and_hub(tmp_path, monkeypatch, tiny):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import LocalEntryNotFoundError

    _, expected = tiny
    folder = write_hf_folder(tmp_path / "hf", load_model(expected, config="tiny"))
    assert_same_weights(load_model(folder), expected)

    calls = []

    def snapshot(repo_id, **kwargs):
        calls.append((repo_id, kwargs["revision"]))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert_same_weights(load_model("hf-hub:someone/sam-tiny@v1"), expected)
    assert calls == [("someone/sam-tiny", "v1")]

    def missing(repo_id, **kwargs):
        raise LocalEntryNotFoundError("not in the local cache and offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(WeightsNotFoundError, match=r"someone/sam-tiny.*offline mode on"):
        load_model("hf-hub:someone/sam-tiny")
    with pytest.raises(ValueError, match="expected 'hf-hub:org/name'"):
        load_model("hf-hub:no-slash")


def test_local_folder_wins_over_known_name(tmp_path, monkeypatch, tiny):
    _, expected = tiny
    write_hf_folder(tmp_path / "vit_b", load_model(expected, config="tiny"))
    monkeypatch.chdir(tmp_path)
    assert_same_weights(load_model("vit_b"), expected)  # never looks at the cache or the network


@pytest.mark.parametrize("source, error, message", [
    ("no_such_model", WeightsNotFoundError,
     r"no file or folder exists at .*no_such_model.*\[.*'vit_b', 'vit_h', 'vit_l'\]"),
    (42, TypeError, "source must be a state dict, a path or a model name, got int"),
])
def test_unknown_source(source, error, message):
    with pytest.raises(error, match=message):
        load_model(source)


def test_folder_that_is_not_hf(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match=r"expected config.json and model.safetensors.*notes.txt"):
        load_model(tmp_path)


# --------------------------------------------------------------------------- strict loading


@pytest.mark.parametrize("config, listed", [
    (get_config("tiny", encoder_depth=3),
     ["missing keys (14)", "image_encoder.blocks.2.attn.qkv.weight"]),
    (get_config("tiny", num_multimask_outputs=2),
     ["unexpected keys (6)", "mask_decoder.output_hypernetworks_mlps.3.layers.0.weight",
      "mask_decoder.mask_tokens.weight: expected (3, 32), got (4, 32)"]),
    (get_config("tiny", mask_in_chans=8),
     ["shape mismatches", "prompt_encoder.mask_downscaling.3.weight: expected (8, 2, 2, 2), got (4, 1, 2, 2)"]),
])
def test_mismatch_lists_keys(tiny, config, listed):
    path, _ = tiny
    with pytest.raises(CheckpointError, match="does not match the architecture") as info:
        load_model(path, config=config)
    for text in listed:
        assert text in str(info.value)


def test_extra_key_is_unexpected(tiny):
    _, expected = tiny
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): image_encoder.extra.weight"):
        load_model({**expected, "image_encoder.extra.weight": torch.zeros(1)}, config="tiny")


# --------------------------------------------------------------------------- safe loading


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")  # unpickling this would create the marker file


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused(tmp_path, tiny, zipped):
    _, expected = tiny
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({**expected, "hook": _WritesMarker(marker)}, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pth.*\(io\.open\) that could run code"):
        load_model(path, config="tiny")
    assert not marker.exists()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("suffix, damage", [
    (".pth", _truncated), (".pth", lambda data: b""), (".pth", lambda data: os.urandom(512)),
    (".pt", lambda data: b"just some text"), (".safetensors", _truncated),
    (".safetensors", lambda data: b"\xff" * 64),
])
def test_corrupt_file(tmp_path, tiny, suffix, damage):
    _, expected = tiny
    good = weights.save_checkpoint(expected, tmp_path / f"good{suffix}", config=get_config("tiny"))
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(CheckpointError, match=r"cannot read .*bad.*corrupt or truncated"):
        load_model(bad)


@pytest.mark.parametrize("content, message", [
    (torch.zeros(3), "expected a mapping of parameter names to tensors, got Tensor"),
    ({"a.weight": torch.zeros(1), "note": "hello"}, r"non-tensor entries \['note \(str\)'\]"),
    ({}, "holds no tensors"),
])
def test_not_a_state_dict(tmp_path, content, message):
    torch.save(content, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "odd.pth")


def test_unsupported_suffix(tmp_path, tiny):
    path, _ = tiny
    other = tmp_path / "weights.ckpt.gz"
    other.write_bytes(path.read_bytes())
    expected = r"expected a suffix in \['.pth', '.pt', '.bin', '.safetensors'\], got '.gz'"
    with pytest.raises(CheckpointError, match=expected):
        load_model(other)


# --------------------------------------------------------------------------- wrapped, prefixed, formats


@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd},
    lambda sd: {"state_dict": sd, "optimizer": {"lr": 0.1}, "epoch": 3},
    lambda sd: {"state_dict": {"model": sd}},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {f"sam.{k}": v for k, v in sd.items()},
    lambda sd: {"model": {f"model.{k}": v for k, v in sd.items()}},
    lambda sd: {f"module._orig_mod.sam.{k}": v for k, v in sd.items()},
    lambda sd: hf_mapping.meta_to_hf_state_dict(sd),
], ids=["model", "state_dict+optimizer", "nested", "module.", "sam.", "model.", "module._orig_mod.sam.", "hf-keys"])
def test_wrapped_and_prefixed(tmp_path, tiny, wrap):
    _, expected = tiny
    torch.save(wrap(expected), tmp_path / "wrapped.pth")
    assert_same_weights(load_model(tmp_path / "wrapped.pth", config="tiny"), expected)


def test_prefix_on_some_keys_only_is_kept(tiny):
    _, expected = tiny
    mixed = {(f"module.{k}" if k.startswith("mask_decoder") else k): v for k, v in expected.items()}
    with pytest.raises(CheckpointError, match="unexpected keys .*module.mask_decoder"):
        load_model(mixed, config="tiny")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_save_and_load_formats(tmp_path, tiny, suffix):
    _, expected = tiny
    model = load_model(expected, config="tiny")
    path = weights.save_checkpoint(model, tmp_path / f"copy{suffix}")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert_same_weights(loaded, expected)


def test_official_shapes_are_saved_as_plain_meta_state_dicts(tmp_path):
    # Decoder width 256 with 8 heads: the weights alone give the config back, so none is stored
    # and segment_anything can read the file as is.
    config = get_config("tiny", prompt_embed_dim=256, decoder_num_heads=8, decoder_mlp_dim=64, iou_head_hidden_dim=32)
    model = weights.write_random_checkpoint(tmp_path / "plain.pth", config, seed=3)
    raw = torch.load(tmp_path / "plain.pth", weights_only=True)
    assert "samkit_config" not in raw and "model" not in raw
    reference = build_reference(config)
    reference.load_state_dict(raw)
    loaded = load_model(tmp_path / "plain.pth")
    assert loaded.config == config
    assert_same_weights(loaded, model.state_dict())


def test_builder_and_dtype(tiny):
    path, expected = tiny
    reference = load_model(path, builder=build_reference)
    assert_same_weights(reference, expected)
    half = load_model(path, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in half.image_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.mask_decoder.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="dtype must be a floating torch.dtype, got torch.int8"):
        load_model(path, dtype=torch.int8)


def test_random_checkpoint_leaves_global_rng_alone(tmp_path):
    state = torch.get_rng_state()
    first = weights.write_random_checkpoint(tmp_path / "a.pth", "tiny", seed=7).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    second = weights.write_random_checkpoint(tmp_path / "b.pth", "tiny", seed=7).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["image_encoder.pos_embed"], torch.zeros_like(first["image_encoder.pos_embed"]))


# --------------------------------------------------------------------------- known names and downloads


def test_known_name_offline_says_what_to_put_where(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(WeightsNotFoundError) as info:
        load_model("vit_b")
    message = str(info.value)
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in message
    assert str(cache / "sam_vit_b_01ec64.pth") in message
    assert list(cache.iterdir()) == []  # no partial file left behind


def test_sha256_mismatch_is_detected(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "_fetch", lambda url, destination, *, progress: destination.write(b"not SAM"))
    with pytest.raises(CheckpointError, match="SHA-256 .* expected ec2df627"):
        load_model("vit_b")
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_verifies_then_caches(tmp_path, monkeypatch, tiny):
    path, expected = tiny
    data = path.read_bytes()
    entry = dataclasses.replace(weights.PRETRAINED_WEIGHTS["vit_l"], config_name="tiny",
                                sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest())
    monkeypatch.setitem(weights.PRETRAINED_WEIGHTS, "vit_l", entry)
    urls = []

    def fetch(url, destination, *, progress):
        urls.append(url)
        destination.write(data[:1000])
        destination.write(data[1000:])

    monkeypatch.setattr(pretrained, "_fetch", fetch)
    assert_same_weights(load_model("vit_l"), expected)
    assert urls == ["https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["sam_vit_l_0b3195.pth"]
    assert_same_weights(load_model("sam_vit_l_0b3195.pth"), expected)  # cache hit by file name
    assert len(urls) == 1


def test_download_streams_hashes_and_renames(tmp_path, monkeypatch, tiny, capsys):
    """The real downloader, on a file:// URL (no network), with the progress bar on."""
    path, expected = tiny
    data = path.read_bytes()
    entry = dataclasses.replace(weights.PRETRAINED_WEIGHTS["vit_h"], config_name="tiny", url=path.as_uri(),
                                sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest())
    monkeypatch.setitem(weights.PRETRAINED_WEIGHTS, "vit_h", entry)
    monkeypatch.setattr(pretrained, "_fetch", REAL_FETCH)
    assert_same_weights(load_model("vit_h", progress=True), expected)
    assert (tmp_path / "cache" / "sam_vit_h_4b8939.pth").read_bytes() == data
    assert "tiny.pth" in capsys.readouterr().err  # the progress bar, named after the URL's file


def test_registry_metadata():
    for name, entry in weights.PRETRAINED_WEIGHTS.items():
        if not entry.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/"):
            continue  # MobileSAM / HQ-SAM entries: tests/test_mobilesam_parity.py, test_hq_parity.py
        assert entry.config_name == name and entry.license == "Apache-2.0"
        assert entry.url == f"https://dl.fbaipublicfiles.com/segment_anything/{entry.file_name}"
        assert entry.file_name.removesuffix(".pth").endswith(entry.md5[:6])  # Meta's naming: MD5 prefix
        assert len(entry.sha256) == 64
        assert entry.hf_hub_id.startswith("facebook/sam-vit-")
        assert entry.family == "vit" and get_config(entry.config_name).encoder_family == entry.family


@pytest.mark.slow
def test_vit_b_from_cache(tmp_path):
    """The one full-size case: a random vit_b checkpoint in the cache loads as vit_b."""
    target = tmp_path / "cache" / "sam_vit_b_01ec64.pth"
    written = weights.write_random_checkpoint(target, "vit_b", seed=0).state_dict()
    assert "samkit_config" not in torch.load(target, weights_only=True, mmap=True)  # plain Meta layout
    model = load_model("vit_b")
    assert model.config == get_config("vit_b")
    assert_same_weights(model, written)


# --------------------------------------------------------------------------- crafted configs (issue 15)

_LOAD_UNDER_MEMORY_LIMIT = """
import resource, sys
import torch
import samkit
from samkit.weights import CheckpointError
# A limit well above what loading the tiny model needs, well below what the crafted config asks for.
with open("/proc/self/status") as status:
    size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
limit = size_kb * 1024 + (3 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    samkit.load_model(sys.argv[1])
except CheckpointError as error:
    print("CheckpointError:", error)
except MemoryError:
    print("MemoryError")
else:
    print("loaded")
"""


@pytest.mark.parametrize("stored, named", [
    # The file: vit_b defaults with 999 blocks (~28 GB of float32 weights).
    ({"encoder_depth": 999}, ["encoder_depth: its stored samkit_config says 999, the tensors imply 2",
                              "image_size: its stored samkit_config says 1024, the tensors imply 128",
                              "encoder_depth=999 (limit 256)"]),
    # The tiny config 65536 wide (~100 GB).
    (dict(get_config("tiny").to_dict(), encoder_embed_dim=65536),
     ["encoder_embed_dim: its stored samkit_config says 65536, the tensors imply 32",
      "encoder_embed_dim=65536 (limit 16384)"]),
], ids=["depth-999", "width-65536"])
def test_crafted_stored_config_is_refused_before_building(tmp_path, tiny, stored, named):
    """A stored config that disagrees with the tensors is refused, naming each differing field
    with both values, before anything is allocated: the load runs in a child process whose
    address space is limited to 3 GiB above its size at the start."""
    import subprocess
    import sys

    _, expected = tiny
    path = tmp_path / "crafted.pth"
    torch.save({"model": expected, "samkit_config": stored}, path)
    child = subprocess.run([sys.executable, "-c", _LOAD_UNDER_MEMORY_LIMIT, str(path)], capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.startswith("CheckpointError:"), child.stdout + child.stderr[-2000:]
    for text in named:
        assert text in child.stdout, child.stdout


@pytest.mark.parametrize("changes, named", [
    (dict(encoder_depth=3, encoder_global_attn_indexes=(1,)),
     "encoder_depth: the config passed in says 3, the tensors imply 2"),
    (dict(decoder_mlp_dim=128), "decoder_mlp_dim: the config passed in says 128, the tensors imply 64"),
    (dict(embedding_prompt_dim=16), "embedding_prompt_dim: the config passed in says 16, the tensors imply 0"),
])
def test_passed_config_differences_are_named_with_the_keys(tiny, changes, named):
    path, _ = tiny
    with pytest.raises(CheckpointError, match="does not match the architecture") as info:
        load_model(path, config=get_config("tiny", **changes))
    assert named in str(info.value)
    assert "keys" in str(info.value) or "shape mismatches" in str(info.value)


def test_size_limits_apply_to_passed_configs(tiny):
    _, expected = tiny
    with pytest.raises(CheckpointError, match=r"sizes above the limits \['image_size=16384 \(limit 8192\)'\]"):
        load_model(expected, config=get_config("tiny", image_size=16384))
