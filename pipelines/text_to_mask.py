"""Moved to :mod:`samkit.pipelines.text.to_mask`; this path keeps old imports working."""
from .text.to_mask import *  # noqa: F401,F403
from .text.to_mask import __all__  # noqa: F401
