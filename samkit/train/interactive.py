"""One interactive training pass: simulated prompting rounds through the prompt encoder and decoder.

:func:`interactive_loss` takes image embeddings (computed once per image, by the caller) and a
:class:`~samkit.train.data.TrainBatch`, draws each mask's first prompt (point, noisy box or CLIP
embedding), then runs the rounds of :class:`~samkit.train.prompting.PromptSimulation`: every
round adds a point from the previous error region (unless it is a mask-only round) and feeds the
previous round's logits as the mask prompt. Ambiguous first prompts (one point, one embedding)
use the three multimask outputs and back-propagate the lowest loss; every other round uses the
single-mask output. The previous logits are detached between rounds (no gradient through the
simulated user), and the loss is the mean over masks and rounds.

Prompts flow exactly as at inference (:meth:`samkit.Segmenter.decode`): the prompt encoder
embeds points (padded with a not-a-point token when there is no box), boxes and the mask; an
embedding prompt is projected by ``model.embedding_prompt`` and appended to the sparse tokens.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .data import TrainBatch
from .losses import SamLoss
from .prompting import PromptSimulation, noisy_boxes, point_schedule, sample_error_points, sample_points_in_masks

__all__ = ["FIRST_POINT", "FIRST_BOX", "FIRST_EMBEDDING", "LOSS_RESOLUTIONS", "interactive_loss",
           "first_prompt_kinds"]

FIRST_POINT, FIRST_BOX, FIRST_EMBEDDING = 0, 1, 2
LOSS_RESOLUTIONS = ("low_res", "low_res_soft", "input")


def first_prompt_kinds(num_masks: int, prompting: PromptSimulation, has_embedding: torch.Tensor | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw each mask's first prompt kind: (M,) int64 of FIRST_POINT, FIRST_BOX, FIRST_EMBEDDING.

    Masks with an embedding use it with ``prompting.embedding_probability``; the rest get a box
    with ``prompting.box_probability``, else a point.
    """
    draws = torch.rand((2, num_masks), generator=generator)
    kinds = torch.where(draws[0] < prompting.box_probability, FIRST_BOX, FIRST_POINT)
    if has_embedding is not None:
        use = has_embedding.cpu().bool() & (draws[1] < prompting.embedding_probability)
        kinds = torch.where(use, FIRST_EMBEDDING, kinds)
    return kinds


def _valid_regions(batch: TrainBatch, size: int) -> torch.Tensor:
    """(M, S, S) bool: the resized image inside the padding, per mask."""
    rows = torch.arange(size, device=batch.masks.device)
    h = torch.tensor([s[0] for s in batch.input_sizes], device=rows.device)[batch.image_index]
    w = torch.tensor([s[1] for s in batch.input_sizes], device=rows.device)[batch.image_index]
    return (rows[None, :, None] < h[:, None, None]) & (rows[None, None, :] < w[:, None, None])


