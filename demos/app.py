"""The samkit Gradio demo: one app, a tab per way of prompting SAM.

Start it with ``samkit demo --model vit_b`` (or ``python -m demos.app`` from the repository).
Tabs and their API endpoints (``gradio_client``: ``client.predict(..., api_name="/segment")``):

==================  =================  ===========================================================
tab                 api_name           inputs
==================  =================  ===========================================================
Click to segment    ``segment``        image, prompts JSON ``{"points", "labels", "box"}``, multimask
Segment everything  ``everything``     image, preset (default/sa1b/proposals), points per side
Detect + segment    ``detect_segment`` image, detector, weights, queries, min score
Text to mask        ``text``           image, phrases, method, weights, CLIP model, threshold
Gaze replay         ``gaze``           gaze CSV (t, x, y[, confidence]), frame images, fps, units
==================  =================  ===========================================================

The model is loaded once per process (``model_source``, else ``$SAMKIT_MODEL``, else the first
known model already cached) and shared by every session behind a lock; each session keeps its
own prompts and image embedding in a ``gr.State``. Without weights the page says how to get them.
Needs ``pip install samkit[demo]``; analytics are off, nothing is fetched from the internet.
"""

import atexit
import functools
import inspect
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python demos/app.py`: make the sibling modules importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "demos"

from samkit.cli.common import find_model_source as resolve_model_source  # noqa: E402

from . import annotate, handlers, prompt_sources  # noqa: E402

h, ps = handlers, prompt_sources

__all__ = ["build_app", "load_service", "resolve_model_source", "main"]

TITLE = "samkit: Segment Anything"
FILE_LIFETIME_S = 3600  # downloads (ours and Gradio's cached copies) are kept this long
_SERVICES: dict[tuple, h.SamService] = {}
_LOAD_LOCK = threading.Lock()
_OUTPUT_ROOT: list[Path] = []


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise ImportError("the samkit demo needs gradio: pip install samkit[demo]") from None
    return gradio


def load_service(source: str, device: str | None = None, dtype: Any = None) -> h.SamService:
    """The process-wide model for (source, device, dtype), loaded on first use only."""
    import torch

    import samkit

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (source, device, str(dtype))
    with _LOAD_LOCK:
        if key not in _SERVICES:
            model = samkit.load_model(source, device=device, dtype=dtype)
            _SERVICES[key] = h.SamService(samkit.Segmenter(model), source)
        return _SERVICES[key]


def _downloads() -> Path:
    """A new folder for one call's download files, under the process's folder (removed at exit).

    Gradio copies returned files into its own cache, so folders older than an hour are dropped.
    """
    if not _OUTPUT_ROOT:
        _OUTPUT_ROOT.append(h.output_root())
        atexit.register(shutil.rmtree, _OUTPUT_ROOT[0], True)
    cutoff = time.time() - FILE_LIFETIME_S
    for old in _OUTPUT_ROOT[0].iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    return h.new_output_folder(_OUTPUT_ROOT[0])


def _private() -> dict[str, Any]:
    """Keyword that keeps a UI-only event out of the API (Gradio 6 ``api_visibility``, older ``show_api``)."""
    gr = _gradio()
    if "api_visibility" in inspect.signature(gr.Button.click).parameters:
        return {"api_visibility": "private"}
    return {"show_api": False}


def _friendly(function: Callable[..., Any]) -> Callable[..., Any]:
    """Show user errors as a Gradio error message instead of a generic failure."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (ValueError, TypeError, OSError, ImportError, RuntimeError) as error:
            raise _gradio().Error(str(error)) from None
    return wrapper


def _no_model_page(gr: Any, source: str | None, problem: str | None) -> None:
    from samkit.weights import cache_dir

    if source is None:
        text = (f"### No SAM weights are available\n\nThis demo needs a Segment Anything checkpoint and found none: "
                f"no `--model` was given, `SAMKIT_MODEL` is not set and the cache folder `{cache_dir()}` holds no "
                "known checkpoint.\n\nDownload one with `samkit download vit_b` (on a machine with internet access), "
                "or restart with `samkit demo --model /path/to/sam_vit_b_01ec64.pth`.")
    else:
        text = (f"### The model could not be loaded\n\n`{source}`: {problem}\n\nRestart with `samkit demo --model "
                "PATH` pointing at a SAM checkpoint, or run `samkit download vit_b` first.")
    gr.Markdown(text, elem_id="model-status")


