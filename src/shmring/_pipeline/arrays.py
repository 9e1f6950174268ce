"""A run's array pool: large out-of-band buffers (numpy arrays) travel
between stages by reference, not by copy.

Without it every hop copies an array into the next edge: an 8 MB array
through three stages is copied four times before the parent copies it out.
With it the feeder (or the worker that made a new array) copies the array
once into the pool, edges carry a small *pooled record* that names its
slots, and a ``zero_copy`` stage that returns the view it was given (or a
filter that keeps its item) sends the same slots on: no copy at all.

The pool is the ring bytes of a channel of its own (``<pipeline>...pool``,
so the supervisor removes it with the rest of the run), used as plain
memory: its first ``SLOT`` bytes are a bitmap, one bit per slot, and the
slots follow. An allocation is a run of contiguous slots, claimed word by
word with compare-and-swap; it is freed the same way.

Who owns an allocation: exactly one record, or the worker holding that
record. Ownership moves with the record, and records move exactly once
(linked commits, csrc/ring/link.c), so:

- a worker frees its input's slots only after the output that settles the
  input is committed, and never frees slots it passed on;
- a worker killed before that commit frees nothing: the input goes back to
  the edge with its slots, and an uncommitted output becomes padding;
- a flat_map never passes its input's slots on (one input, several outputs,
  some possibly resent after a crash): its outputs are copied.

The limit: a worker killed after it copied a new array into the pool and
before it committed the output leaks those slots until the run ends. No
allocation ever waits: with no room in the pool a buffer travels inside
its record, copied, as it would without a pool.

Pooled record (little-endian), the body of a VALUE::

    0       4       magic b"\\x00SRP"
    4       2       version (1)
    6       2       nbuf
    8       8       payload length (the pickle bytes)
    16      32*nbuf one entry per out-of-band buffer:
                      offset u64: in the pool's slots (POOLED), else in the record
                      length u64
                      flags  u64: bit 0 read-only, bit 1 POOLED
                      alloc  u64: first slot << 32 | slots (POOLED), else 0
    ..              payload, then each in-record buffer at its offset
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import struct
from collections.abc import Iterable
from pickle import PickleBuffer
from typing import Any

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel
from .._errors import DecodeError

SLOT = 64 << 10
#: A buffer this large or larger goes into the pool; a smaller one is
#: copied into its record (a slot would cost more than the copy).
MIN_POOLED = 64 << 10
MAGIC = b"\x00SRP"
VERSION = 1
_HEADER = struct.Struct("<4sHHQ")
_ENTRY = struct.Struct("<QQQQ")
_READONLY, _POOLED = 1, 2
_ALIGN = 64
_FULL = (1 << 64) - 1
#: Tries at claiming a free run that other processes keep taking first.
_TRIES = 8

Alloc = tuple[int, int]  # first slot, number of slots


def size_for(max_bytes: Iterable[int]) -> int:
    """The pool of a run whose ``zero_copy`` edges hold ``max_bytes``: room
    for what those edges hold and the bitmap, as a channel capacity (the
    next power of two: up to twice that). Its pages are allocated at
    creation, as every region's are (a full /dev/shm is a clean error then,
    never a SIGBUS later)."""
    need = sum(max_bytes) + SLOT
    return int(min(L.MAX_CAPACITY, 1 << max(20, (need - 1).bit_length())))


class ArrayPool:
    """The slots of a pool channel: ``ArrayPool.create`` in the parent,
    ``ArrayPool.open`` in a worker."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        buf = channel.region._mapping()
        off = int(_core.load(buf, L.HDR_DATA_OFFSET))
        cap = int(_core.load(buf, L.HDR_CAPACITY))
        self._buf = buf
        self.slots = cap // SLOT - 1  # the first slot's bytes are the bitmap
        self._bits_at = off
        self._words = (self.slots + 63) // 64
        self.base = off + SLOT  # mapping offset of slot 0
        self.view = memoryview(buf)
        # The mapping's address: a buffer of ours is known by where it lies.
        self.address = _address(self.view)

    @classmethod
    def create(cls, name: str, capacity: int, namespace: str | None) -> ArrayPool:
        """A new, empty pool of ``capacity`` bytes (a power of two); its
        pages are faulted in as slots are first used."""
        return cls(Channel.create(name, capacity, "mpsc", namespace=namespace,
                                  populate=False))

    @classmethod
    def open(cls, name: str, namespace: str | None) -> ArrayPool:
        """The pool of a running pipeline."""
        return cls(Channel.open(name, namespace=namespace, populate=False))

    def close(self) -> None:
        """Unmap the pool (the parent's close of the run removes it)."""
        self.view.release()
        self.channel.close()

    # -------------------------------------------------------- allocation --
    def used(self) -> int:
        """Slots allocated now."""
        return sum(int(_core.load(self._buf, self._bits_at + 8 * w)).bit_count()
                   for w in range(self._words))

    def alloc(self, nbytes: int) -> Alloc | None:
        """Claim the first run of free slots that holds ``nbytes``, or None
        if there is none."""
        k = max(1, -(-nbytes // SLOT))
        if k > self.slots:
            return None
        mask = (1 << self.slots) - 1
        for _ in range(_TRIES):
            used = int.from_bytes(self.view[self._bits_at:self._bits_at + 8 * self._words],
                                  "little")
            run = ~used & mask  # bit i: slots i .. i+m-1 are free (m = 1 here)
            m = 1
            while m < k and run:
                step = min(m, k - m)
                run &= run >> step
                m += step
            if not run:
                return None
            first = (run & -run).bit_length() - 1
            if self._claim(first, k):
                return first, k
        return None

    def _spans(self, first: int, k: int) -> list[tuple[int, int]]:
        """(word offset, bits) of each bitmap word slots first..first+k-1 touch."""
        out = []
        s, end = first, first + k
        while s < end:
            w, b = divmod(s, 64)
            n = min(64 - b, end - s)
            out.append((self._bits_at + 8 * w, ((1 << n) - 1) << b))
            s += n
        return out

    def _claim(self, first: int, k: int) -> bool:
        done: list[tuple[int, int]] = []
        for at, bits in self._spans(first, k):
            while True:
                cur = int(_core.load(self._buf, at))
                if cur & bits:  # taken meanwhile: give back what we took
                    for a, b in done:
                        self._clear(a, b)
                    return False
                if _core.cas(self._buf, at, cur, cur | bits):
                    done.append((at, bits))
                    break
        return True

    def _clear(self, at: int, bits: int) -> None:
        while True:
            cur = int(_core.load(self._buf, at))
            if _core.cas(self._buf, at, cur, cur & ~bits & _FULL):
                return

    def free(self, alloc: Alloc) -> None:
        """Give an allocation's slots back."""
        for at, bits in self._spans(*alloc):
            self._clear(at, bits)

    def _free_late(self, alloc: Alloc) -> None:
        """A pinned view's slots, once it is gone (the run may be over: the
        mapping is kept while a view of it lives)."""
        with contextlib.suppress(ValueError):
            self.free(alloc)

    def _check(self, alloc: Alloc) -> None:
        first, k = alloc
        if k < 1 or first + k > self.slots:
            raise DecodeError(f"pooled record names slots {first}..{first + k - 1} of a "
                              f"pool of {self.slots}")

    # ----------------------------------------------------------- records --
    def plan(self, data: Any, buffers: list[PickleBuffer], held: list[Alloc],
             moved: list[Alloc], fresh: bool = True) -> PooledPlan:
        """A pooled record of an object ``encode`` gave as ``data`` and
        ``buffers``. A large buffer inside an allocation of ``held`` (the
        input's) is sent by reference, and that allocation appended to
        ``moved`` once the record is committed (:meth:`PooledPlan.commit`);
        any other large buffer is copied into new slots (``fresh``; freed
        again by :meth:`PooledPlan.release` unless the record was
        committed), or else into the record."""
        return PooledPlan(self, data, buffers, held, moved, fresh)

    def decode(self, body: memoryview, views: bool,
               pinned: bool = False) -> tuple[Any, list[Alloc]]:
        """The object of a pooled record and the allocations it owns: its
        pooled buffers are read-only views of the pool (``views``), else
        copies. ``pinned``: views that own their slots, freed once the last
        view of them goes (the parent's outputs); none is returned then."""
        n = body.nbytes
        if n < _HEADER.size:
            raise DecodeError(f"pooled record of {n} bytes is shorter than its header")
        magic, version, nbuf, plen = _HEADER.unpack_from(body, 0)
        if magic != MAGIC or version != VERSION:
            raise DecodeError(f"not a pooled record version {VERSION}: {bytes(magic)!r} "
                              f"version {version}")
        p0 = _HEADER.size + _ENTRY.size * nbuf
        if p0 + plen > n:
            raise DecodeError(f"pooled record of {n} bytes: its table and payload need "
                              f"{p0 + plen}")
        bufs: list[Any] = []
        allocs: list[Alloc] = []
        pins: list[Any] = []
        for i in range(nbuf):
            off, length, flags, word = _ENTRY.unpack_from(body, _HEADER.size + _ENTRY.size * i)
            if flags & _POOLED:
                alloc = (word >> 32, word & 0xFFFFFFFF)
                self._check(alloc)
                lo, hi = alloc[0] * SLOT, (alloc[0] + alloc[1]) * SLOT
                if off < lo or off + length > hi:
                    raise DecodeError(f"pooled buffer {i} ({length} bytes at {off}) lies "
                                      f"outside its slots' {lo}..{hi}")
                if alloc not in allocs:
                    allocs.append(alloc)
                    if pinned:
                        pins.append(_core.pinned(self._buf, self.base + lo, hi - lo,
                                                 functools.partial(self._free_late, alloc)))
                if pinned:
                    pin = pins[allocs.index(alloc)]
                    bufs.append(memoryview(pin)[off - lo:off - lo + length])
                    continue
                src = self.view[self.base + off:self.base + off + length]
            else:
                if off < p0 + plen or off + length > n:
                    raise DecodeError(f"pooled record buffer {i} ({length} bytes at {off}) "
                                      f"lies outside the record's {p0 + plen}..{n}")
                src = body[off:off + length]
            if views:
                bufs.append(src.toreadonly())
            else:
                copy = _core.empty_bytearray(length)
                _core.copy(copy, 0, src)  # the GIL released while it copies
                bufs.append(memoryview(copy).toreadonly() if flags & _READONLY else copy)
        try:
            obj = pickle.loads(body[p0:p0 + plen], buffers=bufs)
            return obj, [] if pinned else allocs
        except Exception as e:
            raise DecodeError(f"could not decode a pooled record: {e}") from e


def pooled(body: memoryview) -> bool:
    """``body`` (a VALUE's) is a pooled record."""
    return body.nbytes >= 4 and body[:4] == MAGIC


class PooledPlan:
    """Where a pooled record's parts go (the pool's slots, or the record),
    ``size`` bytes of record in all: :meth:`write` puts the record into a
    claimed view, :meth:`commit` says it was committed, :meth:`release`
    lets go of what was not."""

    def __init__(self, pool: ArrayPool, data: Any, buffers: list[PickleBuffer],
                 held: list[Alloc], moved: list[Alloc], fresh: bool) -> None:
        self.pool = pool
        self.payload = memoryview(data)
        self.moved = moved
        self.passed: list[Alloc] = []  # of held: sent on by reference
        self.new: list[Alloc] = []  # copied into the pool for this record
        self.inline: list[tuple[int, memoryview]] = []
        self.entries: list[tuple[int, int, int, int]] = []
        self.committed = False
        nbuf = len(buffers)
        if nbuf > 0xFFFF:
            raise ValueError(f"too many out-of-band buffers ({nbuf}); at most 65535")
        end = _HEADER.size + _ENTRY.size * nbuf + self.payload.nbytes
        try:
            for b in buffers:
                raw = b.raw()
                flags = _READONLY if raw.readonly else 0
                length = raw.nbytes
                entry = None
                if length >= MIN_POOLED:
                    entry = (self._by_reference(raw, held, flags)
                             or (self._copied(raw, flags) if fresh else None))
                if entry is None:
                    end = -(-end // _ALIGN) * _ALIGN
                    entry = (end, length, flags, 0)
                    self.inline.append((end, raw))
                    end += length
                else:
                    raw.release()
                self.entries.append(entry)
        except BaseException:
            self.release()
            raise
        finally:
            for b in buffers:
                b.release()
        self.size = end

    def _by_reference(self, raw: memoryview, held: list[Alloc],
                      flags: int) -> tuple[int, int, int, int] | None:
        pool = self.pool
        if not held:
            return None
        at = _address(raw) - pool.address - pool.base
        for alloc in held:
            lo, hi = alloc[0] * SLOT, (alloc[0] + alloc[1]) * SLOT
            if lo <= at and at + raw.nbytes <= hi:
                if alloc not in self.passed:
                    self.passed.append(alloc)
                return at, raw.nbytes, flags | _POOLED, alloc[0] << 32 | alloc[1]
        return None

    def _copied(self, raw: memoryview, flags: int) -> tuple[int, int, int, int] | None:
        pool = self.pool
        alloc = pool.alloc(raw.nbytes)
        if alloc is None:
            return None
        self.new.append(alloc)
        at = alloc[0] * SLOT
        _core.copy(pool.view, pool.base + at, raw)  # the GIL released while it copies
        return at, raw.nbytes, flags | _POOLED, alloc[0] << 32 | alloc[1]

    def write(self, view: memoryview) -> None:
        """Write the record into ``view`` (at least ``size`` bytes)."""
        _HEADER.pack_into(view, 0, MAGIC, VERSION, len(self.entries), self.payload.nbytes)
        for i, e in enumerate(self.entries):
            _ENTRY.pack_into(view, _HEADER.size + _ENTRY.size * i, *e)
        p0 = _HEADER.size + _ENTRY.size * len(self.entries)
        view[p0:p0 + self.payload.nbytes] = self.payload
        for off, raw in self.inline:
            view[off:off + raw.nbytes] = raw

    def commit(self) -> None:
        """The record is committed: its slots are its own now."""
        self.committed = True
        self.moved.extend(self.passed)

    def release(self) -> None:
        """Let the buffers go; free the new slots of a record never committed."""
        for _, raw in self.inline:
            raw.release()
        self.inline.clear()
        if not self.committed:
            for alloc in self.new:
                self.pool.free(alloc)
        self.new.clear()


def _address(buf: memoryview) -> int:
    """The address of the first byte of a contiguous buffer."""
    return int(_core.address(buf))
