"""Masks to 3D: lift object masks with a depth image into point clouds, fuse views, write PLY.

Conventions (Open3D's and OpenCV's pinhole camera):

* ``depth`` is (H, W), float (metres or any unit) or integer (e.g. uint16 millimetres);
  ``metres = raw * depth_scale`` (``depth_scale=0.001`` for millimetres). Pixels with depth
  ``<= 0``, NaN or infinite are invalid and produce no point.
* ``intrinsics`` is ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels (or the 4 values
  ``fx, fy, cx, cy``). Pixel ``(u, v)`` is (column, row) *index*, with no +0.5 shift.
* Camera frame: x right, y down, z forward. ``z = depth * depth_scale``,
  ``y = (v - cy) * z / fy``, ``x = (u - cx - s * (v - cy) / fy) * z / fx`` (``s = 0`` usually).
* ``pose`` is a 4x4 camera-to-world transform ``[[R, t], [0, 0, 0, 1]]``: ``p_world = R p + t``.
* Points are float32 (P, 3) in row-major pixel order (row by row, left to right); colours are
  uint8 (P, 3) RGB taken from ``rgb[v, u]``.

Example:
    >>> depth = np.full((4, 6), 2.0)
    >>> mask = np.zeros((4, 6), bool); mask[1:3, 2:5] = True
    >>> [cloud] = lift_to_3d(mask, depth, [[2.0, 0, 3], [0, 2.0, 2], [0, 0, 1]])
    >>> cloud.points.shape, cloud.points[0].tolist()
    ((6, 3), [-1.0, -1.0, 2.0])
"""
from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

__all__ = ["MasksTo3D", "PointCloud", "lift_to_3d", "read_ply", "voxel_downsample", "write_ply"]

logger = logging.getLogger(__name__)


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
def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, duck-typed
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _check_intrinsics(intrinsics: Any) -> tuple[float, float, float, float, float]:
    k = _to_numpy(intrinsics)
    if not np.issubdtype(k.dtype, np.number) or k.shape not in ((3, 3), (4,)):
        raise ValueError(f"intrinsics must be a 3x3 matrix K (or fx, fy, cx, cy), got "
                         f"{k.dtype} {k.shape}")
    k = k.astype(np.float64)
    if not np.all(np.isfinite(k)):
        raise ValueError(f"intrinsics must be finite, got {k.tolist()}")
    if k.shape == (4,):
        k = np.array([[k[0], 0, k[2]], [0, k[1], k[3]], [0, 0, 1]])
    if not np.array_equal(k[2], [0, 0, 1]) or k[1, 0] != 0:
        raise ValueError(f"intrinsics must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {k.tolist()}")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"intrinsics must have fx > 0 and fy > 0, got fx={k[0, 0]}, fy={k[1, 1]}")
    return k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1]


def _check_pose(pose: Any) -> np.ndarray | None:
    if pose is None:
        return None
    p = _to_numpy(pose)
    if p.shape != (4, 4) or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"pose must be a 4x4 camera-to-world matrix, got {p.dtype} {p.shape}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError("pose must be finite, got NaN or infinite values")
    if not np.allclose(p[3], [0, 0, 0, 1], rtol=0, atol=1e-9):
        raise ValueError(f"pose must have last row [0, 0, 0, 1], got {p[3].tolist()}")
    return p


def _positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return v


