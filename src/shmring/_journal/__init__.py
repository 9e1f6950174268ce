"""Durable journals: records in memory-mapped segment files that outlive
their processes and, once flushed, the machine (docs/journal.md).

- ``format.py``: the bytes of a segment, its sparse index and a record;
- ``meta.py``: the shared meta page (durable point, wake word, cursors);
- ``segment.py``: one segment file: create, map, index lookups;
- ``recovery.py``: finding the tail on open, cutting a torn one;
- ``sync.py``: the ``sync=`` policies and the interval flusher;
- ``writer.py``: ``Writer`` (append, claim, append_obj, flush, roll);
- ``reader.py``: ``Reader`` (replay, live follow, named cursors);
- ``retention.py``: ``retain``;
- ``journal.py``: ``Journal``, what ties them together.
"""

from __future__ import annotations

from .journal import Journal
from .reader import Reader, decode_obj
from .writer import Writer

__all__ = ["Journal", "Reader", "Writer", "decode_obj"]
