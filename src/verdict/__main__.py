"""Run the command line as ``python -m verdict``."""

import sys

from verdict.cli import main

sys.exit(main())
