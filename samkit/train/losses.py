"""Losses of the SAM paper (section 3 and appendix A).

Masks are supervised with focal loss and dice loss in a 20:1 ratio; the IoU head is trained with
the mean squared error between its prediction and the IoU of the predicted mask (logits > 0)
with the ground truth. With an ambiguous prompt (one point) the decoder predicts several masks
and only the lowest mask loss is back-propagated.

Resolution: the paper does not say where the loss is computed. samkit compares the decoder's
low-resolution logits (4x the embedding grid: 256 x 256 for 1024 inputs) with the ground truth
resized to that grid (area average, threshold 0.5), which is cheap and what the mask prompt of
the next iteration sees; ``loss_resolution="input"`` in :class:`samkit.train.TrainSettings`
upsamples the logits to the model input instead, and ``"low_res_soft"`` keeps the low-resolution
grid with each cell's covered fraction as the target. Thresholded cells cap what the upsampled
masks can reach: on the synthetic held-out scenes (128 px, 32x32 logits), masks made by upsampling
the thresholded targets themselves score 0.889 mIoU against the ground truth, the logits of the
covered fractions 0.961 (``scripts/target_ceiling.py``). The functions below accept fractional
targets.

All functions take logits (..., H, W) float and targets of the same shape (floats in [0, 1]:
0/1 or covered fractions; or bool) and return one value per mask (...), so callers can reduce as they need.

Example:
    >>> logits = torch.zeros(2, 3, 8, 8); target = torch.zeros(2, 8, 8); target[:, 2:6, 2:6] = 1
    >>> loss, parts = sam_loss(logits, torch.zeros(2, 3), target, multimask=True)
    >>> loss.shape, parts["choice"].shape
    (torch.Size([2]), torch.Size([2]))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["focal_loss", "dice_loss", "mask_iou", "sam_loss", "SamLoss"]


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
               ) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), averaged over the last two axes.

    ``FL = -a_t (1 - p_t)^gamma log(p_t)`` with ``p_t = p`` on foreground and ``1 - p`` on
    background, ``a_t = alpha`` on foreground and ``1 - alpha`` on background; ``alpha < 0``
    disables the weighting.

    Args:
        logits: (..., H, W) float.
        targets: (..., H, W) floats in [0, 1] (0/1 or fractions) or bool, same shape.

    Returns:
        (...) float32 mean loss per mask.
    """
    logits, targets = logits.float(), targets.float()
    if logits.shape != targets.shape:
        raise ValueError(f"logits and targets must have the same shape, got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.mean(dim=(-2, -1))


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` with ``p = sigmoid(logits)``.

    Args:
        logits: (..., H, W) float.
        targets: (..., H, W) floats in [0, 1] (0/1 or fractions) or bool, same shape.
        smooth: ``s``, keeps empty masks finite (two empty masks give 0).

    Returns:
        (...) float32 loss per mask.
    """
    logits, targets = logits.float(), targets.float()
    if logits.shape != targets.shape:
        raise ValueError(f"logits and targets must have the same shape, got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    p = torch.sigmoid(logits).flatten(-2)
    t = targets.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


def mask_iou(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks (..., H, W); 1.0 when both are empty. Returns (...) float32."""
    predicted, targets = predicted.bool(), targets.bool()
    inter = (predicted & targets).flatten(-2).sum(-1).float()
    union = (predicted | targets).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(logits: torch.Tensor, iou_predictions: torch.Tensor, targets: torch.Tensor, *, multimask: bool,
             focal_weight: float = 20.0, dice_weight: float = 1.0, iou_weight: float = 1.0,
             supervise_all_iou: bool = True, focal_alpha: float = 0.25, focal_gamma: float = 2.0
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The paper's loss for N prompts with K predicted masks each.

    Args:
        logits: (N, K, H, W) mask logits.
        iou_predictions: (N, K) predicted IoU.
        targets: (N, H, W) ground truth, floats in [0, 1] or bool, at the logits' resolution.
        multimask: the K outputs are ambiguity-aware alternatives: only the output with the
            lowest mask loss is back-propagated. Otherwise K must be 1.
        focal_weight: weight of the focal loss (20 in the paper).
        dice_weight: weight of the dice loss (1 in the paper).
        iou_weight: weight of the IoU-head MSE (1 in the paper).
        supervise_all_iou: train the IoU prediction of every output (they rank the outputs at
            inference); False trains only the chosen output's.
        focal_alpha: focal loss alpha (0.25 as RetinaNet; negative disables).
        focal_gamma: focal loss gamma.

    Returns:
        ``(loss (N,), parts)``; ``parts`` holds per-prompt ``focal``, ``dice``, ``iou_mse`` (N,)
        of the chosen output, ``choice`` (N,) int64 index of the chosen output and ``iou``
        (N, K) the measured IoU of each output, all detached.
    """
    if logits.ndim != 4 or iou_predictions.shape != logits.shape[:2] or targets.shape != (
            logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"expected logits (N, K, H, W), iou_predictions (N, K), targets (N, H, W); got "
                         f"{tuple(logits.shape)}, {tuple(iou_predictions.shape)}, {tuple(targets.shape)}")
    if not multimask and logits.shape[1] != 1:
        raise ValueError(f"single-mask training needs K = 1 output, got K = {logits.shape[1]}")
    t = targets.float().unsqueeze(1).expand_as(logits)
    focal = focal_loss(logits, t, alpha=focal_alpha, gamma=focal_gamma)
    dice = dice_loss(logits, t)
    mask_loss = focal_weight * focal + dice_weight * dice  # (N, K)
    with torch.no_grad():
        measured = mask_iou(logits > 0, t > 0.5)
    iou_mse = (iou_predictions.float() - measured) ** 2  # (N, K)
    choice = mask_loss.detach().argmin(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    chosen_iou = iou_mse.mean(1) if supervise_all_iou else iou_mse[rows, choice]
    loss = mask_loss[rows, choice] + iou_weight * chosen_iou
    parts = {"focal": focal[rows, choice].detach(), "dice": dice[rows, choice].detach(),
             "iou_mse": chosen_iou.detach(), "choice": choice, "iou": measured}
    return loss, parts


@dataclass(frozen=True)
class SamLoss:
    """Settings of :func:`sam_loss` (same defaults); calling it calls the function.

    The defaults suit fine-tuning a pretrained SAM. Training from scratch they stall on empty
    masks; use an unweighted focal loss (``focal_alpha=-1``) and a heavier dice term
    (``dice_weight=5``), as ``scripts/train_tiny.py`` does (measurements:
    ``scripts/runs/design_notes.md``).
    """

    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    supervise_all_iou: bool = True
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0

    def __call__(self, logits: torch.Tensor, iou_predictions: torch.Tensor, targets: torch.Tensor, *,
                 multimask: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return sam_loss(logits, iou_predictions, targets, multimask=multimask, focal_weight=self.focal_weight,
                        dice_weight=self.dice_weight, iou_weight=self.iou_weight,
                        supervise_all_iou=self.supervise_all_iou, focal_alpha=self.focal_alpha,
                        focal_gamma=self.focal_gamma)
