"""What shmring's three queues share: creation, attachment, fork and
pickling, close, and the Python paths of put and get.

A queue bounded in bytes (``maxsize_bytes=``) is one ring; an unbounded
one (the default) is a chain of rings (``chain.py``), put and get in Python
only. On a bounded queue ``put`` and ``get`` are C methods
(``csrc/py/queue.c``, the base class ``_core.QueueCore``): the common
call - blocking without a timeout, the default serializer, a plain
value - counts, encodes and writes (or takes, decodes and counts) in one
call, as ``send_obj`` does. Every other call, and one that would wait for
a lock another thread holds or for room under ``maxsize``, is handed to
``_put`` and ``_get`` below, which do the same with the same locks and
words.

A queue is named (``q-<pid>-<random>`` unless given a name) and pickles as
its name: unpickling opens it, so it can be passed to ``Process``, to
``Pool`` initialisers and even through another queue, under any start
method. A process forked with a queue keeps the inherited mappings (the
supervisor client registers it as a holder) and makes its own endpoints on
first use, never touching the parent's attach slots. The regions live while
any process holds them and the supervisor removes them after the last one
exits, crashes included.

The control block and its waiting are ``control.py``'s; the public classes
are ``queue.py``'s.
"""

from __future__ import annotations

import os
import time
import uuid
import weakref
from pickle import PickleBuffer
from queue import Empty, Full
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel
from .._channel.endpoints import Consumer
from .._errors import (
    CorruptRegion,
    DecodeError,
    EndOfStream,
    InvalidArgument,
    QueueClosed,
    Timeout,
    WouldBlock,
)
from .._objects.frame import FramePlan, encode, framed_size
from .._objects.recv import _take_other, decode_bytes
from .._objects.send import write
from .._objects.serializers import _WRAPPABLE, PICKLE, PickleSerializer, Serializer
from .._region.names import check_namespace, default_namespace
from .._region.region import split_segment_name
from . import chain as C
from . import reduce as _reduce
from .control import _close_handles, _Handles, wait_for_room

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: ``maxsize_bytes`` of a queue unbounded in bytes: it grows (chain.py).
UNBOUNDED = None
_SMALL_ITEM = 32  # full() before any put found the ring full: room for this?
_Q = TypeVar("_Q", bound="_QueueBase")


def _pickle(obj: Any, ser: Serializer) -> tuple[ReadableBuffer, list[PickleBuffer]]:
    """What ``put`` writes for an object that is not a plain value: with the
    default serializer, pickled as multiprocessing pickles (``reduce.py``)."""
    if ser.__class__ is PickleSerializer and type(obj) not in _WRAPPABLE:
        buffers: list[PickleBuffer] = []  # encode()'s common case, inlined
        pickled = _reduce.dumps(obj, buffers)
        threshold = ser.oob_threshold
        if buffers and threshold and sum(memoryview(b).nbytes for b in buffers) < threshold:
            buffers.clear()  # small buffers are cheaper in band
            pickled = _reduce.dumps(obj, None)
        return pickled, buffers
    return encode(obj, ser)


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


#: Every live queue of this process, so a forked child can take over its handles.
_LIVE: weakref.WeakSet[_QueueBase] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for q in list(_LIVE):
        q._forget_after_fork()


def _before_fork() -> None:
    # The child holds every queue: the parent's watcher must run (_watch).
    for q in list(_LIVE):
        q._watch()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


