"""Label Studio's ML-backend protocol: reading and checking what Label Studio sends.

No web framework here: every function takes decoded JSON (or the label config's XML text) and
returns plain values or raises :class:`PayloadError` with the HTTP status and a message saying
what was expected and what came. The FastAPI app (:mod:`.label_studio`) turns those into
responses.

* :func:`parse_label_config`: the ``<BrushLabels>`` tag (name, toName, labels) and the
  ``<Image>`` it labels (the task data key of its ``value="$key"``); DTDs and entities are refused.
* :func:`parse_context`: interactive context (``keypointlabels`` with ``is_positive``,
  ``rectanglelabels``) -> pixel points, labels, a box, the image size, the chosen label.
* :func:`resolve_image`: a task's image reference -> a file under the served root.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from samkit.formats.label_studio import keypoint_to_pixels, rectangle_to_pixels

__all__ = ["BrushConfig", "InteractivePrompt", "PayloadError", "parse_context", "parse_label_config",
           "require", "resolve_image", "task_image_reference"]

#: The largest label config accepted (characters).
MAX_LABEL_CONFIG = 1_000_000


class PayloadError(ValueError):
    """A request Label Studio (or anyone) sent cannot be served; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def require(payload: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``payload[key]`` checked to be of ``kind``; a :class:`PayloadError` naming both otherwise."""
    if not isinstance(payload, Mapping):
        raise PayloadError(f"{where} must be a JSON object, got {type(payload).__name__}")
    if key not in payload:
        raise PayloadError(f"{where} needs {key!r}; got keys {sorted(map(str, payload))}")
    value = payload[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise PayloadError(f"{where}[{key!r}] must be {names}, got {type(value).__name__}")
    return value


# -- the label config --------------------------------------------------------------------------
@dataclass(frozen=True)
class BrushConfig:
    """What the label config says about brush masks.

    Attributes:
        from_name: the ``<BrushLabels>`` tag's ``name``.
        to_name: its ``toName`` (the ``<Image>`` tag's name).
        image_key: the task data key of the image (``value="$image"`` -> ``"image"``).
        labels: the ``<Label value=...>`` values of the BrushLabels tag, in order.
    """

    from_name: str
    to_name: str
    image_key: str
    labels: tuple[str, ...]


def _parse_xml(text: str) -> Any:
    if re.search(r"<!(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", text, flags=re.IGNORECASE):
        raise PayloadError("label_config must not contain a DTD or entity declarations (<!DOCTYPE>, <!ENTITY>)")
    try:
        import defusedxml.ElementTree as safe_tree
    except ImportError:  # the regex above already refused every declaration
        safe_tree = None
    import xml.etree.ElementTree as tree

    try:
        if safe_tree is not None:
            return safe_tree.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        return tree.fromstring(text)
    except tree.ParseError as error:
        raise PayloadError(f"label_config is not well-formed XML: {error}") from None
    except ValueError as error:  # defusedxml's DTDForbidden / EntitiesForbidden
        raise PayloadError(f"label_config refused: {error}") from None


def parse_label_config(text: Any) -> BrushConfig:
    """The brush settings of a Label Studio label config (XML).

    Raises:
        PayloadError: not a string, too long, not XML, a DTD or entities, no ``<BrushLabels>``
            with ``name`` and ``toName``, or no ``<Image>`` of that name with ``value="$key"``.
    """
    if not isinstance(text, str):
        raise PayloadError(f"label_config must be a string of XML, got {type(text).__name__}")
    if len(text) > MAX_LABEL_CONFIG:
        raise PayloadError(f"label_config is {len(text)} characters, more than the {MAX_LABEL_CONFIG} accepted")
    root = _parse_xml(text)
    elements = list(root.iter())
    brushes = [e for e in elements if isinstance(e.tag, str) and e.tag.lower() == "brushlabels"]
    if not brushes:
        raise PayloadError("label_config has no <BrushLabels> tag; the samkit backend returns brush masks "
                           "(add <BrushLabels name=\"tag\" toName=\"image\"> with <Label value=...> children)")
    brush = brushes[0]
    from_name, to_name = brush.get("name"), brush.get("toName")
    if not from_name or not to_name:
        raise PayloadError("<BrushLabels> needs both name and toName attributes, got "
                           f"name={from_name!r} toName={to_name!r}")
    to_name = to_name.split(",")[0].strip()
    images = [e for e in elements if isinstance(e.tag, str) and e.tag.lower() == "image" and e.get("name") == to_name]
    if not images:
        raise PayloadError(f"label_config has no <Image name={to_name!r}> (the toName of <BrushLabels>)")
    value = images[0].get("value") or ""
    if not value.startswith("$") or len(value) < 2:
        raise PayloadError(f"<Image name={to_name!r}> needs value=\"$key\" naming the task data key, got {value!r}")
    labels = tuple(e.get("value") for e in brush if isinstance(e.tag, str) and e.tag.lower() == "label"
                   and e.get("value"))
    return BrushConfig(from_name=from_name, to_name=to_name, image_key=value[1:], labels=labels)


# -- interactive context -----------------------------------------------------------------------
@dataclass(frozen=True)
class InteractivePrompt:
    """One prompt from Label Studio's interactive context, in original-image pixels.

    Attributes:
        points: [(x, y), ...] XY pixels (may be empty).
        point_labels: 1 foreground (``is_positive``), 0 background, one per point.
        box: XYXY pixels of the newest rectangle, or None.
        width, height: the image size the context was made on (``original_width/height``).
        label: the label of the newest region (its ``keypointlabels``/``rectanglelabels``), or None.
    """

    points: tuple[tuple[float, float], ...]
    point_labels: tuple[int, ...]
    box: tuple[float, float, float, float] | None
    width: int
    height: int
    label: str | None


_PROMPT_TYPES = ("keypointlabels", "rectanglelabels")


def parse_context(context: Any) -> InteractivePrompt | None:
    """The prompt in ``params.context``; None when there is none (no interaction yet).

    Regions of other types (a brush stroke, a choice) are ignored. All prompt regions must
    agree on ``original_width`` / ``original_height``.

    Raises:
        PayloadError: a malformed region (wrong types, NaN, percent outside [0, 100], ...).
    """
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise PayloadError(f"params.context must be an object, got {type(context).__name__}")
    results = context.get("result")
    if results is None:
        return None
    if not isinstance(results, list):
        raise PayloadError(f"params.context.result must be a list of regions, got {type(results).__name__}")
    points: list[tuple[float, float]] = []
    point_labels: list[int] = []
    box = None
    size = None
    label = None
    for index, region in enumerate(results):
        where = f"params.context.result[{index}]"
        if not isinstance(region, Mapping):
            raise PayloadError(f"{where} must be an object, got {type(region).__name__}")
        kind = region.get("type")
        if kind not in _PROMPT_TYPES:
            continue
        value = require(region, "value", dict, where)
        width = require(region, "original_width", (int, float), where)
        height = require(region, "original_height", (int, float), where)
        try:
            if kind == "keypointlabels":
                point = keypoint_to_pixels(value, width, height)
            else:
                region_box = rectangle_to_pixels(value, width, height)
        except (TypeError, ValueError) as error:
            raise PayloadError(f"{where}: {error}") from None
        if size is not None and size != (int(width), int(height)):
            raise PayloadError(f"{where} is on a {int(width)} x {int(height)} image, an earlier region on "
                               f"{size[0]} x {size[1]}")
        size = (int(width), int(height))
        if kind == "keypointlabels":
            positive = region.get("is_positive", True)
            if positive not in (True, False, 0, 1) or isinstance(positive, float):
                raise PayloadError(f"{where}['is_positive'] must be true or false, got {positive!r}")
            points.append(point)
            point_labels.append(int(bool(positive)))
        else:
            box = region_box
        names = value.get(kind)
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PayloadError(f"{where}['value'][{kind!r}] must be a list of label strings, got {names!r}")
            label = names[0] if names else label
    if size is None:
        return None
    return InteractivePrompt(points=tuple(points), point_labels=tuple(point_labels), box=box, width=size[0],
                             height=size[1], label=label)


# -- task images -------------------------------------------------------------------------------
def task_image_reference(task: Any, config: BrushConfig, where: str = "task") -> str:
    """The image reference (path or URL) in ``task["data"][config.image_key]``."""
    data = require(task, "data", dict, where)
    return require(data, config.image_key, str, f"{where}['data']")


def _inside(root: Path, candidate: Path, reference: str) -> Path:
    resolved = Path(os.path.realpath(candidate))
    try:
        resolved.relative_to(root)
    except ValueError:
        raise PayloadError(f"image {reference!r} is outside the served root {root}; refused", status=403) from None
    return resolved


def resolve_image(reference: str, root: str | os.PathLike) -> Path:
    """The file a task's image reference names, inside ``root``.

    Accepted: a path relative to ``root`` (or absolute inside it); Label Studio local-storage
    URLs ``/data/local-files/?d=REL`` (``REL`` relative to ``root``, as Label Studio's document
    root), also as ``http(s)://any-host/data/local-files/?d=REL`` (read from disk, never
    fetched); uploads ``/data/upload/REL`` read as ``root/upload/REL`` (serve Label Studio's
    media folder as the root). Other URLs are refused: nothing is fetched from the network.

    Raises:
        PayloadError: 400 for an unsupported reference, 403 outside the root (``..``, absolute
            paths, symbolic links out of it), 404 when no such file exists.
    """
    root = Path(os.path.realpath(root))
    if not reference or "\x00" in reference:
        raise PayloadError(f"image reference must be a non-empty path or URL, got {reference!r}")
    parts = urlsplit(reference)
    scheme = parts.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme not in ("", "http", "https"):
        raise PayloadError(f"image reference {reference!r}: the {scheme!r} scheme is not served (expected a path "
                           "under the root or a /data/local-files/?d=... URL)")
    if parts.path.rstrip("/") == "/data/local-files":
        values = parse_qs(parts.query).get("d")
        if not values or not values[0]:
            raise PayloadError(f"image reference {reference!r}: a local-files URL needs ?d=PATH")
        relative = values[0]
    elif parts.path.startswith("/data/upload/"):
        relative = "upload/" + unquote(parts.path[len("/data/upload/"):])
    elif scheme:
        raise PayloadError(f"image reference {reference!r} is a URL on another server; the backend never fetches "
                           "images over the network (store them under --root and use /data/local-files/?d=...)")
    else:
        relative = reference
    if relative.startswith(("/", "\\")) or Path(relative).is_absolute():
        candidate = Path(relative)
    else:
        candidate = root / relative
    resolved = _inside(root, candidate, reference)
    if not resolved.is_file():
        raise PayloadError(f"image {reference!r} not found (looked for {resolved})", status=404)
    return resolved
