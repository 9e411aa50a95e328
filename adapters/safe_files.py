"""Checks that run before an external library opens a detector file the caller named.

ultralytics opens a ``.pt`` with ``torch.load(weights_only=False)`` and builds a model ``.yaml``
with ``eval`` of its ``activation`` and a lookup of each layer name among its module's globals:
an untrusted file of either kind could run code. (ultralytics' own ``ULTRALYTICS_SAFE_LOAD`` is
read once, when ultralytics is imported, so it cannot be switched on for one load.) Before a
local file reaches ultralytics, samkit checks it:

* ``.pt``: unpickled once with ``torch.load(weights_only=True)`` and an allow-list made of the
  model layers (``torch.nn.Module`` subclasses defined in ``torch.nn.modules``,
  ``ultralytics.nn.modules`` and ``ultralytics.nn.tasks``), ultralytics' settings namespace and
  loss classes, NumPy dtypes, scalars and arrays, paths (read as pure paths, which cannot touch
  the file system), and ``getattr`` limited to a layer's ``forward`` methods and enum members.
  A file that passes makes ultralytics' own unpickling do only those things. Layer constructors
  may run, as they do under ultralytics' safe loading.
* ``.yaml``: ``activation`` must be ``nn.<Layer>(literal arguments)`` and every layer name a
  ``torch.nn.Module`` subclass.

A file that fails raises :class:`~samkit.errors.CheckpointError` naming the file and what was
refused; a caller who trusts the file passes ``trust_file=True`` to the loader instead.
"""
from __future__ import annotations

import ast
import enum
import importlib
import os
import pathlib
import pickle
import re
from typing import Any

from samkit.errors import CheckpointError

__all__ = ["check_yolo_file", "check_yolo_checkpoint", "check_yolo_yaml"]

_LAYER_MODULES = ("torch.nn.modules", "ultralytics.nn.modules", "ultralytics.nn.tasks")
_DATA_CLASS_MODULES = ("ultralytics.utils.loss", "ultralytics.utils.tal")
_TRUST_HINT = "If you trust this file, load it with trust_file=True (that runs any code it holds)."


def _refuse(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"refused to load YOLO file {path}: {what}. {_TRUST_HINT}")


def _restricted_getattr(obj: Any, name: str) -> Any:
    """``getattr`` for checkpoints: a layer's ``forward`` / ``forward_fuse`` or an enum member."""
    import torch

    is_layer = isinstance(obj, torch.nn.Module) or (isinstance(obj, type) and issubclass(obj, torch.nn.Module))
    if is_layer and name in ("forward", "forward_fuse"):
        return getattr(obj, name)
    if isinstance(obj, type) and issubclass(obj, enum.Enum) and name in obj.__members__:
        return obj[name]
    raise pickle.UnpicklingError(f"getattr({type(obj).__name__}, {name!r}) is not a layer method or enum member")


def _data_globals() -> dict[str, Any]:
    import numpy as np

    scalar = np.float64(0).__reduce__()[0]
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    found: dict[str, Any] = {"builtins.getattr": _restricted_getattr, "numpy.dtype": np.dtype,
                             "numpy.ndarray": np.ndarray}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[f"{module}.scalar"] = scalar
        found[f"{module}._reconstruct"] = reconstruct
    for module in ("pathlib", "pathlib._local"):
        found[f"{module}.PosixPath"] = pathlib.PurePosixPath
        found[f"{module}.WindowsPath"] = pathlib.PureWindowsPath
    try:
        from ultralytics.utils import IterableSimpleNamespace
    except ImportError:
        pass
    else:
        found["ultralytics.utils.IterableSimpleNamespace"] = IterableSimpleNamespace
        found["ultralytics.yolo.utils.IterableSimpleNamespace"] = IterableSimpleNamespace
    return found


def _allowed_class(name: str) -> Any | None:
    """The class a checkpoint global names when it is a permitted layer or data class, else None."""
    import numpy as np
    import torch

    module_name, _, attr = name.rpartition(".")
    is_layer_module = any(module_name == m or module_name.startswith(m + ".") for m in _LAYER_MODULES)
    if not (is_layer_module or module_name in _DATA_CLASS_MODULES or module_name == "numpy.dtypes"):
        return None
    try:
        obj = getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return None
    if not isinstance(obj, type) or obj.__module__ != module_name:
        return None  # names bound in a module but defined elsewhere are not allowed through it
    if module_name == "numpy.dtypes":
        return obj if issubclass(obj, np.dtype) else None
    if is_layer_module:
        return obj if issubclass(obj, torch.nn.Module) else None
    return obj


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's weights_only error that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    after = [i for i, line in enumerate(lines) if "WeightsUnpickler error" in line]
    if after and after[0] + 1 < len(lines):
        return lines[after[0] + 1]
    return lines[-1] if lines else type(error).__name__


