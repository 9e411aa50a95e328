"""A Label Studio ML backend on a samkit Segmenter (FastAPI; ``pip install samkit[serve]``).

    >>> app = create_app(segmenter, root="images/", project="images/")      # doctest: +SKIP
    >>> serve(segmenter, port=9090, root="images/")                         # doctest: +SKIP

Endpoints (Label Studio's ML-backend protocol):

* ``GET /health`` -> ``{"status": "UP", "model_version", ...}``;
* ``POST /setup`` (``{"project", "schema", ...}``) -> ``{"model_version"}``; a label config sent
  here is remembered for ``/predict`` requests without one;
* ``POST /predict`` (``{"tasks", "label_config", "params": {"context": ...}}``) -> ``{"results":
  [{"result": [brushlabels region], "score", "model_version"}], "model_version"}``; the
  interactive context (smart ``keypointlabels`` with ``is_positive``, ``rectanglelabels``) is
  one prompt: every point plus the newest rectangle. No context: no results;
* ``POST /webhook``: ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` / ``ANNOTATIONS_DELETED``
  stored in the samkit project (see :mod:`.webhook`); other events are acknowledged and ignored.

Task images are files under ``root`` (see :func:`.protocol.resolve_image`); nothing is fetched
from the network. Each image's embedding is cached (least recently used dropped), so further
clicks on one task run the decoder only. Every bad request gets a 4xx JSON ``{"detail": message}``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from samkit.formats.label_studio import brush_result

from .protocol import (BrushConfig, InteractivePrompt, PayloadError, parse_context, parse_label_config, require,
                       resolve_image, task_image_reference)

__all__ = ["LabelStudioBackend", "create_app", "segment_prompt", "serve"]

logger = logging.getLogger(__name__)

#: The largest request body read (bytes); brush masks of big images make long webhooks.
MAX_BODY_BYTES = 256 * 1024 * 1024
SERVE_EXTRA = "pip install samkit[serve]"


def _import_fastapi() -> Any:
    try:
        import fastapi
    except ImportError as error:
        raise ImportError(f"the Label Studio backend needs FastAPI and uvicorn ({error.name} is missing): "
                          f"{SERVE_EXTRA}") from None
    return fastapi


def _as_segmenter(segmenter_or_model: Any) -> Any:
    import samkit

    if isinstance(segmenter_or_model, samkit.Segmenter):
        return segmenter_or_model
    if isinstance(segmenter_or_model, (str, os.PathLike)):
        return samkit.Segmenter(samkit.load_model(segmenter_or_model))
    return samkit.Segmenter(segmenter_or_model)  # a SAM model; TypeError for anything else


def segment_prompt(segmenter: Any, embedding: Any, prompt: InteractivePrompt) -> tuple[np.ndarray, float]:
    """The mask (bool (H, W)) and predicted IoU for one interactive prompt.

    All points and the box form one prompt. A single point alone is ambiguous: the three
    multimask outputs are made and the best-scoring kept; with more points or a box the
    single-mask output is used (SAM's recommended settings).
    """
    fields: dict[str, Any] = {}
    if prompt.points:
        fields["points"] = np.asarray(prompt.points, dtype=np.float32)
        fields["labels"] = np.asarray(prompt.point_labels, dtype=np.int64)
    if prompt.box is not None:
        fields["boxes"] = np.asarray(prompt.box, dtype=np.float32)
    multimask = prompt.box is None and len(prompt.points) == 1
    out = segmenter.segment(embedding, multimask=multimask, best_only=True, return_logits=False, **fields)
    return out.masks[0, 0], float(out.scores[0, 0])


class LabelStudioBackend:
    """The backend's work, without the web framework (the FastAPI app calls these methods).

    Args:
        segmenter: a :class:`samkit.Segmenter`, a SAM model, or a checkpoint / known model name.
        root: the folder task images are resolved in (default the current folder).
        project: a samkit project (an open ``Project`` or its folder) for ``/webhook``; None
            refuses webhooks with 409.
        model_version: reported to Label Studio; default the project's current model version,
            else ``samkit-<model fingerprint>``.
        cache_size: image embeddings kept.
    """

    def __init__(self, segmenter: Any, *, root: str | os.PathLike = ".", project: Any = None,
                 model_version: str | None = None, cache_size: int = 8) -> None:
        self.segmenter = _as_segmenter(segmenter)
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise NotADirectoryError(f"root must be a folder, got {root}")
        self._owns_project = project is not None and not hasattr(project, "add_annotation")
        self.project = self._open_project(project)
        if model_version is None and self.project is not None and self.project.current_model() is not None:
            model_version = self.project.current_model().version
        self.model_version = model_version or f"samkit-{self.segmenter.model_fingerprint}"
        self.cache_size = cache_size
        self.label_config: BrushConfig | None = None
        self.stats = {"encoded": 0, "cache_hits": 0}
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._sync = None
        if self.project is not None:
            from .webhook import AnnotationSync

            self._sync = AnnotationSync(self.project, root=self.root, model_version=self.model_version)

    @staticmethod
    def _open_project(project: Any) -> Any:
        if project is None or hasattr(project, "add_annotation"):
            return project
        from samkit.engine.projects import Project

        return Project.open(project)

    # -- endpoints -----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return {"status": "UP", "model_class": "samkit.Segmenter", "model_version": self.model_version,
                "project": None if self.project is None else str(self.project.root),
                "embeddings_cached": len(self._cache)}

    def setup(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /setup``: remembers the label config (``schema``) when one is sent."""
        if not isinstance(payload, Mapping):
            raise PayloadError(f"setup request must be a JSON object, got {type(payload).__name__}")
        schema = payload.get("schema") or payload.get("label_config")
        if schema:
            self.label_config = parse_label_config(schema)
        return {"model_version": self.model_version}

    def predict(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /predict``: one brush mask for the interactive context, or no results."""
        tasks = require(payload, "tasks", list, "predict request")
        if not tasks:
            raise PayloadError("predict request: 'tasks' is empty (expected at least one task)")
        for index, task in enumerate(tasks):
            if not isinstance(task, Mapping):
                raise PayloadError(f"predict request: tasks[{index}] must be an object, got {type(task).__name__}")
        params = payload.get("params") or {}
        if not isinstance(params, Mapping):
            raise PayloadError(f"predict request: 'params' must be an object, got {type(params).__name__}")
        context = params.get("context", payload.get("context"))
        prompt = parse_context(context)
        if prompt is None:
            return {"results": [], "model_version": self.model_version}
        if len(tasks) != 1:
            raise PayloadError(f"an interactive context belongs to one task, got {len(tasks)} tasks")
        config = self._config(payload.get("label_config"))
        path = resolve_image(task_image_reference(tasks[0], config, "tasks[0]"), self.root)
        embedding = self.embedding(path)
        height, width = embedding.original_size
        if (prompt.width, prompt.height) != (width, height):
            raise PayloadError(f"the context was made on a {prompt.width} x {prompt.height} image; {path.name} is "
                               f"{width} x {height}")
        mask, score = segment_prompt(self.segmenter, embedding, prompt)
        label = prompt.label if prompt.label in config.labels or not config.labels else config.labels[0]
        region = brush_result(mask, from_name=config.from_name, to_name=config.to_name, label=label, score=score)
        return {"results": [{"result": [region], "score": score, "model_version": self.model_version}],
                "model_version": self.model_version}

    def webhook(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /webhook``: annotation events into the project; others acknowledged."""
        from .webhook import DELETED_ACTION, STORED_ACTIONS

        action = require(payload, "action", str, "webhook")
        if action not in STORED_ACTIONS + (DELETED_ACTION,):
            return {"action": action, "status": "ignored"}
        if self._sync is None:
            raise PayloadError("no samkit project to store annotations in: start the backend with --project DIR "
                               "(create one with `samkit project init DIR`)", status=409)
        config = self.label_config
        project_info = payload.get("project")
        if isinstance(project_info, Mapping) and isinstance(project_info.get("label_config"), str):
            config = parse_label_config(project_info["label_config"])
        return {"status": "stored", **self._sync.handle(action, payload, config)}

    # -- helpers -------------------------------------------------------------------------------
    def _config(self, label_config: Any) -> BrushConfig:
        if label_config is not None:
            return parse_label_config(label_config)
        if self.label_config is not None:
            return self.label_config
        raise PayloadError("predict request has no 'label_config' and /setup sent none; the backend needs the "
                           "<BrushLabels> and <Image> names")

    def embedding(self, path: Path) -> Any:
        """The image's embedding, from the cache when the file is unchanged."""
        from samkit.transforms import load_image

        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.stats["cache_hits"] += 1
                return cached
        try:
            image = load_image(path)
        except (OSError, ValueError) as error:
            raise PayloadError(f"image {path.name} cannot be read: {error}") from None
        embedding = self.segmenter.encode(image)
        with self._lock:
            self.stats["encoded"] += 1
            self._cache[key] = embedding
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return embedding

    def close(self) -> None:
        """Close the webhook's link database (a project given by path is closed too)."""
        if self._sync is not None:
            self._sync.close()
        if self._owns_project:
            self.project.close()


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"request body holds {name}, which JSON does not allow (coordinates must be finite)")


def create_app(segmenter_or_model: Any, *, root: str | os.PathLike = ".", project: Any = None,
               model_version: str | None = None) -> Any:
    """The FastAPI app of a :class:`LabelStudioBackend` (arguments as there).

    Raises:
        ImportError: FastAPI is not installed (``pip install samkit[serve]``).
    """
    fastapi = _import_fastapi()
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    backend = LabelStudioBackend(segmenter_or_model, root=root, project=project, model_version=model_version)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        backend.close()

    app = fastapi.FastAPI(title="samkit Label Studio ML backend", version=backend.model_version, lifespan=lifespan)
    app.state.backend = backend

    async def body_of(request: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise PayloadError(f"request body of {length} bytes is over the {MAX_BODY_BYTES} accepted", status=413)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadError(f"request body of {len(raw)} bytes is over the {MAX_BODY_BYTES} accepted", status=413)
        try:
            return json.loads(raw or b"{}", parse_constant=_reject_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PayloadError(f"request body must be JSON: {error}") from None
        except RecursionError:
            raise PayloadError("request body is nested too deeply") from None

    @app.exception_handler(PayloadError)
    async def payload_error(request: Any, error: PayloadError) -> Any:
        logger.info("%s %s -> %d: %s", request.method, request.url.path, error.status, error)
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    def endpoint(method: Any) -> Any:
        async def handle(request):  # type: ignore[no-untyped-def]
            payload = await body_of(request)
            if not isinstance(payload, dict):
                raise PayloadError(f"request body must be a JSON object, got {type(payload).__name__}")
            return await run_in_threadpool(method, payload)

        handle.__annotations__ = {"request": fastapi.Request}  # FastAPI injects the request by this type
        return handle

    app.get("/health")(lambda: backend.health())
    app.get("/")(lambda: backend.health())
    app.post("/setup")(endpoint(backend.setup))
    app.post("/predict")(endpoint(backend.predict))
    app.post("/webhook")(endpoint(backend.webhook))
    return app


def serve(segmenter_or_model: Any, *, host: str = "127.0.0.1", port: int = 9090, root: str | os.PathLike = ".",
          project: Any = None, model_version: str | None = None, log_level: str = "info") -> None:
    """Run the backend with uvicorn until interrupted; binds to 127.0.0.1 unless told otherwise."""
    app = create_app(segmenter_or_model, root=root, project=project, model_version=model_version)
    try:
        import uvicorn
    except ImportError:
        raise ImportError(f"the Label Studio backend needs uvicorn to serve: {SERVE_EXTRA}") from None
    uvicorn.run(app, host=host, port=port, log_level=log_level)
