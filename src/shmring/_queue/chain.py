"""The growing queue: a chain of mpmc rings, one *generation* each.

An unbounded ``shmring.Queue`` starts with one small ring (generation 0,
the region ``<name>``) and adds a ring (``<name>.<g>``) whenever a putter
finds the newest one full or too small for its item; drained rings are
removed, and a drained queue moves back to a small ring. The protocol
(docs/design.md, "Queue"):

- The control block holds ``GEN``, the generation putters write to. A
  putter that finds ring ``g`` full creates (or opens) ring ``g+1``, moves
  ``GEN`` from ``g`` to ``g+1`` by compare-exchange, then closes ring ``g``
  for sending (its end-of-stream flag) and bumps the ``GEN_SEQ`` futex word.
  Anyone who sees ``GEN > g`` may close ring ``g``: a grower killed between
  the two steps leaves nothing stuck.
- A putter writes by *claim, check, commit*: it claims its record in ring
  ``g`` (a compare-exchange of the ring's tail), then reads ring ``g``'s
  end-of-stream flag; if it is set the claim is aborted and the put goes to
  the newer ring. A getter stops reading ring ``g`` only when the ring reports
  end of stream, which it does when the flag is set, the ring is empty and no
  claim is in flight (``tail`` past the read claim). Both sides use
  sequentially consistent operations, so a claim made before the flag is
  seen by the getter (it waits for its commit) and a claim made after it is
  aborted by its putter: no item is committed to a ring nobody reads.
- Per-putter order holds because a putter only moves forward and getters
  drain ring ``g`` before reading ``g+1``.
- Lifetime: every process that holds the queue runs a *watcher* thread (the
  maker of an unnamed queue from the moment another process can reach it:
  ``base.py``'s ``_watch``) that sleeps on ``GEN_SEQ`` and opens each new
  ring as it is published, so a ring is held (supervised) by every holder
  of the queue, not only by the putter that made it: a putter that exits or
  is killed after its put returns loses nothing. The getter that sees a
  ring's end of stream unlinks it; every process closes the rings whose
  names are gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel
from .._channel.endpoints import Consumer, Producer
from .._errors import (
    Broken,
    Closed,
    CorruptRegion,
    EndOfStream,
    MessageTooLarge,
    RegionExists,
    RegionNotFound,
    Timeout,
    WouldBlock,
)

log = logging.getLogger("shmring.queue")

#: Ring bytes of generation 0 and of the ring a drained queue moves back to.
BASE_CAPACITY = 1 << 14
#: A full ring is followed by one four times its size, up to this; larger
#: rings are made only for an item that needs one.
MAX_GROWN = 1 << 25
#: A drained queue on a ring larger than this moves back to a BASE_CAPACITY
#: ring at its next put. Rings up to it stay, so a queue that fills and
#: drains a few hundred KiB at a time does not make rings over and over.
SHRINK_ABOVE = 1 << 20

# Control block words beyond the C layout's CTL_BYTES (python-only).
CTL_GEN = L.CTL_BYTES                      # u64: the generation putters write to
CTL_KIND = L.CTL_BYTES + 8                 # u64: KIND_CHAIN for a growing queue
CTL_HEAD = L.CTL_BYTES + 16                # u64: every ring below it is drained (a hint)
CTL_GEN_SEQ = L.CTL_BYTES + L.LINE         # u32 futex word, bumped at each new GEN
CTL_GEN_WAITERS = L.CTL_BYTES + L.LINE + 8  # u64: watchers asleep on it
CTL_ACK_SEQ = L.CTL_BYTES + L.LINE + 16    # u32 futex word, bumped when a watcher opened a ring
CTL_END = L.CTL_BYTES + 2 * L.LINE
KIND_CHAIN = 0x6E69616843          # "Chain"
#: Watchers and getters wake at least this often (a grower killed mid-step).
SLICE = 0.5
#: How long a put into a new ring waits for another holder's watcher to open
#: it (bounded: a stopped holder must not stop the putter for good).
HANDOFF = 5.0


def seg_name(name: str, gen: int) -> str:
    """The channel name of generation ``gen`` of queue ``name``."""
    return name if gen == 0 else f"{name}.{gen}"


def capacity_for(record: int, current: int = 0) -> int:
    """Ring bytes for the ring after one of ``current`` bytes, able to hold a
    record of ``record`` payload bytes."""
    need = 1 << max(0, 2 * (record + L.RECORD_HEADER + L.RECORD_ALIGN) - 1).bit_length()
    return max(BASE_CAPACITY, need, min(4 * current, MAX_GROWN))


def create_ring(name: str, gen: int, capacity: int, namespace: str) -> Channel:
    """Create generation ``gen``'s ring."""
    return Channel.create(seg_name(name, gen), capacity, "mpmc",
                          max_message=capacity // 2 - L.RECORD_HEADER, slots=L.MAX_SLOTS,
                          namespace=namespace)


