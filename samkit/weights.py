"""Model weights: one resolver, safe loading, architecture read from the keys.

:func:`load_model` resolves ``source`` in this order; the first that applies wins:

1. a state dict (a mapping of parameter names to tensors) passed directly;
2. a path to a checkpoint file: ``.pth``, ``.pt``, ``.bin`` (torch pickles, read with
   ``weights_only=True``) or ``.safetensors``;
3. a path to a Hugging Face SAM folder (``config.json`` plus ``model.safetensors`` or
   ``pytorch_model.bin``, sharded or not, as ``transformers.SamModel.save_pretrained`` writes);
4. ``"hf-hub:org/name"`` or ``"hf-hub:org/name@revision"``: fetched with ``huggingface_hub``
   (which honours ``HF_HUB_OFFLINE`` and its own cache);
5. a known name (``vit_b``, ``vit_l``, ``vit_h``, or the official file name such as
   ``sam_vit_b_01ec64.pth``): read from the cache folder (``$SAMKIT_CACHE``, default
   ``~/.cache/samkit``), else downloaded from Meta's URL, checked against its SHA-256 and MD5,
   then moved into the cache (the registry and the download live in :mod:`samkit.pretrained`).

Whatever the source, a checkpoint may be wrapped as ``{"model": sd}`` or ``{"state_dict": sd}``
(other entries, such as optimizer state, are ignored); a prefix shared by *every* key among
``module.``, ``_orig_mod.``, ``sam.`` and ``model.`` is stripped, repeatedly; keys in
``transformers``' naming are renamed to Meta's (:mod:`samkit.hf_mapping`).

The architecture is taken from, in order: the ``config=`` argument; a configuration stored with
the weights (``samkit_config``, written by :func:`save_checkpoint`, or a Hugging Face
``config.json``); the known name's variant; :func:`infer_config` on the tensor shapes, for
256-wide decoders only (every official model: 8 heads); the head count of another width is in
no shape, so such a plain state dict needs ``config=``. Whichever it is, :func:`check_architecture` compares it with the tensors before anything is built.

Example:
    >>> from samkit.weights import load_model
    >>> model = load_model("vit_b", device="cuda", dtype=torch.float16)   # doctest: +SKIP
    >>> model = load_model("hf-hub:facebook/sam-vit-base")                # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Union

import torch
from torch import nn

from samkit.errors import CheckpointError, WeightsNotFoundError
from samkit.modeling.config import SamConfig, get_config
from samkit.checkpoint_files import read_safetensors, read_torch
from samkit.hf_weights import HF_HUB_PREFIX, read_hf_folder, snapshot_hf_hub
from samkit.modeling.config_from_weights import check_architecture, infer_fields, key_listing
from samkit.precision import check_device
from samkit.pretrained import PRETRAINED_WEIGHTS, PretrainedWeights, cache_dir, download_weights, known_name

__all__ = ["CHECKPOINT_SUFFIXES", "CheckpointError", "PRETRAINED_WEIGHTS", "PretrainedWeights", "ResolvedWeights",
           "STRIPPED_PREFIXES", "WeightsNotFoundError", "cache_dir", "check_architecture", "download_weights",
           "infer_config", "load_model", "load_state_dict_strict", "read_weights", "save_checkpoint",
           "write_random_checkpoint"]

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
WeightsSource = Union[Mapping[str, Any], str, os.PathLike]
Builder = Callable[[SamConfig], nn.Module]

CONFIG_KEY = "samkit_config"
WRAPPER_KEYS = ("model", "state_dict")
STRIPPED_PREFIXES = ("module.", "_orig_mod.", "sam.", "model.")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class ResolvedWeights(NamedTuple):
    """Weights in Meta's naming, the architecture stored with them (or None), and where they came from."""

    state_dict: StateDict
    config: SamConfig | None
    origin: str


# --------------------------------------------------------------------------- loading


