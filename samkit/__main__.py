"""``python -m samkit``: the ``samkit`` command line (a front end: :mod:`samkit.cli`)."""
import sys

from samkit.cli import main

sys.exit(main())
