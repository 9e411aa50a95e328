"""Model servers for labelling tools: the Label Studio ML backend.

    >>> from samkit.engine.serve import create_app, serve                  # doctest: +SKIP
    >>> serve("vit_b", root="images/", project="images/", port=9090)       # doctest: +SKIP

:mod:`.label_studio` (the FastAPI app and :class:`LabelStudioBackend`), :mod:`.protocol`
(reading Label Studio's requests), :mod:`.webhook` (annotations into a samkit project). FastAPI
and uvicorn are imported only when an app is made (``pip install samkit[serve]``).
"""
from .label_studio import LabelStudioBackend, create_app, segment_prompt, serve
from .protocol import BrushConfig, InteractivePrompt, PayloadError, parse_context, parse_label_config, resolve_image

__all__ = ["BrushConfig", "InteractivePrompt", "LabelStudioBackend", "PayloadError", "create_app", "parse_context",
           "parse_label_config", "resolve_image", "segment_prompt", "serve"]
