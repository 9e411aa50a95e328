"""Point clouds: the :class:`PointCloud` container, voxel down-sampling and PLY files (ASCII and binary).

Used by :mod:`samkit.pipelines.lift3d` (masks + depth -> clouds), usable on its own. Points are
float32 (P, 3), colours uint8 (P, 3) RGB.

Example:
    >>> cloud = PointCloud(np.zeros((2, 3), np.float32), object_id=7)
    >>> len(cloud), cloud.object_id
    (2, 7)
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

import numpy as np

__all__ = ["PointCloud", "check_positive", "read_ply", "voxel_downsample", "write_ply"]


@dataclass
class PointCloud:
    """Points of one object.

    Attributes:
        points: float32 (P, 3) XYZ, metres, in the camera frame or the world frame of ``pose``.
        colors: uint8 (P, 3) RGB, or None.
        object_id: id of the object (track id, object id or mask index), or None.
        meta: the mask's metadata (class name, score, ...).
    """

    points: np.ndarray
    colors: np.ndarray | None = None
    object_id: Hashable | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pts = np.asarray(self.points)
        if pts.ndim != 2 or pts.shape[1] != 3 or not np.issubdtype(pts.dtype, np.number):
            raise ValueError(f"points must be numeric with shape (P, 3), got {pts.dtype} {pts.shape}")
        self.points = pts.astype(np.float32, copy=False)
        if self.colors is not None:
            self.colors = _as_colors(self.colors, self.points.shape[0])
        self.meta = dict(self.meta or {})

    @classmethod
    def empty(cls, object_id: Hashable | None = None, *, with_colors: bool = False) -> "PointCloud":
        """A cloud with no points."""
        colors = np.zeros((0, 3), np.uint8) if with_colors else None
        return cls(np.zeros((0, 3), np.float32), colors, object_id)

    def __len__(self) -> int:
        return self.points.shape[0]


def _as_colors(colors: Any, n: int) -> np.ndarray:
    c = np.asarray(colors)
    if c.shape != (n, 3) or not np.issubdtype(c.dtype, np.integer) or \
            (c.size and (c.min() < 0 or c.max() > 255)):
        raise ValueError(f"colors must be uint8 with shape ({n}, 3) to match the points, got "
                         f"{c.dtype} {c.shape}")
    return c.astype(np.uint8, copy=False)


# -- validation -------------------------------------------------------------------------------
def check_positive(name: str, value: Any) -> float:
    """``value`` as a float; TypeError when it is not a number, ValueError unless finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return v


def voxel_downsample(cloud: PointCloud, voxel_size: float) -> PointCloud:
    """Replace the points in each cubic voxel by their mean (colours averaged and rounded).

    The grid is anchored at the origin: voxel index ``floor(p / voxel_size)``. Output points are
    ordered by voxel index (lexicographic x, y, z).

    Args:
        cloud: the cloud to thin.
        voxel_size: voxel edge in the units of the points (metres).
    """
    size = check_positive("voxel_size", voxel_size)
    if len(cloud) == 0:
        return PointCloud(cloud.points, cloud.colors, cloud.object_id, cloud.meta)
    keys = np.floor(cloud.points.astype(np.float64) / size).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)

    def mean(values: np.ndarray) -> np.ndarray:
        sums = np.zeros((counts.size, 3))
        np.add.at(sums, inverse, values.astype(np.float64))
        return sums / counts[:, None]

    colors = None if cloud.colors is None else np.rint(mean(cloud.colors)).astype(np.uint8)
    return PointCloud(mean(cloud.points).astype(np.float32), colors, cloud.object_id, cloud.meta)


# -- PLY --------------------------------------------------------------------------------------
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2",
              "int16": "i2", "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4",
              "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4", "double": "f8",
              "float64": "f8"}
_COLOR_NAMES = ("red", "green", "blue")


