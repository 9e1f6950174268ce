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

What a ring does not keep is kept in a *control block*: a second, tiny
region (``<name>.ctl``) whose ring bytes, unused by any endpoint, hold a few
64-bit words updated with ``_core`` atomics: the items put and the items
taken, each on a line of its own so that a putter and a getter do not pass
one line back and forth (the queue holds the difference: ``qsize``, and what
``maxsize`` bounds), the unfinished-task count of a ``JoinableQueue``, and
two futex words with waiter counts so that ``put`` on a full queue and
``join`` sleep until woken. Each waiter raises its waiter count, then
re-reads the condition; each waker changes the condition, then reads the
waiter count - both with sequentially consistent read-modify-writes, so one
of the two always sees the other.

``put`` and ``get`` are C methods (``csrc/queue.c``, the base class
``_core.QueueCore``): the common call - blocking without a timeout, the
default serializer, a plain value - counts, encodes and writes (or takes,
decodes and counts) in one call, as ``send_obj`` does. Every other call,
and one that would wait for a lock another thread holds or for room under
``maxsize``, is handed to ``_put`` and ``_get`` below, which do the same
with the same locks and words.

A queue is named (``q-<pid>-<random>`` unless given a name) and pickles as
its name: unpickling opens it, so it can be passed to ``Process``, to
``Pool`` initialisers and even through another queue, under any start
method. A process forked with a queue keeps the inherited mappings (the
supervisor client registers it as a holder) and makes its own endpoints on
first use, never touching the parent's attach slots. The regions live while
any process holds them and the supervisor removes them after the last one
exits, crashes included.

Differences from multiprocessing, by design: the queue is bounded in bytes
(``maxsize_bytes``, rounded up to a power of two; an item larger than half
of it raises :class:`~shmring.MessageTooLarge`) as well as, optionally, in
items (``maxsize``); ``put`` raises pickling errors in the caller rather
than printing them from a feeder thread; ``join_thread`` and
``cancel_join_thread`` have nothing to do; ``JoinableQueue.join`` takes an
optional timeout.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import uuid
import weakref
from pickle import PickleBuffer
from queue import Empty, Full
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel, Consumer, Producer
from .._errors import CorruptRegion, DecodeError, QueueClosed, Timeout, WouldBlock
from .._objects.frame import encode, framed_size
from .._objects.recv import _take_other, decode_bytes
from .._objects.send import write
from .._objects.serializers import _WRAPPABLE, PICKLE, PickleSerializer, Serializer, _dumps
from .._region.region import split_segment_name

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]

T = TypeVar("T")

#: Ring bytes of a queue unless ``maxsize_bytes`` says otherwise.
DEFAULT_MAXSIZE_BYTES = 1 << 23

# The control block: offsets into the ring bytes of the ``.ctl`` region
# (csrc/queue.c uses the same). Words that change often sit on their own
# 128-byte line.
_CTL_MAGIC_VALUE = 0x3274634F51524853  # "SHRQOct2"
_PUTS = 0  # u64: items put (counted before they are written)
_GETS = 128  # u64: items taken (counted after), and puts undone
_NOTFULL_SEQ = 256  # u32 futex word: bumped when an item is taken (maxsize > 0)
_NOTFULL_WAITERS = 264  # u64: putters asleep on _NOTFULL_SEQ
_UNFINISHED = 384  # u64: JoinableQueue items put and not task_done()
_JOIN_SEQ = 512  # u32 futex word: bumped when _UNFINISHED reaches 0
_JOIN_WAITERS = 520  # u64: join() callers asleep on _JOIN_SEQ
_MAXSIZE = 640  # u64: maxsize in items (0: unbounded), set at creation
_CTL_MAGIC = 648  # u64: _CTL_MAGIC_VALUE once the block is initialised
_CTL_BYTES = 768
_MINUS_ONE = (1 << 64) - 1  # fetch_add(-1)
_SMALL_ITEM = 32  # full() before any put found the ring full: room for this?


