"""Front-end shim: the code moved to :mod:`samkit.cli.text`; this module re-exports it."""
from samkit.cli.text import add_commands, available, run_text, strategy_names  # noqa: F401

__all__ = ["add_commands", "available", "run_text", "strategy_names"]


def __getattr__(name: str):
    if name == "STRATEGY_NAMES":  # the names now come from the pipeline's registry
        return tuple(strategy_names())
    raise AttributeError(f"module 'samkit.cli_text' has no attribute {name!r}")
