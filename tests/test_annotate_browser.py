"""The Annotate tab end to end in a real browser: click -> mask, brush adds, eraser removes, accept
(keyboard shortcut ``a``), next (``n``); then the project database holds the mask.

Headless Chromium (Debian's ``chromium``) driven by Playwright's Python package, launched as in
tests/test_demo_browser.py; skipped only when no browser or no Playwright is found.

What it proves: the click reached the server as a point near where we clicked; the stored mask
equals, pixel for pixel, SAM's mask for that point (computed here with samkit's Segmenter on the
same image) OR the pixels the page brushed AND NOT the pixels it erased; the brushed pixels lie
along the brush stroke we drew with the mouse, the erased ones along the eraser stroke, and both
are non-empty (the brushed / erased sets are read from the page's hidden ``#annotate-edits`` box,
since the exact brush footprint is the browser's); Next marks the image done and shows the next.
"""
from __future__ import annotations

import json
import os
import socket
import time
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs gradio: pip install samkit[demo]")

from test_demo_browser import ARTIFACTS  # noqa: E402

H, W = 120, 160
# Generous: a loaded 2-core machine has been seen taking ~70 s for one of these waits.
WAIT_MS = 180_000
GREEN = (40, 180, 90)


def picture(seed: int) -> np.ndarray:
    image = np.full((H, W, 3), GREEN, np.uint8)
    image[30:90, 50:120] = (230, 140, 40) if seed == 0 else (60, 70, 200)
    return image


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_checkpoint):
    from samkit.cli.demo import load_demo_module
    from samkit.engine.projects import Project

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    root = tmp_path_factory.mktemp("annotate")
    for i in range(2):
        Image.fromarray(picture(i)).save(root / f"img{i}.png")
    with Project.init(root) as project:
        assert len(project.add_images(root).added) == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = load_demo_module().build_app(str(tiny_checkpoint), device="cpu", project=root, author="tester")
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield url, root
    app.close()


def page_state(page) -> dict:
    return json.loads(page.locator("#annotate-edits textarea").input_value() or "{}")


def wait_synced(page, after: int) -> dict:
    """Wait until the editor got its value number ``after + 1`` and drew its layer at the image size."""
    page.wait_for_function("n => { const t = document.querySelector('#annotate-edits textarea');"
                           " try { return JSON.parse(t.value).syncs > n; } catch (e) { return false; } }",
                           arg=after, timeout=WAIT_MS)
    page.wait_for_function(f"() => {{ const lm = window.editor && window.editor.layer_manager; if (!lm) return false;"
                           f" const l = lm.layers[0]; const t = l && lm.draw_textures.get(l.container);"
                           f" return t && t.width === {W} && t.height === {H}; }}", timeout=WAIT_MS)
    time.sleep(0.5)  # the layer's image is drawn asynchronously
    return page_state(page)


def image_rect(page) -> tuple[float, float, float, float]:
    """Where the editor draws the image on the page: (x0, y0, px per image px in x, in y)."""
    box = page.locator("#annotate-editor canvas").first.bounding_box()
    shot = np.asarray(Image.open(BytesIO(page.screenshot())).convert("RGB")).astype(int)
    inside = np.zeros(shot.shape[:2], bool)
    inside[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])] = True
    ys, xs = np.nonzero(inside & (np.abs(shot - GREEN).sum(-1) < 12))
    assert len(xs) > 1000, "the editor does not show the image"
    return xs.min(), ys.min(), (xs.max() + 1 - xs.min()) / W, (ys.max() + 1 - ys.min()) / H


def stroke(page, rect, y: float, x0: float, x1: float) -> None:
    ox, oy, sx, sy = rect
    page.mouse.move(ox + (x0 + 0.5) * sx, oy + (y + 0.5) * sy)
    page.mouse.down()
    for t in np.linspace(0, 1, 12)[1:]:
        page.mouse.move(ox + (x0 + t * (x1 - x0) + 0.5) * sx, oy + (y + 0.5) * sy)
    page.mouse.up()


def rle_of_nothing(state: dict) -> str:
    from samkit.formats.rle import masks_to_coco_rle

    return masks_to_coco_rle(np.zeros((1, H, W), bool))[0]["counts"]


def near_stroke(pixels: np.ndarray, y: float, x0: float, x1: float, reach: float) -> bool:
    ys, xs = np.nonzero(pixels)
    dx = np.clip(xs, x0, x1) - xs
    return bool(np.all(dx ** 2 + (ys - y) ** 2 <= reach ** 2))


def open_tab(page, url: str) -> dict:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(f"() => {{ const i = document.querySelector('#annotate-image img');"
                           f" return i && i.complete && i.naturalWidth === {W}; }}", timeout=WAIT_MS)
    return wait_synced(page, 0)


