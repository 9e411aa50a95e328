"""The data engine: images/s of the local engine vs Ray Data with 1 and 2 workers, on this machine.

A segment-everything job (no score filters, so every mask is kept) over ``--images`` 480x640 images (scikit-image's astronaut, shifted and
flipped so no two are equal) on seeded random weights of ``--model`` (``tiny``: samkit's test
configuration, 128-pixel input; ``vit_b``: the full ViT-B, 1024-pixel input). Rounds are
interleaved (local, Ray x1, Ray x2, local, ...) and medians over ``--runs`` are reported.
Ray is started once (its start-up time is its own row) and every job then starts its actors,
which load the model: that cost is in each Ray job's wall time and in "first result".

Columns:

* wall: seconds of ``run_job`` (listing, actor start and model load included);
* images/s: images / wall;
* first result: seconds from the job's start to its first finished image (for Ray: actor start,
  model load and the first batch);
* steady images/s: images after the first / seconds between the first and the last result as
  the driver receives them (Ray returns whole batches, so this rate is bursty);
* per image: median of the manifest's per-image ``seconds`` (decode + segment + write, in the worker).

    python benchmarks/bench_engine.py --runs 2
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    except OSError:
        pass
    import ray
    import torch

    import samkit

    return (f"{cpu}; {os.cpu_count()} logical cores; torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"ray {ray.__version__}; samkit {samkit.__version__}; Python {platform.python_version()}")


def write_images(folder: Path, count: int) -> None:
    from PIL import Image
    from skimage import data

    base = np.asarray(Image.fromarray(data.astronaut()).resize((640, 480), Image.BILINEAR))
    folder.mkdir(parents=True)
    for i in range(count):
        image = np.roll(base, shift=(7 * i, 13 * i), axis=(0, 1))
        Image.fromarray(image[:, ::-1] if i % 2 else image).save(folder / f"img_{i:03d}.png")


class Timeline:
    """Progress handler recording when each image finished."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: list[float] = []

    def __call__(self, event) -> None:
        while len(self.times) < event.done:
            self.times.append(time.perf_counter() - self.start)


def run_once(engine: str, workers: int, images: Path, task, out: Path, batch_size: int) -> dict[str, float]:
    import json

    from samkit.engine import run_job

    shutil.rmtree(out, ignore_errors=True)
    timeline = Timeline()
    summary = run_job(images, task, out, engine=engine, workers=workers, batch_size=batch_size, progress=timeline)
    if summary.ok != summary.total:
        raise RuntimeError(f"{engine} x{workers}: {summary.errors} errors")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    first, last = timeline.times[0], timeline.times[-1]
    return {"wall": summary.seconds, "rate": summary.total / summary.seconds, "first": first,
            "steady": (summary.total - 1) / (last - first) if last > first else float("nan"),
            "per_image": statistics.median(r["seconds"] for r in rows), "masks": sum(r["masks"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--model", choices=("tiny", "vit_b"), default="tiny")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    import ray

    from samkit.engine import EverythingTask
    from samkit.weights import write_random_checkpoint

    work = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    try:
        write_images(work / "images", args.images)
        checkpoint = work / f"{args.model}.pth"
        write_random_checkpoint(checkpoint, args.model, seed=0)
        task = EverythingTask(checkpoint, settings={"points_per_side": args.points_per_side, "pred_iou_thresh": 0.0,
                                                    "stability_score_thresh": 0.0})
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - started
        write_images(work / "warmup", 2)  # Ray's first job also starts its worker processes: not measured
        run_once("ray", 1, work / "warmup", task, work / "out_warmup", args.batch_size)
        configs = [("local", 1), ("ray", 1), ("ray", 2)]
        results: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in configs}
        for _ in range(args.runs):
            for engine, workers in configs:
                results[(engine, workers)].append(
                    run_once(engine, workers, work / "images", task, work / f"out_{engine}{workers}", args.batch_size))
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"Machine: {machine()}")
    print(f"Job: segment everything, {args.images} images 480x640, model {args.model} (seeded random weights), "
          f"points_per_side {args.points_per_side}, batch_size {args.batch_size}; medians of {args.runs} "
          "interleaved runs")
    print(f"Ray start-up (ray.init, local, {os.cpu_count()} CPUs): {startup:.2f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f} (other processes share these cores)\n")
    print("| engine | workers | wall s | images/s | first result s | steady images/s | per image s | masks |")
    print("|---|---|---|---|---|---|---|---|")
    for (engine, workers), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {engine} | {workers} | {med['wall']:.2f} | {med['rate']:.2f} | {med['first']:.2f} | "
              f"{med['steady']:.2f} | {med['per_image']:.3f} | {int(med['masks'])} |")


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
