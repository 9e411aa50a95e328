"""Moved to :mod:`samkit.pipelines.text.strategies`; this path keeps old imports working."""
from .text.strategies import *  # noqa: F401,F403
from .text.strategies import __all__  # noqa: F401
