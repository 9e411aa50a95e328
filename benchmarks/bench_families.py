"""Speed and memory of samkit's model families against their official implementations.

Per family (SAM ``vit_b`` vs ``segment_anything``, MobileSAM vs ``mobile_sam``, HQ-SAM ``vit_b`` vs
``segment_anything_hq``): the official model is built from its package's registry, its random
initial weights are loaded into samkit's model, and both run the same inputs interleaved
(ours, official, ours, ...); the table gives medians of ``--runs`` runs after a warm-up.

* encoder: one (1, 3, 1024, 1024) image (HQ: with the early features its decoder fuses);
* decoder: ``--prompts`` point prompts of 2 points each on a 300 x 451 image, multimask,
  prompt encoder + mask decoder + upsampling to the image (samkit ``Segmenter.segment``,
  official ``SamPredictor.predict_torch``);
* memory: parameters, and the peak RSS growth of one samkit encoder call (in a child process).

    python benchmarks/bench_families.py             # 2 runs (~5 min on 2 idle cores)
    python benchmarks/bench_families.py --quick     # 1 run, no memory column

Prints a markdown table with the machine line; the README's "Model families" table comes from it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import _rss_kib, interleaved, machine  # noqa: E402

import samkit  # noqa: E402
from samkit.modeling import build_sam, get_config  # noqa: E402

# family label -> (samkit variant, official package, its registry key)
FAMILIES = {
    "SAM vit_b": ("vit_b", "segment_anything", "vit_b"),
    "MobileSAM": ("mobile_sam", "mobile_sam", "vit_t"),
    "HQ-SAM vit_b": ("hq_vit_b", "segment_anything_hq", "vit_b"),
}


def official(package: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation and registry-overwrite warnings
        return importlib.import_module(package)


def build_pair(variant: str, package: str, key: str):
    """(official model, samkit model with the same weights)."""
    torch.manual_seed(0)
    ref = official(package).sam_model_registry[key]().eval()
    ours = build_sam(get_config(variant))
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()  # TinyViT caches its attention biases when switched to eval
    return ref, ours


def child_peak_memory(variant: str) -> None:
    """Child process: parameters (M) and peak RSS growth (MiB) of one samkit encoder call, as JSON."""
    model = build_sam(get_config(variant))
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        model.encode_with_early_features(x)  # warm-up: one-off allocations are not the peak we want
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _rss_kib("VmRSS:")
        model.encode_with_early_features(x)
        peak = _rss_kib("VmHWM:")
    print(json.dumps({"peak_mib": (peak - before) / 1024}))


def peak_memory(variant: str) -> float | None:
    try:
        out = subprocess.run([sys.executable, __file__, "--child-memory", variant], capture_output=True, text=True,
                             check=True, timeout=900)
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        print(f"peak memory of {variant} not measured: {exc}", file=sys.stderr)
        return None


def measure(label: str, runs: int, prompts: int, image: np.ndarray) -> dict:
    variant, package, key = FAMILIES[label]
    ref, ours = build_pair(variant, package, key)
    x = torch.randn(1, 3, 1024, 1024)
    encoder = interleaved({"ours": lambda: ours.encode_with_early_features(x), "ref": lambda: ref.image_encoder(x)},
                          runs)
    segmenter = samkit.Segmenter(ours)
    embedding = segmenter.encode(image)
    predictor = official(package).SamPredictor(ref)
    predictor.set_image(image)
    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    points = np.stack([rng.uniform(0, w, (prompts, 2)), rng.uniform(0, h, (prompts, 2))], -1)
    labels = np.ones((prompts, 2), dtype=np.int64)
    coords = torch.as_tensor(predictor.transform.apply_coords(points, (h, w)), dtype=torch.float)
    label_t = torch.as_tensor(labels, dtype=torch.int)
    decoder = interleaved({
        "ours": lambda: segmenter.segment(embedding, points=points, labels=labels, multimask=True),
        "ref": lambda: predictor.predict_torch(coords, label_t, multimask_output=True),
    }, runs)
    return dict(encoder=encoder, decoder=decoder, params=sum(p.numel() for p in ours.parameters()) / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1 run, no memory column")
    parser.add_argument("--child-memory", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_peak_memory(args.child_memory)
        return
    from skimage import data

    image = data.chelsea()
    runs = 1 if args.quick else args.runs
    print(f"Machine: {machine()}")
    print(f"Medians of {runs} interleaved runs; encoder: 1 x 1024 x 1024 image; decoder: {args.prompts} "
          f"two-point prompts, multimask, upsampled to {image.shape[0]} x {image.shape[1]}.\n")
    print("| family | params (M) | encoder samkit (s) | encoder official (s) | official / samkit | "
          "decoder samkit (ms) | decoder official (ms) | official / samkit | encoder peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for label in FAMILIES:  # a row as soon as it is measured
        found = measure(label, runs, args.prompts, image)
        memory = None if args.quick else peak_memory(FAMILIES[label][0])
        enc, dec = found["encoder"], found["decoder"]
        print(f"| {label} | {found['params']:.1f} | {enc['ours']:.2f} | {enc['ref']:.2f} | "
              f"{enc['ref'] / enc['ours']:.2f} | {1e3 * dec['ours']:.0f} | {1e3 * dec['ref']:.0f} | "
              f"{dec['ref'] / dec['ours']:.2f} | {'-' if memory is None else f'{memory:.0f}'} |", flush=True)


if __name__ == "__main__":
    main()
