"""What an image-encoder family provides: the contract every entry of the families registry fills.

A family is data: its settings, a builder, and how to recognise and size it from a checkpoint.
The registry itself is :mod:`samkit.modeling.families`; the ViT entry is :mod:`samkit.modeling.vit`.

The contract:

* ``build(config)`` returns an ``nn.Module`` mapping a (B, 3, S, S) float image
  (``S = config.image_size``, normalised) to a (B, ``config.prompt_embed_dim``, S/P, S/P)
  embedding (``P = config.patch_size``, the encoder's total stride), with an ``img_size`` int
  attribute equal to ``S``. Its parameters live under ``image_encoder.`` in a :class:`Sam`.
* ``matches(keys)`` says whether the parameter names of a Meta-format SAM state dict hold
  this family's encoder (it sees every key, the ``image_encoder.`` ones included).
* ``infer(state_dict)`` returns the :class:`SamConfig` fields the tensors' shapes imply for the
  encoder (``image_size`` and ``patch_size`` where known, the family's own settings). Only
  implied values belong there: a field the shapes do not fix is left out, so a stored config
  can be checked against the tensors field by field.
* ``settings`` is a dataclass of the family's own settings (it validates itself in
  ``__post_init__``, raising ValueError); ``settings_of(config)`` reads it from a
  :class:`SamConfig`. By default the settings are ``config.encoder_options``; a family whose
  settings are flat :class:`SamConfig` fields (ViT, for compatibility) names them in
  ``config_fields``, as ``(settings field, SamConfig field)`` pairs.
* ``hf_renames``: ``(Hugging Face name, Meta name)`` templates of its parameters in
  ``transformers``' naming, where ``transformers`` has the family (see :mod:`samkit.hf_mapping`).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:  # annotations only; config.py imports this package's registry
    from .config import SamConfig

__all__ = ["EncoderFamily", "block_indexes"]


@dataclass(frozen=True)
class EncoderFamily:
    """One image-encoder family (see the module docstring for the contract of each part).

    Attributes:
        name: registry key, stored in ``SamConfig.encoder_family``.
        settings: dataclass of the family's settings.
        build: ``SamConfig -> nn.Module`` image encoder.
        matches: ``keys -> bool``; whether a state dict holds this family's encoder.
        infer: ``state_dict -> dict`` of the SamConfig fields its shapes imply.
        config_fields: ``(settings field, SamConfig field)`` pairs when the settings are flat
            SamConfig fields; empty: they are ``SamConfig.encoder_options``.
        hf_renames: ``(Hugging Face name, Meta name)`` key templates.
    """

    name: str
    settings: type
    build: Callable[["SamConfig"], nn.Module]
    matches: Callable[[Collection[str]], bool]
    infer: Callable[[Mapping[str, Any]], dict[str, Any]]
    config_fields: tuple[tuple[str, str], ...] = ()
    hf_renames: tuple[tuple[str, str], ...] = ()

    def settings_of(self, config: "SamConfig") -> Any:
        """The family's settings object for ``config`` (validated by the settings class)."""
        if self.config_fields:
            return self.settings(**{own: getattr(config, field) for own, field in self.config_fields})
        given = dict(config.encoder_options)
        try:
            return self.settings(**given)
        except TypeError as error:  # an unknown or missing setting name
            raise ValueError(f"encoder_options of the {self.name!r} family: {error}; got {sorted(given)}") from None


def block_indexes(keys: Iterable[str], pattern: str) -> list[int]:
    """Sorted distinct integers captured by group 1 of ``pattern`` at the start of each key.

    Example:
        >>> block_indexes(["a.blocks.0.w", "a.blocks.2.w", "a.blocks.0.b"], r"a\\.blocks\\.(\\d+)\\.")
        [0, 2]
    """
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})
