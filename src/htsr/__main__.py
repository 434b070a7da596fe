"""``python -m htsr``: the same as the ``htsr`` command."""

import sys

from .cli import main

sys.exit(main())