def load_model(source: WeightsSource, *, config: SamConfig | str | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None,
               progress: bool = False, builder: Builder | None = None,
               fast_decoder: bool | None = None) -> nn.Module:
    """Build a SAM model and load weights into it, strictly.

    Before anything is built, the architecture is checked against the tensors: every field the
    shapes imply must agree, sizes must lie within
    :data:`samkit.modeling.config_from_weights.LIMITS`, and the model built on the ``meta``
    device (no memory) must have exactly the checkpoint's keys and shapes. A crafted stored
    config therefore fails with a CheckpointError instead of allocating memory.

    Args:
        source: state dict, file, Hugging Face folder, ``"hf-hub:org/name"`` or known name
            (resolution order in the module docstring).
        config: architecture (or a variant name); overrides anything stored with the weights.
        device: where to move the model after loading (weights are read on the CPU).
        dtype: floating dtype (or ``"fp32"``, ``"bf16"``, ``"fp16"``) for the image encoder, where
            nearly all compute is; the prompt encoder and mask decoder stay float32.
        progress: show a download progress bar (needs ``tqdm``).
        builder: ``SamConfig -> nn.Module``; default :func:`samkit.modeling.build_sam`.
        fast_decoder: for the default builder, build the fast decoder parts (default True) or
            the plain ones (False); see :func:`samkit.modeling.build_sam`. Not with ``builder=``.

    Returns:
        The model in eval mode.

    Raises:
        WeightsNotFoundError: nothing found at ``source`` and it could not be fetched.
        CheckpointError: unreadable or unsafe file, or keys/shapes that do not match the architecture.
    """
    device = check_device(device)
    if isinstance(dtype, str):
        from samkit.precision import parse_dtype

        dtype = parse_dtype(dtype)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if builder is not None and fast_decoder is not None:
        raise ValueError("fast_decoder= applies to the default builder; with builder= choose the decoder in it")
    state_dict, stored_config, origin = read_weights(source, progress=progress)
    if isinstance(config, str):
        config = get_config(config)
    claim = "the config passed in" if config else f"its stored {CONFIG_KEY}" if stored_config else None
    if config is None and stored_config is None:
        config = _unambiguous_config(state_dict, origin)
    config = config or stored_config
    if builder is None:
        from samkit.modeling import build_sam

        def builder(c: SamConfig) -> nn.Module:
            return build_sam(c, fast_decoder=True if fast_decoder is None else fast_decoder)
    check_architecture(config, state_dict, builder, origin=origin, claim=claim)
    model = builder(config)
    load_state_dict_strict(model, state_dict, origin=origin)
    model.eval()
    if device is not None or dtype is not None:
        from samkit.precision import check_precision

        check_precision(dtype, device)
        model.to(device=device)
        if dtype is not None:
            # Reduced precision where the compute is: the image encoder. The prompt encoder and
            # mask decoder stay float32 (cheap, and thresholded logits are sensitive to rounding).
            model.image_encoder.to(dtype=dtype)
    logger.info("loaded %s", origin)
    return model


def read_weights(source: WeightsSource, *, progress: bool = False) -> ResolvedWeights:
    """Resolve ``source`` (see the module docstring) to a Meta-format state dict, without building a model."""
    if isinstance(source, Mapping):
        return _normalize(source, origin="the state dict passed in")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a state dict, a path or a model name, got {type(source).__name__}")
    text = os.fspath(source)
    if not text.strip():
        raise ValueError("source must be a checkpoint file, a Hugging Face folder, 'hf-hub:org/name' or a known "
                         "model name, got an empty string")
    path = Path(text).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        return _from_hf_folder(path, origin=str(path))
    if text.startswith(HF_HUB_PREFIX):
        return _from_hf_folder(snapshot_hf_hub(text[len(HF_HUB_PREFIX):]), origin=text)
    name = known_name(text)
    if name is not None:
        state_dict, stored, origin = _read_file(download_weights(name, progress=progress))
        return ResolvedWeights(state_dict, stored or get_config(PRETRAINED_WEIGHTS[name].config_name), origin)
    raise WeightsNotFoundError(
        f"cannot load weights from {text!r}: no file or folder exists at {path.absolute()}, and it is neither "
        f"'hf-hub:org/name' nor a known model; expected a path or one of {sorted(PRETRAINED_WEIGHTS)}")


