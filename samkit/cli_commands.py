"""Front-end shim: the code moved to :mod:`samkit.cli.segment`, :mod:`samkit.cli.models` and
:mod:`samkit.cli.demo`; this module re-exports their names for code that imported them from here."""
from samkit.cli.demo import load_demo_module, run_demo  # noqa: F401
from samkit.cli.models import run_download, run_models  # noqa: F401
from samkit.cli.segment import run_segment  # noqa: F401

__all__ = ["load_demo_module", "run_demo", "run_download", "run_models", "run_segment"]
