"""What ``shmring ls``, ``inspect`` and ``gc`` show people: sizes, local
times and ages instead of raw nanoseconds and clock ticks, and a plain account
of a region that is not a healthy one (``--json`` keeps the raw numbers).

A region whose header magic is missing is read by ``_region.inventory`` as
``unpublished``: a creation in progress, or one whose creator died half-way.
But the creator's pid is written before the magic, so when that pid still
runs once the creation grace is over, the magic was overwritten afterwards:
the header is corrupt, and saying the creator died would be wrong. That
distinction is made here, reading the header with ``pread`` (never through a
mapping, so a shrunk segment cannot fault the tool).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from .. import _layout as L
from .._region import inventory as _gc


def size(n: float) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Write ``rows`` as left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def age(seconds: float) -> str:
    """A duration as a person says it: ``4.2 s``, ``12 min``, ``3 h 5 min``, ``2 days``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def local_time(epoch: float, *, short: bool = False) -> str:
    """``epoch`` (seconds) as a local date and time; with ``short``, only the
    time of day when it is today."""
    t = time.localtime(epoch)
    if short and t[:3] == time.localtime()[:3]:
        return time.strftime("%H:%M:%S", t)
    return time.strftime("%Y-%m-%d %H:%M:%S %Z" if not short else "%Y-%m-%d %H:%M:%S", t)


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def process_start(ticks: int) -> str:
    """A process start time from the attach table (clock ticks since boot)
    as a local time; the raw ticks if the boot time cannot be read."""
    boot = _boot_time()
    if boot is None or ticks <= 0:
        return str(ticks)
    return local_time(boot + ticks / os.sysconf("SC_CLK_TCK"), short=True)


@dataclass
class Health:
    """What is wrong with a region, in words."""

    label: str  # "ok", "being created", "unpublished" or "corrupt"
    detail: str = ""

    @property
    def failed(self) -> bool:
        """True when the region cannot be used (``inspect`` exits 1)."""
        return self.label not in ("ok", "being created")


def _creator_pid(snap: _gc.Snapshot) -> int:
    """The creator pid field of an unpublished header (0 if unreadable)."""
    try:
        fd = os.open(_gc.shm_path(snap.segment), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        head = os.pread(fd, 8, L.HDR_CREATOR_PID)
    except OSError:
        return 0
    finally:
        os.close(fd)
    return int(struct.unpack("<Q", head)[0]) if len(head) == 8 else 0


def health(snap: _gc.Snapshot) -> Health:
    """Say whether ``snap`` is a healthy region and, if not, what it is."""
    if snap.state == "ok":
        return Health("ok")
    if snap.state == "corrupt":
        return Health("corrupt", f"{snap.error}; `shmring gc --yes` removes it")
    young = snap.age < _gc.CREATION_GRACE
    if snap.size < L.REGION_HEADER_SIZE:
        if young:
            return Health("being created", f"{snap.size} bytes so far")
        return Health("unpublished", f"{snap.size} bytes, too small for a region header: "
                      "its creator died while creating it, or it is not a region; "
                      "`shmring gc --yes` removes it")
    pid = _creator_pid(snap)
    creator_runs = pid > 0 and os.path.exists(f"/proc/{pid}")
    if young and (creator_runs or pid == 0):
        return Health("being created", f"by pid {pid}" if pid else "")
    if creator_runs:
        return Health("corrupt", f"the header is not published (its magic number is "
                      f"missing or overwritten) although its creator, pid {pid}, is alive; "
                      "`shmring gc --yes` removes it")
    who = f"its creator (pid {pid})" if pid else "its creator"
    return Health("unpublished", f"the header was never published: {who} died while "
                  "creating it; `shmring gc --yes` removes it")