def write_ply(path: str | os.PathLike, points: Any, colors: Any = None, *,
              binary: bool = True) -> Path:
    """Write a point cloud as PLY, atomically (a temporary file in the same folder, renamed).

    Args:
        path: output file; its folder must exist.
        points: float (P, 3) XYZ, or a :class:`PointCloud` (its colours are used unless
            ``colors`` is given).
        colors: optional uint8 (P, 3) RGB, written as ``uchar red green blue``.
        binary: ``binary_little_endian`` (default) or ``ascii`` (``%.9g``, exact for float32).

    Returns:
        The path written.
    """
    if isinstance(points, PointCloud):
        cloud = PointCloud(points.points, points.colors if colors is None else colors)
    else:
        cloud = PointCloud(points, colors)
    path = Path(path)
    names = ["x", "y", "z"] + (list(_COLOR_NAMES) if cloud.colors is not None else [])
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
              "comment written by samkit", f"element vertex {len(cloud)}"]
    header += [f"property {'uchar' if n in _COLOR_NAMES else 'float'} {n}" for n in names]
    header.append("end_header\n")
    if binary:
        dtype = np.dtype([(n, "u1" if n in _COLOR_NAMES else "<f4") for n in names])
        table = np.empty(len(cloud), dtype)
        for j, n in enumerate("xyz"):
            table[n] = cloud.points[:, j]
        for j, n in enumerate(names[3:]):
            table[n] = cloud.colors[:, j]
        body = table.tobytes()
    else:
        columns = [cloud.points.astype(np.float64)]
        fmt = "%.9g %.9g %.9g"
        if cloud.colors is not None:
            columns.append(cloud.colors.astype(np.float64))
            fmt += " %d %d %d"
        rows = np.concatenate(columns, axis=1)
        body = "".join(fmt % tuple(r) + "\n" for r in rows.tolist()).encode("ascii")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write("\n".join(header).encode("ascii"))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_ply(path: str | os.PathLike) -> PointCloud:
    """Read the vertices of an ascii or binary little-endian PLY (such as :func:`write_ply`'s).

    Reads ``x y z`` and, when present, ``red green blue``; other scalar vertex properties are
    ignored, as are elements after the vertices.

    Returns:
        A :class:`PointCloud` with float32 points and uint8 colours (or None).

    Raises:
        ValueError: not a PLY file, big-endian, no vertex element, no x/y/z, truncated data.
    """
    data = Path(path).read_bytes()
    end = data.find(b"end_header")
    newline = data.find(b"\n", end)
    if not data.startswith(b"ply") or end < 0 or newline < 0:
        raise ValueError(f"{path} is not a PLY file (expected 'ply' ... 'end_header')")
    lines = [line.strip().split() for line in data[:end].decode("ascii", "replace").splitlines()]
    fmt, elements = None, []
    for words in lines[1:]:
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            elements[-1][2].append(words[1:])
    if fmt not in ("ascii", "binary_little_endian"):
        raise ValueError(f"{path}: PLY format must be ascii or binary_little_endian, got {fmt}")
    if not elements or elements[0][0] != "vertex":
        raise ValueError(f"{path}: expected 'vertex' as the first PLY element, got "
                         f"{[e[0] for e in elements]}")
    _, count, props = elements[0]
    if any(p[0] == "list" or p[0] not in _PLY_TYPES for p in props):
        raise ValueError(f"{path}: vertex properties must be scalar PLY types, got {props}")
    names = [p[1] for p in props]
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"{path}: vertex needs properties x, y, z, got {names}")
    body = data[newline + 1:]
    if fmt == "binary_little_endian":
        dtype = np.dtype([(n, "<" + _PLY_TYPES[t]) for t, n in props])
        if len(body) < count * dtype.itemsize:
            raise ValueError(f"{path}: truncated, expected {count} vertices of {dtype.itemsize} "
                             f"bytes, got {len(body)} bytes")
        table = np.frombuffer(body, dtype, count=count)
        column = {n: table[n] for n in names}
    else:
        rows = body.decode("ascii").splitlines()[:count]
        table = np.loadtxt(rows, dtype=np.float64, ndmin=2) if count else np.zeros((0, len(names)))
        if table.shape != (count, len(names)):
            raise ValueError(f"{path}: expected {count} vertex rows of {len(names)} values, got "
                             f"{table.shape}")
        column = {n: table[:, j] for j, n in enumerate(names)}
    points = np.stack([column[n] for n in "xyz"], axis=1).astype(np.float32)
    colors = None
    if set(_COLOR_NAMES) <= set(names):
        rgb = np.stack([column[n] for n in _COLOR_NAMES], axis=1)
        if rgb.size and (np.any(rgb != np.round(rgb)) or rgb.min() < 0 or rgb.max() > 255):
            raise ValueError(f"{path}: red, green, blue must be integers in [0, 255], got values "
                             f"in [{rgb.min()}, {rgb.max()}]")
        colors = rgb.astype(np.uint8)
    return PointCloud(points, colors)
