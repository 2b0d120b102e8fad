"""``python -m wideberth`` is the ``wideberth`` command."""

import sys

from .cli import main

sys.exit(main())
