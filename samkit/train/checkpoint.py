"""Resumable training checkpoints: the model in Meta's format, the training state apart.

A checkpoint folder holds two files:

* ``model.pth``: the weights as :func:`samkit.save_checkpoint` writes them (a Meta-format state
  dict, with the :class:`~samkit.SamConfig` stored beside it when the shapes alone do not
  determine it), so ``samkit.load_model("out/model.pth")`` gives the trained model;
* ``training_state.pt``: optimiser and scheduler state, step, settings, validation history and
  the random generators' states; plain tensors and containers, read with ``weights_only=True``.

Both are written to a temporary name and renamed, the state last, so a run killed mid-write
resumes from the previous complete pair.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["MODEL_FILE", "STATE_FILE", "save_training_state", "load_training_state"]

MODEL_FILE = "model.pth"
STATE_FILE = "training_state.pt"


def save_training_state(output_dir: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any = None, *, step: int, settings: Any = None, **extra: Any) -> Path:
    """Write ``model.pth`` and ``training_state.pt`` into ``output_dir``; returns the folder.

    Args:
        output_dir: the checkpoint folder (created).
        model: the SAM model being trained.
        optimizer: its optimiser.
        scheduler: its learning-rate scheduler, or None.
        step: optimiser steps done.
        settings: a :class:`~samkit.train.TrainSettings` (stored as a dict) or None.
        extra: further plain values to store (history, data order, generator states).
    """
    from samkit.weights import save_checkpoint

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, folder / MODEL_FILE)
    state = {"step": int(step), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "settings": settings.to_dict() if hasattr(settings, "to_dict") else settings, **extra}
    handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{STATE_FILE}.", suffix=".partial")
    os.close(handle)
    try:
        torch.save(state, partial)
        os.replace(partial, folder / STATE_FILE)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return folder


def load_training_state(output_dir: str | os.PathLike, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None) -> dict[str, Any]:
    """Load ``model.pth`` into ``model`` (strictly) and the optimiser/scheduler state; return the state dict.

    Raises:
        FileNotFoundError: a file of the pair is missing.
        samkit.weights.CheckpointError: the model file does not match ``model``.
    """
    from samkit.weights import load_state_dict_strict, read_weights

    folder = Path(output_dir)
    missing = [name for name in (MODEL_FILE, STATE_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"not a training checkpoint folder: expected {MODEL_FILE} and {STATE_FILE} in "
                                f"{folder}, missing {missing}")
    weights = read_weights(folder / MODEL_FILE)
    device = next(model.parameters()).device
    load_state_dict_strict(model, {k: v.to(device) for k, v in weights.state_dict.items()},
                           origin=str(folder / MODEL_FILE))
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state
