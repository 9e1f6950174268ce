"""What the supervisor asks the kernel about other processes: has a pidfd's
process exited, which /dev/shm files does a process map, and a pidfd that is
known to name a given (pid, start time).

No supervisor state here: the callers pass in what they know (for example
the inodes this process maps on the supervisor's own behalf, which must not
count as a client's mapping when the supervisor is embedded in a client).
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Iterable

from .._proc import alive as proc_alive
from .._proc import ns_of
from .._proc import start_time as proc_start_time


def exited(pidfds: Iterable[int]) -> set[int]:
    """Which of ``pidfds`` name processes that have exited (without waiting)."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(0)}


def pidfd_exited(pidfd: int) -> bool:
    """True if the process of ``pidfd`` has exited (a pidfd is readable then)."""
    return bool(exited([pidfd]))


def open_pidfd(pid: int, start: int) -> int | None:
    """A pidfd of live process ``pid`` started at ``start``, or None if it is
    dead or not ours to see. The start time is checked again after opening:
    the pidfd names whoever has the pid now, which must be that process."""
    if not proc_alive(pid, start):
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    if proc_start_time(pid) != start:
        os.close(pidfd)
        return None
    return pidfd


def check_peer(peer: int, start: int, ns: int) -> tuple[int, str | None]:
    """Check what a client says of itself (its start time, its PID namespace
    ``ns``, 0 if it did not say) against our ``/proc`` where it shows the
    client (``peer``, its pid here, > 0). Returns the namespace its slots
    hold and None, or why the claim is refused."""
    if peer <= 0:
        return ns, None  # not visible from here: its registration is its word
    st = proc_start_time(peer)
    if st is not None and st != start:
        return ns, "wrong start time"
    seen = ns_of(peer)
    if seen and ns and seen != ns:
        return ns, "wrong PID namespace"
    return ns or seen, None


def mapped_inodes(pid: int, ours: Callable[[], Iterable[int]]) -> dict[int, int] | None:
    """How many mappings process ``pid`` has of each /dev/shm file, by inode;
    None if unreadable. When ``pid`` is this process, one mapping of every
    inode ``ours()`` lists (with repeats) is the supervisor's, not counted."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            data = f.read()
    except OSError:
        return None
    out: dict[int, int] = {}
    for line in data.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and b"/dev/shm/" in parts[5]:
            ino = int(parts[4])
            out[ino] = out.get(ino, 0) + 1
    if pid == os.getpid():
        for ino in ours():
            if out.get(ino):
                out[ino] -= 1
    return {ino: n for ino, n in out.items() if n > 0}
