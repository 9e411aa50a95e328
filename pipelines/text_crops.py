"""Moved to :mod:`samkit.pipelines.text.crops`; this path keeps old imports working."""
from .text.crops import *  # noqa: F401,F403
from .text.crops import __all__  # noqa: F401
