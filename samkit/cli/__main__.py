"""``python -m samkit.cli``: the ``samkit`` command line."""
import sys

from samkit.cli import main

sys.exit(main())
