"""Moved to :mod:`samkit.pipelines.lift3d.pointcloud`; this path keeps old imports working."""
from .lift3d.pointcloud import *  # noqa: F401,F403
from .lift3d.pointcloud import __all__  # noqa: F401
