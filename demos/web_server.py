"""Serve the client-side decoder page (``demos/web/``) for one image: ``samkit demo --web``.

:func:`prepare` exports what the page needs into a folder (``decoder.onnx``, ``embedding.npy``,
the image as PNG, ``model.json``); :func:`make_server` serves the page, its ``node_modules``
(onnxruntime-web, installed with ``npm ci --prefix demos/web``) and that folder under
``/data/`` on localhost. Nothing is fetched from the internet, by the server or by the page.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import posixpath
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

__all__ = ["WEB_ROOT", "check_installed", "make_server", "prepare"]

#: The page's folder: index.html, app.js, npy.js, package.json, package-lock.json, node_modules/.
WEB_ROOT = Path(__file__).resolve().parent / "web"
_RUNTIME = Path("node_modules") / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"


def check_installed(root: Path = WEB_ROOT) -> None:
    """FileNotFoundError saying how to install onnxruntime-web when ``root/node_modules`` lacks it."""
    if not (root / "index.html").is_file():
        raise FileNotFoundError(f"the web page is not in this installation ({root / 'index.html'} is missing); "
                                "run `samkit demo --web` from a source checkout")
    if not (root / _RUNTIME).is_file():
        raise FileNotFoundError(f"onnxruntime-web is not installed for the web page ({root / _RUNTIME} is missing): "
                                f"run `npm ci --prefix {root}` (Node.js and npm needed; nothing else is fetched)")


def prepare(model: Any, image: Any, folder: str | os.PathLike, *, single_mask: bool = True) -> dict[str, Any]:
    """Export the decoder, the image's embedding and ``model.json`` into ``folder`` for the page.

    Args:
        model: a samkit SAM model (its ``config`` names the shapes); SAM's decoder (not HQ-SAM's,
            whose decoder also needs the encoder's early features).
        image: the image (path, array or PIL image), saved as ``image.png``.
        folder: output folder (created when absent).
        single_mask: export Meta's single-mask decoder, as Meta's demo page runs (default): it
            upsamples one mask per click instead of four, the same mask the page picks from four
            (Meta's rule). False: all four outputs (the page handles both).

    Returns:
        The ``model.json`` content.
    """
    from PIL import Image

    from samkit.export import export_decoder, write_embedding
    from samkit.transforms import to_rgb_uint8

    config = getattr(model, "config", None)
    if config is not None and config.decoder_kind != "sam":
        raise ValueError(f"the web page runs SAM's decoder on an image embedding; this model's decoder_kind is "
                         f"{config.decoder_kind!r} (HQ-SAM's decoder also needs the encoder's early features, "
                         "which the page does not load); use a SAM or MobileSAM model")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"web page data folder {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    rgb = to_rgb_uint8(image)
    Image.fromarray(rgb).save(folder / "image.png")
    export_decoder(model, folder / "decoder.onnx", single_mask=single_mask)
    write_embedding(model, rgb, folder / "embedding.npy")
    grid = config.embedding_size
    page = {"decoder": "decoder.onnx", "image": "image.png", "embedding": "embedding.npy",
            "image_size": config.image_size, "embedding_shape": [1, config.prompt_embed_dim, grid, grid],
            "mask_input_size": 4 * grid, "image_shape": list(rgb.shape[:2])}
    (folder / "model.json").write_text(json.dumps(page, indent=1), encoding="utf-8")
    return page


class _PageHandler(SimpleHTTPRequestHandler):
    """Files of the page root, and ``/data/...`` from the prepared folder; nothing outside them."""

    data_folder: Path = Path(".")
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".npy": "application/octet-stream",
                      ".onnx": "application/octet-stream"}

    def translate_path(self, path: str) -> str:
        parts = [p for p in posixpath.normpath(unquote(urlsplit(path).path)).split("/") if p and p != ".."]
        if parts and parts[0] == "data":
            return str(self.data_folder.joinpath(*parts[1:]))
        return str(Path(self.directory).joinpath(*parts))

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        # Cross-origin isolation: the page may then run onnxruntime-web's multithreaded wasm
        # (SharedArrayBuffer); every file is served from this origin, so nothing is blocked.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # requests go to the debug log, not stderr
        logger.debug("%s - %s", self.address_string(), format % args)


def make_server(data_folder: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                root: Path = WEB_ROOT) -> ThreadingHTTPServer:
    """An HTTP server for the page (``root``) and ``data_folder`` at ``/data/``; port 0 picks a free one.

    Call ``serve_forever()`` on it (``server.server_address`` gives the port).
    """
    check_installed(root)
    handler = type("PageHandler", (_PageHandler,), {"data_folder": Path(data_folder).resolve()})
    return ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(root)))
