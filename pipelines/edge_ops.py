"""Moved to :mod:`samkit.pipelines.everything.edges`; this path keeps old imports working."""
from .everything.edges import *  # noqa: F401,F403
from .everything.edges import __all__  # noqa: F401