class _QueueBase(_core.QueueCore):
    """What the three queues share: creation, attachment, fork and pickling,
    the control block, close; put and get (the common call in C, the base
    class; the rest in _put and _get)."""

    _joinable = False

    def __init__(
        self,
        maxsize: int = 0,
        *,
        maxsize_bytes: int | None = UNBOUNDED,
        serializer: Serializer | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> None:
        if not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize_bytes is not None and (not isinstance(maxsize_bytes, int)
                                          or maxsize_bytes <= 0):
            raise ValueError(f"maxsize_bytes must be a positive int or None, not "
                             f"{maxsize_bytes!r}")
        named = name is not None
        if name is None:
            name = f"q-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        if maxsize_bytes is None:
            namespace = check_namespace(default_namespace() if namespace is None else namespace)
            ring = (C.seg_name(name, 0), C.BASE_CAPACITY, "mpmc",
                    C.BASE_CAPACITY // 2 - L.RECORD_HEADER)
        else:
            capacity = max(L.MIN_CAPACITY, _next_pow2(maxsize_bytes))
            ring = (name, capacity, "mpmc", capacity // 2 - L.RECORD_HEADER)
        # Both regions registered in one round trip: the supervisor tracks
        # both when this returns (a region it never tracked could be left
        # behind), for one wait instead of two.
        ch, ctl = Channel.create_together(
            [ring, (f"{name}.ctl", L.MIN_CAPACITY, "spsc", None)], namespace)
        try:
            h = _Handles(ch, ctl)
            h.init_block(maxsize, chained=maxsize_bytes is None)
        except BaseException:
            for c in (ch, ctl):
                c.close()
                c.unlink()
            raise
        parsed = split_segment_name(ch.region.segment)
        assert parsed is not None
        self._setup(name, parsed[0], serializer, h, watch=named)

    def _setup(self, name: str, namespace: str, serializer: Serializer | None,
               h: _Handles | None, watch: bool = True) -> None:
        self._name = name
        self._namespace = namespace
        self._serializer = PICKLE if serializer is None else serializer
        # A plain value goes through the value codec (csrc/value/) only with
        # the default serializer; others see every object.
        self._plain = self._serializer.__class__ is PickleSerializer
        self._closed = False
        self._rlock = _core.Lock()
        self._wlock = _core.Lock()
        self._full_size = _SMALL_ITEM
        self._h: _Handles | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if h is not None:
            self._adopt(h, watch)
        _LIVE.add(self)

    def _adopt(self, h: _Handles, watch: bool = True) -> None:
        try:
            self._maxsize = h.maxsize()
        except CorruptRegion:
            h.close()
            raise
        self._state = h.bind(self._maxsize, self._joinable, self._wlock, self._rlock)
        self._h = h
        self._finalizer = weakref.finalize(self, _close_handles, h, self._rlock, self._wlock)
        if h.chain is not None and watch:
            h.chain.start()

    def _watch(self) -> None:
        """Make sure this process's watcher (chain.py) runs before another
        process can reach the queue. A process that opens a queue starts it
        at once (its watcher is what holds the rings others add); the
        process that made a queue under a name of its own choosing, which
        no other process can know yet, starts it when the queue first can
        be reached: its first put or get, its pickling, a fork, its name
        read. A thread start less in ``Queue()``, as multiprocessing starts
        its feeder thread at the first put."""
        h = self._h
        if h is not None and h.chain is not None:
            h.chain.ensure_started()

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

    @classmethod
    def open(cls: type[_Q], name: str, *, namespace: str | None = None,
             serializer: Serializer | None = None, remote: str | None = None,
             timeout: float = 10.0) -> _Q:
        """Open the existing queue called ``name`` (made by another process
        with ``name=``), as unpickling a queue does. Raises
        :class:`~shmring.RegionNotFound` if there is no such queue. The
        queue lives while any process holds it; :meth:`close` detaches this
        one. Open it as the class it was made as (a ``JoinableQueue`` as a
        ``JoinableQueue``), and with the same ``serializer``::

            q = shmring.Queue.open("results")     # made elsewhere with name="results"

        ``remote="tcp://hostb:7470"``: queue ``name`` of another host, whose
        bridge listens there and exports it (a queue made with
        ``maxsize_bytes=``). This namespace's bridge (started if none runs)
        imports it into a local queue of the same name, which this opens
        once it is fed, waiting up to ``timeout`` seconds for the peer. Items
        put there reach this host's getters, each exactly once. See
        docs/bridge.md."""
        ns = check_namespace(default_namespace() if namespace is None else namespace)
        if remote is not None:
            from .._channel import channel as _channel
            if _channel._remote_import is None:
                raise InvalidArgument("remote= needs shmring's bridge (import shmring)")
            _channel._remote_import(name, remote, ns, timeout)
        return _rebuild(cls, name, ns, serializer)

    def __reduce__(self) -> tuple[Any, ...]:
        self._watch()
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
        self._watch()  # another process may open it by this name
        return self._name

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<shmring.{type(self).__name__} {self._name!r}{state}>"

    # ------------------------------------------------------- put and get --
    # queue.Full and queue.Empty, as multiprocessing raises them, with a
    # message that names the queue and the wait.
    def _full(self, block: bool, timeout: float | None) -> Full:
        waited = f": no room within {timeout} s" if block and timeout is not None else ""
        return Full(f"queue {self._name!r} is full{waited}")

    def _empty(self, block: bool, timeout: float | None) -> Empty:
        waited = f": nothing came within {timeout} s" if block and timeout is not None else ""
        return Empty(f"queue {self._name!r} is empty{waited}")

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
            try:
                wait_for_room(h, st, block, deadline)
            except Full:
                raise self._full(block, timeout) from None
        if h.chain is not None:
            self._put_chained(h, st, obj, block, deadline, timeout)
            return
        data: ReadableBuffer | None = None
        buffers: list[PickleBuffer] = []
        done = False
        try:
            if not self._plain:
                data, buffers = _pickle(obj, ser)
            lock = self._wlock
            if not _acquire(lock, block, deadline):
                raise self._full(block, timeout)
            try:
                tx = h.tx or h.producer()
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                # A plain value (csrc/value/) is encoded straight into the
                # ring by one C call; anything else is pickled.
                if data is None and not tx._send_value(obj, left, not block):
                    data, buffers = _pickle(obj, ser)
                if data is not None:
                    write(tx, data, buffers, left, not block and deadline is None)
            except (WouldBlock, Timeout):
                # What full() asks about: room for an item this size.
                self._full_size = (framed_size(data, buffers) if data is not None
                                   else len(_core.encode_value(obj) or b""))
                raise self._full(block, timeout) from None
            finally:
                lock.release()
            done = True
        finally:
            if not done:
                st.unreserve()
            if self._closed:
                self._close_if_idle()

    def _put_chained(self, h: _Handles, st: _core.QueueState, obj: Any, block: bool,
                     deadline: float | None, timeout: float | None) -> None:
        """put() on a growing queue (chain.py): encode, then claim, check
        and commit in the newest ring, adding one if it is full. Counted
        (reserved) already; undone here if it fails."""
        chain = h.chain
        assert chain is not None
        done = False
        plan: FramePlan | None = None
        try:
            value = _core.encode_value(obj) if self._plain else None
            buffers: list[PickleBuffer] = []
            data: ReadableBuffer
            if value is None:
                data, buffers = _pickle(obj, self._serializer)
            else:
                data = value
            fill = None
            if buffers:
                plan = FramePlan(data, buffers)
                size, fill = plan.size, plan.write
            elif data.__class__ is bytes:
                size = len(data)
            else:
                data = memoryview(data).cast("B")
                size = data.nbytes
            if not _acquire(self._wlock, block, deadline):
                raise self._full(block, timeout)
            try:
                chain.ensure_started()  # a forked child's or the maker's first put
                chain.put(size, data, fill, st.count)
            finally:
                self._wlock.release()
            done = True
        finally:
            if plan is not None:
                plan.release()
            if not done:
                st.unreserve()
            if self._closed:
                self._close_if_idle()

    def _get_chained(self, h: _Handles, st: _core.QueueState, block: bool,
                     deadline: float | None, timeout: float | None) -> Any:
        """get() on a growing queue: take from the oldest ring not drained,
        moving on at its end of stream."""
        chain = h.chain
        assert chain is not None
        chain.ensure_started()
        if not _acquire(self._rlock, block, deadline):
            raise self._empty(block, timeout)
        data = None
        obj: Any = NotImplemented
        looks = 0
        try:
            while True:
                rx = chain.consumer()
                nowait = not block
                left = C.SLICE
                if deadline is not None:
                    left = min(left, max(0.0, deadline - time.monotonic()))
                try:
                    if self._plain:
                        obj = rx._recv_value(None if nowait else left, nowait)
                    if obj is NotImplemented:
                        obj, data = self._take_record(rx, None if nowait else left, nowait)
                    break
                except EndOfStream:
                    chain.drained()
                    continue
                except (WouldBlock, Timeout):
                    # A newer ring may hold items: look again once this one is
                    # sealed (a claim in flight in it may hold that up).
                    if not chain.idle() and looks < 3:
                        looks += 1
                        continue
                    if nowait or (deadline is not None and time.monotonic() >= deadline):
                        raise self._empty(block, timeout) from None
                    looks = 0
                except DecodeError:
                    st.taken()
                    raise
            st.taken()
        finally:
            self._rlock.release()
            if self._closed:
                self._close_if_idle()
        return obj if data is None else self._decode_data(rx, data)

    def _get(self, block: bool = True, timeout: float | None = None) -> Any:
        """get() when it is not the common call (see the module docstring)."""
        if self._closed:
            raise self._closed_error()
        h = self._h or self._attach()
        st = h.state
        assert st is not None  # bound in _adopt
        deadline = None if timeout is None or not block else time.monotonic() + max(0.0, timeout)
        if h.chain is not None:
            return self._get_chained(h, st, block, deadline, timeout)
        lock = self._rlock
        if not _acquire(lock, block, deadline):
            raise self._empty(block, timeout)
        asked = timeout
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
                raise self._empty(block, asked) from None
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

    def _count(self) -> int:
        if self._closed:
            raise self._closed_error()
        st = (self._h or self._attach()).state
        assert st is not None  # bound in _adopt
        return st.count()


def _rebuild(cls: type[_Q], name: str, namespace: str, serializer: Serializer | None) -> _Q:
    """Open queue ``name`` as ``cls``: what unpickling and ``open`` do."""
    q = cls.__new__(cls)
    q._setup(name, namespace, serializer, None)
    q._attach()
    return q


def _acquire(lock: _core.Lock, block: bool, deadline: float | None) -> bool:
    """Take ``lock`` as put/get do: at once when not blocking, else until the
    monotonic ``deadline`` (None: without limit). False if it was not taken."""
    if not block:
        return lock.acquire(blocking=False)
    if deadline is None:
        return lock.acquire()
    return lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