def _pickle(obj: Any, ser: Serializer) -> tuple[ReadableBuffer, list[PickleBuffer]]:
    """What ``put`` writes for an object that is not a plain value."""
    if ser.__class__ is PickleSerializer and type(obj) not in _WRAPPABLE:
        buffers: list[PickleBuffer] = []  # encode()'s common case, inlined
        pickled = _dumps(obj, 5, buffer_callback=buffers.append)
        return (ser._inband_if_small(obj, pickled, buffers) if buffers else pickled), buffers
    return encode(obj, ser)


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class _Handles:
    """What one process holds of a queue: its two channels, their mappings,
    the endpoints it made and the state the C put and get use. Only the
    process that opened them closes them (a forked child inherits the
    objects but not the right to close them)."""

    __slots__ = ("base", "buf", "cbuf", "ch", "ctl", "notfull_seq", "notfull_waiters", "pid",
                 "rx", "state", "tx")

    def __init__(self, ch: Channel, ctl: Channel) -> None:
        self.pid = os.getpid()
        self.ch = ch
        self.ctl = ctl
        self.buf = ch.region._mapping()
        self.cbuf = ctl.region._mapping()
        self.base = int(struct.unpack_from("<Q", self.cbuf, L.HDR_DATA_OFFSET)[0])
        if ctl.capacity < _CTL_BYTES:
            raise CorruptRegion(f"{ctl.name!r} is too small to be a queue's control block")
        self._offsets()
        self.tx: Producer | None = None
        self.rx: Consumer | None = None
        self.state: _core.QueueState | None = None

    def _offsets(self) -> None:
        base = self.base
        self.notfull_seq = base + _NOTFULL_SEQ
        self.notfull_waiters = base + _NOTFULL_WAITERS

    def bind(self, maxsize: int, joinable: bool, wlock: _core.Lock,
             rlock: _core.Lock) -> _core.QueueState:
        """The state the C put and get use, with this process's locks."""
        st = self.state = _core.QueueState(self.cbuf, self.base, maxsize, joinable, wlock, rlock)
        return st

    def producer(self) -> Producer:
        """This process's producer (made on first put)."""
        tx = self.tx = self.ch.producer()
        if self.state is not None:
            self.state.tx = tx
        return tx

    def consumer(self) -> Consumer:
        """This process's consumer (made on first get)."""
        rx = self.rx = self.ch.consumer()
        if self.state is not None:
            self.state.rx = rx
        return rx

    def inherit(self) -> _Handles:
        """In a forked child: the same mappings, none of the parent's
        endpoints, no state yet (bind() makes it with the child's locks)."""
        h = _Handles.__new__(_Handles)
        h.pid, h.ch, h.ctl, h.buf, h.cbuf, h.base = (
            os.getpid(), self.ch, self.ctl, self.buf, self.cbuf, self.base)
        h._offsets()
        h.tx = h.rx = None
        h.state = None
        return h

    def close(self) -> None:
        if self.pid != os.getpid():
            return
        if self.state is not None:
            self.state.invalidate()  # the C calls let go of the mapping first
        for ep in (self.tx, self.rx):
            if ep is not None:
                ep.close()
        self.tx = self.rx = None
        self.ch.close()
        self.ctl.close()


def _close_handles(h: _Handles, *locks: _core.Lock) -> None:
    """Close ``h`` unless a thread is inside get() or put() (it holds a lock):
    a thread blocked in a wait must not have the ring unmapped under it.
    At exit or from a finalizer; whatever is left, the supervisor cleans up."""
    taken = []
    try:
        for lock in locks:
            if not lock.acquire(blocking=False):
                return
            taken.append(lock)
        with contextlib.suppress(Exception):
            h.close()
    finally:
        for lock in taken:
            lock.release()


