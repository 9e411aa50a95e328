"""The demo's Annotate tab: stage 1 of the data engine (assisted-manual annotation) over a project.

Start it with ``samkit demo --project DIR [--author NAME]``. The tab walks the project's images
(:meth:`Project.next_image`): point prompts (foreground / background) and a box (two clicks) are
decoded on the image's cached embedding; the brush and the eraser of the mask editor correct the
mask pixel by pixel; Accept stores it (one :meth:`Project.add_annotation` call, one transaction);
Undo withdraws your newest mask on the image (:meth:`Project.undo_last`); Next marks the image
done and loads the next one. Stage-2 pre-filled masks (status ``pending``) are listed for
accept / reject (:meth:`Project.set_status`).

This module holds :func:`build_tab`, the Gradio components and events; the handlers, the
per-session state and the correction rule (``mask = (sam | brushed) & ~erased``) are plain
Python in :mod:`.annotate_state`, re-exported here. No ``from __future__ import annotations``
in this module: Gradio finds the ``evt: gr.SelectData`` parameter of the click handler from its
annotation at run time, which a string annotation naming the local ``gr`` cannot give.
"""

import functools
from typing import Any, Callable

from . import handlers as h
from .annotate_state import ACCEPTED_COLOR, LAYER_ALPHA, PREFILL_COLOR  # noqa: F401
from .annotate_state import (
    MASK_COLOR,
    OPAQUE,
    AnnotateSession,
    _edits_json,
    _info,
    _pending_choices,
    accept,
    clear_object,
    click,
    current_mask,
    decide_prefill,
    default_author,
    editor_value,
    fold_edits,
    load_next,
    model_version_for,
    next_image,
    open_project,
    overlay,
    read_layer,
    undo,
)

__all__ = ["OPAQUE", "SHORTCUTS", "AnnotateSession", "accept", "build_tab", "clear_object", "click",
           "current_mask", "decide_prefill", "default_author", "editor_value", "fold_edits", "load_next",
           "model_version_for", "next_image", "open_project", "overlay", "read_layer", "undo"]

BRUSH_RADIUS, ERASER_RADIUS = 4, 6  # image pixels; the editor's "Brush Size" button changes them
SHORTCUTS = {"a": "accept", "n": "next", "z": "undo", "c": "clear", "1": "positive", "2": "negative",
             "3": "box"}
SHORTCUTS_JS = """
if (!window.samkitAnnotateKeys) {
  window.samkitAnnotateKeys = true;
  const targets = {a: '#annotate-accept', n: '#annotate-next', z: '#annotate-undo', c: '#annotate-clear'};
  document.addEventListener('keydown', (event) => {
    const t = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || (t && (t.isContentEditable ||
        ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName)))) return;
    const accept = document.querySelector('#annotate-accept');
    if (!accept || accept.offsetParent === null) return;  // the Annotate tab is not shown
    const key = event.key.toLowerCase();
    if (targets[key]) { document.querySelector(targets[key]).click(); event.preventDefault(); }
    else if (['1', '2', '3'].includes(key)) {
      const radios = document.querySelectorAll('#annotate-mode input[type=radio]');
      if (radios[Number(key) - 1]) { radios[Number(key) - 1].click(); event.preventDefault(); }
    }
  });
}
"""


