"""Speed and memory of samkit's SAM core against Meta's segment_anything and transformers' SamModel.

One process, the same seeded random weights in all three implementations, the same inputs,
runs interleaved (ours, reference, HF, ours, ...), median of ``--runs`` runs. Peak memory of
encoding is measured in child processes (peak RSS growth during one encoder call, after the
model is loaded; Linux ``/proc/self/clear_refs`` resets the high-water mark).

    python benchmarks/bench_core.py                 # vit_b, 1024x1024, 5 runs (~15 min on 2 cores)
    python benchmarks/bench_core.py --quick         # tiny config, smoke run (seconds)

Prints a markdown table; copy it into README.md with the machine line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np
import torch

import samkit
from samkit.modeling import build_sam, get_config


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        have = {"avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"} & set(info.split())
        flags = ", ".join(sorted(have))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"ISA: {torch.backends.cpu.get_cpu_capability()} ({flags or 'no extra flags'})")


def matmul_peak(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best-of GFLOP/s of a (4096 x 768) @ (768 x 3072) product, the ViT-B MLP shape."""
    a = torch.randn(4096, 768, dtype=dtype)
    b = torch.randn(768, 3072, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 4096 * 768 * 3072 / best / 1e9


def count_flops(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def build_all(config_name: str, seed: int = 0, with_hf: bool = True):
    """samkit, segment_anything and (when available and ``with_hf``) transformers models with identical weights."""
    config = get_config(config_name)
    torch.manual_seed(seed)
    ours = build_sam(config)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith(("rel_pos_h", "rel_pos_w", "pos_embed")):
                p.normal_(0, 0.02)
    sd = ours.state_dict()
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from conftest import build_reference

    ref = build_reference(config)
    ref.load_state_dict(sd)
    hf = None
    if not with_hf:
        return config, ours, ref, hf
    try:
        from transformers import SamConfig as HFConfig
        from transformers import SamModel

        from samkit.hf_mapping import hf_config_from_sam, meta_to_hf_state_dict

        hf = SamModel(HFConfig(**hf_config_from_sam(config))).eval()
        hf.load_state_dict(meta_to_hf_state_dict(sd), strict=False)
    except Exception as exc:  # transformers missing or incompatible: the table says so
        print(f"transformers SamModel unavailable: {exc}", file=sys.stderr)
    return config, ours, ref, hf


def interleaved(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median seconds per function, calling them in turn ``runs`` times (after one warm-up each)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()
        for _ in range(runs):
            for name, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_peak_memory(impl: str, config_name: str, dtype: str) -> None:
    """Child process: peak RSS growth (MiB) of one encoder call, printed as JSON."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    config, ours, ref, hf = build_all(config_name)
    model = {"samkit": ours, "segment_anything": ref}[impl]
    dt = getattr(torch, dtype)
    model = model.to(dt)
    x = torch.randn(1, 3, config.image_size, config.image_size, dtype=dt)
    with torch.inference_mode():
        model.image_encoder(x)  # warm-up: one-off allocations are not the peak we want
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _rss_kib("VmRSS:")
        model.image_encoder(x)
        peak = _rss_kib("VmHWM:")
    print(json.dumps({"peak_mib": (peak - before) / 1024}))


def peak_memory(impl: str, config_name: str, dtype: str = "float32") -> float | None:
    try:
        out = subprocess.run([sys.executable, __file__, "--child-memory", impl, "--config", config_name,
                              "--dtype", dtype], capture_output=True, text=True, check=True, timeout=1800)
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        print(f"peak memory of {impl} not measured: {exc}", file=sys.stderr)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="vit_b")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="tiny config, 2 runs: checks the script works")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--child-memory", choices=["samkit", "segment_anything"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.config, args.runs = "tiny", 2
    if args.child_memory:
        child_peak_memory(args.child_memory, args.config, args.dtype)
        return

    from segment_anything import SamPredictor

    config, ours, ref, hf = build_all(args.config)
    size = config.image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    seg = samkit.Segmenter(ours, cache_size=0)
    x = seg.preprocess(image)[0]
    ours_bf16 = build_sam(config).to(torch.bfloat16)
    ours_bf16.load_state_dict(ours.state_dict())
    x_bf16 = x.to(torch.bfloat16)

    print(f"machine: {machine()}")
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    enc_gflop = count_flops(lambda: ours.image_encoder(x))

    encoders = {"samkit fp32": lambda: ours.image_encoder(x), "segment_anything fp32": lambda: ref.image_encoder(x)}
    if hf is not None:
        encoders["transformers fp32"] = lambda: hf.get_image_embeddings(pixel_values=x)
    if not args.no_bf16:
        encoders["samkit bf16"] = lambda: ours_bf16.image_encoder(x_bf16)
    enc = interleaved(encoders, args.runs)

    # Decoder: 1 and N single-point prompts to full-size masks (multimask, as predict_torch's default).
    emb = seg.encode(image)
    predictor = SamPredictor(ref)
    predictor.features, predictor.is_image_set = emb.features, True
    predictor.original_size = predictor.input_size = (size, size)
    decoders: dict[str, Callable[[], object]] = {}
    hf_post = None
    if hf is not None:
        from transformers import SamImageProcessor

        hf_post = SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size})
    for n in (1, args.prompts):
        pts = rng.uniform(0, size, (n, 1, 2)).astype(np.float32)
        lab = np.ones((n, 1), np.int64)
        tp, tl = torch.from_numpy(pts), torch.from_numpy(lab)
        decoders[f"samkit {n}"] = lambda pts=pts, lab=lab: seg.segment(emb, points=pts, labels=lab)
        decoders[f"segment_anything {n}"] = lambda tp=tp, tl=tl: predictor.predict_torch(tp, tl, multimask_output=True)
        if hf is not None:
            def run_hf(tp=tp, tl=tl):
                out = hf(image_embeddings=emb.features, input_points=tp[None], input_labels=tl[None],
                         multimask_output=True)
                return hf_post.post_process_masks(out.pred_masks, [(size, size)], [(size, size)])
            decoders[f"transformers {n}"] = run_hf
    dec = interleaved(decoders, args.runs)

    # Full-size thresholding alone, on smooth logits as trained models give (random weights give
    # noise, for which samkit falls back to plain interpolation): samkit's sign-skip upsampling vs
    # the reference's F.interpolate + threshold, same (N, 256, 256) low-res logits.
    low = size // 4
    n_masks = 3 * args.prompts
    gen = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.interpolate(torch.randn(n_masks, 1, low // 16, low // 16, generator=gen),
                                             size=(low, low), mode="bilinear")[:, 0] * 4
    from samkit.transforms import upscale_masks_binary

    ups = interleaved({
        "samkit": lambda: upscale_masks_binary(smooth[None], input_size=(size, size), original_size=(size, size),
                                               image_size=size),
        "reference": lambda: torch.nn.functional.interpolate(smooth[:, None], size=(size, size), mode="bilinear",
                                                             align_corners=False) > 0,
    }, args.runs)

    mem = {}
    if not args.no_memory:
        mem = {impl: peak_memory(impl, args.config) for impl in ("samkit", "segment_anything")}

    ref_enc = enc["segment_anything fp32"]
    print()
    print(f"| {args.config}, {size}x{size}, median of {args.runs} | seconds | vs segment_anything fp32 | "
          f"GFLOP/s (peak fp32 {peak32:.0f}, bf16 {peak16:.0f}) |")
    print("|---|---|---|---|")
    for name, t in enc.items():
        print(f"| encoder {name} | {t:.3f} | {ref_enc / t:.2f}x | {enc_gflop / t:.1f} |")
    for n in (1, args.prompts):
        base = dec[f"segment_anything {n}"]
        for impl in ("samkit", "segment_anything", "transformers"):
            if f"{impl} {n}" in dec:
                t = dec[f"{impl} {n}"]
                print(f"| decoder {impl}, {n} point prompt{'s' if n > 1 else ''} -> full-size masks | {t:.3f} | "
                      f"{base / t:.2f}x | |")
    print(f"| thresholding {n_masks} smooth {low}x{low} logit maps to {size}x{size}, samkit | {ups['samkit']:.3f} | "
          f"{ups['reference'] / ups['samkit']:.2f}x | |")
    print(f"| same, F.interpolate + threshold (as segment_anything) | {ups['reference']:.3f} | 1.00x | |")
    for impl, mib in mem.items():
        if mib is not None:
            print(f"| encoder peak memory {impl} fp32 | {mib:.0f} MiB | | |")
    print(f"\nencoder FLOPs (torch FlopCounterMode): {enc_gflop:.1f} GFLOP")


if __name__ == "__main__":
    main()
