"""Moved to :mod:`samkit.formats.rle`; this module re-exports it so ``from samkit.rle import ...`` keeps working."""
from samkit.formats.rle import *  # noqa: F401,F403
from samkit.formats.rle import __all__  # noqa: F401