def click_picture(page, x: float, y: float) -> None:
    box = page.locator("#annotate-image img").bounding_box()
    page.locator("#annotate-image img").click(position={"x": box["width"] * x / W, "y": box["height"] * y / H})


def test_annotate_one_image_end_to_end(browser, app_url, tiny_checkpoint):
    import samkit
    from samkit.engine.projects import Project
    from samkit.cli.demo import load_demo_module
    from samkit.rle import rle_to_mask

    annotate = load_demo_module("annotate")
    url, root = app_url
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    other = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()  # a second annotator
    try:
        state = open_tab(page, url)
        first = state["image_id"]
        other_state = open_tab(other, url)
        assert other_state["image_id"] == first  # both annotators start on the first open image
        rect = image_rect(page)
        click_picture(page, 85, 60)
        state = wait_synced(page, state["syncs"])
        sam = rle_to_mask(state["sam"])
        assert sam.any(), "SAM gave an empty mask for the click"
        # brush along the row with the fewest mask pixels, erase along the row with the most
        rows = [sam[y, 10:W - 10].sum() for y in range(8, H - 8)]
        brush_y, erase_y = 8 + int(np.argmin(rows)), 8 + int(np.argmax(rows))
        page.locator("#annotate-editor button[aria-label=Brush]").click()
        stroke(page, rect, brush_y, 20, 70)
        page.locator("#annotate-editor button[aria-label=Erase]").click()
        xs = np.nonzero(sam[erase_y])[0]
        erase_x0, erase_x1 = float(xs.min()), float(min(xs.max(), xs.min() + 40))
        stroke(page, rect, erase_y, erase_x0, erase_x1)
        page.mouse.click(5, 5)  # focus leaves the canvas; then the shortcut: a = accept
        page.keyboard.press("a")
        page.wait_for_function("() => document.querySelector('#annotate-info').innerText.includes('saved mask')",
                               timeout=WAIT_MS)
        state = wait_synced(page, state["syncs"])
        saved = state["last_saved"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "demo_annotate.png"), full_page=True)
        # the second annotator, on the same image in its own session, saves its own mask
        other.locator("#annotate-author input, #annotate-author textarea").first.fill("second")
        click_picture(other, 30, 100)
        other_state = wait_synced(other, other_state["syncs"])
        assert other_state["brushed"]["counts"] == rle_of_nothing(other_state)  # nothing of page 1's edits
        other.locator("#annotate-accept").click()
        other.wait_for_function("() => document.querySelector('#annotate-info').innerText.includes('saved mask')",
                                timeout=WAIT_MS)
        other_saved = wait_synced(other, other_state["syncs"])["last_saved"]
        page.keyboard.press("n")
        page.wait_for_function("n => { try { return JSON.parse(document.querySelector('#annotate-edits textarea')"
                               ".value).image_id !== n; } catch (e) { return false; } }", arg=first, timeout=WAIT_MS)
        second = page_state(page)["image_id"]
    finally:
        page.close()
        other.context.close()

    (x, y), = saved["points"]
    assert saved["labels"] == [1] and abs(x - 85) <= 3 and abs(y - 60) <= 3
    brushed, erased, shown = (rle_to_mask(saved[k]) for k in ("brushed", "erased", "mask"))
    assert brushed.any() and near_stroke(brushed, brush_y, 20, 70, reach=annotate.BRUSH_RADIUS + 3)
    assert erased.any() and near_stroke(erased, erase_y, erase_x0, erase_x1, reach=annotate.ERASER_RADIUS + 3)
    segmenter = samkit.Segmenter(samkit.load_model(tiny_checkpoint, device="cpu"))
    image = np.asarray(Image.open(root / "img0.png").convert("RGB"))
    result = segmenter.segment(segmenter.encode(image), points=[[x, y]], labels=[1], multimask=True)
    expected = (result.masks[0, int(np.argmax(result.scores[0]))] | brushed) & ~erased
    with Project.open(root) as project:
        rows = {r.author: r for r in project.annotations(first)}
        assert project.image(first).done and second != first
    assert sorted(rows) == ["second", "tester"] and rows["tester"].id == saved["id"]
    assert (rows["tester"].source, rows["tester"].status) == ("assisted", "accepted")
    np.testing.assert_array_equal(rows["tester"].mask(), expected)
    np.testing.assert_array_equal(rows["tester"].mask(), shown)
    # the second annotator's mask: SAM's for its own click, untouched by the first one's corrections
    (x2, y2), = other_saved["points"]
    assert abs(x2 - 30) <= 3 and abs(y2 - 100) <= 3 and rows["second"].id == other_saved["id"]
    result = segmenter.segment(segmenter.encode(image), points=[[x2, y2]], labels=[1], multimask=True)
    np.testing.assert_array_equal(rows["second"].mask(), result.masks[0, int(np.argmax(result.scores[0]))])