def _concat_dense(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate (n_i, C, h, w) dense prompt embeddings; broadcasts of one no-mask embedding stay a broadcast."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if all(p.stride(0) == 0 and p.data_ptr() == first.data_ptr() and p.stride() == first.stride() for p in parts):
        return first[:1].expand(sum(len(p) for p in parts), -1, -1, -1)  # no (M, C, h, w) copy
    return torch.cat(parts)


def interactive_loss(model: torch.nn.Module, features: torch.Tensor, batch: TrainBatch, *,
                     prompting: PromptSimulation = PromptSimulation(), loss: SamLoss = SamLoss(),
                     loss_resolution: str = "low_res", generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Loss of one batch under simulated interactive prompting.

    Args:
        model: a SAM model (``prompt_encoder``, ``mask_decoder``, optional ``embedding_prompt``).
        features: (B, C, h, w) image embeddings of ``batch.images`` (with or without grad).
        batch: the masks, in model input pixels, and which image each belongs to.
        prompting: the simulation settings.
        loss: the loss settings.
        loss_resolution: ``"low_res"`` (the logits' 4x-grid resolution, targets thresholded),
            ``"low_res_soft"`` (same grid, targets the covered fraction of each cell) or ``"input"`` (logits
            upsampled to the model input).
        generator: CPU torch RNG for every random draw (prompts, schedule).

    Returns:
        ``(loss, stats)``: a scalar to back-propagate, and floats ``first_iou`` / ``last_iou``
        (mean IoU of the highest-scoring output in the first and last round, at the loss
        resolution), ``focal``, ``dice``, ``iou_mse`` (means over rounds).
    """
    if loss_resolution not in LOSS_RESOLUTIONS:
        raise ValueError(f"loss_resolution must be one of {LOSS_RESOLUTIONS}, got {loss_resolution!r}")
    masks = batch.masks.bool()
    num, size = masks.shape[0], masks.shape[-1]
    encoder, decoder = model.prompt_encoder, model.mask_decoder
    low_res = encoder.mask_input_size[0]
    if loss_resolution == "input":
        targets = masks.float()
    else:
        targets = F.interpolate(masks.float()[:, None], size=(low_res, low_res), mode="area")[:, 0]
        if loss_resolution == "low_res":
            targets = (targets >= 0.5).float()
    kinds = first_prompt_kinds(num, prompting, batch.has_embedding, generator).to(masks.device)
    if (kinds == FIRST_EMBEDDING).any() and getattr(model, "embedding_prompt", None) is None:
        raise ValueError("the batch has embedding prompts but the model has no embedding prompt path; build it with "
                         "SamConfig(embedding_prompt_dim=D)")
    valid = _valid_regions(batch, size)
    bounds = torch.tensor([(s[1], s[0]) for s in batch.input_sizes], dtype=torch.float32,
                          device=masks.device)[batch.image_index]
    first_points = sample_points_in_masks(masks, generator)
    boxes = noisy_boxes(masks, generator, noise_fraction=prompting.box_noise_fraction,
                        max_noise=prompting.box_noise_max, bounds=bounds)
    points = masks.new_zeros((num, 0, 2), dtype=torch.float32)
    labels = masks.new_zeros((num, 0), dtype=torch.long)
    dense_pe = encoder.get_dense_pe()
    previous: torch.Tensor | None = None
    schedule = point_schedule(prompting.num_iterations, prompting.num_mask_only, generator)
    total = features.new_zeros((), dtype=torch.float32)
    sums = {"focal": 0.0, "dice": 0.0, "iou_mse": 0.0}
    stats: dict[str, Any] = {}
    for round_index, adds_point in enumerate(schedule):
        if adds_point:
            upscaled = F.interpolate(previous[:, None], size=(size, size), mode="bilinear", align_corners=False)
            xy, lab = sample_error_points(upscaled[:, 0] > 0, masks, generator, valid=valid)
            points = torch.cat([points, xy[:, None]], dim=1)
            labels = torch.cat([labels, lab[:, None]], dim=1)
        next_logits = targets.new_zeros((num, low_res, low_res))
        round_loss = total.new_zeros(())
        best_iou = targets.new_zeros(num)
        # Prompts of each kind, then one decoder call per sparse-token count: a first point (plus
        # the not-a-point pad) and a box have the same count in every round, so points and boxes
        # share one call (the same per-mask arithmetic as separate calls, half the operator calls).
        calls: dict[int, list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        for kind in (FIRST_POINT, FIRST_BOX, FIRST_EMBEDDING):
            idx = (kinds == kind).nonzero().flatten()
            if idx.numel() == 0:
                continue
            pts, labs = points[idx], labels[idx]
            if kind == FIRST_POINT:
                pts = torch.cat([first_points[idx, None], pts], dim=1)
                labs = torch.cat([labs.new_ones((len(idx), 1)), labs], dim=1)
            point_arg = (pts, labs) if pts.shape[1] else None
            box_arg = boxes[idx] if kind == FIRST_BOX else None
            mask_arg = previous[idx, None] if previous is not None and prompting.mask_prompt else None
            sparse, dense = encoder(point_arg, box_arg, mask_arg)
            sparse, dense = sparse.expand(len(idx), -1, -1), dense.expand(len(idx), -1, -1, -1)
            if kind == FIRST_EMBEDDING:
                tokens = model.embedding_prompt(batch.embeddings[idx])
                sparse = torch.cat([sparse, tokens.to(sparse.dtype)], dim=1)
            calls.setdefault(sparse.shape[1], []).append((kind, idx, sparse, dense))
        for members in calls.values():
            idx_all = torch.cat([m[1] for m in members])
            sparse = torch.cat([m[2] for m in members]) if len(members) > 1 else members[0][2]
            dense = _concat_dense([m[3] for m in members])
            all_logits, all_iou = decoder.predict_masks(features[batch.image_index[idx_all]], dense_pe, sparse, dense)
            offset = 0
            for kind, idx, _, _ in members:
                multimask = round_index == 0 and kind != FIRST_BOX
                sel = decoder.output_selection(multimask)
                logits = all_logits[offset:offset + len(idx), sel]
                iou_pred = all_iou[offset:offset + len(idx), sel]
                offset += len(idx)
                loss_logits = logits
                if loss_resolution == "input":
                    loss_logits = F.interpolate(logits.float(), size=(size, size), mode="bilinear",
                                                align_corners=False)
                group_loss, parts = loss(loss_logits, iou_pred, targets[idx], multimask=multimask)
                round_loss = round_loss + group_loss.sum()
                by_score = iou_pred.detach().argmax(dim=1)
                rows = torch.arange(len(idx), device=logits.device)
                next_logits[idx] = logits.detach()[rows, by_score].float()
                best_iou[idx] = parts["iou"][rows, by_score]
                for key in sums:
                    sums[key] += float(parts[key].sum())
        total = total + round_loss / num
        previous = next_logits
        if round_index == 0:
            stats["first_iou"] = float(best_iou.mean())
    stats["last_iou"] = float(best_iou.mean())
    rounds = len(schedule)
    stats.update({key: value / (num * rounds) for key, value in sums.items()})
    return total / rounds, stats
