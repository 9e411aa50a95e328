"""Shared fixtures: seeded random SAM weights in Meta's format, reference models, test images."""
from __future__ import annotations

import os
from functools import partial

import numpy as np
import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a seeded random value, including those the default init zeros.

    Relative-position tables, positional embeddings and norm affine parameters are
    perturbed too, so parity tests exercise every path.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(("rel_pos_h", "rel_pos_w")):
                p.copy_(0.2 * noise)
            elif name.endswith("pos_embed"):
                p.copy_(0.05 * noise)
            elif p.ndim == 1 and ("norm" in name or name.endswith(("neck.1.weight", "neck.3.weight"))):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            elif p.ndim == 1:
                p.copy_(0.02 * noise)
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                p.copy_(noise / max(fan_in, 1) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("positional_encoding_gaussian_matrix"):
                b.copy_(torch.randn(b.shape, generator=gen))
    return model


def reference_predict(predictor, points=None, labels=None, boxes=None, mask_input=None, multimask=True, **extra):
    """An official ``SamPredictor.predict_torch`` (segment_anything, mobile_sam, segment_anything_hq)
    on N prompts in original pixels: numpy (full-size logits, IoU scores, low-res logits).
    ``extra``: the package's own keywords, e.g. HQ-SAM's ``hq_token_only``."""
    t, size = predictor.transform, predictor.original_size
    kw = dict(point_coords=None, point_labels=None, boxes=None, mask_input=None)
    if points is not None:
        kw["point_coords"] = torch.as_tensor(t.apply_coords(np.asarray(points, np.float64), size), dtype=torch.float)
        kw["point_labels"] = torch.as_tensor(np.asarray(labels), dtype=torch.int)
    if boxes is not None:
        kw["boxes"] = torch.as_tensor(t.apply_boxes(np.asarray(boxes, np.float64), size), dtype=torch.float)
    if mask_input is not None:
        kw["mask_input"] = torch.as_tensor(mask_input, dtype=torch.float)
    with torch.no_grad():
        full, iou, low = predictor.predict_torch(multimask_output=multimask, return_logits=True, **kw, **extra)
    return full.numpy(), iou.numpy(), low.numpy()


def build_reference(config) -> torch.nn.Module:
    """Meta's ``segment_anything`` Sam with the architecture of a samkit SamConfig."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    c, g = config, config.embedding_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=c.encoder_depth, embed_dim=c.encoder_embed_dim, img_size=c.image_size,
            mlp_ratio=c.encoder_mlp_ratio, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=c.encoder_num_heads, patch_size=c.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=list(c.encoder_global_attn_indexes), window_size=c.encoder_window_size,
            out_chans=c.prompt_embed_dim),
        prompt_encoder=PromptEncoder(embed_dim=c.prompt_embed_dim, image_embedding_size=(g, g),
                                     input_image_size=(c.image_size, c.image_size), mask_in_chans=c.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=c.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=c.decoder_depth, embedding_dim=c.prompt_embed_dim,
                                          mlp_dim=c.decoder_mlp_dim, num_heads=c.decoder_num_heads),
            transformer_dim=c.prompt_embed_dim, iou_head_depth=c.iou_head_depth,
            iou_head_hidden_dim=c.iou_head_hidden_dim),
        pixel_mean=list(c.pixel_mean), pixel_std=list(c.pixel_std),
    )
    model.config = config
    return model.eval()


def random_state_dict(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded random state dict in Meta's checkpoint format for ``config``."""
    from samkit.modeling import build_sam

    torch.manual_seed(seed)
    return {k: v.clone() for k, v in randomize_(build_sam(config), seed).state_dict().items()}


@pytest.fixture(scope="session")
def tiny_config():
    from samkit.modeling import get_config

    return get_config("tiny")


@pytest.fixture(scope="session")
def tiny_state_dict(tiny_config):
    return random_state_dict(tiny_config, seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_state_dict, tiny_config):
    """Path of a tiny random checkpoint in Meta's key format, saved by samkit.save_checkpoint.

    The tiny decoder is 32 wide with 2 heads; a head count no tensor shape fixes, so the file
    stores its config (``{"model": state_dict, "samkit_config": {...}}``): a plain state dict of
    this width is refused by load_model without ``config=``."""
    from samkit import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny_random.pth"
    save_checkpoint(tiny_state_dict, path, config=tiny_config, store_config=True)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_config, tiny_state_dict):
    from samkit.modeling import build_sam

    model = build_sam(tiny_config)
    model.load_state_dict(tiny_state_dict, strict=True)
    return model


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


@pytest.fixture(scope="session")
def images():
    """Real photos from scikit-image at non-square sizes: {name: (H, W, 3) uint8}."""
    from skimage import data

    return {
        "chelsea_300x451": data.chelsea(),
        "astronaut_700x256": _resize(data.astronaut(), 700, 256),
    }


@pytest.fixture(scope="session")
def ray_cluster():
    """The one local Ray (2 CPUs) of the test session, started by the first test that asks for it.

    Workers get ``tests/`` on their PYTHONPATH, so test modules' module-level functions and
    classes (detectors, tasks) unpickle inside them."""
    import os

    ray = pytest.importorskip("ray")
    tests = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for one test module (skips the module's browser tests when there is none)."""
    from browsers import launched_chromium

    yield from launched_chromium()


@pytest.fixture
def hide_pycocotools(monkeypatch):
    """A function that, once called, makes every later ``import pycocotools...`` in the test fail."""
    import builtins

    real_import = builtins.__import__

    def no_pycocotools(name, *args, **kwargs):
        if name.startswith("pycocotools"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    return lambda: monkeypatch.setattr(builtins, "__import__", no_pycocotools)
