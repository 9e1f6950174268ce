"""``python -m shmring``: the same as the ``shmring`` command."""

import sys

from ._cli.main import main

sys.exit(main())