def _masks_and_meta(masks: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Binary masks (N, H, W) and per-mask meta from arrays or a Segmentation-like object."""
    meta: Any = None
    if hasattr(masks, "masks"):
        meta = getattr(masks, "meta", None)
        scores = getattr(masks, "scores", None)
        m = _to_numpy(masks.masks)
        if m.ndim == 4:
            if m.shape[1] == 1:
                m = m[:, 0]
            elif scores is None:
                raise ValueError(f"segmentation has K={m.shape[1]} masks per prompt and no "
                                 f"scores to pick the best; pass masks (N, H, W) instead")
            else:
                s = _to_numpy(scores)
                if s.shape != m.shape[:2]:
                    raise ValueError(f"segmentation scores must have shape {m.shape[:2]} to "
                                     f"match masks {m.shape}, got {s.shape}")
                m = m[np.arange(m.shape[0]), np.argmax(s, axis=1)]
        elif m.ndim != 3:
            raise ValueError(f"segmentation masks must have shape (N, K, H, W) or (N, H, W), "
                             f"got {m.shape}")
    else:
        m = _to_numpy(masks)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise ValueError(f"masks must have shape (H, W) or (N, H, W), got {m.shape}")
    if m.dtype != bool:
        if not (np.issubdtype(m.dtype, np.number)) or (m.size and not np.all((m == 0) | (m == 1))):
            lo, hi = (m.min(), m.max()) if m.size and np.issubdtype(m.dtype, np.number) else ("", "")
            raise ValueError(f"masks must be boolean (or 0/1); threshold logits first "
                             f"(logits > 0), got {m.dtype} values in [{lo}, {hi}]")
        m = m != 0
    meta = [dict(d or {}) for d in meta] if meta else [{} for _ in range(m.shape[0])]
    if len(meta) != m.shape[0]:
        raise ValueError(f"meta must hold one dict per mask ({m.shape[0]}), got {len(meta)}")
    return m, meta


def _object_ids(object_ids: Sequence[Hashable] | None, meta: list[dict[str, Any]]) -> list:
    if object_ids is None:
        return [d.get("track_id", d.get("object_id", i)) for i, d in enumerate(meta)]
    ids = list(object_ids)
    if len(ids) != len(meta):
        raise ValueError(f"object_ids must hold one id per mask ({len(meta)}), got {len(ids)}")
    return ids


# -- lifting ----------------------------------------------------------------------------------
def lift_to_3d(masks: Any, depth: Any, intrinsics: Any, *, rgb: Any = None,
               depth_scale: float = 1.0, pose: Any = None,
               object_ids: Sequence[Hashable] | None = None) -> list[PointCloud]:
    """Back-project the pixels of each mask that have valid depth into a 3D point cloud.

    Args:
        masks: bool (H, W) or (N, H, W), or a ``Segmentation``-like object with ``.masks``
            (N, K, H, W) (the only output when K == 1, else the best by ``.scores`` (N, K)) and
            ``.meta`` (one dict per mask). Torch tensors are accepted.
        depth: (H, W) float or integer depth, the same (H, W) as the masks.
        intrinsics: 3x3 ``K`` or ``(fx, fy, cx, cy)`` in pixels.
        rgb: optional uint8 (H, W, 3) image registered to ``depth``; gives point colours.
        depth_scale: metres per depth unit (``0.001`` for uint16 millimetres).
        pose: optional 4x4 camera-to-world transform; points are returned in world coordinates.
        object_ids: one id per mask; default ``meta["track_id"]``, then ``meta["object_id"]``,
            then the mask index.

    Returns:
        One :class:`PointCloud` per mask, in mask order (empty when no pixel has valid depth);
        ``colors`` is None without ``rgb``. ``meta`` is a copy of the mask's meta.

    Raises:
        ValueError: shapes that disagree, non-binary masks, bad intrinsics, pose or depth_scale.
    """
    fx, fy, cx, cy, skew = _check_intrinsics(intrinsics)
    scale = _positive("depth_scale", depth_scale)
    transform = _check_pose(pose)
    m, meta = _masks_and_meta(masks)
    ids = _object_ids(object_ids, meta)
    d = _to_numpy(depth)
    if d.ndim != 2:
        raise ValueError(f"depth must have shape (H, W), got {d.shape}")
    if d.dtype == bool or not np.issubdtype(d.dtype, np.number):
        raise ValueError(f"depth must be numeric (float or integer units), got {d.dtype}")
    if m.shape[1:] != d.shape:
        raise ValueError(f"masks must have the same (H, W) as depth {d.shape}, got {m.shape[1:]}")
    colors_image = None
    if rgb is not None:
        colors_image = _to_numpy(rgb)
        if colors_image.dtype != np.uint8 or colors_image.shape != d.shape + (3,):
            raise ValueError(f"rgb must be uint8 with shape (H, W, 3) = {d.shape + (3,)}, got "
                             f"{colors_image.dtype} {colors_image.shape}")

    z_image = d.astype(np.float64) * scale
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z_image) & (z_image > 0)
    clouds = []
    for i in range(m.shape[0]):
        v, u = np.nonzero(m[i] & valid)
        z = z_image[v, u]
        y = (v - cy) * z / fy
        x = (u - cx - skew * (v - cy) / fy) * z / fx
        points = np.stack([x, y, z], axis=1)
        if transform is not None:
            points = points @ transform[:3, :3].T + transform[:3, 3]
        colors = None if colors_image is None else colors_image[v, u]
        clouds.append(PointCloud(points.astype(np.float32), colors, ids[i], meta[i]))
    logger.debug("lifted %d masks to %s points", len(clouds), [len(c) for c in clouds])
    return clouds


def voxel_downsample(cloud: PointCloud, voxel_size: float) -> PointCloud:
    """Replace the points in each cubic voxel by their mean (colours averaged and rounded).

    The grid is anchored at the origin: voxel index ``floor(p / voxel_size)``. Output points are
    ordered by voxel index (lexicographic x, y, z).

    Args:
        cloud: the cloud to thin.
        voxel_size: voxel edge in the units of the points (metres).
    """
    size = _positive("voxel_size", voxel_size)
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


# -- multi-view fusion ------------------------------------------------------------------------
class MasksTo3D:
    """Accumulate per-object point clouds over frames with camera poses.

    Calls :func:`lift_to_3d` (same defaults) per frame, groups the clouds by object id, and
    fuses them in :meth:`clouds`, optionally voxel-downsampled by :func:`voxel_downsample`.

    Example:
        >>> fuser = MasksTo3D(K, depth_scale=0.001, voxel_size=0.005)          # doctest: +SKIP
        >>> for seg, depth, rgb, pose in frames:                                # doctest: +SKIP
        ...     fuser.add_frame(seg, depth, rgb=rgb, pose=pose)
        >>> fuser.write_ply("objects/")                                         # doctest: +SKIP
    """

    def __init__(self, intrinsics: Any, *, depth_scale: float = 1.0,
                 voxel_size: float | None = None) -> None:
        _check_intrinsics(intrinsics)
        _positive("depth_scale", depth_scale)
        if voxel_size is not None:
            _positive("voxel_size", voxel_size)
        self.intrinsics = np.array(_to_numpy(intrinsics), dtype=np.float64)
        self.depth_scale = depth_scale
        self.voxel_size = voxel_size
        self._pieces: dict[Hashable, list[PointCloud]] = {}
        self._posed: bool | None = None
        self.frames = 0

    def add_frame(self, masks_or_segmentation: Any, depth: Any, *, rgb: Any = None,
                  pose: Any = None, object_ids: Sequence[Hashable] | None = None
                  ) -> list[PointCloud]:
        """Lift one frame's masks and add them to their objects; returns the frame's clouds.

        All frames must either have a pose or none have one (pass ``np.eye(4)`` to make a frame
        the world frame), and an object's frames must all have colours or none.
        """
        if self._posed is not None and self._posed != (pose is not None):
            raise ValueError("pose must be given for every frame or for none, got "
                             f"{'no pose' if pose is None else 'a pose'} after frames "
                             f"{'with' if self._posed else 'without'} poses")
        clouds = lift_to_3d(masks_or_segmentation, depth, self.intrinsics, rgb=rgb,
                            depth_scale=self.depth_scale, pose=pose, object_ids=object_ids)
        for cloud in clouds:
            pieces = self._pieces.get(cloud.object_id)
            if pieces and (pieces[0].colors is None) != (cloud.colors is None):
                raise ValueError(f"object {cloud.object_id!r}: rgb must be given for all its "
                                 f"frames or none")
        for cloud in clouds:
            self._pieces.setdefault(cloud.object_id, []).append(cloud)
        self._posed = pose is not None
        self.frames += 1
        return clouds

    def clouds(self) -> dict[Hashable, PointCloud]:
        """One fused cloud per object id, in order of first appearance.

        ``meta`` is the object's first meta plus ``n_views``, the number of masks fused.
        """
        out = {}
        for object_id, pieces in self._pieces.items():
            colors = None if pieces[0].colors is None else np.concatenate([p.colors for p in pieces])
            cloud = PointCloud(np.concatenate([p.points for p in pieces]), colors, object_id,
                               dict(pieces[0].meta, n_views=len(pieces)))
            out[object_id] = cloud if self.voxel_size is None else \
                voxel_downsample(cloud, self.voxel_size)
        return out

    def write_ply(self, folder: str | os.PathLike, *, binary: bool = True) -> dict[Hashable, Path]:
        """Write ``object_<id>.ply`` per object into ``folder`` (created if missing)."""
        folder = Path(folder)
        clouds = self.clouds()
        names = {i: "object_" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(i)) + ".ply" for i in clouds}
        if len(set(names.values())) != len(names):
            raise ValueError(f"object ids map to clashing file names: {names}")
        folder.mkdir(parents=True, exist_ok=True)
        return {i: write_ply(folder / names[i], c, binary=binary) for i, c in clouds.items()}

    def clear(self) -> None:
        """Forget all frames."""
        self._pieces.clear()
        self._posed = None
        self.frames = 0