def _read_file(path: Path) -> ResolvedWeights:
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"unsupported checkpoint file {path}: expected a suffix in {list(CHECKPOINT_SUFFIXES)}, "
                              f"got {suffix!r}")
    if suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
        resolved = _normalize(tensors, origin=str(path))
        stored = metadata.get(CONFIG_KEY)
        if stored is not None and resolved.config is None:
            return resolved._replace(config=_stored_config(stored, str(path)))
        return resolved
    return _normalize(read_torch(path), origin=str(path))


def _from_hf_folder(folder: Path, *, origin: str) -> ResolvedWeights:
    tensors, config = read_hf_folder(folder, origin=origin)
    return _normalize(tensors, origin=origin)._replace(config=config)


def _stored_config(value: Any, origin: str) -> SamConfig:
    """A config stored as a dict (torch checkpoints) or as JSON text (safetensors metadata)."""
    try:
        return SamConfig.from_dict(dict(json.loads(value) if isinstance(value, str) else value))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{origin}: invalid stored {CONFIG_KEY}: {error}") from error


def _normalize(obj: Any, *, origin: str) -> ResolvedWeights:
    """Unwrap, strip shared prefixes, rename Hugging Face keys; check every value is a tensor."""
    config = None
    for _ in range(4):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{origin}: expected a mapping of parameter names to tensors, "
                                  f"got {type(obj).__name__}")
        if CONFIG_KEY in obj and config is None:
            config = _stored_config(obj[CONFIG_KEY], origin)
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        logger.debug("%s: using the %r entry of the checkpoint", origin, wrapper)
        obj = obj[wrapper]
    state_dict = {k: v for k, v in obj.items() if k != CONFIG_KEY}
    bad = [f"{k} ({type(v).__name__})" for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad or not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(f"{origin}: expected parameter names mapped to tensors, got non-tensor entries "
                              f"{bad[:5] or 'with non-string keys'}")
    if not state_dict:
        raise CheckpointError(f"{origin}: the checkpoint holds no tensors")
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                logger.info("%s: stripped the key prefix %r", origin, prefix)
                stripped = True
    from samkit import hf_mapping

    if hf_mapping.is_hf_state_dict(state_dict):
        try:
            state_dict = hf_mapping.hf_to_meta_state_dict(state_dict)
        except ValueError as error:
            raise CheckpointError(f"{origin}: {error}") from error
    return ResolvedWeights(state_dict, config, origin)


# --------------------------------------------------------------------------- architecture


def _unambiguous_config(state_dict: Mapping[str, Any], origin: str) -> SamConfig:
    """infer_config for load_model (``state_dict`` already in Meta's naming), refusing weights whose
    decoder head count no shape fixes.

    Every official SAM family has a 256-wide decoder with 8 heads; for another width the head
    count is a guess, and a wrong guess loads without error into a different model."""
    found = infer_fields(state_dict)
    if found["prompt_embed_dim"] != 256:
        raise CheckpointError(
            f"{origin}: the decoder is {found['prompt_embed_dim']} wide (official SAM models are 256 wide, 8 heads) "
            "and its head count is not stored in the weights; pass config= (a SamConfig or variant name), or "
            "save the model with samkit.save_checkpoint, which stores its config")
    return _config_from_fields(found)


def _config_from_fields(found: Mapping[str, Any], **overrides: Any) -> SamConfig:
    try:
        return SamConfig(**dict(found, **overrides))
    except ValueError as error:
        raise CheckpointError(f"the tensors imply an invalid architecture: {error}") from None


def infer_config(state_dict: Mapping[str, Any], **overrides: Any) -> SamConfig:
    """Read a :class:`SamConfig` from the keys and shapes of a Meta-format state dict.

    Every size comes from a tensor shape; file names never matter. The encoder family is the
    one whose key pattern the state dict matches (:mod:`samkit.modeling.families`), and that
    family reads the encoder's settings (for ViT: heads from the relative-position tables,
    global blocks from their side). The decoder's head count is in no shape: SAM's 8 is assumed
    (a warning is logged when the decoder is not SAM's 256 wide). Fields no shape fixes keep
    their SamConfig defaults.

    Args:
        state_dict: parameter name -> tensor (wrapped, prefixed or Hugging Face keys are accepted).
        overrides: SamConfig fields that replace the inferred ones, e.g. ``decoder_num_heads=4``.

    Raises:
        CheckpointError: a key SAM needs is missing or shapes are inconsistent.

    Example:
        >>> infer_config(torch.load("sam_vit_b_01ec64.pth", weights_only=True)) == get_config("vit_b")  # doctest: +SKIP
        True
    """
    found = infer_fields(_normalize(state_dict, origin="infer_config").state_dict)
    if found["prompt_embed_dim"] != 256 and "decoder_num_heads" not in overrides:
        logger.warning("decoder head count is not stored in the weights; assuming %d for width %d (pass config= "
                       "or save with save_checkpoint, which stores the config)", found["decoder_num_heads"],
                       found["prompt_embed_dim"])
    return _config_from_fields(found, **overrides)


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                           origin: str = "checkpoint") -> None:
    """Copy ``state_dict`` into ``model``, or raise listing missing/unexpected keys and shape mismatches."""
    listing = key_listing({k: tuple(v.shape) for k, v in model.state_dict().items()}, state_dict)
    if listing:
        config = getattr(model, "config", None)
        raise CheckpointError(
            f"{origin} does not match the architecture{f' {config}' if config else ''}; pass config= matching "
            "the weights (or none, to infer it)" + listing)
    model.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------- saving


