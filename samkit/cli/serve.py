"""``samkit serve ...``: model servers (placeholder until the Label Studio backend lands)."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_commands"]


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the ``serve`` command group (none yet)."""
