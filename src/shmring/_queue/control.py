"""The control block of a queue: its counts, its futex words, and the
handles one process holds of a queue.

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

Counting (reserve, taken, unreserve, task_done, count) is the C
``_core.QueueState``'s, for the C and the Python paths alike; waiting for
room under ``maxsize`` and for ``join`` is here. This module owns the
block's offsets (``csrc/py/queue.c`` uses the same).
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from queue import Full

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel
from .._channel.endpoints import Consumer, Producer
from .._errors import Broken, CorruptRegion, Timeout
from .._region.region import split_segment_name
from .chain import CTL_END, CTL_KIND, KIND_CHAIN, Chain

# The control block's words (offsets into the ring bytes of the ``.ctl``
# region) are layout.h's, read here as ``L.CTL_*``; the C put and get use the
# same names.
_MINUS_ONE = (1 << 64) - 1  # fetch_add(-1)


class _Handles:
    """What one process holds of a queue: its two channels, their mappings,
    the endpoints it made and the state the C put and get use. Only the
    process that opened them closes them (a forked child inherits the
    objects but not the right to close them)."""

    __slots__ = ("base", "buf", "cbuf", "ch", "chain", "ctl", "notfull_seq", "notfull_waiters",
                 "pid", "rx", "state", "tx")

    def __init__(self, ch: Channel, ctl: Channel) -> None:
        self.pid = os.getpid()
        self.ch = ch
        self.ctl = ctl
        self.buf = ch.region._mapping()
        self.cbuf = ctl.region._mapping()
        self.base = int(struct.unpack_from("<Q", self.cbuf, L.HDR_DATA_OFFSET)[0])
        if ctl.capacity < CTL_END:
            raise CorruptRegion(f"{ctl.name!r} is too small to be a queue's control block")
        self._offsets()
        self.tx: Producer | None = None
        self.rx: Consumer | None = None
        self.state: _core.QueueState | None = None
        self.chain: Chain | None = None
        if _core.load(self.cbuf, self.base + CTL_KIND) == KIND_CHAIN:
            self.chain = self._new_chain()

    def _new_chain(self) -> Chain:
        parsed = split_segment_name(self.ch.region.segment)
        assert parsed is not None
        return Chain(self.ch.name, parsed[0], self.ch, self.ctl, self.cbuf, self.base)

    def _offsets(self) -> None:
        base = self.base
        self.notfull_seq = base + L.CTL_NOTFULL_SEQ
        self.notfull_waiters = base + L.CTL_NOTFULL_WAITERS

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
        h.chain = None if self.chain is None else self.chain.inherit()
        return h

    def init_block(self, maxsize: int, chained: bool = False) -> None:
        """Initialise a new control block: ``maxsize`` and the kind (a
        growing queue's, chain.py), then the magic."""
        _core.store(self.cbuf, self.base + L.CTL_MAXSIZE, max(0, maxsize))
        if chained:
            _core.store(self.cbuf, self.base + CTL_KIND, KIND_CHAIN)
            self.chain = self._new_chain()
        _core.store(self.cbuf, self.base + L.CTL_MAGIC, L.CTL_MAGIC_VALUE)

    def maxsize(self) -> int:
        """The queue's ``maxsize``, once the block is known initialised."""
        if _core.load(self.cbuf, self.base + L.CTL_MAGIC) != L.CTL_MAGIC_VALUE:
            raise CorruptRegion(f"{self.ctl.name!r} is not an initialised queue control block")
        return int(_core.load(self.cbuf, self.base + L.CTL_MAXSIZE))

    def close(self) -> None:
        """Close the endpoints and channels (only in the process that opened them)."""
        if self.pid != os.getpid():
            return
        if self.state is not None:
            self.state.invalidate()  # the C calls let go of the mapping first
        for ep in (self.tx, self.rx):
            if ep is not None:
                ep.close()
        self.tx = self.rx = None
        if self.chain is not None:
            self.chain.close()  # closes ring 0 (self.ch) with the others
        else:
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


#: A sleeper wakes at least this often to check its control segment was not
#: truncated meanwhile (a futex word past the new end is one nobody wakes).
SLICE = 1.0


def _sleep(h: _Handles, off: int, seq: int, left: float | None) -> None:
    """Sleep on the futex word at ``off`` while it is ``seq``, for at most a
    slice; raise :class:`Broken` if the control segment was truncated."""
    cbuf = h.cbuf
    _core.futex_wait(cbuf, off, seq, SLICE if left is None else min(left, SLICE))
    cbuf[len(cbuf) - 1]  # faults (caught, counted) if the segment shrank below it
    if _core.faults(cbuf):
        raise Broken(f"queue {h.ch.name!r}: its control segment was truncated under it; the "
                     "queue cannot be used")


def wait_for_room(h: _Handles, st: _core.QueueState, block: bool,
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
            _sleep(h, h.notfull_seq, seq, left)
    finally:
        _core.fetch_add(cbuf, waiters, _MINUS_ONE)


def wait_unfinished(h: _Handles, timeout: float | None) -> None:
    """JoinableQueue.join: wait until the unfinished-task count is zero,
    sleeping on the join futex word meanwhile (Timeout once ``timeout``
    seconds passed)."""
    cbuf, unf, seqw = h.cbuf, h.base + L.CTL_UNFINISHED, h.base + L.CTL_JOIN_SEQ
    if _core.load(cbuf, unf) == 0:
        return
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    waiters = h.base + L.CTL_JOIN_WAITERS
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
                    err = Timeout(f"timed out after {timeout} s waiting for the unfinished "
                                  f"tasks of queue {h.ch.name!r} (task_done)")
                    err.channel, err.timeout = h.ch.name, timeout
                    raise err
            _sleep(h, seqw, seq, left)
    finally:
        _core.fetch_add(cbuf, waiters, _MINUS_ONE)
