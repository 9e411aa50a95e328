"""Front-end shim: the code moved to :mod:`samkit.cli.batch`; this module re-exports it."""
from samkit.cli.batch import add_commands, build_detector, run_detect_segment, run_everything  # noqa: F401

__all__ = ["add_commands", "build_detector", "run_detect_segment", "run_everything"]
