"""Moved to :mod:`samkit.pipelines.text.clip_prompt`; this path keeps old imports working."""
from .text.clip_prompt import *  # noqa: F401,F403
from .text.clip_prompt import __all__  # noqa: F401
