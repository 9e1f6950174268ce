"""Who is alive: process start times, so that a reused pid is never taken
for the process that attached, and PID namespaces, so that a pid is only
ever looked up where it means something.

A pid alone is not an identity: after a process exits, the kernel may give
its pid to a new one. Field 22 of ``/proc/<pid>/stat`` (start time in clock
ticks since boot) tells the two apart; the attach table stores both.

A pid is also only a number in one PID namespace: a process in a container
(``unshare -p``) calls itself 1 or 2, which on the host is somebody else.
So every holder records its namespace too (:func:`pid_namespace`, the inode
of ``/proc/self/ns/pid``), and :func:`holder_alive` judges a holder from
``/proc`` only when ``/proc`` shows that namespace's pids
(:func:`proc_namespace`); otherwise it cannot tell (None), and callers
presume the holder alive. A :class:`Census` (one walk of ``/proc``) goes
further where it can: a namespace below ours is visible, so its pids can be
translated (``NSpid`` in ``/proc/<pid>/status``) and a missing one is dead;
from the initial namespace every process on the machine is visible.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

#: The inode of the initial PID namespace (``PROC_PID_INIT_INO``): a process
#: in it sees every process on the machine in its ``/proc``.
INIT_PIDNS = 0xEFFFFFFC


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


_MY_NS: dict[int, tuple[int, int]] = {}


def _namespaces() -> tuple[int, int]:
    pid = os.getpid()
    got = _MY_NS.get(pid)
    if got is None:
        try:
            ns = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            ns = 0
        try:
            # /proc shows our namespace's pids if it calls us what we call ourselves.
            shown = ns if os.readlink("/proc/self") == str(pid) else 0
        except OSError:
            shown = 0
        got = _MY_NS[pid] = (ns, shown)
    return got


def pid_namespace() -> int:
    """This process's PID namespace: the inode of ``/proc/self/ns/pid``
    (0 if unreadable). Cached per pid, so it is right after fork."""
    return _namespaces()[0]


def proc_namespace() -> int:
    """The PID namespace whose pids this process's ``/proc`` shows: ours, or
    0 when ``/proc`` belongs to another one (mounted by an ancestor) or is
    missing; then no pid can be looked up in it."""
    return _namespaces()[1]


def ns_of(pid: int | str) -> int:
    """The PID namespace (inode) of process ``pid`` of our ``/proc``, 0 if
    it cannot be read (gone, or not ours to inspect)."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return 0


def _lives(pid: int, started: int) -> bool:
    # A slot being taken (start time 0) is alive while its pid exists.
    return start_time(pid) is not None if started == 0 else alive(pid, started)


def holder_alive(pid: int, started: int, ns: int) -> bool | None:
    """Whether the process that recorded (``pid``, ``started``) in PID
    namespace ``ns`` still runs, judged from this process's ``/proc``: None
    if it cannot tell (another namespace, or an unknown one), which callers
    take for alive. A start time of 0 is a slot being taken: alive while its
    pid exists."""
    if ns == 0 or ns != proc_namespace():
        return None
    return _lives(pid, started)


@dataclass
class Census:
    """One walk of ``/proc``: which (namespace, pid) pairs of other PID
    namespaces are visible here, and as which pid of ours. Take it *after*
    reading the slots it judges, so a process that took a slot is in it
    unless it died."""

    local: int = 0  # proc_namespace()
    complete: bool = False  # /proc shows every process of the machine
    pids: dict[tuple[int, int], int] = field(default_factory=dict)  # (ns, its pid) -> ours
    namespaces: set[int] = field(default_factory=set)  # namespaces seen
    innermost: set[int] = field(default_factory=set)  # pids as their own namespace says

    @classmethod
    def take(cls) -> Census:
        """Walk ``/proc`` now."""
        c = cls(local=proc_namespace())
        if c.local == 0:
            return c
        c.complete = c.local == INIT_PIDNS
        try:
            names = os.listdir("/proc")
        except OSError:
            c.complete = False
            return c
        for name in names:
            if not name.isdigit():
                continue
            ns = ns_of(name)
            if ns == 0:
                continue
            c.namespaces.add(ns)
            inner = int(name) if ns == c.local else _innermost(name)
            if inner is not None:
                c.pids[(ns, inner)] = int(name)
                c.innermost.add(inner)
        return c

    def find(self, pid: int, ns: int) -> int | None:
        """Our pid of the process that calls itself ``pid`` in ``ns``."""
        if ns == self.local and ns:
            return pid
        return self.pids.get((ns, pid))

    def judge(self, pid: int, started: int, ns: int) -> bool | None:
        """As :func:`holder_alive`, translating pids of namespaces visible
        here; a holder missing from a visible namespace (or from anywhere,
        when every process is visible) is dead."""
        if self.local == 0:
            return None
        if ns == 0:
            # A slot being taken, its namespace not stored yet.
            if pid in self.innermost:
                return None
            return False if self.complete else None
        if ns == self.local:
            return _lives(pid, started)
        ours = self.pids.get((ns, pid))
        if ours is not None:
            return _lives(ours, started)
        # Every process of a namespace below ours is visible here.
        return False if self.complete or ns in self.namespaces else None

    def where(self, pid: int, start: Callable[[int], bool],
              ns: Callable[[int], bool] | None) -> int | None:
        """Our pid of a live process as :meth:`judge_where` looks for, or None."""
        for (space, inner), ours in self.pids.items():
            if inner == pid and (ns is None or ns(space)):
                st = start_time(ours)
                if st is not None and start(st) and not is_zombie(ours):
                    return ours
        return None

    def judge_where(self, pid: int, start: Callable[[int], bool],
                    ns: Callable[[int], bool] | None) -> bool | None:
        """Is a process alive that calls itself ``pid`` in a namespace
        ``ns(inode)`` accepts (None: any, the namespace is not known) with a
        start time ``start(ticks)`` accepts? None if it cannot tell: not
        found, and neither is every process visible here nor (``ns`` given)
        some process of an accepted namespace."""
        if self.where(pid, start, ns) is not None:
            return True
        if self.complete or (ns is not None and any(ns(s) for s in self.namespaces)):
            return False
        return None


def innermost(pid: int | str) -> int | None:
    """The pid process ``pid`` (of our ``/proc``) has in its own PID
    namespace (the last of ``NSpid``), or None."""
    return _innermost(str(pid))


def _innermost(pid: str) -> int | None:
    """The pid process ``pid`` has in its own namespace (last of ``NSpid``)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        return None
    return None
