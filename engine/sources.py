"""Job inputs: list image paths in the driver, decode them in the workers.

A source is one of:

* a folder, searched recursively (hidden files and folders skipped);
* a glob (``"photos/**/*.jpg"``; ``**`` spans folders);
* a text file of paths (``.txt`` / ``.lst``), one per line, blank lines and ``#`` comments
  skipped; relative paths are relative to the list's folder; lines may be URIs;
* a URI that :mod:`pyarrow.fs` reads (``s3://bucket/prefix``, ``gs://...``, ``file:///...``):
  a prefix (searched recursively), one image, or a list file;
* one image file.

Each input gets a ``file_name``: its path relative to the source's root (a folder, a glob's
fixed leading folders, a list file's folder), with ``/`` separators. It names the input's output
file and its stable image id, so it must not change between runs of the same source.
"""
from __future__ import annotations

import dataclasses
import glob
import io
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "LIST_EXTENSIONS", "Input", "is_uri", "list_inputs", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LIST_EXTENSIONS = (".txt", ".lst")
_GLOB_CHARS = re.compile(r"[*?\[]")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclasses.dataclass(frozen=True)
class Input:
    """One input image: ``path`` (a local path or URI, as the workers open it) and ``file_name``
    (its ``/``-separated path relative to the source's root)."""

    path: str
    file_name: str


def is_uri(path: str) -> bool:
    """Whether ``path`` has a URI scheme (``s3://``, ``gs://``, ``file://``, ...)."""
    return bool(_URI.match(path))


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def _sorted(inputs: list[Input]) -> list[Input]:
    return sorted(inputs, key=lambda item: _natural_key(item.file_name))


def _local_folder(root: Path) -> list[Input]:
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and _is_image(path.name) and not _hidden(relative):
            found.append(Input(str(path), relative))
    return found


def _local_glob(pattern: str) -> list[Input]:
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)), len(parts))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    found = []
    for name in glob.glob(pattern, recursive=True):
        path = Path(name)
        if path.is_file() and _is_image(path.name):
            found.append(Input(str(path), path.relative_to(root).as_posix()))
    return found


def _list_file(text: str, base: str, where: str) -> list[Input]:
    """Inputs of a list file's text; relative lines join ``base`` (a folder path or URI)."""
    found, seen = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if is_uri(line):
            path, name = line, line.split("://", 1)[1]
        elif os.path.isabs(line):
            path = line
            inside = not is_uri(base) and Path(line).is_relative_to(Path(base).resolve())
            name = (Path(line).relative_to(Path(base).resolve()) if inside else Path(line).relative_to("/")).as_posix()
        else:
            path = f"{base.rstrip('/')}/{line}" if is_uri(base) else os.path.join(base, line)
            name = PurePosixPath(Path(line).as_posix()).as_posix()
        if name in seen:
            raise ValueError(f"{where} lists {line!r} twice (lines {seen[name]} and {number}); "
                             "each input must appear once")
        seen[name] = number
        found.append(Input(path, name))
    return found


def _uri_inputs(source: str) -> list[Input]:
    import pyarrow.fs as pafs

    try:
        filesystem, root = pafs.FileSystem.from_uri(source)
        info = filesystem.get_file_info(root)
    except (OSError, ValueError, TypeError) as error:
        raise FileNotFoundError(f"cannot read the source {source!r}: {error}") from None
    scheme = source.split("://", 1)[0]
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file or prefix: {source}")
    if info.type == pafs.FileType.File:
        if root.lower().endswith(LIST_EXTENSIONS):
            with filesystem.open_input_stream(root) as stream:
                text = stream.read().decode("utf-8")
            return _list_file(text, f"{scheme}://{root.rsplit('/', 1)[0]}", source)
        return [Input(source, root.rsplit("/", 1)[-1])]
    prefix = root.rstrip("/")
    found = []  # sorted below
    for entry in filesystem.get_file_info(pafs.FileSelector(prefix, recursive=True)):
        relative = entry.path[len(prefix):].lstrip("/")
        if entry.type == pafs.FileType.File and _is_image(entry.path) and not _hidden(relative):
            found.append(Input(f"{scheme}://{entry.path}", relative))
    return _sorted(found)


def list_inputs(source: str | os.PathLike) -> list[Input]:
    """The inputs of ``source`` (module docstring): a list file's in its order, others in natural
    order of their file names.

    Raises:
        FileNotFoundError: the source does not exist, or a glob matches nothing that exists.
        ValueError: no image found, a list file names one input twice, or an unsupported file.
    """
    source = os.fspath(source)
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a folder, glob, list file, URI or image path, got {source!r}")
    if is_uri(source):
        inputs = _uri_inputs(source)
    elif os.path.isdir(source):
        inputs = _sorted(_local_folder(Path(source)))
    elif os.path.isfile(source):
        if source.lower().endswith(LIST_EXTENSIONS):
            inputs = _list_file(Path(source).read_text(encoding="utf-8"), os.path.dirname(source) or ".", source)
        elif _is_image(source):
            inputs = [Input(source, os.path.basename(source))]
        else:
            raise ValueError(f"source {source!r} is a file that is neither an image ({', '.join(IMAGE_EXTENSIONS)}) "
                             f"nor a list of paths ({', '.join(LIST_EXTENSIONS)})")
    elif _GLOB_CHARS.search(source):
        inputs = _sorted(_local_glob(source))
        if not inputs:
            raise FileNotFoundError(f"the glob {source!r} matches no image file")
    else:
        raise FileNotFoundError(f"no such folder, file or glob: {source}")
    if not inputs:
        raise ValueError(f"source {source} holds no images; expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    return inputs


def read_image(path: str) -> np.ndarray:
    """Decode one input into an (H, W, 3) uint8 RGB array (EXIF orientation applied).

    Local paths go through :func:`samkit.transforms.load_image`; URIs are read with
    :mod:`pyarrow.fs` and decoded the same way.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the bytes are not a readable image (truncated, corrupt, unknown format).
    """
    from samkit.transforms import load_image, to_rgb_uint8

    if not is_uri(path):
        return load_image(path)
    import pyarrow.fs as pafs
    from PIL import Image, ImageOps, UnidentifiedImageError

    filesystem, where = pafs.FileSystem.from_uri(path)
    if filesystem.get_file_info(where).type != pafs.FileType.File:
        raise FileNotFoundError(f"image file not found: {path}")
    with filesystem.open_input_stream(where) as stream:
        data = stream.read()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb_uint8(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image file {path!r}: {error}") from None
