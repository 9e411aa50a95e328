"""Moved to :mod:`samkit.pipelines.everything.settings`; this path keeps old imports working."""
from .everything.settings import *  # noqa: F401,F403
from .everything.settings import __all__  # noqa: F401
