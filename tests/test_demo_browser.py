"""End to end in a real browser: upload an image, click on it, see the mask overlay.

Headless Chromium (Debian's ``chromium``; ``scripts/install_browser.sh`` installs it) driven by
Playwright's Python package; ``playwright install`` is never used. The test is skipped only when
no browser (or no Playwright) is found, and says so. A screenshot is saved under ``artifacts/``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs gradio: pip install samkit[demo]")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
TRAINED = ROOT / "samkit" / "assets" / "tiny_synthetic.pth"  # masks that follow objects, when committed
SCREENSHOT = ARTIFACTS / "demo_click_to_segment.png"


def scene() -> np.ndarray:
    """A 240 x 320 picture: a grey table, an orange box and a dark cylinder."""
    image = np.full((240, 320, 3), 225, np.uint8)
    image[150:, :] = (170, 160, 150)
    image[60:170, 60:170] = (230, 140, 40)
    yy, xx = np.mgrid[:240, :320]
    image[(xx - 240) ** 2 / 35 ** 2 + (yy - 120) ** 2 / 70 ** 2 <= 1] = (60, 70, 90)
    return image


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from samkit.cli.demo import load_demo_module
    from samkit.weights import write_random_checkpoint

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    root = tmp_path_factory.mktemp("browser")
    if TRAINED.is_file():
        shutil.copyfile(TRAINED, root / "tiny.pth")
    else:
        write_random_checkpoint(root / "tiny.pth", "tiny", seed=0)
    Image.fromarray(scene()).save(root / "scene.png")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = load_demo_module().build_app(str(root / "tiny.pth"), device="cpu")
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield url, root
    app.close()


def fetch_image(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as response:
        return np.asarray(Image.open(BytesIO(response.read())).convert("RGB"))


def test_click_shows_a_mask_overlay(browser, app_url):
    import samkit

    url, root = app_url
    page = browser.new_page(viewport={"width": 1280, "height": 960})
    try:
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#click-input input[type=file]").set_input_files(str(root / "scene.png"))
        picture = page.locator("#click-input img")
        picture.wait_for(state="visible", timeout=60_000)
        page.wait_for_function("() => { const i = document.querySelector('#click-input img');"
                               " return i && i.complete && i.naturalWidth === 320; }", timeout=60_000)
        box = picture.bounding_box()
        # click on the orange box: pixel (115, 115) of the 320 x 240 image
        picture.click(position={"x": box["width"] * 115 / 320, "y": box["height"] * 115 / 240})
        page.wait_for_function("() => (document.querySelector('#click-info') || {}).innerText"
                               "?.includes('predicted IoU')", timeout=60_000)
        overlay_url = page.locator("#click-overlay img").get_attribute("src")
        page.get_by_text("Prompts as JSON").click()  # open the accordion that shows the prompts as text
        prompts = json.loads(page.locator("#click-prompts textarea").input_value(timeout=30_000))
        info = page.locator("#click-info").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        page.close()

    # the click reached the server as one foreground point near where we clicked
    assert prompts["labels"] == [1] and prompts["box"] is None
    (x, y), = prompts["points"]
    assert abs(x - 115) <= 3 and abs(y - 115) <= 3
    # the overlay shows the mask the Python API gives for that point: tinted inside, unchanged outside
    segmenter = samkit.Segmenter(samkit.load_model(root / "tiny.pth"))
    result = segmenter.segment(segmenter.encode(scene()), points=[[x, y]], labels=[1], multimask=True)
    best = int(np.argmax(result.scores[0]))
    mask = result.masks[0, best]
    assert f"Mask {best + 1} of 3" in info and mask.any()
    overlay = fetch_image(overlay_url if overlay_url.startswith("http") else url.rstrip("/") + overlay_url)
    assert overlay.shape == (240, 320, 3)
    changed = np.any(overlay.astype(int) != scene().astype(int), axis=-1)
    yy, xx = np.mgrid[:240, :320]
    far_from_click = (xx - x) ** 2 + (yy - y) ** 2 > 12 ** 2
    assert changed[mask & far_from_click].mean() > 0.99  # the tint covers the mask
    outside = ~mask
    outside[1:] &= ~mask[:-1]
    outside[:-1] &= ~mask[1:]
    outside[:, 1:] &= ~mask[:, :-1]
    outside[:, :-1] &= ~mask[:, 1:]
    assert not changed[outside & far_from_click].any()  # and nothing else
    assert SCREENSHOT.stat().st_size > 10_000
