"""Orphans: durable broadcast subscriptions held for dead processes.

A durable subscription (``Channel._durable_consumer``, layout.h DURABLE)
whose process died is not freed by recovery: its slot stays, cursor and
all, gating the producer, until a process asking for its tag adopts it or
its hold passes. The supervisor frees the ones whose hold has passed, as it
frees any dead slot, and keeps a region with a held orphan alive (the
region table judges it again when the next one is due).
"""

from __future__ import annotations

import logging
import time

from .. import _layout as L
from .._region.slots import AttachTable

log = logging.getLogger("shmring.supervisor")


def expire_due(table: AttachTable, seg: str, stats: dict[str, int]) -> float | None:
    """Free every orphan of ``table`` (region ``seg``) whose hold has passed
    (counted in ``stats["recovered"]``); seconds until the next one held is
    due, or None if none is held."""
    now = time.monotonic_ns()
    due: int | None = None
    for i, word, tag, until in table.orphans():
        if until > now:
            due = until if due is None else min(due, until)
        elif table.expire(i, word):
            stats["recovered"] += 1
            log.info("slot %d of %s: durable subscription %#x of pid %d not taken over "
                     "within its hold; freed", i, seg, tag, word & L.SLOT_ORPHAN_PID)
    return None if due is None else (due - now) / 1e9
