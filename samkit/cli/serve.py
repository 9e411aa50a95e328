"""``samkit serve ...``: model servers for labelling tools.

    samkit serve label-studio --model vit_b --root /data/images --project /data/images --port 9090

``label-studio`` runs the Label Studio ML backend (:mod:`samkit.engine.serve`) with uvicorn until
Ctrl-C, on 127.0.0.1 unless ``--host`` says otherwise (``pip install samkit[serve]``).
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from samkit.cli.common import UsageError, load_segmenter

__all__ = ["add_commands", "run_label_studio"]


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the ``serve`` command group on the ``samkit`` sub-parsers."""
    group = commands.add_parser("serve", parents=parents, help="model servers for labelling tools "
                                "(pip install samkit[serve])",
                                description="Serve the model to a labelling tool until Ctrl-C.")
    servers = group.add_subparsers(dest="server", metavar="SERVER", required=True)
    p = servers.add_parser("label-studio", parents=parents, help="Label Studio ML backend (interactive brush masks)",
                           description="Label Studio ML backend: smart keypoints and rectangles in, brush masks out; "
                                       "annotation webhooks stored in a samkit project. Task images are read from "
                                       "--root (never fetched from other hosts).")
    p.add_argument("--model", metavar="NAME|PATH", help="checkpoint file, Hugging Face folder or known name")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=9090, help="port (default: 9090)")
    p.add_argument("--root", default=".", metavar="DIR",
                   help="folder task images are resolved in, Label Studio's local-files document root "
                        "(default: the current folder)")
    p.add_argument("--project", metavar="DIR", help="samkit project that /webhook stores annotations in")
    p.add_argument("--model-version", metavar="TEXT", help="version reported to Label Studio (default: the "
                   "project's current model, else samkit-<model fingerprint>)")
    p.set_defaults(func=run_label_studio, parser=p)


def _check_installed() -> None:
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"samkit serve label-studio needs {' and '.join(missing)}: pip install samkit[serve]")


def run_label_studio(args: argparse.Namespace) -> int:
    """``samkit serve label-studio``: load the model, serve until interrupted."""
    if not 0 < args.port < 65536:
        raise UsageError(f"--port expects 1-65535, got {args.port}")
    if not Path(args.root).is_dir():
        raise UsageError(f"--root expects a folder, got {args.root}")
    _check_installed()  # before the model loads: says how to install
    from samkit.engine.serve import serve

    segmenter = load_segmenter(args)
    if not args.quiet:
        print(f"samkit Label Studio backend on http://{args.host}:{args.port} (root {Path(args.root).resolve()}"
              + (f", project {args.project}" if args.project else "") + "; Ctrl-C to stop)", flush=True)
    serve(segmenter, host=args.host, port=args.port, root=args.root, project=args.project,
          model_version=args.model_version, log_level="warning" if args.quiet else "info")
    return 0
