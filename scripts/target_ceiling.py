"""How well can masks made from low-resolution logits match the ground truth at all?

SAM's decoder predicts logits on a grid 4x the image embedding (32x32 for the 128 px tiny model,
256x256 for 1024 px inputs); masks are those logits upsampled (bilinear) and thresholded at 0.
This script takes the ground-truth masks of held-out synthetic scenes, builds the "perfect" low-res
logits for each kind of training target, upsamples them exactly as inference does and prints the
mIoU they reach against the ground truth: an upper bound for a model trained on those targets.

* ``thresholded``: the cell is 1 where the mask covers at least half of it (``loss_resolution="low_res"``);
* ``fractions``: the logit of the covered fraction, clipped to [0.02, 0.98]
  (``loss_resolution="low_res_soft"``).

    python scripts/target_ceiling.py                # the tiny model's held-out set (128 px, 32x32 logits)
    python scripts/target_ceiling.py --low-res 64
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from samkit.train import SyntheticScenes
from samkit.train.losses import mask_iou


def ceiling(masks: torch.Tensor, low_res: int, kind: str) -> torch.Tensor:
    """Per-mask IoU of upsampled perfect low-res logits vs the (M, H, W) bool masks."""
    fraction = F.interpolate(masks.float()[:, None], size=(low_res, low_res), mode="area")
    if kind == "thresholded":
        logits = (fraction >= 0.5).float() * 2 - 1
    else:
        logits = torch.logit(fraction.clamp(0.02, 0.98))
    predicted = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0
    return mask_iou(predicted, masks)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--seed", type=int, default=10_000, help="10000: train_tiny.py's held-out scenes")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--low-res", type=int, default=32)
    args = p.parse_args(argv)
    scenes = SyntheticScenes(args.scenes, seed=args.seed, size=(args.size, args.size))
    ious: dict[str, list[torch.Tensor]] = {"thresholded": [], "fractions": []}
    areas = []
    for i in range(len(scenes)):
        _, masks = scenes[i]
        masks = torch.from_numpy(np.asarray(masks, dtype=bool))
        masks = masks[masks.flatten(1).any(1)]
        areas.append(masks.flatten(1).sum(1))
        for kind in ious:
            ious[kind].append(ceiling(masks, args.low_res, kind))
    small = torch.cat(areas) < 300
    result = {}
    for kind, parts in ious.items():
        values = torch.cat(parts)
        result[kind] = float(values.mean())
        print(f"{kind:12s} mIoU {values.mean():.3f} (masks under 300 px: {values[small].mean():.3f}; "
              f"{len(values)} masks, {args.size} px, {args.low_res}x{args.low_res} logits)")
    return result


if __name__ == "__main__":
    main()
