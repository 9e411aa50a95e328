"""Per-click decode latency of the web page (demos/web/) in headless Chromium, before/after each change.

The vit_b-shaped decoder (random weights, C = 256, g = 64) on a 1024 x 768 image, one click
per decode (plus Meta's padding point). Variants, each a page of its own, all open at once and
driven in turn (``--rounds`` rounds of ``--clicks`` clicks per page), so load from other
processes on a shared machine falls on all of them alike; medians of the interleaved runs:

* ``before``: the page as first written: plain decoder modules, Meta's postprocess in the graph
  (4 masks upsampled to S x S, cropped, resized), all 4 outputs, 1 wasm thread;
* ``single, stop 22``: the page's default file as of stop 22: fast decoder modules (absorbed
  projections), the crop before the upsample, Meta's single-mask output, but the upscaling
  traced in row blocks (four ScatterElements) and Add + LayerNormalization pairs that
  onnxruntime fuses into SkipLayerNormalization; 1 thread;
* ``single``: the default file now (:func:`samkit.export.export_decoder`): batched upscaling and
  ``Sum`` before each LayerNormalization; 1 thread;
* ``single uint8``: the same, uint8 weights (``quantize_onnx``), 1 thread;
* ``single, 2 threads``: the default file with multithreaded wasm (the server sends COOP/COEP).

Also onnxruntime (native, CPU, 1 thread) on each file, for scale; the max |diff| of every
file's outputs against ``before`` (logits; the uint8 one is approximate by design); and the
floor: the decoder's matrix-product FLOPs (torch's FlopCounterMode) over the rate this
browser's wasm reaches on one large matrix product (4096 x 256 @ 256 x 256, fp32 and with
onnxruntime's dynamic int8 quantization, 1 and 2 threads).

    python benchmarks/bench_web.py                  # prints markdown tables
    python benchmarks/bench_web.py --rounds 8 --clicks 5

benchmarks/runs/web_cpu.txt keeps runs.
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
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samkit.export import DECODER_INPUTS, DECODER_OUTPUTS, quantize_onnx  # noqa: E402
from samkit.export.metadata import plain_copy  # noqa: E402
from samkit.export.onnx_decoder import OnnxDecoder, decoder_example_inputs  # noqa: E402
from samkit.export.onnx_graph import to_onnx  # noqa: E402
from samkit.modeling import build_sam, get_config  # noqa: E402

IMAGE_SHAPE = (768, 1024)


class FullSizePostprocess(OnnxDecoder):
    """The first page's graph: Meta's postprocess as written (upsample every mask to S x S, crop, resize)."""

    def upscale(self, low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        side = self.image_size
        up = F.interpolate(low_res, size=(side, side), mode="bilinear", align_corners=False)
        size = orig_im_size.to(torch.float32)
        resized = torch.floor(size * (side / size.max()) + 0.5).to(torch.int64)
        h, w = resized[0].item(), resized[1].item()
        for value in (h, w):
            torch._check(value >= 1)
            torch._check(value <= side)
        original = orig_im_size.to(torch.int64)
        height, width = original[0].item(), original[1].item()
        torch._check(height >= 1)
        torch._check(width >= 1)
        return F.interpolate(up[..., :h, :w], size=(height, width), mode="bilinear", align_corners=False)


def machine() -> str:
    try:
        name = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown CPU"
    import onnxruntime

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{name}; {os.cpu_count()} cores (shared with other processes, load average {load:.1f} at the start); "
            f"onnxruntime {onnxruntime.__version__} (native), onnxruntime-web {web_runtime_version()}")


def web_runtime_version() -> str:
    import json

    package = ROOT / "demos" / "web" / "node_modules" / "onnxruntime-web" / "package.json"
    return json.loads(package.read_text())["version"] if package.is_file() else "not installed"


def export_before(model, path: Path) -> Path:
    plain = plain_copy(model, fast_decoder=False)
    points = torch.export.Dim("num_points", min=1, max=1024)
    return to_onnx(FullSizePostprocess(plain).eval(), decoder_example_inputs(plain), path, input_names=DECODER_INPUTS,
                   output_names=DECODER_OUTPUTS, dynamic_shapes=({}, {1: points}, {1: points}, {}, {}, {}))


def export_stop22(model, path: Path) -> Path:
    """The stop-22 default file: the upscaling traced in row blocks, no Sums before the norms."""
    from samkit.modeling import fast_decoder

    exporting, fast_decoder._exporting = fast_decoder._exporting, lambda: False
    try:
        plain = plain_copy(model, fast_decoder=True)
        points = torch.export.Dim("num_points", min=1, max=1024)
        return to_onnx(OnnxDecoder(plain, single_mask=True).eval(), decoder_example_inputs(plain), path,
                       input_names=DECODER_INPUTS, output_names=DECODER_OUTPUTS,
                       dynamic_shapes=({}, {1: points}, {1: points}, {}, {}, {}))
    finally:
        fast_decoder._exporting = exporting


def decoder_gflop(model) -> float:
    """Matrix-product GFLOP of one single-mask decode (torch's FlopCounterMode on the fast modules)."""
    from torch.utils.flop_counter import FlopCounterMode

    plain = plain_copy(model, fast_decoder=True)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        OnnxDecoder(plain, single_mask=True).eval()(*decoder_example_inputs(plain))
    return counter.get_total_flops() / 1e9


GEMM_SHAPE = (4096, 256, 256)
GEMM_SETUP_JS = """async ([file, threads, m, k]) => {
  const ort = await import('../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = new URL('../node_modules/onnxruntime-web/dist/', location.href).href;
  ort.env.wasm.numThreads = threads;
  const bytes = new Uint8Array(await (await fetch(file)).arrayBuffer());
  const session = await ort.InferenceSession.create(bytes, {executionProviders: ['wasm']});
  const x = new Float32Array(m * k);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i);
  const feeds = {x: new ort.Tensor('float32', x, [m, k])};
  for (let i = 0; i < 3; i++) await session.run(feeds);
  window.gemmRuns = async (count) => {
    const times = [];
    for (let i = 0; i < count; i++) {
      const t = performance.now(); await session.run(feeds); times.push(performance.now() - t);
    }
    return times;
  };
}"""


def write_gemm_files(folder: Path) -> dict[str, Path]:
    """One MatMul with a constant weight (fp32), and its dynamic-int8 quantization, as ONNX files."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = GEMM_SHAPE
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
    fp32 = folder / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(fp32))
    return {"fp32": fp32, "int8 (dynamic)": quantize_onnx(fp32, folder / "gemm.quant.onnx")}


def native_ms(files: dict[str, Path], feeds: dict, runs: int = 15) -> tuple[dict[str, float], dict[str, list]]:
    """Median ms per call of each file in native onnxruntime (1 thread), runs interleaved; and its outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in files.items()}
    outputs = {name: session.run(None, feeds) for name, session in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(runs):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feeds)
            times[name].append(time.perf_counter() - started)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per page per round (default 5)")
    args = parser.parse_args()
    executable = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("google-chrome"))
                       if p and os.path.isfile(p)), None)
    if executable is None:
        raise SystemExit("no Chromium found (scripts/install_browser.sh)")
    from playwright.sync_api import sync_playwright

    from samkit.cli.demo import load_demo_module

    print(machine())
    server_module = load_demo_module("web_server")
    torch.manual_seed(0)
    model = build_sam(get_config("vit_b"))
    image = np.random.default_rng(0).integers(0, 255, (*IMAGE_SHAPE, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "web"
        page = server_module.prepare(model, image, data)  # decoder.onnx: the page's default (single mask)
        files = {"before": export_before(model, data / "before.onnx"),
                 "single, stop 22": export_stop22(model, data / "stop22.onnx"),
                 "single": data / "decoder.onnx"}
        files["single uint8"] = quantize_onnx(files["single"], data / "single.quant.onnx")
        variants = {name: (path, 1) for name, path in files.items()}
        variants["single, 2 threads"] = (files["single"], 2)
        import json

        (data / "blank.html").write_text("<!doctype html><title>gemm</title>")
        for index, (path, _) in enumerate(variants.values()):
            (data / f"model{index}.json").write_text(json.dumps(dict(page, decoder=path.name)))
        rng = np.random.default_rng(1)
        feeds = {"image_embeddings": np.load(data / "embedding.npy"),
                 "point_coords": np.asarray([[[512.0, 300.0], [0.0, 0.0]]], np.float32),
                 "point_labels": np.asarray([[1.0, -1.0]], np.float32),
                 "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
                 "orig_im_size": np.asarray(IMAGE_SHAPE, np.float32)}
        native, outputs = native_ms(files, feeds)
        server = server_module.make_server(data)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        latencies: dict[str, list[float]] = {name: [] for name in variants}
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                     args=["--headless", "--no-sandbox", "--disable-gpu"])
                pages = {}
                for index, (name, (_, threads)) in enumerate(variants.items()):
                    pages[name] = browser.new_page()
                    pages[name].goto(f"{url}?config=data/model{index}.json&threads={threads}")
                    pages[name].wait_for_selector("body[data-state=ready]", timeout=300_000)
                    pages[name].evaluate("window.samkit.clickAt(10, 10)")  # the first call sets the kernels up
                isolated = pages["single, 2 threads"].evaluate("self.crossOriginIsolated")
                gemm_pages = {}  # one page per (file, threads): the thread count is fixed per page
                for kind, path in write_gemm_files(data).items():
                    for threads in (1, 2):
                        gemm_pages[kind, threads] = tab = browser.new_page()
                        tab.goto(f"{url}data/blank.html")
                        tab.evaluate(GEMM_SETUP_JS, [f"/data/{path.name}", threads, *GEMM_SHAPE[:2]])
                gemm_times: dict = {key: [] for key in gemm_pages}
                for _ in range(6):  # interleaved rounds
                    for key, tab in gemm_pages.items():
                        tab.bring_to_front()
                        gemm_times[key].extend(tab.evaluate("window.gemmRuns(5)"))
                for tab in gemm_pages.values():
                    tab.close()
                gemm_ms = {key: statistics.median(times) for key, times in gemm_times.items()}
                for _ in range(args.rounds):
                    for name, tab in pages.items():
                        tab.bring_to_front()
                        for x, y in rng.uniform((0, 0), IMAGE_SHAPE[::-1], size=(args.clicks, 2)):
                            tab.evaluate(f"window.samkit.clear(); window.samkit.clickAt({x:.1f}, {y:.1f})")
                        latencies[name].extend(tab.evaluate("window.samkit.latencies()")[-args.clicks:])
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"page cross-origin isolated (multithreaded wasm available): {isolated}; load average {load:.1f} at the end")
    print(f"\n## Browser decode latency per click (headless Chromium, wasm; {args.rounds} interleaved rounds x "
          f"{args.clicks} clicks per variant)\n")
    print("| variant | outputs | wasm threads | browser median ms | min | max | speed-up vs before | "
          "native ort 1 thread ms | max abs diff vs before |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(latencies["before"])
    for name, (path, threads) in variants.items():
        times = latencies[name]
        key = name if name in outputs else name.split(",")[0]
        ref = outputs["before"]
        got = outputs[key]
        if got[0].shape != ref[0].shape:  # one mask: compare with the output Meta's rule picks from the four
            best = 1 + int(np.argmax(ref[1][0, 1:]))
            ref = [r[:, best:best + 1] for r in ref]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
        print(f"| {name} | {got[0].shape[1]} | {threads} | {statistics.median(times):.1f} | {min(times):.1f} | "
              f"{max(times):.1f} | {base / statistics.median(times):.2f}x | {native[key]:.1f} | {diff:.1e} |")
    print_floor(model, gemm_ms, latencies)


def print_floor(model, gemm_ms: dict, latencies: dict) -> None:
    """The decoder's FLOPs over the wasm matrix-product rate: the fastest a click can be here."""
    gflop = decoder_gflop(model)
    m, k, n = GEMM_SHAPE
    print(f"\n## Floor: {gflop:.2f} GFLOP of matrix products per click (single mask) over the wasm rate "
          f"of one {m} x {k} @ {k} x {n} MatMul\n")
    print("| MatMul | wasm threads | ms | GFLOP/s | decoder floor ms | decoder measured ms |")
    print("|---|---|---|---|---|---|")
    measured = {1: statistics.median(latencies["single"]), 2: statistics.median(latencies["single, 2 threads"])}
    for (kind, threads), ms in gemm_ms.items():
        rate = 2 * m * k * n / (ms / 1e3) / 1e9
        print(f"| {kind} | {threads} | {ms:.2f} | {rate:.1f} | {gflop / rate * 1e3:.0f} | "
              f"{measured[threads]:.1f} |")


if __name__ == "__main__":
    main()
