"""What an exporting stream has read ahead and the peer has not
acknowledged: chunks of records as ``ConsumerCore._ahead_packed`` read
them, each the frames of one DATA batch.

A chunk keeps its records packed - u64 keys, u64 ring positions, u32
lengths, the payloads back to back - so that reading, sending and
acknowledging a batch cost a few calls whatever its length, with no Python
object per record: the exporter's per-record cost was what bounded a
bridge's rate. A chunk is cut in two only where an acknowledgement or a
resume point falls inside it (the importer commits what fits in its ring,
so it may acknowledge part of a batch).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import islice
from typing import Any

from . import wire
from .deps import zmq_module


class Chunk:
    """Records read in one call: their keys, positions, lengths and bytes."""

    __slots__ = ("_k", "_l", "_p", "body", "first", "keys", "last", "lens", "n", "poss",
                 "trackers")

    def __init__(self, keys: bytes | bytearray, poss: bytes | bytearray,
                 lens: bytes | bytearray, body: bytes | memoryview) -> None:
        self._k, self._p, self._l = keys, poss, lens
        self.keys = memoryview(keys).cast("Q")
        self.poss = memoryview(poss).cast("Q")
        self.lens = memoryview(lens).cast("I")
        self.body = body
        self.n = len(self.keys)
        self.first, self.last = self.keys[0], self.keys[-1]
        # In place (body a view of the record in the ring: one record, never
        # cut): a tracker per send, done once ZeroMQ let go of the memory.
        self.trackers: list[Any] = []

    @property
    def in_place(self) -> bool:
        """True if the body is the record itself in the ring, not a copy."""
        return isinstance(self.body, memoryview)

    def sent_out(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ZeroMQ to let go of every send
        of this chunk's body; True once it has (at once, for a copy)."""
        for t in self.trackers:
            if not t.done:
                try:
                    t.wait(timeout)
                except zmq_module().NotDone:
                    return False
        self.trackers.clear()
        return True

    def cut(self, i: int) -> tuple[Chunk | None, Chunk | None]:
        """The first ``i`` records and the rest (None for an empty part)."""
        if i <= 0:
            return None, self
        if i >= self.n:
            return self, None
        off = sum(islice(self.lens, i))
        head = Chunk(self._k[:8 * i], self._p[:8 * i], self._l[:4 * i], self.body[:off])
        tail = Chunk(self._k[8 * i:], self._p[8 * i:], self._l[4 * i:], self.body[off:])
        return head, tail

    def index(self, epoch: int, prev: int, missed: int) -> bytes:
        """The index frame of this chunk's DATA batch (``wire.py``)."""
        return wire.packed_index(epoch, prev, self.n, missed, self._k, self._l)


class Unacked:
    """The chunks read ahead and not acknowledged, in key order, and how
    many of them were sent since the last rewind."""

    def __init__(self) -> None:
        self.chunks: deque[Chunk] = deque()
        self.records = 0
        self.bytes = 0
        self.sent = 0  # chunks sent since the last rewind (the first ones)

    def __len__(self) -> int:
        return self.records

    def add(self, c: Chunk) -> None:
        """Records just read (keys after every one held)."""
        self.chunks.append(c)
        self.records += c.n
        self.bytes += len(c.body)

    def next_unsent(self) -> Chunk | None:
        """The next chunk to send (counted as sent), or None."""
        if self.sent >= len(self.chunks):
            return None
        c = self.chunks[self.sent]
        self.sent += 1
        return c

    def all_sent(self) -> bool:
        """Whether every chunk was sent since the last rewind."""
        return self.sent >= len(self.chunks)

    def rewind(self) -> None:
        """Send everything again from the first chunk."""
        self.sent = 0

    def ack(self, key: int) -> list[Chunk]:
        """Drop the records with keys <= ``key``; the chunks (parts) dropped."""
        done: list[Chunk] = []
        q = self.chunks
        while q and q[0].last <= key:
            done.append(q.popleft())
            self.sent = max(0, self.sent - 1)
        if q and q[0].first <= key:
            head, tail = q[0].cut(bisect_right(q[0].keys, key))
            assert head is not None and tail is not None
            q[0] = tail  # sent or not, as the chunk was
            done.append(head)
        for c in done:
            self.records -= c.n
            self.bytes -= len(c.body)
        return done

    def last_key(self) -> int:
        """The key of the last record held (there must be one)."""
        return self.chunks[-1].last

    def first_pos(self) -> int:
        """The position of the first record held (there must be one)."""
        return self.chunks[0].poss[0]

    def low_pos(self) -> int:
        """The lowest position of any record held (there must be one)."""
        return min(min(c.poss) for c in self.chunks)
