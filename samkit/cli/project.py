"""``samkit project ...``: annotation projects (placeholder until the project commands land)."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_commands"]


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the ``project`` command group (none yet)."""
