"""``shmring.Queue``, ``SimpleQueue`` and ``JoinableQueue``: drop-ins for
multiprocessing's queues, on a shared-memory ring.

Why it is built this way
------------------------
``multiprocessing.Queue`` pickles in a feeder thread and pushes the bytes
through a pipe: every item costs system calls, two thread hand-offs and a
lock shared through a semaphore. Here ``put`` encodes the object
(:mod:`shmring._objects`) and writes it straight into an ``mpmc`` channel -
the work-queue pattern, each item to exactly one getter - and ``get`` takes
it out; neither makes a system call unless a peer sleeps. ``put`` is
synchronous: when it returns the item is in shared memory, so there is no
feeder thread to flush or join, and an item put by a process that exits is
not lost.

The parts: ``control.py`` (the control block of counts and futex words),
``base.py`` (what the three classes share: creation, attachment, fork,
pickling, the Python paths of ``put`` and ``get``), and this module.

A queue is unbounded unless bounded, as multiprocessing's is: a chain of
rings that grows while items wait and shrinks when drained (``chain.py``).
Differences from multiprocessing, by design: ``maxsize_bytes`` makes a queue
of one ring bounded in bytes (rounded up to a power of two; an item larger
than half of it raises :class:`~shmring.MessageTooLarge`), as ``maxsize``
bounds it in items; ``put`` raises pickling errors in the caller rather
than printing them from a feeder thread; ``join_thread`` and
``cancel_join_thread`` have nothing to do; ``JoinableQueue.join`` takes an
optional timeout.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any, Generic

from .. import _core
from .. import _layout as L
from .._objects.serializers import Serializer
from .base import UNBOUNDED, _QueueBase
from .control import wait_unfinished

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    #: The item type. A bare ``Queue`` is ``Queue[Any]``, as an untyped queue
    #: of multiprocessing is, so ``q: shmring.Queue`` passes ``mypy --strict``
    #: (a PEP 696 default; typing.TypeVar takes ``default=`` only from 3.13,
    #: and only type checkers need it, so at run time T is a plain TypeVar).
    T = TypeVar("T", default=Any)
else:
    T = typing.TypeVar("T")


class Queue(_QueueBase, Generic[T]):
    """A process-shared FIFO with the interface of ``multiprocessing.Queue``.

    ``maxsize`` bounds the number of items (0: no bound, as in
    multiprocessing); ``maxsize_bytes`` (default None: no bound, the queue
    grows) bounds the bytes in flight (rounded up to a power of two; an item
    may be up to half of it). ``put`` raises
    :class:`queue.Full` and ``get`` raises :class:`queue.Empty` when
    ``block`` is false or ``timeout`` passes. Pass the queue to other
    processes as an argument, under any start method::

        import multiprocessing as mp
        import os

        import shmring

        def worker(q):
            q.put({"pid": os.getpid(), "result": 42})

        if __name__ == "__main__":
            q = shmring.Queue()
            p = mp.get_context("spawn").Process(target=worker, args=(q,))
            p.start()
            print(q.get(timeout=10))
            p.join()
            q.close()
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        maxsize_bytes: int | None = UNBOUNDED,
        ctx: Any = None,
        serializer: Serializer | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> None:
        """``ctx`` is accepted for compatibility and ignored; ``serializer``
        defaults to pickle; ``name`` and ``namespace`` name the regions."""
        super().__init__(maxsize, maxsize_bytes=maxsize_bytes, serializer=serializer,
                         name=name, namespace=namespace)

    if TYPE_CHECKING:
        def put(self, obj: T, block: bool = True, timeout: float | None = None) -> None:
            """Put ``obj`` in the queue (QueueCore.put, in C)."""

        def get(self, block: bool = True, timeout: float | None = None) -> T:
            """Remove and return an item (QueueCore.get, in C)."""

    def put_nowait(self, obj: T) -> None:
        """``put(obj, block=False)``: raise ``queue.Full`` rather than wait."""
        self._put(obj, False, None)

    def get_nowait(self) -> T:
        """``get(block=False)``: raise ``queue.Empty`` rather than wait."""
        return self._get(False, None)  # type: ignore[no-any-return]

    def qsize(self) -> int:
        """The number of items in the queue (approximate while others put and
        get). Example: ``q.put(1); assert q.qsize() == 1``."""
        return self._count()

    def empty(self) -> bool:
        """True if the queue holds no item (approximate, as in multiprocessing)."""
        return self._count() == 0

    def full(self) -> bool:
        """True if the queue holds ``maxsize`` items, or if its ring has no
        room now for an item as large as the last one this process found it
        full for (before that, for a small item). Approximate, as in
        multiprocessing, while others put and get."""
        n = self._count()
        if self._maxsize and n >= self._maxsize:
            return True
        h = self._h or self._attach()
        if h.chain is not None:
            return False  # a growing queue has room for anything
        # The ring's own test (ring_has_space): a record never straddles the
        # end, so one that would is preceded by padding to the end.
        cap = h.ch.capacity
        need = (self._full_size + L.RECORD_HEADER + L.RECORD_ALIGN - 1) & -L.RECORD_ALIGN
        tail = _core.load(h.buf, L.OFF_TAIL)
        idx = tail & (cap - 1)
        pad = cap - idx if idx + need > cap else 0
        return bool(tail + pad + need - _core.load(h.buf, L.OFF_HEAD) > cap)

    def join_thread(self) -> None:
        """Wait for the feeder thread - there is none: ``put`` already wrote
        every item to shared memory. Raises ``AssertionError`` unless the
        queue was closed, as multiprocessing does."""
        if not self._closed:
            raise AssertionError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: no feeder thread holds unsent items."""


class JoinableQueue(Queue[T]):
    """A :class:`Queue` that also counts unfinished tasks, like
    ``multiprocessing.JoinableQueue``: every ``put`` adds one, every
    ``task_done`` removes one, and ``join`` waits for zero (fragment)::

        q = shmring.JoinableQueue()
        for job in jobs:
            q.put(job)
        # in the workers:  item = q.get(); work(item); q.task_done()
        q.join()           # every job is done
    """

    _joinable = True

    def task_done(self) -> None:
        """Mark one item taken with ``get`` as done. Raises ``ValueError`` if
        called more times than there were items put."""
        if self._closed:
            raise self._closed_error()
        st = (self._h or self._attach()).state
        assert st is not None  # bound in _adopt
        if not st.task_done():
            raise ValueError("task_done() called too many times")

    def join(self, timeout: float | None = None) -> None:
        """Wait until every item put has been marked done with
        :meth:`task_done`. ``timeout`` (seconds; not in multiprocessing)
        raises :class:`~shmring.Timeout` when it passes."""
        if self._closed:
            raise self._closed_error()
        wait_unfinished(self._h or self._attach(), timeout)


class SimpleQueue(_QueueBase, Generic[T]):
    """The interface of ``multiprocessing.SimpleQueue``: ``put``, ``get``,
    ``empty`` and ``close``, no timeouts::

        import shmring

        q = shmring.SimpleQueue()
        q.put(("result", 1))
        assert q.get() == ("result", 1)
        q.close()
    """

    def __init__(
        self,
        *,
        maxsize_bytes: int | None = UNBOUNDED,
        ctx: Any = None,
        serializer: Serializer | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> None:
        """See :class:`Queue` for the arguments."""
        super().__init__(0, maxsize_bytes=maxsize_bytes, serializer=serializer, name=name,
                         namespace=namespace)

    if TYPE_CHECKING:
        def put(self, obj: T) -> None:
            """Put ``obj`` in the queue, waiting for room if the ring is full
            (QueueCore.put, in C)."""

        def get(self) -> T:
            """Remove and return an item, waiting for one (QueueCore.get, in C)."""

    def empty(self) -> bool:
        """True if the queue holds no item (approximate)."""
        return self._count() == 0
