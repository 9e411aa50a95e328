"""GPU throughput: images/s of the image encoder for vit_b and vit_h, batch 1 and 8,
samkit fp32 / bf16 / bf16 + torch.compile against Meta's segment_anything on the same card.

Needs a CUDA GPU and nothing from the network (random weights). Prints a markdown table.

    python benchmarks/bench_gpu.py --configs vit_b vit_h --batches 1 8 --runs 10
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def throughput(fn, batch: int, runs: int) -> float:
    """Images per second (median of ``runs`` timed calls after warm-up), CUDA-synchronised."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return batch / times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=["vit_b", "vit_h"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU")
    from conftest import build_reference

    from samkit.modeling import build_sam, get_config

    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    print("| model | batch | implementation | images/s | vs segment_anything fp32 |")
    print("|---|---|---|---|---|")
    for name in args.configs:
        config = get_config(name)
        ours = build_sam(config).cuda().eval()
        ref = build_reference(config).cuda().eval()
        ref.load_state_dict(ours.state_dict())
        ours_bf16 = build_sam(config).cuda().eval()
        ours_bf16.load_state_dict(ours.state_dict())
        ours_bf16.image_encoder.to(torch.bfloat16)
        compiled = None if args.no_compile else torch.compile(ours_bf16.image_encoder, mode="max-autotune")
        for batch in args.batches:
            x = torch.randn(batch, 3, config.image_size, config.image_size, device="cuda")
            xb = x.to(torch.bfloat16)
            rows = {}
            with torch.inference_mode():
                rows["segment_anything fp32"] = throughput(lambda: ref.image_encoder(x), batch, args.runs)
                rows["samkit fp32"] = throughput(lambda: ours.image_encoder(x), batch, args.runs)
                rows["samkit bf16"] = throughput(lambda: ours_bf16.image_encoder(xb), batch, args.runs)
                if compiled is not None:
                    rows["samkit bf16 + compile"] = throughput(lambda: compiled(xb), batch, args.runs)
            base = rows["segment_anything fp32"]
            for impl, ips in rows.items():
                print(f"| {name} | {batch} | {impl} | {ips:.1f} | {ips / base:.2f}x |", flush=True)
        del ours, ref, ours_bf16, compiled
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