class Chain:
    """What one process holds of a growing queue: the rings it has open,
    its producer (on the newest ring it knows) and its consumer (on the
    oldest ring not yet drained), and its watcher."""

    def __init__(self, name: str, namespace: str, ring0: Channel, ctl: Channel, cbuf: Any,
                 base: int) -> None:
        self.name, self.namespace = name, namespace
        self.ctl = ctl
        self.handed: set[int] = {0}
        self.cbuf, self.base = cbuf, base
        self.lock = threading.Lock()          # guards chs
        self.chs: dict[int, Channel] = {0: ring0}
        self.tx: Producer | None = None
        self.tx_gen = 0
        self.tx_buf: Any = None
        self.rx: Consumer | None = None
        self.rx_gen = int(_core.load(cbuf, base + CTL_HEAD))
        self.pid = os.getpid()
        self._stop = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ words --
    def gen(self) -> int:
        """The generation putters write to now."""
        return int(_core.load(self.cbuf, self.base + CTL_GEN))

    def channel(self, gen: int) -> Channel | None:
        """Generation ``gen``'s ring, opened here if need be; None if it is
        gone (drained and removed: the caller moves past it)."""
        with self.lock:
            ch = self.chs.get(gen)
            if ch is not None:
                return ch
        try:
            ch = Channel.open(seg_name(self.name, gen), namespace=self.namespace)
        except RegionNotFound:
            return None
        with self.lock:
            old = self.chs.get(gen)
            if old is not None:
                ch.close()
                return old
            self.chs[gen] = ch
            return ch

    def seal(self, gen: int) -> None:
        """Close ring ``gen`` for sending (anyone may, once GEN is past it)."""
        ch = self.channel(gen)
        if ch is not None and not _core.load32(ch.region._mapping(), L.OFF_EOS):
            ch.close_send()

    def advance(self, gen: int, capacity: int) -> None:
        """Move the queue from ring ``gen`` to a new ring of ``capacity``
        bytes (unless another process moved it already)."""
        if self.gen() != gen:
            return
        give_up = time.monotonic() + 30.0
        while True:
            try:
                made = create_ring(self.name, gen + 1, capacity, self.namespace)
                with self.lock:
                    extra = self.chs.get(gen + 1)  # our watcher opened it meanwhile
                    self.chs[gen + 1] = made
                if extra is not None:
                    extra.close()
                break
            except RegionExists:
                try:
                    if self.channel(gen + 1) is not None:
                        break
                except CorruptRegion:
                    # Its creator died while creating it: the supervisor
                    # removes it (the creator registered it first).
                    if time.monotonic() > give_up:
                        raise
                    time.sleep(0.005)
                if self.gen() != gen:
                    return
        # Fails only if another grower moved GEN on already. A ring we made
        # then is kept, not unlinked: another grower may have published it
        # (it opened ours); if it is a stale duplicate nobody reads, it goes
        # with our other rings.
        _core.cas(self.cbuf, self.base + CTL_GEN, gen, gen + 1)
        self.seal(gen)
        _core.fetch_add(self.cbuf, self.base + CTL_GEN_SEQ, 1)  # 64-bit add; the futex is u32
        _core.wake(self.cbuf, self.base + CTL_GEN_SEQ)

    # ------------------------------------------------------------- put --
    def put(self, size: int, data: Any, fill: Callable[[memoryview], None] | None,
            count: Callable[[], int]) -> None:
        """Write one record of ``size`` bytes (``data``, or what ``fill``
        writes into the claimed view), growing the chain as needed; never
        waits for room. ``count()``: the items in the queue, this one
        included (a drained queue on a large ring moves back to a small one)."""
        cbuf, gen_off = self.cbuf, self.base + CTL_GEN
        shrink = True
        while True:
            gen = _core.load(cbuf, gen_off)
            tx = self.tx
            if tx is None or self.tx_gen != gen:
                self._move_tx(gen)
                continue
            if shrink and tx._max_message > SHRINK_ABOVE and size < BASE_CAPACITY // 4:
                shrink = False
                if count() <= 1:
                    self.advance(gen, BASE_CAPACITY)  # drained: back to a small ring
                    continue
            try:
                view = tx._claim(size, 0.0)
            except (Timeout, WouldBlock):
                self.advance(gen, capacity_for(size, self.chs[gen].capacity))
                continue
            except MessageTooLarge:
                self.advance(gen, capacity_for(size))
                continue
            except (Closed, EndOfStream):
                self.advance(gen, capacity_for(size))  # sealed: GEN is past it
                continue
            # Claim, check, commit: a claim made after the seal is withdrawn.
            if _core.fetch_add(cbuf, gen_off, 0) != gen or _core.load32(self.tx_buf, L.OFF_EOS):
                tx._abort()
                continue
            try:
                if fill is None:
                    view[:size] = data
                else:
                    fill(view)
            except BaseException:
                tx._abort()
                raise
            tx._commit()
            if gen not in self.handed:
                self._handoff(gen)
            return

    def _handoff(self, gen: int) -> None:
        """After the first put of this process into ring ``gen``: wait until
        another live holder of the queue (its watcher) has the ring open, so
        that this process exiting or being killed cannot take the ring, and
        the items in it, with it. No other holder: nothing to wait for."""
        self.handed.add(gen)
        me = os.getpid()
        # Holders of the queue are in the control region's table (forked
        # children that hold it by inheritance are not, nor need they be:
        # their parent is). Looked up in the ring's table by pid and start
        # time, in C: with thousands of putters, a walk that asked /proc
        # about every slot made every first put cost O(putters).
        others = {h for h in self.ctl.region.live_holders() if h[0] != me}
        ch = self.chs.get(gen)
        if not others or ch is None:
            return
        cbuf, off = self.cbuf, self.base + CTL_ACK_SEQ
        deadline = time.monotonic() + HANDOFF
        while True:
            seq = _core.load32(cbuf, off)
            if ch.region.held_by_any(others):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            _core.futex_wait(cbuf, off, seq, min(left, 0.05))

    def _move_tx(self, gen: int) -> None:
        ch = self.channel(gen)
        if ch is None:
            return  # removed meanwhile: GEN moved on, read it again
        if self.tx is not None:
            self.tx.close()
        self.tx = None
        try:
            self.tx = ch.producer()
        except Closed:
            return  # sealed already: GEN moved on, read it again
        self.tx_gen = gen
        self.tx_buf = ch.region._mapping()

    # ------------------------------------------------------------- get --
    def consumer(self) -> Consumer:
        """The consumer on the oldest ring not yet drained."""
        while self.rx is None:
            ch = self.channel(self.rx_gen)
            if ch is None:
                if self.rx_gen >= self.gen():  # GEN's ring exists before GEN names it
                    raise Broken(f"queue {self.name!r}: its ring {self.rx_gen} is gone")
                self.rx_gen += 1  # drained and removed by another getter
                continue
            self.rx = ch.consumer()
        return self.rx

    def idle(self) -> bool:
        """After a get found ring rx_gen empty: True if there is nothing to
        read anywhere now, False if a newer ring may hold items (the empty
        one was sealed here if it had not been)."""
        if self.gen() > self.rx_gen:
            self.seal(self.rx_gen)
            return False
        return True

    def drained(self) -> None:
        """Ring rx_gen reported end of stream: remove it, move to the next."""
        gen = self.rx_gen
        if self.rx is not None:
            self.rx.close()
            self.rx = None
        self.rx_gen = gen + 1
        head = self.base + CTL_HEAD
        old = int(_core.load(self.cbuf, head))
        while old <= gen and not _core.cas(self.cbuf, head, old, gen + 1):
            old = int(_core.load(self.cbuf, head))
        if gen:  # ring 0 is the queue's name: it stays (sealed) while the queue does
            self._drop(gen, unlink=True)

    def _drop(self, gen: int, unlink: bool) -> None:
        with self.lock:
            ch = self.chs.pop(gen, None) if gen != self.tx_gen else None
        if ch is None:
            return
        if unlink:
            with contextlib.suppress(RegionNotFound):
                ch.unlink()
        ch.close()

    # --------------------------------------------------------- watcher --
    def ensure_started(self) -> None:
        """Start the watcher unless it runs (in this process) already."""
        if self._thread is None:
            with self.lock:
                if self._thread is None and not self._stop:
                    self.start()

    def start(self) -> None:
        """Start the watcher (in this process; again after a fork)."""
        self.pid = os.getpid()
        self._stop = False
        t = threading.Thread(target=self._watch, name=f"shmring-queue-{self.name}", daemon=True)
        self._thread = t
        t.start()

    def _watch(self) -> None:
        cbuf, off = self.cbuf, self.base + CTL_GEN_SEQ
        try:
            while not self._stop:
                seq = _core.load32(cbuf, off)
                top = self.gen()
                opened = False
                for g in range(top, -1, -1):  # open what is new, newest first
                    with self.lock:
                        if g in self.chs:
                            break
                    if self.channel(g) is None:
                        break
                    opened = True
                if opened:
                    _core.fetch_add(cbuf, self.base + CTL_ACK_SEQ, 1)
                    _core.wake(cbuf, self.base + CTL_ACK_SEQ)
                self._prune(top)
                if self._stop:
                    return
                _core.futex_wait(cbuf, off, seq, SLICE)
        except Exception:  # the queue was closed or broken under it
            if not self._stop:
                log.warning("queue %r: its watcher stopped", self.name, exc_info=True)

    def _prune(self, top: int) -> None:
        """Close the rings below ``top`` whose names are gone (drained and
        removed by a getter)."""
        with self.lock:
            old = [(g, ch) for g, ch in self.chs.items()
                   if 0 < g < top and g not in (self.tx_gen, self.rx_gen)]
        for g, ch in old:
            if not os.path.exists(f"/dev/shm/{ch.region.segment.lstrip('/')}"):
                self._drop(g, unlink=False)

    def inherit(self) -> Chain:
        """In a forked child: the same mappings, no endpoints, no watcher yet."""
        c = Chain.__new__(Chain)
        c.name, c.namespace, c.cbuf, c.base = self.name, self.namespace, self.cbuf, self.base
        c.ctl = self.ctl
        c.handed = {0}
        c.lock = threading.Lock()
        c.chs = dict(self.chs)
        c.tx = c.rx = None
        c.tx_buf = None
        c.tx_gen, c.rx_gen = 0, self.rx_gen
        c.pid = os.getpid()
        c._stop = False
        c._thread = None
        return c

    def close(self) -> None:
        """Stop the watcher and close every ring (in the process that opened them)."""
        self._stop = True
        if self.pid != os.getpid():
            return
        _core.wake(self.cbuf, self.base + CTL_GEN_SEQ)  # wakes every watcher: harmless
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(2 * SLICE)
        for ep in (self.tx, self.rx):
            if ep is not None:
                ep.close()
        self.tx = self.rx = None
        with self.lock:
            chs, self.chs = list(self.chs.values()), {}
        for ch in chs:
            ch.close()
