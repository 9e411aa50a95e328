"""Moved to :mod:`samkit.pipelines.text.sam3`; this path keeps old imports working."""
from .text.sam3 import *  # noqa: F401,F403
from .text.sam3 import __all__  # noqa: F401
