"""The training loop: settings, optimiser, one step, and the epoch loop with validation.

Decoder-only fine-tuning (the common case, ``train_image_encoder=False``) freezes the image
encoder and encodes each image once per step under ``torch.no_grad``; the prompt encoder, mask
decoder and embedding prompt path are trained. ``train_image_encoder=True`` trains everything
(as for the small model trained from scratch on synthetic scenes). Optional: bf16 autocast
(CPU or GPU), gradient accumulation, gradient clipping. The optimiser is AdamW as in the paper
(appendix A: lr 8e-4, betas (0.9, 0.999), weight decay 0.1, 250 warm-up steps) with a cosine
or the paper's step decay after warm-up.

Example:
    >>> from samkit.train import TrainSettings, SyntheticScenes, train
    >>> model = build_sam(get_config("tiny"))                                         # doctest: +SKIP
    >>> history = train(model, SyntheticScenes(64), TrainSettings(steps=10, train_image_encoder=True))  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .data import TrainBatch, prepare_batch
from .interactive import LOSS_RESOLUTIONS, interactive_loss
from .losses import SamLoss
from .prompting import PromptSimulation

__all__ = ["TrainSettings", "build_optimizer", "lr_factor", "encode_images", "compute_loss", "train_step", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """How to train. Defaults follow the paper where it says, scaled to one device.

    Attributes:
        steps: optimiser steps in all.
        images_per_step: images per micro-batch (each encoded once).
        masks_per_image: masks sampled per image (the paper: up to 64 masks per GPU).
        accumulation_steps: micro-batches whose gradients are summed per optimiser step.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay on weight matrices (not biases, norms, embeddings).
        betas: AdamW betas.
        warmup_steps: linear warm-up from 0.
        schedule: ``"cosine"`` (to ``min_lr_ratio * lr``), ``"step"`` (x0.1 at 2/3 and 8/9 of
            ``steps``, the paper's shape) or ``"constant"``.
        min_lr_ratio: floor of the cosine schedule.
        grad_clip: max gradient norm, or None.
        train_image_encoder: train the ViT too; False freezes it (decoder-only fine-tuning).
        autocast_dtype: ``"bfloat16"`` to run forward passes under autocast, or None (float32).
        loss_resolution: ``"low_res"``, ``"low_res_soft"`` or ``"input"`` (see :mod:`samkit.train.losses`).
        prompting: the simulated prompting.
        loss: the loss weights.
        seed: seeds the data order, mask sampling and prompt draws.
        checkpoint_every: optimiser steps between checkpoints (0: only at the end) when an
            output folder is given.
        device: where to train; default the model's device.
    """

    steps: int = 1000
    images_per_step: int = 4
    masks_per_image: int = 16
    accumulation_steps: int = 1
    lr: float = 8e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 250
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    grad_clip: float | None = 1.0
    train_image_encoder: bool = False
    autocast_dtype: str | None = None
    loss_resolution: str = "low_res"
    prompting: PromptSimulation = field(default_factory=PromptSimulation)
    loss: SamLoss = field(default_factory=SamLoss)
    seed: int = 0
    checkpoint_every: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.images_per_step < 1 or self.masks_per_image < 1 or self.accumulation_steps < 1:
            raise ValueError("steps, images_per_step, masks_per_image and accumulation_steps must be >= 1, got "
                             f"{self.steps}, {self.images_per_step}, {self.masks_per_image}, {self.accumulation_steps}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {self.schedule!r}")
        if self.autocast_dtype not in (None, "bfloat16", "float16"):
            raise ValueError(f"autocast_dtype must be None, 'bfloat16' or 'float16', got {self.autocast_dtype!r}")
        if self.loss_resolution not in LOSS_RESOLUTIONS:
            raise ValueError(f"loss_resolution must be one of {LOSS_RESOLUTIONS}, got {self.loss_resolution!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (nested settings as dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainSettings":
        values = dict(values)
        values["prompting"] = PromptSimulation(**values.get("prompting", {}))
        values["loss"] = SamLoss(**values.get("loss", {}))
        values["betas"] = tuple(values.get("betas", cls.betas))
        return cls(**values)


# Learned embeddings and position tables: no weight decay, as biases and norms.
_NO_DECAY = ("pos_embed", "rel_pos", "point_embeddings", "not_a_point_embed", "no_mask_embed", "iou_token",
             "mask_tokens", "type_embed")


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Learning-rate multiplier at optimiser ``step`` (0-based)."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    if settings.schedule == "constant":
        return 1.0
    if settings.schedule == "step":
        return 1.0 if step < settings.steps * 2 / 3 else 0.1 if step < settings.steps * 8 / 9 else 0.01
    span = max(settings.steps - settings.warmup_steps, 1)
    progress = min((step - settings.warmup_steps) / span, 1.0)
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, settings: TrainSettings
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Freeze or unfreeze the encoder as set, then AdamW over the trainable parameters + its schedule."""
    model.image_encoder.requires_grad_(settings.train_image_encoder)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_matrix = p.ndim >= 2 and not any(part in name for part in _NO_DECAY)
            (decay if is_matrix else no_decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=settings.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, settings))
    return optimizer, scheduler


def encode_images(model: torch.nn.Module, images: torch.Tensor, *, train_image_encoder: bool) -> torch.Tensor:
    """(B, 3, S, S) normalised inputs -> (B, C, h, w) embeddings; no graph when the encoder is frozen."""
    if train_image_encoder:
        return model.image_encoder(images)
    with torch.no_grad():
        return model.image_encoder(images)


