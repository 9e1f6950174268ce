"""Where a shmring queue's regions live, and waiting for them to go."""

from __future__ import annotations

import glob
import os
import time
from typing import Any

import shmring


def segments(q: shmring.Queue[Any] | shmring.SimpleQueue[Any]) -> list[str]:
    """The queue's regions: its first ring, its control block, and every
    ring it grew that exists now (``<name>.<generation>``)."""
    ns = q._namespace
    base = f"/dev/shm/shmring.{ns}.{q.name}"
    grown = [p for p in glob.glob(f"{glob.escape(base)}.*") if p[len(base) + 1:].isdigit()]
    return [base, f"{base}.ctl", *sorted(grown)]


def wait_gone(paths: list[str], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(p) for p in paths):
            return True
        time.sleep(0.01)
    return False