def _friendly(function: Callable[..., Any]) -> Callable[..., Any]:
    """Show user errors as a Gradio error message (a toast) instead of a generic failure."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (ValueError, KeyError, TypeError, OSError, RuntimeError) as error:
            import gradio

            raise gradio.Error(str(error).strip("'\"")) from None
    return wrapper


def build_tab(gr: Any, service: h.SamService, project: Any, *, app: Any, author: str | None = None,
              private: dict[str, Any] | None = None) -> None:
    """The Annotate tab's components and events, inside the caller's ``gr.Tab``.

    Args:
        gr: the gradio module.
        service: the process's model.
        project: an open :class:`samkit.engine.projects.Project`.
        app: the enclosing ``gr.Blocks`` (its load event shows each session's first image).
        author: the default annotator name (each session may change it).
        private: keyword that keeps UI events out of the API.
    """
    private = private or {}
    version = model_version_for(project, service.source)
    keys = ", ".join(f"`{k}` {v}" for k, v in SHORTCUTS.items())
    gr.Markdown("Click the left image to prompt SAM (points, or a box by two corners); correct the mask with "
                "the brush (adds pixels) and the eraser (removes pixels) on the right; Accept saves it. "
                "Grey: accepted masks, yellow: the pre-filled mask under review, blue: the mask in progress.")
    gr.HTML(f"<p>Keyboard shortcuts (outside text fields): {keys}.</p>", js_on_load=SHORTCUTS_JS,
            elem_id="annotate-shortcuts")
    with gr.Row():
        with gr.Column():
            picture = gr.Image(type="numpy", label="Click to prompt", interactive=False, format="png",
                               elem_id="annotate-image")
            mode = gr.Radio(list(h.MODES), value=h.MODES[0], label="A click adds", elem_id="annotate-mode")
        with gr.Column():
            editor = gr.ImageEditor(type="numpy", image_mode="RGBA", format="png", label="Correct the mask",
                                    sources=(), transforms=(), canvas_size=(16, 16), elem_id="annotate-editor",
                                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["mask"]),
                                    brush=gr.Brush(default_size=BRUSH_RADIUS, colors=[f"rgb{MASK_COLOR}"],
                                                   color_mode="fixed"),
                                    eraser=gr.Eraser(default_size=ERASER_RADIUS))
    with gr.Row():
        label = gr.Textbox(value="object", label="Label", elem_id="annotate-label", scale=2)
        who = gr.Textbox(value=author or default_author(), label="Annotator", elem_id="annotate-author", scale=1)
    with gr.Row():
        accept_button = gr.Button("Accept (a)", variant="primary", elem_id="annotate-accept")
        undo_button = gr.Button("Undo (z)", elem_id="annotate-undo")
        clear_button = gr.Button("Clear (c)", elem_id="annotate-clear")
        next_button = gr.Button("Next image (n)", elem_id="annotate-next")
    with gr.Row():
        prefill = gr.Radio(choices=[], label="Pre-filled masks (stage 2)", elem_id="annotate-prefill")
        accept_prefill = gr.Button("Accept pre-filled", elem_id="annotate-prefill-accept")
        reject_prefill = gr.Button("Reject pre-filled", elem_id="annotate-prefill-reject")
    info = gr.Markdown(elem_id="annotate-info")
    edits = gr.Textbox(visible="hidden", elem_id="annotate-edits", label="object in progress (RLE)")
    state = gr.State(None)
    outputs = [picture, editor, prefill, info, edits, state]

    def view(session: AnnotateSession) -> tuple:
        choices = _pending_choices(project, session)
        return (overlay(project, session), None, gr.Radio(choices=choices, value=session.review),
                _info(project, session), _edits_json(session), session)

    def session_of(session: Any, name: str) -> AnnotateSession:
        session = session if isinstance(session, AnnotateSession) else AnnotateSession()
        session.author = (name or "").strip() or session.author
        return session

    @_friendly
    def on_load(session, name):
        session = session_of(session, name)
        return view(session if session.record is not None else load_next(service, project, session))

    @_friendly
    def on_click(session, name, mode_value, value, evt: gr.SelectData):
        session = session_of(session, name)
        session.message = ""
        return view(click(service, session, *evt.index[:2], mode_value, value))

    @_friendly
    def on_accept(session, name, label_value, value):
        session = session_of(session, name)
        accept(project, session, label_value, value, model_version=version)
        return view(session)

    def simple(action: Callable[[AnnotateSession], Any]) -> Callable[..., tuple]:
        @_friendly
        def run(session, name, value):
            session = session_of(session, name)
            fold_edits(session, value)  # corrections not yet seen stay with the object in progress
            action(session)
            return view(session)
        return run

    @_friendly
    def on_review(session, choice, value):
        session = session_of(session, "")
        fold_edits(session, value)
        session.review = None if choice is None else int(choice)
        return view(session)

    def show_editor(session):  # second step: the editor was cleared, so its canvas takes the image's size
        if not isinstance(session, AnnotateSession):
            return None, "{}", session
        value = editor_value(session)
        return value, _edits_json(session), session

    def wire(event: Any) -> None:
        event.then(show_editor, [state], [editor, edits, state], **private)

    wire(app.load(on_load, [state, who], outputs, **private))
    wire(picture.select(on_click, [state, who, mode, editor], outputs, **private))
    wire(accept_button.click(on_accept, [state, who, label, editor], outputs, **private))
    wire(prefill.input(on_review, [state, prefill, editor], outputs, **private))
    actions = {undo_button: lambda s: undo(project, s), clear_button: clear_object,
               next_button: lambda s: next_image(service, project, s),
               accept_prefill: lambda s: decide_prefill(project, s, "accepted"),
               reject_prefill: lambda s: decide_prefill(project, s, "rejected")}
    for button, action in actions.items():
        wire(button.click(simple(action), [state, who, editor], outputs, **private))