# -- tabs --------------------------------------------------------------------------------------------
def _click_tab(gr: Any, service: h.SamService) -> None:
    gr.Markdown("Upload an image, then click on it. Green dots are foreground points, red dots background; "
                "a box takes two clicks (opposite corners).")
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="numpy", label="Image (click to add prompts)", sources=["upload", "clipboard"],
                             format="png", elem_id="click-input")
            mode = gr.Radio(list(h.MODES), value=h.MODES[0], label="A click adds", elem_id="click-mode")
            multimask = gr.Checkbox(value=True, label="Three candidate masks (for ambiguous prompts)")
            with gr.Row():
                undo = gr.Button("Undo", elem_id="click-undo")
                reset = gr.Button("Reset", elem_id="click-reset")
            with gr.Accordion("Prompts as JSON", open=False):
                prompts = gr.Textbox(label="Prompts", lines=2, elem_id="click-prompts",
                                     placeholder='{"points": [[x, y]], "labels": [1], "box": null}')
                run = gr.Button("Segment with these prompts", variant="primary")
        with gr.Column():
            overlay = gr.Image(label="Result", format="png", interactive=False, elem_id="click-overlay")
            candidates = gr.Radio(choices=[], label="Candidate masks", elem_id="click-candidates")
            info = gr.Markdown(elem_id="click-info")
            mask_file = gr.File(label="Mask (PNG)")
            coco_file = gr.File(label="COCO JSON")
    state = gr.State(None)
    outputs = [overlay, candidates, mask_file, coco_file, prompts, info, state]

    def show(image_value: Any, session: h.ClickSession) -> tuple:
        view = h.render_click(image_value, session, _downloads())
        return (view.overlay, gr.Radio(choices=view.choices, value=view.choice), view.mask_file, view.coco_file,
                view.prompts_text, view.info, session)

    def need_image(image_value: Any) -> None:
        if image_value is None:
            raise ValueError("upload an image first")

    @_friendly
    def on_upload(image_value, session):
        if image_value is None:
            return None, gr.Radio(choices=[], value=None), None, None, "", "", None
        return show(image_value, h.use_image(service, None, image_value))

    @_friendly
    def on_click(image_value, session, mode_value, multi, evt: gr.SelectData):
        need_image(image_value)
        session = h.use_image(service, session, image_value)
        x, y = evt.index[:2]
        h.add_click(session, x, y, mode_value)
        if session.corner is None:
            h.segment_session(service, session, multi)
        return show(image_value, session)

    @_friendly
    def segment(image_value, prompts_json, multi, session):
        """Segment an image from points (XY pixels, label 1 foreground / 0 background) and an optional box."""
        need_image(image_value)
        session = h.use_image(service, session, image_value)
        h.set_prompts(session, prompts_json)
        h.segment_session(service, session, multi)
        return show(image_value, session)

    @_friendly
    def on_undo(image_value, session, multi):
        need_image(image_value)
        session = h.use_image(service, session, image_value)
        session.undo()
        h.segment_session(service, session, multi)
        return show(image_value, session)

    @_friendly
    def on_reset(image_value, session):
        need_image(image_value)
        session = h.use_image(service, session, image_value)
        session.clear()
        return show(image_value, session)

    @_friendly
    def on_choose(image_value, session, choice):
        need_image(image_value)
        if isinstance(session, h.ClickSession) and session.result is not None and choice is not None:
            session.choice = int(choice)
        return show(image_value, session or h.ClickSession())

    private = _private()
    image.upload(on_upload, [image, state], outputs, **private)
    image.clear(lambda: (None, gr.Radio(choices=[], value=None), None, None, "", "", None), None, outputs, **private)
    image.select(on_click, [image, state, mode, multimask], outputs, **private)
    run.click(segment, [image, prompts, multimask, state], outputs, api_name="segment")
    undo.click(on_undo, [image, state, multimask], outputs, **private)
    reset.click(on_reset, [image, state], outputs, **private)
    candidates.input(on_choose, [image, state, candidates], outputs, **private)


