"""``samkit project prefill|auto|retrain``: the data-engine stages run over a project.

:func:`add_stage_commands` is called by :func:`samkit.cli.project.add_commands` with the
``project`` group's sub-parsers; each stage adds one parser (made with
:func:`samkit.cli.project.project_parser`) and its run function here.
"""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_stage_commands"]


def add_stage_commands(kinds: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the stage commands on the ``project`` sub-parsers (none yet)."""