#: Every live queue of this process, so a forked child can take over its handles.
_LIVE: weakref.WeakSet[_QueueBase] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for q in list(_LIVE):
        q._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _QueueBase(_core.QueueCore):
    """What the three queues share: creation, attachment, fork and pickling,
    the control block, close; put and get (the common call in C, the base
    class; the rest in _put and _get)."""

    _joinable = False

    def __init__(
        self,
        maxsize: int = 0,
        *,
        maxsize_bytes: int = DEFAULT_MAXSIZE_BYTES,
        serializer: Serializer | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> None:
        if not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if not isinstance(maxsize_bytes, int) or maxsize_bytes <= 0:
            raise ValueError(f"maxsize_bytes must be a positive int, not {maxsize_bytes!r}")
        capacity = max(L.MIN_CAPACITY, _next_pow2(maxsize_bytes))
        if name is None:
            name = f"q-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        ch = Channel.create(name, capacity, "mpmc", max_message=capacity // 2 - L.RECORD_HEADER,
                            slots=L.MAX_SLOTS, namespace=namespace)
        try:
            ctl = Channel.create(f"{name}.ctl", L.MIN_CAPACITY, "spsc", slots=L.MAX_SLOTS,
                                 namespace=namespace)
        except BaseException:
            ch.close()
            ch.unlink()
            raise
        try:
            h = _Handles(ch, ctl)
            _core.store(h.cbuf, h.base + _MAXSIZE, max(0, maxsize))
            _core.store(h.cbuf, h.base + _CTL_MAGIC, _CTL_MAGIC_VALUE)
        except BaseException:
            for c in (ch, ctl):
                c.close()
                c.unlink()
            raise
        parsed = split_segment_name(ch.region.segment)
        assert parsed is not None
        self._setup(name, parsed[0], serializer, h)

    def _setup(self, name: str, namespace: str, serializer: Serializer | None,
               h: _Handles | None) -> None:
        self._name = name
        self._namespace = namespace
        self._serializer = PICKLE if serializer is None else serializer
        # A plain value goes through the value codec (csrc/codec.c) only with
        # the default serializer; others see every object.
        self._plain = self._serializer.__class__ is PickleSerializer
        self._closed = False
        self._rlock = _core.Lock()
        self._wlock = _core.Lock()
        self._full_size = _SMALL_ITEM
        self._h: _Handles | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if h is not None:
            self._adopt(h)
        _LIVE.add(self)

    def _adopt(self, h: _Handles) -> None:
        if _core.load(h.cbuf, h.base + _CTL_MAGIC) != _CTL_MAGIC_VALUE:
            h.close()
            raise CorruptRegion(f"{h.ctl.name!r} is not an initialised queue control block")
        self._maxsize = int(_core.load(h.cbuf, h.base + _MAXSIZE))
        self._state = h.bind(self._maxsize, self._joinable, self._wlock, self._rlock)
        self._h = h
        self._finalizer = weakref.finalize(self, _close_handles, h, self._rlock, self._wlock)

    def _attach(self) -> _Handles:
        """This process's handles, opening the queue by name if needed."""
        h = self._h
        if h is not None:
            return h
        if self._closed:
            raise QueueClosed(f"Queue {self!r} is closed")
        ch = Channel.open(self._name, namespace=self._namespace)
        try:
            ctl = Channel.open(f"{self._name}.ctl", namespace=self._namespace)
        except BaseException:
            ch.close()
            raise
        try:
            h = _Handles(ch, ctl)
        except BaseException:
            ch.close()
            ctl.close()
            raise
        if self._h is not None:  # another thread attached meanwhile
            h.close()
            return self._h
        self._adopt(h)
        return h

    def _forget_after_fork(self) -> None:
        # In a forked child (run from an at-fork hook: no I/O here). The
        # mappings are inherited and the supervisor client registers this
        # child for them; the endpoints and attach slots are the parent's, so
        # the child makes its own on first use and never closes the parent's
        # (Channel.close() leaves slots it does not own alone).
        if self._finalizer is not None:
            self._finalizer.detach()  # the parent's handles: not ours to close
            self._finalizer = None
        self._closed = False  # as multiprocessing does after fork
        self._rlock = _core.Lock()
        self._wlock = _core.Lock()
        h = self._h
        self._h = None
        self._state = None
        if h is not None:
            h = h.inherit()
            self._state = h.bind(self._maxsize, self._joinable, self._wlock, self._rlock)
            self._h = h
            self._finalizer = weakref.finalize(self, _close_handles, h, self._rlock,
                                               self._wlock)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._name, self._namespace, self._serializer))

    # --------------------------------------------------------- lifecycle --
    def close(self) -> None:
        """Detach this process from the queue: ``put`` and ``get`` here raise
        :class:`~shmring.QueueClosed` (a ``ValueError``) afterwards. Other
        processes keep using the queue; items already put stay in it.

        Example::

            q.put(result)
            q.close()       # nothing to flush: put() already wrote it
        """
        if self._closed:
            return
        self._closed = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        # A thread blocked in get() or put() uses the endpoints: close them
        # when it is done (it calls us again on its way out).
        if not self._rlock.acquire(blocking=False):
            return
        try:
            if not self._wlock.acquire(blocking=False):
                return
            try:
                h, self._h = self._h, None
                self._state = None
                if self._finalizer is not None:
                    self._finalizer.detach()
                    self._finalizer = None
                if h is not None:
                    h.close()
            finally:
                self._wlock.release()
        finally:
            self._rlock.release()

    def _closed_error(self) -> QueueClosed:
        return QueueClosed(f"Queue {self!r} is closed")

    @property
    def name(self) -> str:
        """The queue's name (its regions are ``<name>`` and ``<name>.ctl``)."""
        return self._name

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<shmring.{type(self).__name__} {self._name!r}{state}>"

    # ------------------------------------------------------- put and get --
    # put() and get() are QueueCore's C methods; these are the paths they
    # hand every other call to.
    def _put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """put() when it is not the common call (see the module docstring)."""
        if self._closed:
            raise self._closed_error()
        h = self._h or self._attach()
        st = h.state
        assert st is not None  # bound in _adopt
        ser = self._serializer
        deadline = None if timeout is None or not block else time.monotonic() + max(0.0, timeout)
        if not st.reserve():
            self._wait_for_room(h, st, block, deadline)
        data: ReadableBuffer | None = None
        buffers: list[PickleBuffer] = []
        done = False
        try:
            if not self._plain:
                data, buffers = _pickle(obj, ser)
            lock = self._wlock
            if not _acquire(lock, block, deadline):
                raise Full
            try:
                tx = h.tx or h.producer()
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                # A plain value (csrc/codec.c) is encoded straight into the
                # ring by one C call; anything else is pickled.
                if data is None and not tx._send_value(obj, left, not block):
                    data, buffers = _pickle(obj, ser)
                if data is not None:
                    write(tx, data, buffers, left, not block and deadline is None)
            except (WouldBlock, Timeout):
                # What full() asks about: room for an item this size.
                self._full_size = (framed_size(data, buffers) if data is not None
                                   else len(_core.encode_value(obj) or b""))
                raise Full from None
            finally:
                lock.release()
            done = True
        finally:
            if not done:
                st.unreserve()
            if self._closed:
                self._close_if_idle()

    def _get(self, block: bool = True, timeout: float | None = None) -> Any:
        """get() when it is not the common call (see the module docstring)."""
        if self._closed:
            raise self._closed_error()
        h = self._h or self._attach()
        st = h.state
        assert st is not None  # bound in _adopt
        deadline = None if timeout is None or not block else time.monotonic() + max(0.0, timeout)
        lock = self._rlock
        if not _acquire(lock, block, deadline):
            raise Empty
        if deadline is not None:
            timeout = max(0.0, deadline - time.monotonic())
        data = None
        obj: Any = NotImplemented
        try:
            rx = h.rx or h.consumer()
            try:
                if self._plain:
                    # A value record is decoded in place by one C call; any
                    # other record stays held and is taken at once below.
                    obj = rx._recv_value(timeout if block else None, not block)
                if obj is NotImplemented:
                    obj, data = self._take_record(rx, timeout, not block)
            except (WouldBlock, Timeout):
                raise Empty from None
            except DecodeError:
                st.taken()  # a record that cannot be decoded is consumed
                raise
            st.taken()  # before a close() meanwhile lets the control block go
        finally:
            lock.release()
            if self._closed:
                self._close_if_idle()
        return obj if data is None else self._decode_data(rx, data)

    def _take_record(self, rx: Consumer, timeout: float | None = None,
                     nowait: bool = False) -> tuple[Any, Any]:
        """Under the read lock: take the next record that is not a value
        record. ``(obj, None)`` if it was decoded in place (large records),
        else ``(None, data)`` to decode after the lock, as multiprocessing
        does."""
        if rx._obj_in_place:
            return _take_other(rx, self._serializer, timeout, nowait), None
        return None, (rx.recv_nowait() if nowait else rx.recv(timeout))

    def _decode_data(self, rx: Consumer, data: bytes) -> Any:
        """The object in a record taken by _take_record."""
        return decode_bytes(rx, self._serializer, data)

    # ----------------------------------------------------- control block --
    # Counting is QueueState's (csrc/queue.c), for both paths; only waiting
    # for room under maxsize is here.
    def _wait_for_room(self, h: _Handles, st: _core.QueueState, block: bool,
                       deadline: float | None) -> None:
        """Reserve an item (st.reserve()) once the queue holds fewer than
        ``maxsize``, sleeping on the not-full futex word meanwhile."""
        if not block:
            raise Full
        cbuf, waiters = h.cbuf, h.notfull_waiters
        _core.fetch_add(cbuf, waiters, 1)
        try:
            while True:
                seq = _core.load32(cbuf, h.notfull_seq)
                if st.reserve():  # seq-cst loads: pairs with a getter's taken()
                    return
                left = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Full
                _core.futex_wait(cbuf, h.notfull_seq, seq, left)
        finally:
            _core.fetch_add(cbuf, waiters, _MINUS_ONE)

    def _count(self) -> int:
        if self._closed:
            raise self._closed_error()
        st = (self._h or self._attach()).state
        assert st is not None  # bound in _adopt
        return st.count()


