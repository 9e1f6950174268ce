"""The status board of a run: one shared entry per worker, written by that
worker, read by the parent (stats, timeouts, who held what when it died).

It is the ring bytes of a channel of its own (``<pipeline>...board``), used
as plain words: no record is ever sent through it, and the channel gives it
the region lifecycle every other segment of the run has (the supervisor
removes it with the rest). Each entry is ``ENTRY`` 8-byte words; a worker
writes only its own, the parent reads them and clears an entry before it
gives it to a new worker. The board's first ``HEAD`` words are the run's:
the items in each edge, for ``max_inflight``.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel

# Words of an entry.
PID, ITEM, STARTED, AGAIN, FIRST, OUT, BUSY_NS, SKIPPED, DEAD, ERRORS, STOP = range(11)
COUNTS = AGAIN  # the first word of the counts totals() adds up
HIST = 16  # first word of the latency histogram
BUCKETS = 96  # 4 per octave of 1.024 us (see bucket); the last one open
ENTRY = HIST + BUCKETS
HEAD = 64  # the run's words: INFLIGHT + edge
INFLIGHT = 0


def bucket(ns: int) -> int:
    """The histogram bucket of a duration of ``ns`` nanoseconds: octave
    ``b // 4`` of 1.024 us units, quarter ``b % 4`` of it (integer shifts
    only: it runs once per item)."""
    us = ns >> 10
    if not us:
        return 0
    n = us.bit_length()
    return min(BUCKETS - 1, 4 * (n - 1) + (((us << 2) >> (n - 1)) & 3))


def quantile(hist: list[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram, in seconds (the middle of its
    bucket: within 12 %), or None if it is empty."""
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for b, n in enumerate(hist):
        seen += n
        if seen >= rank:
            if b == 0:
                return 0.5e-6
            return float((1 << (b // 4)) * (1 + (b % 4 + 0.5) / 4) * 1.024e-6)
    return None


class Board:
    """The words of a board channel. ``Board.create`` in the parent,
    ``Board.open`` in a worker, which writes ``words[base(i) + WORD]`` of its own entry."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        buf = channel.region._mapping()
        off = _core.load(buf, L.HDR_DATA_OFFSET)
        cap = _core.load(buf, L.HDR_CAPACITY)
        self.data_offset = int(off)
        self.words = memoryview(buf)[off:off + cap].cast("Q")
        self.entries = (len(self.words) - HEAD) // ENTRY

    @classmethod
    def create(cls, name: str, entries: int, namespace: str | None) -> Board:
        """A new board with room for ``entries`` workers at once."""
        need = (HEAD + entries * ENTRY) * 8
        cap = max(L.MIN_CAPACITY, 1 << (need - 1).bit_length())
        return cls(Channel.create(name, cap, "mpsc", namespace=namespace))

    @classmethod
    def open(cls, name: str, namespace: str | None) -> Board:
        """The board of a running pipeline."""
        return cls(Channel.open(name, namespace=namespace))

    @staticmethod
    def base(index: int) -> int:
        """The first word of entry ``index`` (word ``base + PID`` is its pid)."""
        return HEAD + index * ENTRY

    def word(self, index: int, word: int) -> int:
        """Word ``word`` of entry ``index``."""
        return int(self.words[HEAD + index * ENTRY + word])

    def clear(self, index: int) -> None:
        """Zero entry ``index`` before a new worker gets it."""
        b = HEAD + index * ENTRY
        for i in range(ENTRY):
            self.words[b + i] = 0

    def inflight(self, edge: int) -> int:
        """Items sent into edge ``edge`` and not yet taken by its stage.

        Counted up after each send and down (by ``_link_take``) before an
        item's first attempt is counted: a process killed in between leaves
        the count low (one item more may wait), never high, so a storm of
        kills cannot wedge an edge. A take may come before its send's count:
        the word is read as signed."""
        v = int(self.words[INFLIGHT + edge])
        return v - (1 << 64) if v >= 1 << 63 else v

    def sent(self, edge: int) -> None:
        """Count one item sent into edge ``edge``."""
        _core.fetch_add(self.channel.region._mapping(), self.offset(INFLIGHT + edge), 1)

    def offset(self, word: int) -> int:
        """Byte offset of board word ``word`` in the channel's mapping."""
        return self.data_offset + 8 * word

    def totals(self, indexes: Iterable[int]) -> list[int]:
        """The sums of entries' words (a worker's pid and item excepted)."""
        out = [0] * ENTRY
        words = self.words
        for i in indexes:
            b = HEAD + i * ENTRY
            for w in range(COUNTS, ENTRY):
                out[w] += words[b + w]
        return out

    def close(self) -> None:
        """Unmap the board (the parent's close removes it)."""
        self.words.release()
        self.channel.close()

