"""ONNX export: quantized decoder (size, speed, masks vs float32) and onnxruntime vs PyTorch on the CPU.

1. The trained tiny model's decoder (samkit/assets/tiny_synthetic.pth) in float32 and with
   uint8 weights (onnxruntime dynamic quantization, per tensor as Meta's script, and per
   channel as samkit's ``quantize_onnx``): file size, decode time, mask IoU against the float32
   masks on held-out synthetic scenes (a click inside every object, all four outputs).
2. A vit_b-shaped decoder (random weights): the same size and time columns; this is the
   decoder a browser runs for the paper's models.
3. The image encoder: onnxruntime (CPU, float32) against samkit's PyTorch encoder in fp32 and
   bf16, runs interleaved, median of ``--runs``.
4. The encoder with int8 weights (``quantize_onnx``) against float32 in onnxruntime: file size,
   time, the embedding's max relative difference and, for the trained tiny model, the IoU of
   the float32 decoder's masks from the int8 embedding against those from the float32 one
   (the same held-out clicks as 1).
5. ``--browser``: the page (demos/web/) in headless Chromium with the vit_b-shaped decoder,
   single-thread wasm: median per-click decode latency over ``--clicks`` clicks.

    python benchmarks/bench_onnx.py                  # tiny + vit_b (several minutes on 2 cores)
    python benchmarks/bench_onnx.py --quick          # tiny only
    python benchmarks/bench_onnx.py --browser        # also the in-browser latency

Prints markdown tables and the machine line; benchmarks/runs/onnx_cpu.txt keeps a run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samkit import Segmenter, load_model  # noqa: E402
from samkit.export import export_decoder, export_encoder, quantize_onnx  # noqa: E402
from samkit.modeling import build_sam, get_config  # noqa: E402

TRAINED = ROOT / "samkit" / "assets" / "tiny_synthetic.pth"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime

    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"onnxruntime {onnxruntime.__version__}")


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not steal torch's cores
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved(functions: dict[str, callable], runs: int) -> dict[str, float]:
    """Median seconds per call of each function, called in turn (a, b, c, a, b, c, ...) after a warm-up."""
    for fn in functions.values():
        fn()
    times = {name: [] for name in functions}
    for _ in range(runs):
        for name, fn in functions.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def decoder_inputs(embedding: np.ndarray, original_size: tuple[int, int], image_size: int,
                   point: tuple[float, float]) -> dict[str, np.ndarray]:
    """One click (XY original pixels) + the padding point, Meta's decoder contract."""
    from samkit.transforms import CoordinateMap

    cmap = CoordinateMap.for_image(original_size, image_size)
    xy = cmap.points_to_model(np.asarray([point], np.float32))
    grid = embedding.shape[-1]
    return {"image_embeddings": embedding.astype(np.float32),
            "point_coords": np.concatenate([xy, np.zeros((1, 2), np.float32)])[None].astype(np.float32),
            "point_labels": np.asarray([[1.0, -1.0]], np.float32),
            "mask_input": np.zeros((1, 1, 4 * grid, 4 * grid), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.asarray(original_size, np.float32)}


def quantize_per_tensor(source: Path, target: Path) -> Path:
    """Meta's setting (scripts/export_onnx_model.py): uint8, per tensor."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8, per_channel=False, reduce_range=False)
    return target


def decoder_table(name: str, model, folder: Path, samples: list[tuple[np.ndarray, tuple[int, int], tuple]],
                  runs: int) -> list[str]:
    """Rows: float32 / uint8 per tensor / uint8 per channel decoder of ``model``."""
    fp32 = export_decoder(model, folder / f"{name}_decoder.onnx")
    files = {"float32": fp32,
             "uint8, per tensor (Meta's)": quantize_per_tensor(fp32, folder / f"{name}_decoder.tensor.onnx"),
             "uint8, per channel (samkit)": quantize_onnx(fp32, folder / f"{name}_decoder.quant.onnx")}
    sessions = {label: session(path, 1) for label, path in files.items()}
    image_size = model.config.image_size
    reference = [sessions["float32"].run(None, decoder_inputs(e, size, image_size, p))[0] > 0 for e, size, p in samples]
    inputs = decoder_inputs(*samples[0][:2], image_size, samples[0][2])
    speed = interleaved({label: (lambda s=s: s.run(None, inputs)) for label, s in sessions.items()}, runs)
    rows = []
    for label, s in sessions.items():
        ious = []
        for (e, size, p), ref in zip(samples, reference):
            mask = s.run(None, decoder_inputs(e, size, image_size, p))[0] > 0
            union = np.logical_or(mask, ref).sum((2, 3))
            ious.extend(np.where(union > 0, np.logical_and(mask, ref).sum((2, 3)) / np.maximum(union, 1), 1.0).ravel())
        rows.append(f"| {name} | {label} | {files[label].stat().st_size / 1e6:.2f} | {1e3 * speed[label]:.2f} | "
                    f"{np.mean(ious):.4f} | {np.min(ious):.4f} | {len(ious)} |")
    return rows


def encoder_rows(name: str, model, folder: Path, image: np.ndarray, runs: int) -> list[str]:
    path = export_encoder(model, folder / f"{name}_encoder.onnx")
    segmenter = Segmenter(model)
    x, *_ = segmenter.preprocess(image)
    onnx_session = session(path, torch.get_num_threads())
    feed = {"images": x.numpy()}
    bf16 = build_sam(model.config)
    bf16.load_state_dict(model.state_dict())
    bf16.image_encoder.to(torch.bfloat16)
    x16 = x.to(torch.bfloat16)
    reference = model.image_encoder(x).detach().numpy()
    got = onnx_session.run(None, feed)[0]
    relative = float(np.abs(got - reference).max() / np.abs(reference).max())

    def fp32():
        with torch.inference_mode():
            model.image_encoder(x)

    def b16():
        with torch.inference_mode():
            bf16.image_encoder(x16)

    times = interleaved({"onnxruntime fp32": lambda: onnx_session.run(None, feed), "samkit PyTorch fp32": fp32,
                         "samkit PyTorch bf16": b16}, runs)
    base = times["samkit PyTorch fp32"]
    return [f"| {name} | {label} | {1e3 * t:.1f} | {base / t:.2f}x | {relative:.1e} |" if label.startswith("onnx")
            else f"| {name} | {label} | {1e3 * t:.1f} | {base / t:.2f}x | |" for label, t in times.items()]


def encoder_int8_rows(name: str, model, folder: Path, scenes: list[tuple[np.ndarray, list[tuple]]],
                      runs: int) -> list[str]:
    """Rows: the encoder in float32 and with int8 weights (onnxruntime); mask IoU where ``scenes`` has clicks."""
    fp32 = folder / f"{name}_encoder.onnx"
    if not fp32.is_file():
        export_encoder(model, fp32)
    files = {"float32": fp32, "int8 weights (dynamic)": quantize_onnx(fp32, folder / f"{name}_encoder.quant.onnx")}
    sessions = {label: session(path, torch.get_num_threads()) for label, path in files.items()}
    segmenter = Segmenter(model)
    feeds = [{"images": segmenter.preprocess(image)[0].numpy()} for image, _ in scenes]
    speed = interleaved({label: (lambda s=s: s.run(None, feeds[0])) for label, s in sessions.items()}, runs)
    decoder = None
    if any(points for _, points in scenes):
        decoder = session(export_decoder(model, folder / f"{name}_int8_check_decoder.onnx"), 1)
    image_size = model.config.image_size
    reference = [sessions["float32"].run(None, feed)[0] for feed in feeds]
    rows = []
    for label, s in sessions.items():
        relative, ious = 0.0, []
        for feed, want, (image, points) in zip(feeds, reference, scenes):
            got = s.run(None, feed)[0]
            relative = max(relative, float(np.abs(got - want).max() / np.abs(want).max()))
            for point in points:
                ref = decoder.run(None, decoder_inputs(want, image.shape[:2], image_size, point))[0] > 0
                mask = decoder.run(None, decoder_inputs(got, image.shape[:2], image_size, point))[0] > 0
                union = np.logical_or(mask, ref).sum((2, 3))
                inter = np.logical_and(mask, ref).sum((2, 3))
                ious.extend(np.where(union > 0, inter / np.maximum(union, 1), 1.0).ravel())
        quality = f"{np.mean(ious):.4f} | {np.min(ious):.4f} | {len(ious)}" if ious else "| |"
        rows.append(f"| {name} | {label} | {files[label].stat().st_size / 1e6:.1f} | {1e3 * speed[label]:.1f} | "
                    f"{speed['float32'] / speed[label]:.2f}x | {relative:.1e} | {quality} |")
    return rows


def browser_latency(folder: Path, clicks: int) -> str:
    import shutil

    from samkit.cli.demo import load_demo_module
    from samkit.export.embedding import write_embedding  # noqa: F401  (prepare writes it)

    executable = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("google-chrome"))
                       if p and os.path.isfile(p)), None)
    if executable is None:
        return "browser: no Chromium found (scripts/install_browser.sh)"
    from playwright.sync_api import sync_playwright

    server_module = load_demo_module("web_server")
    torch.manual_seed(0)
    model = build_sam(get_config("vit_b"))
    image = np.random.default_rng(0).integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    server_module.prepare(model, image, folder / "web")
    server = server_module.make_server(folder / "web")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/?threads=1")
            page.wait_for_selector("body[data-state=ready]", timeout=300_000)
            rng = np.random.default_rng(1)
            for x, y in rng.uniform((0, 0), (1024, 768), size=(clicks + 1, 2)):
                page.evaluate(f"window.samkit.clear(); window.samkit.clickAt({x:.1f}, {y:.1f})")
            latencies = page.evaluate("window.samkit.latencies()")[1:]  # the first call sets the wasm kernels up
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return (f"browser (headless Chromium, onnxruntime-web wasm, 1 thread), vit_b-shaped decoder (the page's default: "
            f"single mask; benchmarks/bench_web.py compares the variants), 1024x768 image: "
            f"median {statistics.median(latencies):.1f} ms per click over {len(latencies)} clicks "
            f"(min {min(latencies):.1f}, max {max(latencies):.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny model only")
    parser.add_argument("--runs", type=int, default=20, help="timed decoder calls per file (default 20)")
    parser.add_argument("--encoder-runs", type=int, default=5, help="timed encoder calls (default 5)")
    parser.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    parser.add_argument("--clicks", type=int, default=30, help="clicks for --browser (default 30)")
    args = parser.parse_args()
    torch.manual_seed(0)
    from samkit.train.synthetic import SyntheticScenes

    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trained = load_model(TRAINED)
        segmenter = Segmenter(trained)
        samples = []
        for image, masks in (SyntheticScenes(20, seed=10000)[i] for i in range(20)):  # held-out scenes
            embedding = segmenter.encode(image).features.numpy()
            for mask in masks:
                ys, xs = np.nonzero(mask)
                samples.append((embedding, image.shape[:2], (float(xs[len(xs) // 2]), float(ys[len(ys) // 2]))))
        print("\n## Decoder: float32 vs uint8 weights (onnxruntime CPU, 1 thread; IoU vs the float32 masks)\n")
        print("| model | weights | file MB | decode ms | mean IoU | min IoU | masks |")
        print("|---|---|---|---|---|---|---|")
        for row in decoder_table("tiny (trained)", trained, folder, samples, args.runs):
            print(row, flush=True)
        if not args.quick:
            vit_b = build_sam(get_config("vit_b"))
            rng = np.random.default_rng(0)
            vit_samples = [(rng.normal(0, 1, (1, 256, 64, 64)).astype(np.float32), (768, 1024),
                            tuple(rng.uniform((0, 0), (1024, 768)))) for _ in range(8)]
            for row in decoder_table("vit_b-shaped (random)", vit_b, folder, vit_samples, args.runs):
                print(row, flush=True)
        print("\n## Encoder: onnxruntime CPU vs samkit PyTorch (median of interleaved runs)\n")
        print("| model | runtime | ms per image | speed vs PyTorch fp32 | max rel. diff vs PyTorch fp32 |")
        print("|---|---|---|---|---|")
        image = SyntheticScenes(1, seed=10000)[0][0]
        for row in encoder_rows("tiny (trained)", trained, folder, image, args.encoder_runs * 4):
            print(row, flush=True)
        if not args.quick:
            photo = np.random.default_rng(0).integers(0, 255, (768, 1024, 3), dtype=np.uint8)
            for row in encoder_rows("vit_b-shaped (random)", vit_b, folder, photo, args.encoder_runs):
                print(row, flush=True)
        print("\n## Encoder: int8 weights vs float32 (onnxruntime CPU; IoU of the float32 decoder's masks, all "
              "four outputs, from the int8 embedding vs from the float32 one)\n")
        print("| model | encoder weights | file MB | ms per image | speed vs float32 | max rel. diff | mean IoU | "
              "min IoU | masks |")
        print("|---|---|---|---|---|---|---|---|---|")
        held_out = []
        for image, masks in (SyntheticScenes(20, seed=10000)[i] for i in range(20)):
            points = [(float(xs[len(xs) // 2]), float(ys[len(ys) // 2])) for xs, ys in
                      ((np.nonzero(m)[1], np.nonzero(m)[0]) for m in masks)]
            held_out.append((image, points))
        for row in encoder_int8_rows("tiny (trained)", trained, folder, held_out, args.encoder_runs * 4):
            print(row, flush=True)
        if not args.quick:
            for row in encoder_int8_rows("vit_b-shaped (random)", vit_b, folder, [(photo, [])], args.encoder_runs):
                print(row, flush=True)
        if args.browser:
            print("\n" + browser_latency(folder, args.clicks))


if __name__ == "__main__":
    main()
