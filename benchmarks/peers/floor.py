"""The floor: the same bytes copied inside one process, no IPC at all."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import ClassVar

from ..params import ARRAY_BYTES, LARGE, SMALL
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
    """One copy per message in a Python loop: what no channel can beat."""

    name = "memcpy"
    label = "memcpy floor (1 process)"
    in_process = True
    unsupported: ClassVar[dict[str, str]] = dict.fromkeys(
        ("small_batch", "large_view", "pingpong", "fanout", "fanin", "workqueue", "idle"),
        "no channel: the floor is only measured for the copy workloads",
    )
    notes: ClassVar[dict[str, str]] = {
        "small": "bytearray slice assignment",
        "large": "numpy.copyto",
        "obj_dict": "pickle.dumps + pickle.loads",
        "obj_numpy": "numpy.copyto",
    }

    def measure(self, bench: str, quick: bool, duration: float) -> dict[str, float]:
        import numpy as np

        if bench == "small":
            buf, msg = bytearray(SMALL), b"x" * SMALL

            def copy_small() -> None:
                buf[:] = msg

            rate = _rate(copy_small, duration, 1024)
            return {"msgs_s": rate, "gb_s": rate * SMALL / 1e9}
        if bench == "obj_dict":
            dumps, loads, proto = pickle.dumps, pickle.loads, pickle.HIGHEST_PROTOCOL
            obj = {"id": 1, "name": "x", "vals": [1, 2, 3]}
            return {"msgs_s": _rate(lambda: loads(dumps(obj, proto)), duration, 256)}
        size = LARGE if bench == "large" else ARRAY_BYTES
        dtype = np.uint8 if bench == "large" else np.float64
        src = np.ones(size // np.dtype(dtype).itemsize, dtype=dtype)
        dst = np.empty_like(src)
        rate = _rate(lambda: np.copyto(dst, src), duration, 1)
        return {"msgs_s": rate, "gb_s": rate * size / 1e9}
