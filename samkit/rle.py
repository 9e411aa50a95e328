"""Moved to :mod:`samkit.formats.rle` and :mod:`samkit.formats.polygons`; this module re-exports both so
``from samkit.rle import ...`` keeps working."""
from samkit.formats.polygons import mask_to_polygons, polygon_signed_area
from samkit.formats.rle import *  # noqa: F401,F403
from samkit.formats.rle import __all__ as _rle_names

__all__ = [*_rle_names, "mask_to_polygons", "polygon_signed_area"]
