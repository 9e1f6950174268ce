"""The process index: every process the supervisor watches, and who died.

A watched process is a client (it said ``hello`` with its pidfd) or a
process seen only in some region's attach table (the supervisor opens its
pidfd itself, see ``procfs.open_pidfd``). Each pidfd sits in an epoll of
its own, nested in the supervisor's main one: when it becomes readable the
process has exited, crash or not, and :meth:`ProcessIndex.drain` handles
every death already queued in one ``epoll_wait(0)``.

Death is the pidfd, never the socket: a process may close its connection
and live on. This module only keeps the bookkeeping (keys, pidfds, the dead
flag) and reports each death once to the ``on_death`` callback it is given;
what a death means for regions (recovering slots, unlinking) belongs to the
region table, and for connections to the server.

A process has two keys: ``key`` is (pid as the supervisor sees it, or -pid
if it cannot see it; start time), and (``ns``, ``lpid``, start time): its PID
namespace and the pid it calls itself there, which is what its attach slots
hold (the two pids differ across PID namespaces). A process seen only in a
table is found in our ``/proc`` through a ``Census`` when its namespace is
not ours (``NSpid``); one we cannot see at all is not watched.
"""

from __future__ import annotations

import contextlib
import os
import selectors
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .._proc import Census, proc_namespace
from . import procfs


@dataclass(eq=False)
class Proc:
    """A process the supervisor watches: a client, or one seen in a table."""

    key: tuple[int, int]  # (pid as we see it, or -pid if invisible; start time)
    lpid: int  # the pid the process calls itself: what its attach slots hold
    start: int
    pidfd: int
    ns: int = 0  # its PID namespace, as its attach slots hold it (0: not known)
    conn: object | None = None  # the server's connection, while connected
    holds: dict[tuple[str, int], int] = field(default_factory=dict)  # registrations
    seen: set[tuple[str, int]] = field(default_factory=set)  # regions it may have slots in
    creating: dict[str, float] = field(default_factory=dict)  # seg -> when announced
    dead: bool = False

    @property
    def pid(self) -> int:
        """The pid as the supervisor sees it (<= 0 if it cannot)."""
        return self.key[0]


class ProcessIndex:
    """Watched processes by key and by what their attach slots hold.

    ``on_death(proc)`` is called once per death, after the process has left
    the index and its pidfd is closed. ``stats["deaths"]`` counts them.
    """

    def __init__(self, stats: dict[str, int], on_death: Callable[[Proc], None]) -> None:
        self._stats = stats
        self._on_death = on_death
        self._procs: dict[tuple[int, int], Proc] = {}
        self._by_table: dict[tuple[int, int, int], Proc] = {}
        self._sel: selectors.EpollSelector | None = None
        self._draining = False

    def open(self) -> int:
        """Make the pidfds' epoll; returns its descriptor, to be watched for
        reading (then call :meth:`drain`)."""
        self._sel = selectors.EpollSelector()
        return self._sel.fileno()

    def close(self) -> None:
        """Close every pidfd and the epoll; forget every process."""
        for p in self._procs.values():
            with contextlib.suppress(OSError):
                os.close(p.pidfd)
        self._procs.clear()
        self._by_table.clear()
        if self._sel is not None:
            self._sel.close()

    def fds(self) -> list[int]:
        """Every descriptor held (a forked child closes them without
        touching what they refer to)."""
        out = [self._sel.fileno()] if self._sel is not None else []
        return out + [p.pidfd for p in self._procs.values()]

    # --------------------------------------------------------- lookups --
    def __iter__(self) -> Iterator[Proc]:
        return iter(list(self._procs.values()))

    def __len__(self) -> int:
        return len(self._procs)

    def get(self, key: tuple[int, int]) -> Proc | None:
        """The process of ``key`` (pid as seen here, start time)."""
        return self._procs.get(key)

    def by_table(self, lpid: int, start: int, ns: int) -> Proc | None:
        """The process whose attach slots hold ``lpid``, ``start`` and PID
        namespace ``ns``."""
        return self._by_table.get((ns, lpid, start))

    # -------------------------------------------------------- watching --
    def watch(self, key: tuple[int, int], lpid: int, start: int, pidfd: int,
              ns: int) -> Proc:
        """Watch a process through ``pidfd`` (the index owns it from now)."""
        assert self._sel is not None
        p = Proc(key, lpid, start, pidfd, ns)
        self._procs[key] = p
        self._by_table[(ns, lpid, start)] = p
        self._sel.register(pidfd, selectors.EVENT_READ, p)
        return p

    def watch_table_process(self, lpid: int, start: int, ns: int,
                            census: Callable[[], Census]) -> Proc | None:
        """A live process seen in an attach table (as ``lpid`` of PID
        namespace ``ns``) that has not registered: watch it. None if it is
        dead or not ours to see (``census()`` tells which, and translates
        the pid of another namespace)."""
        pid = lpid if ns and ns == proc_namespace() else census().find(lpid, ns)
        if pid is None:
            return None
        pidfd = procfs.open_pidfd(pid, start)
        if pidfd is None:
            return None
        if self._procs.get((pid, start)) is not None:  # known under another table key
            os.close(pidfd)
            return self._procs[(pid, start)]
        return self.watch((pid, start), lpid, start, pidfd, ns)

    def exited(self, p: Proc) -> bool:
        """True if ``p`` has exited (its death may not be handled yet)."""
        return procfs.pidfd_exited(p.pidfd)

    # ---------------------------------------------------------- deaths --
    def drain(self) -> None:
        """Handle every death already queued (not reentrant: a death handled
        meanwhile may ask again)."""
        if self._draining or self._sel is None:
            return
        self._draining = True
        try:
            while events := self._sel.select(0):
                for key, _mask in events:
                    if key.data.dead:  # never twice
                        self._sel.unregister(key.fd)
                    self.died(key.data)
        finally:
            self._draining = False

    def died(self, p: Proc) -> None:
        """``p`` has exited: forget it, then tell ``on_death`` (once)."""
        if p.dead:
            return
        p.dead = True
        assert self._sel is not None
        self._stats["deaths"] += 1
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(p.pidfd)
        os.close(p.pidfd)
        self._procs.pop(p.key, None)
        if self._by_table.get((p.ns, p.lpid, p.start)) is p:
            del self._by_table[(p.ns, p.lpid, p.start)]
        self._on_death(p)
