"""What a :class:`~shmring.Pool`'s methods return: :class:`AsyncResult`
(``apply_async``), :class:`MapResult` (``map_async``, ``starmap_async``)
and the iterators of ``imap`` and ``imap_unordered``, as
``multiprocessing.pool`` has them.

Each is a *job* of one or more *tasks* (a chunk of a map is one task). The
pool's source reads a job's tasks (``tasks()``, lazily: an ``imap`` over a
generator reads it as the workers take its chunks) and its collector thread
hands each task's outcome to ``_set(index, ok, value)``; ``value`` is the
result (a chunk's list of results) or the exception to raise.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import TimeoutError as PoolTimeout
from typing import Any

#: How a worker runs a task (pool_task.py): ``func(*args, **kwds)``, or
#: ``func`` over a chunk of items, each an argument or (starmap) a tuple.
APPLY, MAP, STARMAP = 0, 1, 2

Task = tuple[int, Callable[..., Any], Any, Any]  # (mode, func, args or chunk, kwds)


def _call(fn: Callable[[Any], object] | None, value: Any) -> None:
    """Run a user's callback; its exception is printed, as a thread's would
    be, and does not stop the pool's collector."""
    if fn is None:
        return
    try:
        fn(value)
    except Exception:
        print("Exception in a shmring.Pool callback:", file=sys.stderr)
        traceback.print_exc()


class _Job:
    """A submission: its tasks and where their outcomes go."""

    func: Callable[..., Any]

    def tasks(self) -> Iterator[tuple[int, Task]]:  # pragma: no cover - abstract
        """``(index, task)`` for each task, read by the pool's source."""
        raise NotImplementedError

    def _set(self, index: int, ok: bool, value: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def _abandon(self, error: BaseException) -> None:
        """The pool stopped (terminate, or its workers could not run): every
        task without an outcome fails with ``error``."""
        raise NotImplementedError  # pragma: no cover


class AsyncResult(_Job):
    """The result of :meth:`Pool.apply_async`; ``get()`` waits for it."""

    def __init__(self, func: Callable[..., Any], args: Iterable[Any], kwds: dict[str, Any],
                 callback: Callable[[Any], object] | None,
                 error_callback: Callable[[BaseException], object] | None) -> None:
        self.func = func
        self._args: Any = (func, tuple(args), dict(kwds))
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None

    def tasks(self) -> Iterator[tuple[int, Task]]:
        func, args, kwds = self._args
        self._args = None  # the pool keeps no reference to them
        yield 0, (APPLY, func, args, kwds)

    def ready(self) -> bool:
        """True once the result (or its error) is in."""
        return self._event.is_set()

    def successful(self) -> bool:
        """True if the call returned; ValueError while it is not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready, at most ``timeout`` seconds."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result, or the call's exception raised here;
        ``multiprocessing.TimeoutError`` if not ready within ``timeout``."""
        self.wait(timeout)
        if not self.ready():
            raise PoolTimeout
        if self._success:
            return self._value
        raise self._value

    def _finish(self, ok: bool, value: Any) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._success, self._value = ok, value
        _call(self._callback if ok else self._error_callback, value)
        self._event.set()

    def _set(self, index: int, ok: bool, value: Any) -> None:
        self._finish(ok, value)

    def _abandon(self, error: BaseException) -> None:
        self._finish(False, error)


ApplyResult = AsyncResult


class MapResult(AsyncResult):
    """The result of :meth:`Pool.map_async` (a list, in order): chunks of
    ``chunksize`` items, each one task; the first failed chunk fails it."""

    def __init__(self, func: Callable[..., Any], items: list[Any], chunksize: int, star: bool,
                 callback: Callable[[Any], object] | None,
                 error_callback: Callable[[BaseException], object] | None) -> None:
        super().__init__(func, (), {}, callback, error_callback)
        self._items: list[Any] | None = items
        self._chunksize = chunksize
        self._mode = STARMAP if star else MAP
        self._results: list[Any] = [None] * len(items)
        self._left = -(-len(items) // chunksize) if items else 0
        if not self._left:
            self._finish(True, [])

    def tasks(self) -> Iterator[tuple[int, Task]]:
        items, size = self._items, self._chunksize
        self._items = None
        assert items is not None
        for i, start in enumerate(range(0, len(items), size)):
            if self._event.is_set():
                return  # failed already: the rest need not run
            yield i, (self._mode, self.func, items[start:start + size], None)

    def _set(self, index: int, ok: bool, value: Any) -> None:
        if not ok:
            self._results = []
            self._finish(False, value)
            return
        with self._lock:
            if self._event.is_set():
                return
            start = index * self._chunksize
            self._results[start:start + len(value)] = value
            self._left -= 1
            done = not self._left
        if done:
            results, self._results = self._results, []
            self._finish(True, results)


class IMapIterator(_Job):
    """The iterator :meth:`Pool.imap` returns: results in the order of the
    items; ``next(timeout)`` as ``multiprocessing``'s has it. With a
    ``chunksize`` over 1 its elements are the chunks' lists of results (the
    pool returns a generator over their items, as ``multiprocessing``
    does)."""

    _ordered = True

    def __init__(self, func: Callable[..., Any], iterable: Iterable[Any],
                 chunksize: int) -> None:
        self.func = func
        self._iterable: Iterable[Any] | None = iterable
        self._chunksize = chunksize
        self._cond = threading.Condition(threading.Lock())
        self._chunks: dict[int, tuple[bool, Any]] = {}
        self._ready: collections.deque[tuple[bool, Any]] = collections.deque()
        self._next = 0  # the next chunk to yield (ordered)
        self._arrived = 0  # chunks in (unordered)
        self._length: int | None = None  # chunks, once the iterable is read

    def tasks(self) -> Iterator[tuple[int, Task]]:
        iterable, self._iterable = self._iterable, None
        i = 0
        try:
            it = iter(iterable)  # type: ignore[arg-type]
            while True:
                chunk = list(itertools.islice(it, self._chunksize))
                if not chunk:
                    break
                yield i, (MAP, self.func, chunk, None)
                i += 1
        except Exception as e:  # the iterable raised: its place gets the error
            self._set(i, False, e)
            i += 1
        with self._cond:
            self._length = i
            self._cond.notify_all()

    def _set(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if self._ordered:
                self._chunks[index] = (ok, value)
                while self._next in self._chunks:
                    self._push(*self._chunks.pop(self._next))
                    self._next += 1
            else:
                self._push(ok, value)
                self._arrived += 1
            self._cond.notify_all()

    def _push(self, ok: bool, value: Any) -> None:
        # One entry per chunk: with chunksize 1 its one result; else the
        # chunk's list, which the pool's imap flattens (as multiprocessing's).
        if not ok or self._chunksize > 1:
            self._ready.append((ok, value))
        else:
            self._ready.append((True, value[0]))

    def _abandon(self, error: BaseException) -> None:
        with self._cond:
            if not self._done():
                self._ready.append((False, error))
                self._length = -1  # nothing more comes
            self._cond.notify_all()

    def _done(self) -> bool:
        if self._length is None:
            return False
        return (self._next if self._ordered else self._arrived) >= self._length

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next result; ``multiprocessing.TimeoutError`` if none comes
        within ``timeout`` seconds, StopIteration after the last."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._length == -1 or self._done():
                    raise StopIteration
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PoolTimeout
                self._cond.wait(left)
            ok, value = self._ready.popleft()
        if ok:
            return value
        raise value

    __next__ = next


class IMapUnorderedIterator(IMapIterator):
    """The iterator :meth:`Pool.imap_unordered` returns: results as they
    come."""

    _ordered = False