def _everything_tab(gr: Any, service: h.SamService) -> None:
    gr.Markdown("Prompt SAM with a grid of points and keep the good masks (automatic mask generation).")
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="numpy", label="Image", sources=["upload", "clipboard"], format="png")
            preset = gr.Dropdown(list(h.EVERYTHING_PRESETS), value="default", label="Settings",
                                 info="default: segment_anything's; sa1b: the SA-1B data engine's (with crops); "
                                      "proposals: object proposals")
            points = gr.Slider(4, 64, value=32, step=4, label="Points per side")
            run = gr.Button("Segment everything", variant="primary")
        with gr.Column():
            overlay = gr.Image(label="Masks", format="png", interactive=False, elem_id="everything-overlay")
            info = gr.Markdown()
            masks = gr.File(label="Masks (PNG files, zipped)")
            coco = gr.File(label="COCO JSON")

    @_friendly
    def everything(image_value, preset_value, points_per_side):
        """Automatic masks for one image: overlay, summary, masks zip and COCO JSON."""
        if image_value is None:
            raise ValueError("upload an image first")
        return h.run_everything(service, image_value, preset_value, int(points_per_side), _downloads())

    run.click(everything, [image, preset, points], [overlay, info, masks, coco], api_name="everything")


def _detect_tab(gr: Any, service: h.SamService, catalog: ps.Catalog) -> None:
    if not catalog.names:
        gr.Markdown("No detector is available: install one with `pip install samkit[ultralytics]` (YOLO) or "
                    "`pip install samkit[transformers]` (DETR, OWLv2, Grounding DINO).", elem_id="detect-status")
        return
    gr.Markdown("A detector finds boxes; SAM segments each box. Weights are a local file or folder "
                "(names such as `yolov8n.pt` are downloaded by the detector's library when online).")
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="numpy", label="Image", sources=["upload", "clipboard"], format="png")
            detector = gr.Dropdown(catalog.names, value=catalog.names[0], label="Detector")
            weights = gr.Textbox(label="Detector weights (path, folder or name)", placeholder="yolov8n.pt")
            queries = gr.Textbox(label="Text queries (zero-shot detectors), comma-separated",
                                 placeholder="a cat, a remote control")
            score = gr.Slider(0.0, 1.0, value=0.25, step=0.01, label="Minimum detector score")
            run = gr.Button("Detect and segment", variant="primary")
        with gr.Column():
            overlay = gr.Image(label="Objects", format="png", interactive=False, elem_id="detect-overlay")
            table = gr.JSON(label="Objects")
            masks = gr.File(label="Masks (PNG files, zipped)")
            coco = gr.File(label="COCO JSON")

    @_friendly
    def detect_segment(image_value, detector_name, weights_value, queries_value, min_score):
        """Detect objects, then segment each box: overlay, rows, masks zip and COCO JSON."""
        if image_value is None:
            raise ValueError("upload an image first")
        found = ps.get_detector(catalog, detector_name, weights_value, queries_value, float(min_score))
        return ps.run_detect(service, found, image_value, float(min_score), _downloads())

    run.click(detect_segment, [image, detector, weights, queries, score], [overlay, table, masks, coco],
              api_name="detect_segment")


def _text_tab(gr: Any, service: h.SamService, catalog: ps.Catalog) -> None:
    if not catalog.names:
        gr.Markdown("No text-to-mask method is available: install `pip install samkit[transformers]` (grounded "
                    "detectors, SAM 3) or `pip install samkit[clip]` (CLIP).", elem_id="text-status")
        return
    gr.Markdown("Find what the phrases name. Weights: the detector (grounded), the CLIP weights file or tag "
                "(CLIP methods; `none` for random weights) or the SAM 3 folder.")
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="numpy", label="Image", sources=["upload", "clipboard"], format="png")
            phrases = gr.Textbox(label="Phrases, comma-separated", placeholder="a wheel, a grille")
            method = gr.Dropdown(catalog.names, value=catalog.names[0], label="Method")
            weights = gr.Textbox(label="Weights (detector, CLIP or SAM 3)",
                                 placeholder="google/owlv2-base-patch16-ensemble")
            clip_model = gr.Textbox(value="ViT-B-32", label="CLIP model (CLIP methods)")
            threshold = gr.Number(value=None, label="Threshold (empty: the method's default)")
            run = gr.Button("Find", variant="primary")
        with gr.Column():
            overlay = gr.Image(label="Matches", format="png", interactive=False, elem_id="text-overlay")
            table = gr.JSON(label="Masks")
            masks = gr.File(label="Masks (PNG files, zipped)")
            coco = gr.File(label="COCO JSON")

    @_friendly
    def text(image_value, phrases_value, method_name, weights_value, clip_value, threshold_value):
        """Masks matching comma-separated phrases: overlay, rows, masks zip and COCO JSON."""
        if image_value is None:
            raise ValueError("upload an image first")
        pipeline = ps.get_text_pipeline(catalog, method_name, weights_value, clip_value, threshold_value)
        return ps.run_text(service, pipeline, image_value, phrases_value, _downloads())

    run.click(text, [image, phrases, method, weights, clip_model, threshold], [overlay, table, masks, coco],
              api_name="text")


