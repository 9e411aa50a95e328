"""Command line: ``python -m samkit.train`` (run with ``--help`` for every option).

Examples::

    # decoder-only fine-tuning of a checkpoint on COCO-format annotations
    python -m samkit.train --checkpoint sam_vit_b_01ec64.pth --data coco \\
        --annotations train.json --images train/ --val-annotations val.json --val-images val/ --out runs/ft

    # a small model from scratch on synthetic scenes, everything trained
    python -m samkit.train --model tiny --data synthetic --train-encoder --steps 500 --out runs/tiny

    # with the CLIP-embedding prompt path (pip install samkit[clip])
    python -m samkit.train --checkpoint sam.pth --data folder --folder data/ --clip-model ViT-B-32 \\
        --clip-pretrained openai --out runs/clip

Prints the validation mIoU (single point and box) after every epoch; the checkpoint folder
holds ``model.pth`` (load it with ``samkit.load_model``) and ``training_state.pt`` (``--resume``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

import torch

from samkit.modeling import build_sam, get_config

from .data import CocoInstances, MaskFolder
from .loop import TrainSettings, train
from .losses import SamLoss
from .prompting import PromptSimulation
from .synthetic import SyntheticScenes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m samkit.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", help="weights to fine-tune (anything samkit.load_model reads)")
    model.add_argument("--model", default="tiny", help="variant to train from scratch when no --checkpoint")
    data = p.add_argument_group("data")
    data.add_argument("--data", choices=["synthetic", "coco", "folder"], default="synthetic")
    data.add_argument("--annotations", help="COCO JSON (--data coco)")
    data.add_argument("--images", help="image folder of the COCO JSON (--data coco)")
    data.add_argument("--folder", help="root with images/ and masks/ (--data folder)")
    data.add_argument("--val-annotations", help="validation COCO JSON")
    data.add_argument("--val-images", help="validation image folder")
    data.add_argument("--val-folder", help="validation root with images/ and masks/")
    data.add_argument("--synthetic-scenes", type=int, default=2000, help="training scenes (--data synthetic)")
    data.add_argument("--val-limit", type=int, default=100, help="validation images per epoch")
    run = p.add_argument_group("training")
    run.add_argument("--out", help="checkpoint folder (model.pth + training_state.pt)")
    run.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    run.add_argument("--steps", type=int, default=1000)
    run.add_argument("--images-per-step", type=int, default=4)
    run.add_argument("--masks-per-image", type=int, default=16)
    run.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimiser step")
    run.add_argument("--lr", type=float, default=8e-4)
    run.add_argument("--weight-decay", type=float, default=0.1)
    run.add_argument("--warmup", type=int, default=250)
    run.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine")
    run.add_argument("--train-encoder", action="store_true", help="train the image encoder too")
    run.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    run.add_argument("--loss-resolution", choices=["low_res", "low_res_soft", "input"], default="low_res")
    run.add_argument("--focal-alpha", type=float, default=0.25,
                     help="focal loss alpha; -1 (unweighted) trains a model from scratch much sooner")
    run.add_argument("--dice-weight", type=float, default=1.0, help="dice weight (focal weight is 20)")
    run.add_argument("--iterations", type=int, default=11, help="prompting rounds per mask")
    run.add_argument("--mask-only", type=int, default=2, help="rounds that add no point")
    run.add_argument("--box-probability", type=float, default=0.5)
    run.add_argument("--checkpoint-every", type=int, default=0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default=None, help="e.g. cuda; default cuda when available")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    clip = p.add_argument_group("CLIP-embedding prompt path (pip install samkit[clip])")
    clip.add_argument("--clip-model", help="open_clip model name, e.g. ViT-B-32; enables the path")
    clip.add_argument("--clip-pretrained", default="openai", help="open_clip pretrained tag ('none': random)")
    clip.add_argument("--clip-min-area", type=int, default=100 * 100, help="masks above this area get an embedding")
    clip.add_argument("--embedding-probability", type=float, default=0.5)
    return p


def load_datasets(args: argparse.Namespace, image_size: int) -> tuple[Sequence, Sequence | None]:
    if args.data == "synthetic":
        size = (image_size, image_size)
        return (SyntheticScenes(args.synthetic_scenes, seed=args.seed, size=size),
                SyntheticScenes(max(args.val_limit, 1), seed=10_000 + args.seed, size=size))
    if args.data == "coco":
        if not args.annotations or not args.images:
            raise SystemExit("--data coco needs --annotations and --images")
        val = CocoInstances(args.val_annotations, args.val_images) if args.val_annotations else None
        return CocoInstances(args.annotations, args.images), val
    if not args.folder:
        raise SystemExit("--data folder needs --folder")
    return MaskFolder(args.folder), (MaskFolder(args.val_folder) if args.val_folder else None)


def load_model_for_training(args: argparse.Namespace, embedding_dim: int) -> torch.nn.Module:
    """The model to train; adds a fresh embedding prompt path when CLIP is on and the weights have none."""
    if not args.checkpoint:
        config = get_config(args.model)
        return build_sam(config.replace(embedding_prompt_dim=embedding_dim) if embedding_dim else config)
    from samkit.weights import infer_config, load_model, read_weights

    if not embedding_dim:
        return load_model(args.checkpoint)
    state_dict, stored, origin = read_weights(args.checkpoint)
    config = (stored or infer_config(state_dict)).replace(embedding_prompt_dim=embedding_dim)
    model = build_sam(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    wrong = [k for k in missing if not k.startswith("embedding_prompt.")] + list(unexpected)
    if wrong:
        raise SystemExit(f"{origin} does not match {config}: unexpected or missing keys {wrong[:10]}")
    return model


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    embed_crops, embedding_dim = None, 0
    if args.clip_model:
        from .clip_path import ClipSettings, CropEmbedder, clip_text_embeddings

        pretrained = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained
        clip = ClipSettings(args.clip_model, pretrained)
        embedding_dim = clip_text_embeddings(["probe"], clip).shape[1]
        embed_crops = CropEmbedder(clip, min_area=args.clip_min_area)
    model = load_model_for_training(args, embedding_dim)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = TrainSettings(
        steps=args.steps, images_per_step=args.images_per_step, masks_per_image=args.masks_per_image,
        accumulation_steps=args.accumulation, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup,
        schedule=args.schedule, train_image_encoder=args.train_encoder,
        autocast_dtype="bfloat16" if args.bf16 else None, loss_resolution=args.loss_resolution,
        prompting=PromptSimulation(num_iterations=args.iterations, num_mask_only=args.mask_only,
                                   box_probability=args.box_probability,
                                   embedding_probability=args.embedding_probability),
        loss=SamLoss(focal_alpha=args.focal_alpha, dice_weight=args.dice_weight), seed=args.seed,
        checkpoint_every=args.checkpoint_every, device=device)
    train_set, val_set = load_datasets(args, model.image_encoder.img_size)
    bar = None
    if not args.no_progress:
        try:
            from tqdm import tqdm
        except ImportError:
            logging.getLogger(__name__).warning("no progress bar: it needs tqdm (pip install tqdm)")
        else:
            bar = tqdm(total=args.steps, desc="train", unit="step", file=sys.stdout)

    def on_step(step: int, stats: dict) -> None:
        if bar is not None:
            bar.n = step
            bar.set_postfix(loss=f"{stats['loss']:.3f}", iou=f"{stats['first_iou']:.3f}", refresh=True)

    def on_epoch(epoch: int, metrics: dict) -> None:
        line = (f"epoch {epoch} (step {metrics['step']}): val mIoU point {metrics['point_miou']:.4f} "
                f"(oracle {metrics['point_oracle_miou']:.4f}), box {metrics['box_miou']:.4f} "
                f"over {metrics['num_masks']} masks")
        (bar.write if bar is not None else print)(line)

    history = train(model, train_set, settings, output_dir=args.out, resume=args.resume, val_dataset=val_set,
                    val_images=args.val_limit, embed_crops=embed_crops, on_step=on_step, on_epoch=on_epoch)
    if bar is not None:
        bar.close()
    if history:
        print(json.dumps(history[-1]))
    return history


if __name__ == "__main__":
    main()
