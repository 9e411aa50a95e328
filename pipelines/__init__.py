"""Pipelines: adapters + Segmenter + post-processing (installed as ``samkit.pipelines``)."""
from .lift3d import MasksTo3D, PointCloud, lift_to_3d, read_ply, voxel_downsample, write_ply

__all__ = ["MasksTo3D", "PointCloud", "lift_to_3d", "read_ply", "voxel_downsample", "write_ply"]