def check_yolo_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless the ``.pt`` file holds only permitted objects.

    Nothing in the file runs: globals outside the allow-list are refused before being called.
    """
    import torch

    path = os.fspath(path)
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None:
        raise _refuse(path, f"checking it needs torch >= 2.6, found {torch.__version__}")
    try:
        names = scan(path)
    except (ValueError, RuntimeError, OSError) as exc:
        raise _refuse(path, f"it is not a readable torch.save zip archive (truncated, corrupt or another "
                            f"format: {exc})") from None
    data = _data_globals()
    entries, refused = [], []
    for name in names:
        obj = data.get(name) or _allowed_class(name)
        if obj is None:
            refused.append(name)
        else:
            entries.append((obj, name))
    if refused:
        raise _refuse(path, f"it holds Python objects outside the YOLO checkpoint format, which could run code "
                            f"when unpickled: {sorted(refused)[:5]}")
    try:
        with torch.serialization.safe_globals(entries):
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refuse(path, f"it holds objects that could run code when unpickled ({_unpickler_reason(exc)})") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise _refuse(path, f"it is not a readable checkpoint ({type(exc).__name__}: {exc})") from None


def _check_activation(path: str, spec: Any) -> None:
    import torch

    try:
        call = ast.parse(str(spec).strip(), mode="eval").body
        if not isinstance(call, ast.Call):
            raise ValueError("not a call")
        parts, node = [], call.func
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or [node.id, *reversed(parts[1:])] not in (["nn"], ["torch", "nn"]):
            raise ValueError("not a torch.nn class")
        layer = getattr(torch.nn, parts[0], None)
        if not (isinstance(layer, type) and issubclass(layer, torch.nn.Module)):
            raise ValueError("not a torch.nn.Module")
        for value in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(value)
    except (SyntaxError, ValueError, IndexError):
        raise _refuse(path, f"activation must be nn.<Layer>(literal arguments), got {spec!r}") from None


def _check_layer_name(path: str, name: Any) -> None:
    import torch

    if not isinstance(name, str):
        raise _refuse(path, f"a layer name must be a string, got {name!r}")
    if name.startswith("nn."):
        layer = getattr(torch.nn, name[3:], None)
    elif name.startswith("torchvision.ops."):
        layer = getattr(importlib.import_module("torchvision.ops"), name[len("torchvision.ops."):], None)
    else:
        layer = getattr(importlib.import_module("ultralytics.nn.tasks"), name, None)
    if not (isinstance(layer, type) and issubclass(layer, torch.nn.Module)):
        raise _refuse(path, f"layer {name!r} is not a torch.nn.Module class")


def _yaml_candidates(path: str) -> list[str]:
    """The local files ultralytics may read for ``path``: itself, then the name without the
    scale letter (``yolov8n.yaml`` -> ``yolov8.yaml``)."""
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", path)
    return [p for p in dict.fromkeys([path, unified]) if os.path.isfile(p)]


def check_yolo_yaml(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless a local model ``.yaml`` names only torch layers."""
    import yaml

    for candidate in _yaml_candidates(os.fspath(path)):
        try:
            with open(candidate, encoding="utf-8") as file:
                spec = yaml.safe_load(file)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise _refuse(candidate, f"it is not a readable YAML file ({exc})") from None
        if not isinstance(spec, dict):
            raise _refuse(candidate, f"expected a mapping with backbone and head, got {type(spec).__name__}")
        if spec.get("activation"):
            _check_activation(candidate, spec["activation"])
        for section in ("backbone", "head"):
            for layer in spec.get(section) or []:
                if not isinstance(layer, (list, tuple)) or len(layer) != 4:
                    raise _refuse(candidate, f"each {section} layer must be [from, repeats, module, args], got {layer!r}")
                _check_layer_name(candidate, layer[2])


def check_yolo_file(path: str | os.PathLike) -> None:
    """Check a local ``.pt`` or ``.yaml`` before ultralytics opens it (see the module docstring)."""
    lower = os.fspath(path).lower()
    if lower.endswith(".pt"):
        check_yolo_checkpoint(path)
    elif lower.endswith((".yaml", ".yml")):
        check_yolo_yaml(path)
    else:
        raise ValueError(f"expected a YOLO .pt or .yaml file, got {os.fspath(path)!r}")
