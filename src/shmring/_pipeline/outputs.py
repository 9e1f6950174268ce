"""A run's outputs as the parent yields them: ``for value in run``.

The last edge is read a batch at a time (many plain values per C call, a
chunk's values in one record), and the batches are joined by
:func:`itertools.chain`, so that handing the user one value is a step of a C
iterator, not a resumed Python generator: at chunk sizes in the thousands
that was a third of the parent's time per item.

Nothing taken is lost when a loop breaks off: ``iter(run)`` returns the same
iterator again, holding the rest of its batch. Only when the batch source
ended (end of stream, an error, or the Timeout of a ``wait``) does the next
loop get a new one, which yields first what a timed-out ``wait`` put back.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import _core
from .. import _layout as L
from .._channel.endpoints import Consumer
from .._errors import EndOfStream, Timeout
from .._objects.frame import VALUE_TAG
from . import item as I
from .arrays import ArrayPool, pooled
from .chunk import expand
from .order import Reorderer

_KIND, _DEPTH, _BODY = L.LINK_HDR, L.LINK_HDR + 1, L.LINK_HDR + 8
#: Plain values the output loop takes out of the last edge per C call, at
#: most, and their bytes: taken, they no longer hold the source back, so
#: they add to how far it may be read ahead (docs/design.md, Bounds).
OUTPUT_BATCH, OUTPUT_BATCH_BYTES = 64, 64 << 10
_decode_value = _core.decode_value


class Outputs:
    """The values of the last edge ``rx``, in the order ``order`` gives
    (None: as they come). ``raise_error`` raises the run's error if it has
    one; ``chunk`` turns a CHUNK record's entries into values (run.py);
    ``stop`` is set once the run stops, ``finished`` once its controller
    is done; ``lock`` guards ``order``; ``pool``: the run's array pool, if
    it has one (a pooled value's arrays are views of it that free their
    slots when they go)."""

    def __init__(self, rx: Consumer, order: Reorderer | None, *,
                 raise_error: Callable[[], None], chunk: Callable[[list[Any]], list[Any]],
                 stop: threading.Event, finished: threading.Event,
                 lock: threading.Lock, pool: ArrayPool | None = None) -> None:
        self._rx = rx
        self._pool = pool
        self._order = order
        self._raise_error = raise_error
        self._chunk = chunk
        self._stop = stop
        self._finished = finished
        self._lock = lock
        #: Outputs taken and not yielded: a timed-out ``wait`` puts them here.
        self.pending: collections.deque[Any] = collections.deque()
        #: The time a ``wait`` gives up at (None: never).
        self.deadline: float | None = None
        self._iter: Iterator[Any] | None = None
        self._ended = True

    def __iter__(self) -> Iterator[Any]:
        if self._ended:
            self._ended = False
            self._iter = itertools.chain.from_iterable(self._batches())
        assert self._iter is not None
        return self._iter

    def _batches(self) -> Iterator[list[Any]]:
        try:
            yield from self._read()
        finally:
            self._ended = True

    def _read(self) -> Iterator[list[Any]]:
        rx, order, pending = self._rx, self._order, self.pending
        if pending:
            batch = list(pending)
            pending.clear()
            yield batch
        recv_values, peek, release = rx._recv_values, rx._peek, rx._release
        while True:
            self._raise_error()
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise Timeout
            if order is None:
                # The common case, plain values, many at a time (csrc/py/pipe_batch.c).
                got = recv_values(OUTPUT_BATCH, OUTPUT_BATCH_BYTES)
                if got:
                    yield got
                    continue
            try:
                mv = peek(0.05)
            except Timeout:
                if self._stop.is_set():
                    self._raise_error()
                    return
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise
                continue
            except EndOfStream:
                self._finished.wait()
                self._raise_error()
                if order is not None:
                    with self._lock:
                        yield order.ready()
                return
            try:
                if order is None and mv[_KIND] == I.VALUE and mv[_DEPTH] == 0:
                    # A value at the top of its item.
                    body = mv[_BODY:]
                    value = _decode_value(body) if body[0] == VALUE_TAG else self._decode(body)
                    kind = -1
                else:
                    item = int.from_bytes(mv[:8], "little")
                    body = mv[L.LINK_HDR:]
                    kind, path, off = I.parse(body)
                    decoded = kind in (I.VALUE, I.CHUNK, I.COMPACT)
                    value = self._decode(body[off:]) if decoded else None
                    count = I.count_of(body[off:]) if kind == I.END else 0
            finally:
                release()
            if kind == I.COMPACT and order is None:
                yield value[1]
            elif kind == I.CHUNK or kind == I.COMPACT:
                yield self._chunk(value if kind == I.CHUNK else expand(value))
            elif order is None:
                if kind in (-1, I.VALUE):
                    yield [value]
            else:
                with self._lock:
                    key = (item, *path)
                    if kind == I.VALUE:
                        order.value(key, value)
                    elif kind == I.END:
                        order.end(key, count)
                    else:
                        order.tombstone(key)
                    ready = order.ready()
                yield ready

    def _decode(self, body: memoryview) -> Any:
        pool = self._pool
        if pool is not None and pooled(body):
            # Its arrays stay in the pool, read-only as the stage passed
            # them on, their slots freed when the last of them goes.
            return pool.decode(body, True, pinned=True)[0]
        return I.decode(body, False)

    def collect(self, deadline: float | None) -> list[Any]:
        """Every output left, until end of stream. Timeout once ``deadline``
        passes (looked at between batches, so no batch is split); what was
        collected goes back to be yielded first by the next loop or wait."""
        outs: list[Any] = []
        self.deadline = deadline
        try:
            outs.extend(self)  # the values yielded before an exception stay in outs
        except Timeout:
            self.pending.extendleft(reversed(outs))
            raise
        finally:
            self.deadline = None
        return outs
