"""Moved to :mod:`samkit.pipelines.everything.ops`; this path keeps old imports working."""
from .everything.ops import *  # noqa: F401,F403
from .everything.ops import __all__  # noqa: F401
