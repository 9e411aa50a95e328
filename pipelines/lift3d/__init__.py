"""Masks to 3D: lift masks with a depth map and camera into point clouds, and read / write PLY.

* :mod:`.lift`: :class:`MasksTo3D` / :func:`lift_to_3d`;
* :mod:`.pointcloud`: :class:`PointCloud`, :func:`voxel_downsample`, :func:`write_ply`, :func:`read_ply`.
"""
from .lift import MasksTo3D, lift_to_3d
from .pointcloud import PointCloud, read_ply, voxel_downsample, write_ply

__all__ = ["MasksTo3D", "PointCloud", "lift_to_3d", "read_ply", "voxel_downsample", "write_ply"]