def compute_loss(model: torch.nn.Module, batch: TrainBatch, settings: TrainSettings,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Encode the batch's images and run :func:`~samkit.train.interactive.interactive_loss` (autocast as set)."""
    device = batch.images.device
    dtype = getattr(torch, settings.autocast_dtype) if settings.autocast_dtype else None
    with torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        features = encode_images(model, batch.images, train_image_encoder=settings.train_image_encoder)
        return interactive_loss(model, features, batch, prompting=settings.prompting, loss=settings.loss,
                                loss_resolution=settings.loss_resolution, generator=generator)


def train_step(model: torch.nn.Module, batches: Sequence[TrainBatch], optimizer: torch.optim.Optimizer,
               settings: TrainSettings, *, scheduler: Any = None, generator: torch.Generator | None = None
               ) -> dict[str, Any]:
    """One optimiser step over ``accumulation_steps`` micro-batches (gradients averaged).

    Returns:
        The mean of the micro-batches' stats, plus ``loss`` and ``lr``.
    """
    model.train()
    if not settings.train_image_encoder:
        model.image_encoder.eval()
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for batch in batches:
        loss, stats = compute_loss(model, batch, settings, generator)
        (loss / len(batches)).backward()
        for key, value in dict(stats, loss=float(loss.detach())).items():
            totals[key] = totals.get(key, 0.0) + value / len(batches)
    if settings.grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, settings.grad_clip))
    totals["lr"] = optimizer.param_groups[0]["lr"]
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return totals


def _next_items(dataset: Sequence, order: list[int], count: int, rng: np.random.Generator) -> list:
    items = []
    while len(items) < count:
        if not order:
            order.extend(rng.permutation(len(dataset)).tolist())
        items.append(dataset[order.pop()])
    return items


def train(model: torch.nn.Module, dataset: Sequence[tuple[np.ndarray, np.ndarray]], settings: TrainSettings, *,
          output_dir: str | Path | None = None, resume: bool = False,
          val_dataset: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, val_images: int | None = None,
          embed_crops: Callable | None = None, on_step: Callable[[int, dict], None] | None = None,
          on_epoch: Callable[[int, dict], None] | None = None) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``dataset`` for ``settings.steps`` optimiser steps.

    An *epoch* is ``len(dataset)`` images. After each epoch (and at the end), the validation
    mIoU of :func:`samkit.train.evaluate.evaluate` is computed when ``val_dataset`` is given.

    Args:
        model: a SAM model (:func:`samkit.modeling.build_sam` or :func:`samkit.load_model`).
        dataset: items ``(image, masks)`` (see :mod:`samkit.train.data`).
        settings: the training settings.
        output_dir: where checkpoints go (``model.pth`` in Meta's format, readable by
            :func:`samkit.load_model`, and ``training_state.pt``); None saves nothing.
        resume: continue from the checkpoint in ``output_dir`` when there is one.
        val_dataset: held-out items for the per-epoch mIoU.
        val_images: evaluate at most this many validation images.
        embed_crops: first-prompt embeddings per mask (the CLIP path), see :func:`prepare_batch`.
        on_step: called after every optimiser step with ``(step, stats)`` (e.g. a progress bar).
        on_epoch: called with ``(epoch, metrics)`` after every validation.

    Returns:
        The history: one dict per validation (``epoch``, ``step``, metrics, ``elapsed_s``).
    """
    from .checkpoint import load_training_state, save_training_state

    device = torch.device(settings.device) if settings.device else next(model.parameters()).device
    model.to(device)
    optimizer, scheduler = build_optimizer(model, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    order: list[int] = []
    step, history = 0, []
    if resume and output_dir is not None and (Path(output_dir) / "training_state.pt").is_file():
        state = load_training_state(output_dir, model, optimizer, scheduler)
        step, history, order = state["step"], state["history"], state["order"]
        generator.set_state(state["torch_rng"])
        rng.bit_generator.state = state["numpy_rng"]
        logger.info("resumed from %s at step %d", output_dir, step)
    per_step = settings.images_per_step * settings.accumulation_steps
    steps_per_epoch = max(1, len(dataset) // per_step)
    start = time.perf_counter()

    def validate(epoch: int) -> None:
        if val_dataset is None:
            return
        from .evaluate import evaluate

        metrics = dict(evaluate(model, val_dataset, max_images=val_images), epoch=epoch, step=step,
                       elapsed_s=round(time.perf_counter() - start, 1))
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    def checkpoint() -> None:
        if output_dir is not None:
            save_training_state(output_dir, model, optimizer, scheduler, step=step, settings=settings,
                                history=history, order=order, torch_rng=generator.get_state(),
                                numpy_rng=rng.bit_generator.state)

    while step < settings.steps:
        batches = []
        for _ in range(settings.accumulation_steps):
            items = _next_items(dataset, order, settings.images_per_step, rng)
            batches.append(prepare_batch(items, image_size=model.image_encoder.img_size,
                                         pixel_mean=model.pixel_mean.cpu(), pixel_std=model.pixel_std.cpu(),
                                         max_masks_per_image=settings.masks_per_image, rng=rng,
                                         embed_crops=embed_crops).to(device))
        stats = train_step(model, batches, optimizer, settings, scheduler=scheduler, generator=generator)
        step += 1
        if on_step is not None:
            on_step(step, stats)
        if step % steps_per_epoch == 0 or step == settings.steps:
            validate(math.ceil(step / steps_per_epoch))
        if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < settings.steps:
            checkpoint()
    checkpoint()
    model.eval()
    return history