def _rebuild(cls: type[_QueueBase], name: str, namespace: str,
             serializer: Serializer) -> _QueueBase:
    q = cls.__new__(cls)
    q._setup(name, namespace, serializer, None)
    q._attach()
    return q


class Queue(_QueueBase, Generic[T]):
    """A process-shared FIFO with the interface of ``multiprocessing.Queue``.

    ``maxsize`` bounds the number of items (0: no bound, as in
    multiprocessing); ``maxsize_bytes`` bounds the bytes in flight (rounded
    up to a power of two; an item may be up to half of it). ``put`` raises
    :class:`queue.Full` and ``get`` raises :class:`queue.Empty` when
    ``block`` is false or ``timeout`` passes. Pass the queue to other
    processes as an argument, under any start method::

        import multiprocessing as mp
        import shmring

        def worker(q):
            q.put({"pid": os.getpid(), "result": 42})

        if __name__ == "__main__":
            q = shmring.Queue()
            p = mp.get_context("spawn").Process(target=worker, args=(q,))
            p.start()
            print(q.get(timeout=10))
            p.join()
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        maxsize_bytes: int = DEFAULT_MAXSIZE_BYTES,
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
    ``task_done`` removes one, and ``join`` waits for zero::

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
        h = self._h or self._attach()
        cbuf, unf, seqw = h.cbuf, h.base + _UNFINISHED, h.base + _JOIN_SEQ
        if _core.load(cbuf, unf) == 0:
            return
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        waiters = h.base + _JOIN_WAITERS
        _core.fetch_add(cbuf, waiters, 1)
        try:
            while True:
                seq = _core.load32(cbuf, seqw)
                # seq-cst RMW read: pairs with task_done's read of the waiters.
                if _core.fetch_add(cbuf, unf, 0) == 0:
                    return
                left = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Timeout("timed out waiting for unfinished tasks")
                _core.futex_wait(cbuf, seqw, seq, left)
        finally:
            _core.fetch_add(cbuf, waiters, _MINUS_ONE)


class SimpleQueue(_QueueBase, Generic[T]):
    """The interface of ``multiprocessing.SimpleQueue``: ``put``, ``get``,
    ``empty`` and ``close``, no timeouts::

        q = shmring.SimpleQueue()
        q.put(("result", 1))
        assert q.get() == ("result", 1)
    """

    def __init__(
        self,
        *,
        maxsize_bytes: int = DEFAULT_MAXSIZE_BYTES,
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


def _acquire(lock: _core.Lock, block: bool, deadline: float | None) -> bool:
    """Take ``lock`` as put/get do: at once when not blocking, else until the
    monotonic ``deadline`` (None: without limit). False if it was not taken."""
    if not block:
        return lock.acquire(blocking=False)
    if deadline is None:
        return lock.acquire()
    return lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
