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
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

from samkit.arrays import to_numpy

from .pointcloud import PointCloud, check_positive, voxel_downsample, write_ply

__all__ = ["MasksTo3D", "lift_to_3d"]

logger = logging.getLogger(__name__)


# -- validation -------------------------------------------------------------------------------
def _check_intrinsics(intrinsics: Any) -> tuple[float, float, float, float, float]:
    k = np.asarray(to_numpy(intrinsics))
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
    p = np.asarray(to_numpy(pose))
    if p.shape != (4, 4) or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"pose must be a 4x4 camera-to-world matrix, got {p.dtype} {p.shape}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError("pose must be finite, got NaN or infinite values")
    if not np.allclose(p[3], [0, 0, 0, 1], rtol=0, atol=1e-9):
        raise ValueError(f"pose must have last row [0, 0, 0, 1], got {p[3].tolist()}")
    return p


def _masks_and_meta(masks: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Binary masks (N, H, W) and per-mask meta from arrays or a Segmentation-like object."""
    meta: Any = None
    if hasattr(masks, "masks"):
        meta = getattr(masks, "meta", None)
        scores = getattr(masks, "scores", None)
        m = np.asarray(to_numpy(masks.masks))
        if m.ndim == 4:
            if m.shape[1] == 1:
                m = m[:, 0]
            elif scores is None:
                raise ValueError(f"segmentation has K={m.shape[1]} masks per prompt and no "
                                 f"scores to pick the best; pass masks (N, H, W) instead")
            else:
                s = np.asarray(to_numpy(scores))
                if s.shape != m.shape[:2]:
                    raise ValueError(f"segmentation scores must have shape {m.shape[:2]} to "
                                     f"match masks {m.shape}, got {s.shape}")
                m = m[np.arange(m.shape[0]), np.argmax(s, axis=1)]
        elif m.ndim != 3:
            raise ValueError(f"segmentation masks must have shape (N, K, H, W) or (N, H, W), "
                             f"got {m.shape}")
    else:
        m = np.asarray(to_numpy(masks))
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
    scale = check_positive("depth_scale", depth_scale)
    transform = _check_pose(pose)
    m, meta = _masks_and_meta(masks)
    ids = _object_ids(object_ids, meta)
    d = np.asarray(to_numpy(depth))
    if d.ndim != 2:
        raise ValueError(f"depth must have shape (H, W), got {d.shape}")
    if d.dtype == bool or not np.issubdtype(d.dtype, np.number):
        raise ValueError(f"depth must be numeric (float or integer units), got {d.dtype}")
    if m.shape[1:] != d.shape:
        raise ValueError(f"masks must have the same (H, W) as depth {d.shape}, got {m.shape[1:]}")
    colors_image = None
    if rgb is not None:
        colors_image = np.asarray(to_numpy(rgb))
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
        check_positive("depth_scale", depth_scale)
        if voxel_size is not None:
            check_positive("voxel_size", voxel_size)
        self.intrinsics = np.array(np.asarray(to_numpy(intrinsics)), dtype=np.float64)
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
