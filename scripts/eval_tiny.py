"""The evaluation suite on the shipped tiny model over a held-out synthetic COCO set; prints the tables.

    python scripts/eval_tiny.py | tee scripts/runs/eval_tiny.txt

The scenes are :class:`samkit.train.SyntheticScenes` with seed 10000 (the set
``scripts/train_tiny.py`` holds out) at the model's input size, written as a COCO folder
(PNG images, RLE masks) in a temporary directory and read back by :class:`samkit.eval.CocoDataset`,
so the run goes through the same loader as real data. Protocols: points (1 -> 9 clicks, with
and without the previous logits as mask input), instances with ground-truth boxes, proposals
and edges (segment-everything presets, on fewer scenes: they are the slow ones on a CPU).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

import samkit
from samkit.eval import (CocoDataset, evaluate_edges, evaluate_instances, evaluate_points, evaluate_proposals,
                         format_table, ground_truth_detections, write_coco_folder)
from samkit.pipelines import SegmentEverything
from samkit.train import SyntheticScenes

CHECKPOINT = Path(__file__).resolve().parents[1] / "samkit" / "assets" / "tiny_synthetic.pth"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(CHECKPOINT), help="anything samkit.load_model reads")
    parser.add_argument("--scenes", type=int, default=24, help="held-out scenes for points and instances")
    parser.add_argument("--proposal-scenes", type=int, default=8, help="scenes for proposals")
    parser.add_argument("--edge-scenes", type=int, default=4, help="scenes for edges")
    parser.add_argument("--points-per-side", type=int, default=16, help="segment-everything grid for proposals")
    parser.add_argument("--seed", type=int, default=10_000, help="scene seed (train_tiny.py holds out 10000)")
    args = parser.parse_args(argv)
    segmenter = samkit.Segmenter(samkit.load_model(args.checkpoint))
    size = segmenter.image_size
    print(f"model {os.path.basename(args.checkpoint)}; SyntheticScenes(seed={args.seed}, size={size}x{size}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        count = max(args.scenes, args.proposal_scenes, args.edge_scenes)
        path = write_coco_folder(SyntheticScenes(count, seed=args.seed, size=(size, size)), folder)
        runs = [
            ("points", f"points: 1 -> 9 center clicks, {args.scenes} scenes",
             lambda: evaluate_points(segmenter, CocoDataset(path, max_images=args.scenes), clicks=9)),
            ("points_no_mask_input", f"points without the mask input, three masks at every click, {args.scenes} "
                                     "scenes (the tiny model was trained on one-click prompts only)",
             lambda: evaluate_points(segmenter, CocoDataset(path, max_images=args.scenes), clicks=9,
                                     multimask="always", mask_input=False)),
            ("instances", f"instances: ground-truth boxes -> single mask, {args.scenes} scenes",
             lambda: evaluate_instances(segmenter, data := CocoDataset(path, max_images=args.scenes),
                                        detections=ground_truth_detections(data), score="mask")),
            ("proposals", f"proposals: preset 'proposals' with points_per_side={args.points_per_side}, "
                          f"{args.proposal_scenes} scenes",
             lambda: evaluate_proposals(
                 SegmentEverything.preset("proposals", segmenter, points_per_side=args.points_per_side),
                 CocoDataset(path, max_images=args.proposal_scenes))),
            ("edges", f"edges: preset 'edges' against mask boundaries, {args.edge_scenes} scenes",
             lambda: evaluate_edges(SegmentEverything.preset("edges", segmenter).edges,
                                    CocoDataset(path, max_images=args.edge_scenes))),
        ]
        for name, title, run in runs:
            started = time.perf_counter()
            results[name] = run()
            print(f"\n{title} ({time.perf_counter() - started:.0f} s)")
            print(format_table(results[name]))
    return results


if __name__ == "__main__":
    main()
