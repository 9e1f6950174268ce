"""Where a shmring queue's regions live, and waiting for them to go."""

from __future__ import annotations

import os
import time
from typing import Any

import shmring


def segments(q: shmring.Queue[Any] | shmring.SimpleQueue[Any]) -> list[str]:
    ns = q._namespace
    return [f"/dev/shm/shmring.{ns}.{q.name}", f"/dev/shm/shmring.{ns}.{q.name}.ctl"]


def wait_gone(paths: list[str], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(p) for p in paths):
            return True
        time.sleep(0.01)
    return False