def save_checkpoint(model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, *,
                    config: SamConfig | None = None, store_config: bool | None = None) -> Path:
    """Write Meta-format weights to ``.pth``/``.pt``/``.bin`` (torch.save) or ``.safetensors``.

    Args:
        model: a SAM model (or its state dict).
        path: destination; written to a temporary file then renamed.
        config: architecture to store; default ``model.config``.
        store_config: store ``config`` with the weights (``.pth``: ``{"model": sd, "samkit_config": {...}}``;
            ``.safetensors``: metadata, the tensors stay a plain Meta state dict). Default: only when
            :func:`infer_config` would not give ``config`` back or the decoder is not 256 wide (its
            head count is then in no shape, and load_model refuses to guess), so official-shaped
            models stay plain Meta state dicts that ``segment_anything`` can load.
    """
    path = Path(path)
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"path must end in one of {list(CHECKPOINT_SUFFIXES)}, got {path.name!r}")
    state = model.state_dict() if isinstance(model, nn.Module) else model
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    config = config or getattr(model, "config", None)
    if store_config is None:
        store_config = config is not None and (config.prompt_embed_dim != 256 or _quiet_infer(state_dict) != config)
    if store_config and config is None:
        raise ValueError("store_config=True needs a config: pass config= or a model with a .config")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            metadata = {CONFIG_KEY: json.dumps(config.to_dict())} if store_config else None
            save_file(state_dict, partial, metadata=metadata)
        else:
            torch.save({"model": state_dict, CONFIG_KEY: config.to_dict()} if store_config else state_dict, partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def _quiet_infer(state_dict: StateDict) -> SamConfig | None:
    try:
        return SamConfig(**infer_fields(state_dict))
    except (CheckpointError, ValueError):
        return None


def write_random_checkpoint(path: str | os.PathLike, config: SamConfig | str = "tiny", *, seed: int = 0,
                            builder: Builder | None = None) -> nn.Module:
    """Write a seeded random SAM checkpoint in Meta's format (for tests; no download needed).

    Every floating tensor gets seeded noise on top of its initialisation, so zero-initialised
    tables (positional embeddings) differ too. The global RNG state is left untouched.

    Returns:
        The model whose weights were written.
    """
    config = get_config(config) if isinstance(config, str) else config
    if builder is None:
        from samkit.modeling import build_sam as builder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.02 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
    save_checkpoint(model, path, config=config)
    return model
