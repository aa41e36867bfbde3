"""``python -m triomq``: the same as the ``triomq`` command."""

import sys

from ._cli import main

sys.exit(main())
