"""Who is alive: process start times, so that a reused pid is never taken
for the process that attached.

A pid alone is not an identity: after a process exits, the kernel may give
its pid to a new one. Field 22 of ``/proc/<pid>/stat`` (start time in clock
ticks since boot) tells the two apart; the attach table stores both.
"""

from __future__ import annotations

import os


def start_time(pid: int | str) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after the last ')'. Field 3 is then index 0, so field 22 is index 19.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_zombie(pid: int) -> bool:
    """True if ``pid`` has exited but not been reaped (its mappings are gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    state = data[data.rfind(b")") + 2 :].split()[:1]
    return state in ([b"Z"], [b"X"])


def alive(pid: int, started: int) -> bool:
    """True if the process that had ``pid`` and ``started`` still runs."""
    if pid <= 0:
        return False
    st = start_time(pid)
    return st is not None and st == started and not is_zombie(pid)


_MY_START: dict[int, int] = {}


def my_start_time() -> int:
    """This process's start time (cached per pid, so it is right after fork)."""
    pid = os.getpid()
    st = _MY_START.get(pid)
    if st is None:
        # /proc/self, not /proc/<pid>: in a PID namespace whose /proc is the
        # parent's, our own pid there names another process.
        st = start_time("self") or 0
        _MY_START[pid] = st
    return st
