"""Moved to :mod:`samkit.pipelines.text.rerank`; this path keeps old imports working."""
from .text.rerank import *  # noqa: F401,F403
from .text.rerank import __all__  # noqa: F401
