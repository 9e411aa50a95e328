"""``samkit demo``: the Gradio demo in this process, or (``--web``) the client-side decoder page."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from samkit.cli.common import UsageError, find_model_source, load_segmenter, precision_dtype, select_device

__all__ = ["add_commands", "load_demo_module", "run_demo", "run_web_demo"]


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``demo`` on the ``samkit`` sub-parsers."""
    p = commands.add_parser("demo", parents=parents, help="launch the Gradio demo (pip install samkit[demo])",
                            description="Launch the Gradio demo in this process until Ctrl-C. The model comes "
                                        "from --model, else $SAMKIT_MODEL, else a cached known model; without "
                                        "one the page says how to get one.")
    p.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    p.add_argument("--web", action="store_true",
                   help="serve the static page instead: IMAGE's embedding and the ONNX decoder run in the browser "
                        "with onnxruntime-web (pip install samkit[onnx]; npm ci --prefix demos/web)")
    p.add_argument("--project", metavar="DIR",
                   help="an annotation project (samkit project init DIR): adds the Annotate tab; without "
                        "--model the project's newest registered model is used")
    p.add_argument("--author", metavar="NAME", help="the Annotate tab's default annotator name (default: login name)")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="with --web: the image to segment in the page")
    p.set_defaults(func=run_demo, parser=p)


def load_demo_module(module: str = "app") -> Any:
    """A demo module (default the Gradio ``app``): ``samkit.demos.<module>`` when installed so, else
    ``demos/<module>.py`` of the checkout."""
    try:
        return importlib.import_module(f"samkit.demos.{module}")
    except ModuleNotFoundError as error:
        if error.name not in ("samkit.demos", f"samkit.demos.{module}"):
            raise
    folder = Path(__file__).resolve().parents[2] / "demos"  # the checkout's demos/ beside samkit/
    if not (folder / f"{module}.py").is_file():
        raise FileNotFoundError(f"the demo (demos/{module}.py) is not part of this samkit installation; run "
                                "`samkit demo` from a source checkout installed with pip install -e .[demo]")
    name = "samkit_demos"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.{module}")


def run_demo(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port expects 1-65535, got {args.port}")
    if args.web and (args.project or args.author):
        raise UsageError("--project and --author go with the Gradio demo, not --web")
    if args.web:
        return run_web_demo(args)
    if args.image is not None:
        raise UsageError("IMAGE goes with --web (the Gradio demo takes images in the page)")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    project, model = None, args.model
    if args.project is not None:
        from samkit.engine.projects.store import Project

        project = Project.open(args.project)  # a clear error when DIR is not a project
        current = project.current_model()
        if model is None and current is not None:
            model = str(current.checkpoint)
    app_module = load_demo_module()
    model = find_model_source(model)  # None: the page explains how to get weights
    app = app_module.build_app(model, device=select_device(args.device), dtype=precision_dtype(args.precision),
                               project=project, author=args.author)
    if not args.quiet:
        print(f"samkit demo on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, quiet=args.quiet)
    return 0


def run_web_demo(args: argparse.Namespace) -> int:
    """``samkit demo --web IMAGE``: export the decoder and IMAGE's embedding, serve the page until Ctrl-C."""
    import tempfile

    if args.image is None:
        raise UsageError("--web needs IMAGE, the image to segment in the page")
    if args.share:
        raise UsageError("--share is the Gradio demo's; the web page is served on this machine only")
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"image file not found: {args.image}")
    server_module = load_demo_module("web_server")
    server_module.check_installed()  # before the export: says how to install onnxruntime-web
    segmenter = load_segmenter(args)
    with tempfile.TemporaryDirectory(prefix="samkit-web-") as folder:
        if not args.quiet:
            print("exporting the decoder and the image embedding...", flush=True)
        server_module.prepare(segmenter.model, args.image, folder)
        server = server_module.make_server(folder, host=args.host, port=args.port)
        if not args.quiet:
            print(f"samkit web demo on http://{args.host}:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    return 0