def _gaze_tab(gr: Any, service: h.SamService) -> None:
    gr.Markdown("Replay an eye-tracking recording: fixations become point prompts on the frames they span; the "
                "mask is carried from frame to frame while the gaze stays on the object.")
    with gr.Row():
        with gr.Column():
            csv = gr.File(label="Gaze CSV: t (s), x, y[, confidence]", file_types=[".csv", ".txt"], type="filepath")
            frames = gr.File(label="Frames (images, in time order by name)", file_count="multiple",
                             file_types=["image"], type="filepath")
            fps = gr.Number(value=30, label="Frames per second (frame i is at i / fps on the gaze clock)")
            units = gr.Radio(["pixels", "normalized"], value="pixels", label="Gaze coordinates")
            run = gr.Button("Replay", variant="primary")
        with gr.Column():
            gallery = gr.Gallery(label="Frames", columns=4, elem_id="gaze-gallery")
            info = gr.Markdown()
            masks = gr.File(label="Masks (one PNG per frame, zipped)")
            coco = gr.File(label="COCO JSON")

    @_friendly
    def gaze(csv_path, frame_paths, fps_value, units_value):
        """Segment the gazed-at object in each frame: overlays, summary, masks zip and COCO JSON."""
        return ps.run_gaze(service, csv_path, list(frame_paths or []), float(fps_value or 0), units_value,
                          _downloads())

    run.click(gaze, [csv, frames, fps, units], [gallery, info, masks, coco], api_name="gaze")


def build_app(model_source: str | None = None, *, device: str | None = None, dtype: Any = None,
              detectors: dict[str, Any] | None = None,
              phrase_detectors: dict[str, Callable[..., Any]] | None = None, project: Any = None,
              author: str | None = None) -> Any:
    """The demo as a ``gr.Blocks`` (not launched).

    Args:
        model_source: checkpoint path, Hugging Face folder or known name; default
            ``$SAMKIT_MODEL``, else the first known model already cached.
        device: torch device (default: cuda when available, else cpu).
        dtype: model dtype, e.g. ``torch.bfloat16`` (default: the checkpoint's float32).
        detectors: ready-made detectors offered first in the detect tab, ``{name: detector}``
            (anything :func:`samkit.adapters.base.as_prompt_source` accepts).
        phrase_detectors: ready-made detectors for the text tab, ``{name: (image, phrases) ->
            (boxes, scores, labels)}``, used with the grounded strategy.
        project: an annotation project (a ``samkit.engine.projects.Project``, its folder or its
            .sqlite file): adds the Annotate tab first (see :mod:`annotate`).
        author: the Annotate tab's default annotator name (default: the login name).

    Returns:
        The Blocks; ``.launch()`` it. Without loadable weights it holds only a message saying so.
    """
    gr = _gradio()
    source = resolve_model_source(model_source)
    service, problem = None, None
    if source is not None:
        try:
            service = load_service(source, device, dtype)
        except Exception as error:  # shown on the page: the demo must not fail to start
            problem = f"{type(error).__name__}: {error}"
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(FILE_LIFETIME_S, FILE_LIFETIME_S)) as app:
        gr.Markdown(f"# {TITLE}")
        if service is None:
            _no_model_page(gr, source, problem)
            return app
        gr.Markdown(f"Model `{service.source}` on `{service.segmenter.device}`.", elem_id="model-status")
        with gr.Tabs():
            if project is not None:
                with gr.Tab("Annotate", id="annotate"):
                    annotate.build_tab(gr, service, annotate.open_project(project), app=app, author=author,
                                       private=_private())
            with gr.Tab("Click to segment", id="click"):
                _click_tab(gr, service)
            with gr.Tab("Segment everything", id="everything"):
                _everything_tab(gr, service)
            with gr.Tab("Detect then segment", id="detect"):
                _detect_tab(gr, service, ps.detector_catalog(detectors))
            if ps.text_available():
                with gr.Tab("Text to mask", id="text"):
                    _text_tab(gr, service, ps.text_catalog(service, phrase_detectors))
            with gr.Tab("Gaze replay", id="gaze"):
                _gaze_tab(gr, service)
    return app


def main(argv: list[str] | None = None) -> int:
    """``python -m demos.app [samkit demo options]``: the same as ``samkit demo``."""
    from samkit.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
