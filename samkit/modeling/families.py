"""The registry of image-encoder families.

Adding a family = one module (its settings, builder, ``matches`` and ``infer``; see
:mod:`samkit.modeling.encoder_family` for the contract and :mod:`samkit.modeling.vit` for an
example) + one entry in :data:`FAMILIES` below (or :func:`register_family` from outside the
package). :func:`samkit.modeling.build_sam` builds ``config.encoder_family``'s encoder, and
:func:`samkit.infer_config` picks the family whose ``matches`` accepts a checkpoint's keys.

Example:
    >>> from samkit.modeling.families import get_family
    >>> get_family("vit").name
    'vit'
"""
from __future__ import annotations

from collections.abc import Collection

from .encoder_family import EncoderFamily
from .tiny_vit import TINY_VIT
from .vit import VIT

__all__ = ["FAMILIES", "EncoderFamily", "family_of", "get_family", "register_family", "unregister_family"]

FAMILIES: dict[str, EncoderFamily] = {
    VIT.name: VIT,
    TINY_VIT.name: TINY_VIT,
}


def register_family(family: EncoderFamily, *, replace: bool = False) -> EncoderFamily:
    """Add ``family`` to :data:`FAMILIES` (``replace=True`` to overwrite an entry of that name)."""
    if not isinstance(family, EncoderFamily):
        raise TypeError(f"family must be an EncoderFamily, got {type(family).__name__}")
    if family.name in FAMILIES and not replace:
        raise ValueError(f"encoder family {family.name!r} is already registered; pass replace=True to overwrite it")
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> EncoderFamily:
    """Remove and return the family called ``name``."""
    return FAMILIES.pop(get_family(name).name)


def get_family(name: str) -> EncoderFamily:
    """The registered family called ``name``; ValueError listing the known ones otherwise."""
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise ValueError(f"unknown encoder family {name!r}; expected one of {sorted(FAMILIES)}")
    return family


def family_of(keys: Collection[str]) -> EncoderFamily | None:
    """The one registered family whose ``matches`` accepts ``keys``; None when none does.

    Raises:
        ValueError: several families match (their key patterns overlap).
    """
    found = [family for family in FAMILIES.values() if family.matches(keys)]
    if len(found) > 1:
        raise ValueError(f"the keys match several encoder families {[f.name for f in found]}; expected one")
    return found[0] if found else None
