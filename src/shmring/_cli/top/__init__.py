"""``shmring top``: a live view of what runs in a namespace.

Pieces, one concept each: :mod:`.sample` reads the namespace (regions,
pipeline boards, process names) and :mod:`.supervisor` its supervisor,
without attaching to anything; :mod:`.rates` turns successive samples into
a :class:`~.model.Frame` (rates, pipeline stages, processes); :mod:`.cells`
words the cells; :mod:`.rich_view` and :mod:`.plain_view` draw a frame;
:mod:`.keys` reads ``q`` from the terminal; :mod:`.command` is the command.
"""

from __future__ import annotations

from .command import add_arguments, run

__all__ = ["add_arguments", "run"]
