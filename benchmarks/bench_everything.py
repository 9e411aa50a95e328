"""Segment everything: samkit vs segment_anything's SamAutomaticMaskGenerator, one process, side by side.

Both run on the same seeded random vit_b weights (one state dict loaded into both models), on
the same 480x640 image (scikit-image's astronaut, resized), with the same settings. Runs are
interleaved (reference, samkit, reference, samkit, ...) and the median of ``--runs`` is reported.

Columns:

* end-to-end: wall seconds of ``generate(image)`` (binary masks), image encoding included;
* post-encode: end-to-end minus the time spent in the image encoder call (``set_image`` for the
  reference, ``Segmenter.encode`` for samkit, both including their resize/normalise);
* peak RSS delta: the process's resident memory sampled every 2 ms during the run (from
  ``/proc/self/statm``), maximum minus the value at the start of the run. Before each run
  garbage is collected and glibc's ``malloc_trim`` returns freed heap to the OS, so earlier runs
  do not hide the allocation. It counts everything the run touches (model activations, masks,
  Python objects), sampled: spikes shorter than 2 ms can be missed;
* masks: number of masks returned.

Two settings: the reference's defaults (random weights predict low IoU, so most masks are
filtered before post-processing), and ``pred_iou_thresh=0, stability_score_thresh=0`` so that
every mask is upscaled, scored, boxed and de-duplicated.

    python benchmarks/bench_everything.py --runs 3
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import sys
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import samkit

    return (f"{cpu}; {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; "
            f"torch {torch.__version__}; samkit {samkit.__version__}; Python {platform.python_version()}")


class PeakRSS:
    """Context manager: peak resident memory above the starting value, sampled every 2 ms."""

    page = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop = threading.Event()

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.start) / 2 ** 20


def timed(fn: Callable) -> tuple[Callable, list[float]]:
    """Wrap ``fn`` so that the seconds of each call are appended to the returned list."""
    spent: list[float] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    return wrapper, spent


def build(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Reference and samkit vit_b models holding the same seeded random state dict."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    threads = torch.get_num_threads()
    from conftest import build_reference, random_state_dict  # test helpers: the parity tests' weights

    torch.set_num_threads(threads)  # conftest caps threads for the test suite; undo that here
    from samkit.modeling import build_sam, get_config

    config = get_config("vit_b")
    state = random_state_dict(config, seed)
    reference = build_reference(config)
    reference.load_state_dict(state, strict=True)
    ours = build_sam(config)
    ours.load_state_dict(state, strict=True)
    return reference.eval(), ours.eval()


def test_image() -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((640, 480), Image.BILINEAR))


def run_once(make: Callable[[], tuple[Any, list[float]]], image: np.ndarray) -> dict[str, float]:
    generator, encode_seconds = make()
    with PeakRSS() as memory:
        start = time.perf_counter()
        records = generator.generate(image)
        total = time.perf_counter() - start
    return {"total": total, "post": total - sum(encode_seconds), "rss": memory.delta_mib, "masks": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per implementation and setting (median)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default="defaults,unfiltered", help="comma list of: defaults, unfiltered")
    parser.add_argument("--fast", action="store_true", help="also time samkit with fast=True (approximate)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    from segment_anything import SamAutomaticMaskGenerator

    from samkit import Segmenter
    from samkit.pipelines.everything import SegmentEverything

    reference_model, our_model = build(args.seed)
    torch.set_num_threads(threads)
    image = test_image()
    segmenter = Segmenter(our_model)
    settings = {"defaults": {}, "unfiltered": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}}
    chosen = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(settings))
    if unknown:
        parser.error(f"--settings must name some of {sorted(settings)}, got {unknown}")

    print(f"machine: {machine()}")
    print(f"image {image.shape[0]}x{image.shape[1]}, vit_b random weights (seed {args.seed}), "
          f"points_per_side={args.points_per_side}, median of {args.runs} interleaved runs\n")
    rows = []
    for setting in chosen:
        kw = dict(settings[setting], points_per_side=args.points_per_side)

        def make_reference() -> tuple[Any, list[float]]:
            generator = SamAutomaticMaskGenerator(reference_model, **kw)
            generator.predictor.set_image, spent = timed(generator.predictor.set_image)
            return generator, spent

        def make_ours(fast: bool = False) -> tuple[Any, list[float]]:
            segmenter.clear_cache()  # no embedding reuse between runs
            encode, spent = timed(Segmenter.encode.__get__(segmenter))
            segmenter.encode = encode
            return SegmentEverything(segmenter, fast=fast, **kw), spent

        makers = {"segment_anything": make_reference, "samkit": make_ours}
        if args.fast:
            makers["samkit fast=True"] = lambda: make_ours(fast=True)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in makers}
        for run in range(args.runs):
            for name, make in makers.items():
                results[name].append(run_once(make, image))
                print(f"  {setting} run {run + 1} {name}: {results[name][-1]}", flush=True)
        del segmenter.encode
        medians = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
        base = medians["segment_anything"]
        for name, m in medians.items():
            rows.append(f"| {setting} | {name} | {m['total']:.2f} | {m['post']:.2f} | {m['rss']:.0f} | "
                        f"{m['masks']:.0f} | {base['total'] / m['total']:.2f}x | {base['post'] / m['post']:.2f}x |")
    print("\n| settings | implementation | end-to-end s | post-encode s | peak RSS delta MiB | masks | "
          "speed-up end-to-end | speed-up post-encode |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
