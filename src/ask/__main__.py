"""``python -m ask --help``."""

import sys

from ask.cli import main

sys.exit(main())
