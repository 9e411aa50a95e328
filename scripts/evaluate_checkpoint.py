"""Held-out synthetic-scene mIoU of a checkpoint, overall and by mask area, printed as JSON.

    python scripts/evaluate_checkpoint.py samkit/assets/tiny_synthetic.pth     # train_tiny.py's held-out set

The scenes are :class:`samkit.train.SyntheticScenes` at the model's input size; seed 10000 is the
set ``scripts/train_tiny.py`` holds out.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from samkit.train import SyntheticScenes, evaluate
from samkit.weights import load_model


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="anything samkit.load_model reads")
    parser.add_argument("--scenes", type=int, default=200, help="synthetic scenes to evaluate")
    parser.add_argument("--seed", type=int, default=10_000, help="scene seed (train_tiny.py holds out 10000)")
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    size = model.image_encoder.img_size
    metrics = evaluate(model, SyntheticScenes(args.scenes, seed=args.seed, size=(size, size)))
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
