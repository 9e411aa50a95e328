"""The client-side decoder page (demos/web/) in a real browser: onnxruntime-web (wasm) runs the
exported decoder of the trained tiny model; a click's mask must match samkit's PyTorch mask.

Needs ``npm ci --prefix demos/web`` (onnxruntime-web in demos/web/node_modules), Playwright's
Python package and a Chromium (``scripts/install_browser.sh``); skipped, with the reason, when
one is missing. A screenshot is saved under ``artifacts/``.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxscript", reason="exporting the decoder needs onnxscript: pip install samkit[onnx]")

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "demos" / "web"
TRAINED = ROOT / "samkit" / "assets" / "tiny_synthetic.pth"


@pytest.fixture(scope="module")
def browser(browser):
    """conftest's browser, once the page's onnxruntime-web is installed."""
    if not (WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs").is_file():
        pytest.skip("onnxruntime-web is not installed for the page: run `npm ci --prefix demos/web`")
    return browser


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """The page served on localhost for a synthetic scene, with the trained (else random) tiny model."""
    from samkit import load_model
    from samkit.cli.demo import load_demo_module
    from samkit.train.synthetic import SyntheticScenes
    from samkit.weights import write_random_checkpoint

    folder = tmp_path_factory.mktemp("web")
    if TRAINED.is_file():
        model = load_model(TRAINED)
    else:
        model = write_random_checkpoint(folder / "tiny.pth", "tiny", seed=0)
    image, masks = SyntheticScenes(1, seed=10000, size=(120, 180))[0]  # not square: the resize path is used
    server_module = load_demo_module("web_server")
    server_module.prepare(model, image, folder / "data")
    np.save(folder / "data" / "wrong.npy", np.zeros((1, 16, 8, 8), np.float32))
    server = server_module.make_server(folder / "data")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", model, image, masks
    server.shutdown()
    server.server_close()


def test_click_mask_matches_samkit_pytorch(browser, page_server):
    from samkit import Segmenter

    url, model, image, masks = page_server
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=90_000)
    ys, xs = np.nonzero(masks[0])
    target = (int(xs[len(xs) // 2]), int(ys[len(ys) // 2]))  # a pixel of the first object
    box = page.locator("#overlay").bounding_box()
    page.mouse.click(box["x"] + target[0] + 0.5, box["y"] + target[1] + 0.5)
    page.wait_for_function("window.samkit.state.points.length === 1 && !window.samkit.state.busy "
                           "&& !window.samkit.state.pending && window.samkit.state.lastMask !== null", timeout=30_000)
    point = page.evaluate("[window.samkit.state.points[0].x, window.samkit.state.points[0].y]")
    bits = np.asarray(page.evaluate("window.samkit.lastMaskBits()"), dtype=bool).reshape(image.shape[:2])
    latency = page.locator("#latency").inner_text()
    isolated = page.evaluate("self.crossOriginIsolated")  # COOP/COEP from the server: multithreaded wasm
    outputs = page.evaluate("window.samkit.state.lastMask.outputs")
    (ROOT / "artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "artifacts" / "web_decoder_click.png"))
    page.close()
    assert not errors
    assert abs(point[0] - (target[0] + 0.5)) <= 1 and abs(point[1] - (target[1] + 0.5)) <= 1
    assert latency.startswith("decode: ") and " ms" in latency
    assert isolated is True and outputs == 1  # the page's default decoder: Meta's single-mask export
    segmenter = Segmenter(model)
    reference = segmenter.segment(segmenter.encode(image), points=[point], multimask=True, best_only=True).masks[0, 0]
    assert reference.any()
    iou = np.logical_and(bits, reference).sum() / np.logical_or(bits, reference).sum()
    assert iou >= 0.99


def test_wrong_shaped_embedding_shows_a_message(browser, page_server):
    url, model = page_server[:2]
    channels, grid = model.config.prompt_embed_dim, model.config.embedding_size
    page = browser.new_page()
    page.goto(url + "?embedding=data/wrong.npy")
    page.wait_for_selector("#status.error", timeout=90_000)
    message = page.locator("#status").inner_text()
    page.close()
    assert f"has shape (1, 16, 8, 8); this decoder expects (1, {channels}, {grid}, {grid})" in message


def test_page_refuses_an_hq_model(tmp_path, tiny_config):
    from samkit.cli.demo import load_demo_module
    from samkit.modeling import build_sam

    server_module = load_demo_module("web_server")
    with pytest.raises(ValueError, match="decoder_kind is 'hq'.*early features"):
        server_module.prepare(build_sam(tiny_config.replace(decoder_kind="hq")), np.zeros((20, 30, 3), np.uint8),
                              tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_missing_npm_install_says_how_to_install(tmp_path):
    from samkit.cli.demo import load_demo_module

    (tmp_path / "index.html").write_text("<html></html>")
    server_module = load_demo_module("web_server")
    with pytest.raises(FileNotFoundError, match=r"npm ci --prefix"):
        server_module.check_installed(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"npm ci --prefix"):
        server_module.make_server(tmp_path, root=tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["demo", "--web"], "--web needs IMAGE"),
    (["demo", "--web", "photo.png", "--share"], "--share is the Gradio demo's"),
    (["demo", "photo.png"], "IMAGE goes with --web"),
], ids=["no_image", "share", "image_without_web"])
def test_demo_web_usage_errors(capsys, argv, message):
    from samkit.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
