"""Hugging Face SAM folders and hub snapshots: which files hold the weights, read safely.

A folder as ``transformers.SamModel.save_pretrained`` writes it: ``config.json`` plus
``model.safetensors`` or ``pytorch_model.bin``, or shards listed by ``*.index.json``. Safetensors is
preferred when both are present; ``.bin`` shards go through :mod:`samkit.weights`' ``weights_only``
reader. Hub repositories (``"hf-hub:org/name[@revision]"``) are fetched with ``huggingface_hub``,
which honours ``HF_HUB_OFFLINE`` and its own cache.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samkit.checkpoint_files import read_safetensors, read_torch
from samkit.errors import CheckpointError, WeightsNotFoundError

__all__ = ["HF_HUB_PREFIX", "hf_weight_files", "read_hf_folder", "snapshot_hf_hub"]

HF_HUB_PREFIX = "hf-hub:"


def hf_weight_files(folder: Path) -> list[Path] | None:
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            return _shard_files(folder / index)
    return None


def _shard_files(index_file: Path) -> list[Path]:
    """The shard files a Hugging Face ``*.index.json`` names; each must be a file beside it."""
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{index_file}: not a valid JSON index file: {error}") from None
    weight_map = index.get("weight_map") if isinstance(index, Mapping) else None
    if not isinstance(weight_map, Mapping) or not weight_map:
        raise CheckpointError(f"{index_file}: expected a 'weight_map' of parameter names to shard files")
    names = sorted({str(name) for name in weight_map.values()})
    outside = [n for n in names if Path(n).name != n or n in (".", "..")]
    if outside:
        raise CheckpointError(f"{index_file}: shard files must lie in the same folder, got {outside[:3]}")
    missing = [n for n in names if not (index_file.parent / n).is_file()]
    if missing:
        raise CheckpointError(f"{index_file}: shard files listed but missing: {missing[:5]}")
    return [index_file.parent / n for n in names]


def read_hf_folder(folder: Path, *, origin: str) -> tuple[dict[str, Any], Any]:
    """The folder's tensors (Hugging Face names) and its config as a :class:`SamConfig`."""
    from samkit import hf_mapping

    files = hf_weight_files(folder)
    config_file = folder / "config.json"
    if files is None or not config_file.is_file():
        found = sorted(p.name for p in folder.iterdir())[:12]
        raise CheckpointError(f"{origin} is not a Hugging Face SAM folder: expected config.json and model.safetensors "
                              f"or pytorch_model.bin, found {found}")
    try:
        config = hf_mapping.sam_config_from_hf(json.loads(config_file.read_text()))
    except (ValueError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_file}: {error}") from error
    tensors: dict[str, Any] = {}
    for file in files:
        shard = read_safetensors(file)[0] if file.suffix == ".safetensors" else read_torch(file)
        if not isinstance(shard, Mapping):
            raise CheckpointError(f"{file}: expected a mapping of parameter names to tensors, "
                                  f"got {type(shard).__name__}")
        tensors.update(shard)
    return tensors, config


def snapshot_hf_hub(spec: str) -> Path:
    repo_id, _, revision = spec.partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ValueError(f"expected '{HF_HUB_PREFIX}org/name' or '{HF_HUB_PREFIX}org/name@revision', "
                         f"got {HF_HUB_PREFIX + spec!r}")
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as error:
        raise ImportError(f"loading '{HF_HUB_PREFIX}' weights needs huggingface_hub: pip install samkit[transformers]"
                          ) from error

    def fetch(*patterns: str) -> Path:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision or None, library_name="samkit",
                                                      allow_patterns=["config.json", *patterns]))

    try:
        folder = fetch("model.safetensors", "model.safetensors.index.json", "model-*.safetensors")
        if hf_weight_files(folder) is None:
            folder = fetch("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin")
    except (OSError, ValueError, EntryNotFoundError) as error:
        offline = huggingface_hub.constants.is_offline_mode()
        raise WeightsNotFoundError(
            f"cannot fetch Hugging Face repo {repo_id!r} (offline mode {'on' if offline else 'off'}): "
            f"{str(error).rstrip('.')}. "
            f"On a connected machine run `hf download {repo_id}` (it fills the cache used offline), or pass the "
            "path of a local SAM folder") from error
    return folder
