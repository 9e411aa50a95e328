"""Fine-tuning recipe of the SAM paper (section 3 and appendix A), the CLIP-embedding prompt path,
and synthetic training scenes.

* :mod:`~samkit.train.losses`: focal + dice (20:1), IoU-head MSE, min over multimask outputs;
* :mod:`~samkit.train.prompting`: simulated interactive prompting (first point or noisy box,
  then points from the error region, previous logits as mask prompt);
* :mod:`~samkit.train.interactive`: one batch through those rounds;
* :mod:`~samkit.train.loop`: settings, optimiser, steps, epochs (:func:`train`);
* :mod:`~samkit.train.checkpoint`: resumable checkpoints (model in Meta's format + state);
* :mod:`~samkit.train.data`: COCO and PNG-folder datasets, model-frame batches;
* :mod:`~samkit.train.synthetic`: generated scenes with visible instance masks;
* :mod:`~samkit.train.evaluate`: single-point and box mIoU through :class:`samkit.Segmenter`;
* :mod:`~samkit.train.clip_path`: CLIP image/text embeddings as prompts (``pip install samkit[clip]``).

Command line: ``python -m samkit.train --help``.
"""
from __future__ import annotations

from .checkpoint import load_training_state, save_training_state
from .data import CocoInstances, MaskFolder, TrainBatch, prepare_batch
from .evaluate import evaluate
from .interactive import interactive_loss
from .loop import TrainSettings, build_optimizer, compute_loss, train, train_step
from .losses import SamLoss, dice_loss, focal_loss, mask_iou, sam_loss
from .prompting import PromptSimulation, noisy_boxes, point_schedule, sample_error_points, sample_points_in_masks
from .synthetic import SyntheticScenes, synthetic_scene

__all__ = [
    "CocoInstances", "MaskFolder", "PromptSimulation", "SamLoss", "SyntheticScenes", "TrainBatch", "TrainSettings",
    "build_optimizer", "compute_loss", "dice_loss", "evaluate", "focal_loss", "interactive_loss",
    "load_training_state", "mask_iou", "noisy_boxes", "point_schedule", "prepare_batch", "sam_loss",
    "sample_error_points", "sample_points_in_masks", "save_training_state", "synthetic_scene", "train", "train_step",
]
