"""Retention: remove a journal's oldest segments, whole, once no named
cursor needs them and the journal is over its byte budget.

Removal takes the cursor table's lock (so a cursor being made meanwhile is
counted) and never the tail segment. A reader that is inside a removed
segment keeps reading its mapping; one that reaches a removed segment later
skips to the oldest one left and counts what it missed (``Reader.missed``).
"""

from __future__ import annotations

import os

from .meta import Meta
from .segment import fsync_dir, list_segments


def retain(path: str, meta: Meta, max_bytes: int) -> int:
    """Remove old segments of the journal at ``path`` until its segment files
    take at most ``max_bytes`` or the next one is still needed; return the
    bytes removed."""
    removed = 0
    with meta.locked():
        segs = list_segments(path)
        sizes = [os.stat(f).st_size for _, f in segs]
        total = sum(sizes)
        cursors = meta.cursors().values()
        needed = min(cursors) if cursors else None
        k = 0
        while total > max_bytes and k + 1 < len(segs):
            next_first = segs[k + 1][0]
            if needed is not None and needed < next_first:
                break  # a cursor still has records of segment k to read
            os.unlink(segs[k][1])
            total -= sizes[k]
            removed += sizes[k]
            k += 1
        if removed:
            fsync_dir(path)
    return removed
