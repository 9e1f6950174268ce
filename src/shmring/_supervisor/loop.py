"""The supervisor's event loop: one epoll, timers on an injectable clock, and
calls handed in from other threads.

Everything the supervisor does runs in this loop's thread, so its tables
need no locks. A descriptor is registered with the callback to run when it
is readable; a timer is a (when, callback) on ``clock`` -- a test passes a
fake clock, moves it, and calls :meth:`EventLoop.wake` so that the loop
looks again; :meth:`EventLoop.call` runs a function in the loop after
everything received so far (tests use it to synchronise). One failing
callback is logged and never ends the loop: supervision must go on.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import queue
import selectors
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("shmring.supervisor")

Handler = Callable[[selectors.SelectorKey], object]


class EventLoop:
    """An epoll selector with a wake pipe, a timer heap and a call queue.

    :meth:`open` makes the descriptors; :meth:`run` serves until
    ``stopping()``; :meth:`close` closes what :meth:`open` made.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._sel: selectors.EpollSelector | None = None
        self._wake_r = self._wake_w = -1
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = \
            queue.SimpleQueue()

    def open(self) -> None:
        """Make the selector and the wake pipe."""
        self._sel = selectors.EpollSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    def close(self) -> None:
        """Close the selector and the wake pipe."""
        if self._sel is not None:
            self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def fds(self) -> list[int]:
        """The descriptors :meth:`open` made (a forked child closes them)."""
        out = [self._wake_r, self._wake_w]
        if self._sel is not None:
            out.append(self._sel.fileno())
        return out

    # ------------------------------------------------------ descriptors --
    def register(self, fileobj: int | socket.socket, handler: Handler) -> None:
        """Run ``handler(key)`` whenever ``fileobj`` is readable."""
        assert self._sel is not None
        self._sel.register(fileobj, selectors.EVENT_READ, handler)

    def unregister(self, fileobj: int | socket.socket) -> None:
        """Stop watching ``fileobj`` (nothing if it was not watched)."""
        assert self._sel is not None
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(fileobj)

    # ----------------------------------------------------------- timers --
    def schedule(self, when: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` once ``clock()`` has reached ``when``."""
        heapq.heappush(self._timers, (when, next(self._seq), fn))

    def run_timers(self) -> None:
        """Run every timer that is due."""
        while self._timers and self._timers[0][0] <= self.clock():
            _, _, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                log.exception("a timer failed")

    # ------------------------------------------------------------- loop --
    def run(self, stopping: Callable[[], bool]) -> None:
        """Serve events and timers until ``stopping()``."""
        assert self._sel is not None
        while not stopping():
            self.run_timers()
            if stopping():
                break
            timeout = None
            if self._timers:
                timeout = max(0.0, min(self._timers[0][0] - self.clock(), 3600.0))
            for key, _mask in self._sel.select(timeout):
                try:
                    key.data(key)
                except Exception:  # one bad event must not end supervision
                    log.exception("handling an event failed")

    def wake(self) -> None:
        """Make the loop look at its timers and calls now (any thread)."""
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"w")

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` in the loop's thread, after everything it has received
        so far; returns its result or raises what it raised."""
        box: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._calls.put((fn, box))
        self.wake()
        ok, value = box.get(timeout=timeout)
        if not ok:
            raise value
        return value

    def _on_wake(self, key: selectors.SelectorKey) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        self.run_timers()  # a moved clock is seen before the calls queued after it
        while True:
            try:
                fn, box = self._calls.get_nowait()
            except queue.Empty:
                break
            try:
                box.put((True, fn()))
            except BaseException as e:  # handed to the caller
                box.put((False, e))
