"""``python -m shmring``: the same as the ``shmring`` command."""

import sys

from ._cli import main

sys.exit(main())
