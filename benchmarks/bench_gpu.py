"""GPU speed of the SAM core: samkit against Meta's segment_anything on the same card.

For vit_b and vit_h (seeded random weights, identical in both), batch 1 and 8:

* encoder images/s, median of ``--runs`` timed calls after warm-up (CUDA-synchronised), for
  segment_anything fp32 and bf16, samkit fp32 and bf16 (bf16 through ``samkit.load_model(dtype=)``,
  the path users take), and samkit bf16 + ``torch.compile`` for ``--compile-configs``;
* each row's peak GPU memory and its relative error ``||e - e_ref|| / ||e_ref||`` against the
  reference fp32 embedding of the same input (a parity check on the card itself);
* decoder: ``--prompts`` single-point prompts to full-size multimask masks on the host as numpy,
  ``Segmenter.segment`` vs ``SamPredictor.predict_torch`` + copy to the host.

TF32 is left at PyTorch's defaults (printed), the same for both implementations. Needs nothing
from the network. Prints markdown tables (rows also appear as they are measured).

    python benchmarks/bench_gpu.py                                  # the full run (a few minutes)
    python benchmarks/bench_gpu.py --device cpu --configs tiny --batches 1 2 --runs 2   # smoke run
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_core import build_all  # noqa: E402

import samkit  # noqa: E402


class Timer:
    """Median seconds of a callable on one device, synchronising around each call."""

    def __init__(self, device: torch.device, runs: int, warmup: int = 3) -> None:
        self.device, self.runs, self.warmup = device, runs, warmup

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else float("nan")

    def __call__(self, fn: Callable[[], object]) -> float:
        with torch.inference_mode():
            for _ in range(self.warmup):
                fn()
            self.sync()
            times = []
            for _ in range(self.runs):
                start = time.perf_counter()
                fn()
                self.sync()
                times.append(time.perf_counter() - start)
        return statistics.median(times)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm())


Encoder = tuple[Callable[[torch.Tensor], torch.Tensor], torch.dtype]  # (module, input dtype)


def bench_encoders(name: str, encoders: dict[str, Encoder], config, batches: list[int], timer: Timer,
                   rows: list[str]) -> None:
    """One table row per (batch, encoder); the first encoder is the baseline."""
    gen = torch.Generator().manual_seed(0)
    for batch in batches:
        x = torch.randn(batch, 3, config.image_size, config.image_size, generator=gen).to(timer.device)
        with torch.inference_mode():
            ref_out = None
            base = None
            for impl, (enc, dtype) in encoders.items():
                timer.reset_peak()
                xin = x.to(dtype)
                t0 = time.perf_counter()
                out = enc(xin).float()  # first call: includes compilation where there is one
                timer.sync()
                first = time.perf_counter() - t0
                if ref_out is None:
                    ref_out = out
                err = rel_error(out, ref_out)
                seconds = timer(lambda: enc(xin))
                ips = batch / seconds
                base = base or ips
                extra = f" (first call {first:.0f} s)" if first > 5 else ""
                row = (f"| {name} | {batch} | {impl}{extra} | {ips:.1f} | {ips / base:.2f}x | "
                       f"{timer.peak_gib():.2f} | {err:.1e} |")
                print(row, flush=True)
                rows.append(row)
                del out


def bench_decoder(name: str, ours, ref, config, prompts: int, timer: Timer, rows: list[str],
                  profile: bool = False) -> None:
    from segment_anything import SamPredictor

    size = config.image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    seg = samkit.Segmenter(ours, device=timer.device, cache_size=0)
    emb = seg.encode(image)
    predictor = SamPredictor(ref)
    predictor.features, predictor.is_image_set = emb.features, True
    predictor.original_size = predictor.input_size = (size, size)
    for n in (1, prompts):
        pts = rng.uniform(0, size, (n, 1, 2)).astype(np.float32)
        lab = np.ones((n, 1), np.int64)
        tp, tl = torch.from_numpy(pts).to(timer.device), torch.from_numpy(lab).to(timer.device)

        def reference(tp=tp, tl=tl):
            masks, scores, _ = predictor.predict_torch(tp, tl, multimask_output=True)
            return masks.cpu().numpy(), scores.cpu().numpy()

        def samkit_run(pts=pts, lab=lab):
            return seg.segment(emb, points=pts, labels=lab, return_logits=False)

        with torch.inference_mode():
            same = float((samkit_run().masks == reference()[0]).mean())
        t_ref, t_ours = timer(reference), timer(samkit_run)
        row = (f"| {name} | {n} | {t_ref * 1e3:.1f} | {t_ours * 1e3:.1f} | {t_ref / t_ours:.2f}x | "
               f"{same:.5f} |")
        print(row, flush=True)
        rows.append(row)
        if profile and n == prompts:
            for label, fn in (("segment_anything", reference), ("samkit", samkit_run)):
                print(f"\nprofile, {label}, {n} prompts:")
                print(profile_table(fn, timer.device))


def profile_table(fn: Callable[[], object], device: torch.device, rows: int = 12) -> str:
    """torch.profiler's top operators of one call (after a warm-up), by device time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode():
        fn()
        with profile(activities=activities) as prof:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--configs", nargs="+", default=["vit_b", "vit_h"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--decoder-configs", nargs="*", default=["vit_b"])
    parser.add_argument("--compile-configs", nargs="*", default=["vit_b"],
                        help="configs timed with torch.compile too (compiling vit_h takes minutes)")
    parser.add_argument("--compile-batches", nargs="*", type=int, default=[8])
    parser.add_argument("--profile-decoder", action="store_true", help="print torch.profiler's top operators")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU (or --device cpu for a smoke run)")
    timer = Timer(device, args.runs)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}; "
              f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cudnn {torch.backends.cudnn.allow_tf32}")
    else:
        print(f"device: cpu; torch {torch.__version__}")
    enc_rows: list[str] = []
    dec_rows: list[str] = []
    compile_later = []
    for name in args.configs:
        config, ours, ref, _ = build_all(name, with_hf=False)
        ours, ref = ours.to(device).eval(), ref.to(device).eval()
        ours_bf16 = samkit.load_model(ours.state_dict(), config=config, device=device, dtype=torch.bfloat16)
        ref_bf16 = copy.deepcopy(ref.image_encoder).to(torch.bfloat16)
        encoders = {
            "segment_anything fp32": (ref.image_encoder, torch.float32),
            "segment_anything bf16": (ref_bf16, torch.bfloat16),
            "samkit fp32": (ours.image_encoder, torch.float32),
            "samkit bf16": (ours_bf16.image_encoder, torch.bfloat16),
        }
        bench_encoders(name, encoders, config, args.batches, timer, enc_rows)
        if name in args.decoder_configs:
            bench_decoder(name, ours, ref, config, args.prompts, timer, dec_rows, profile=args.profile_decoder)
        if name in args.compile_configs:
            compile_later.append(name)
        del ours, ref, ours_bf16, ref_bf16, encoders
        if device.type == "cuda":
            torch.cuda.empty_cache()
    # Compilation last, so a slow compile cannot cost the eager rows.
    for name in compile_later:
        config, ours, ref, _ = build_all(name, with_hf=False)
        ref = ref.to(device).eval()
        ours_bf16 = samkit.load_model(ours.state_dict(), config=config, device=device, dtype=torch.bfloat16)
        compiled = torch.compile(ours_bf16.image_encoder, dynamic=False)
        encoders = {"segment_anything fp32": (ref.image_encoder, torch.float32),
                    "samkit bf16 + compile": (compiled, torch.bfloat16)}
        try:
            bench_encoders(name, encoders, config, args.compile_batches, timer, enc_rows)
        except Exception as exc:  # a compiler failure must not lose the tables above
            enc_rows.append(f"| {name} | | samkit bf16 + compile failed: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120]} | | | | |")
        del ours, ref, ours_bf16, compiled

    print()
    print(f"| encoder | batch | implementation | images/s (median of {args.runs}) | vs segment_anything fp32 | "
          "peak GiB | rel. error vs reference fp32 |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(enc_rows))
    if dec_rows:
        print()
        print("| decoder | prompts | segment_anything ms | samkit ms | speed-up | masks equal |")
        print("|---|---|---|---|---|---|")
        print("\n".join(dec_rows))


if __name__ == "__main__":
    main()
