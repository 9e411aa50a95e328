"""Moved to :mod:`samkit.pipelines.text.grounded`; this path keeps old imports working."""
from .text.grounded import *  # noqa: F401,F403
from .text.grounded import __all__  # noqa: F401
