"""The floor: the same bytes copied inside one process, no IPC at all."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from ..params import ARRAY_BYTES, LARGE
from .base import Peer


def _rate(step: Callable[[], object], duration: float, chunk: int) -> float:
    """Calls of ``step`` per second over ``duration`` seconds."""
    count = 0
    start = time.perf_counter()
    end = start + duration
    while True:
        for _ in range(chunk):
            step()
        count += chunk
        now = time.perf_counter()
        if now >= end:
            return count / (now - start)


class MemcpyFloor(Peer):
    """One memcpy per message, in one process: the bandwidth no channel can beat."""

    name = "memcpy"
    label = "memcpy floor (1 process)"
    in_process = True
    unsupported: ClassVar[dict[str, str]] = {
        **dict.fromkeys(
            ("small", "small_batch", "obj_dict"),
            "per-message cost is the interpreter's, not memory's: no meaningful floor",
        ),
        **dict.fromkeys(
            ("large_view", "pingpong", "fanout", "fanin", "workqueue", "idle"),
            "no channel: the floor is only measured for bulk copies",
        ),
    }
    notes: ClassVar[dict[str, str]] = {"large": "numpy.copyto", "obj_numpy": "numpy.copyto"}

    def measure(self, bench: str, duration: float, ring_bytes: int) -> dict[str, float]:
        import numpy as np

        size = LARGE if bench == "large" else ARRAY_BYTES
        src = np.ones(size, dtype=np.uint8)
        # Copy into successive slots of a ring as big as the channels' buffer, so the
        # destination is as warm or cold in the caches as theirs.
        slots = np.zeros((max(1, ring_bytes // size), size), dtype=np.uint8)
        slots.fill(1)  # fault the pages in before timing
        count = iter(range(1 << 62))

        def copy() -> None:
            np.copyto(slots[next(count) % len(slots)], src)

        rate = _rate(copy, duration, 1)
        return {"msgs_s": rate, "gb_s": rate * size / 1e9}
