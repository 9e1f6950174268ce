"""Recovery on open: find where the journal ends, and cut a torn tail.

Run with the writer lock held (by a writer, or by ``Journal.open`` when no
writer is alive), so nothing appends meanwhile.

The tail segment is scanned from the last index entry at or below the
durable point (which the meta page holds) while records check and their
sequence numbers follow on. The first record that does not check, or
whose word is still 0, ends the journal. Below the durable point that is
corruption (``CorruptJournal``, with file and offset): ``flush()`` promised
those records. At or above it, it is a torn tail: a writer killed in an
append (its word is still 0), or a machine that crashed with some pages of
the tail written back and others not. Everything from there to the end of
the segment is zeroed and msynced, so no stale record can follow a new one,
and a segment created after the tail (the crash came between creating it
and sealing the one before) is removed. Then the tail segment (and a sealed
one before an empty tail) is msynced: a writer killed with records only in
the page cache leaves them on disk after recovery, so the durable point
moves up to the tail.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .. import _core
from . import format as F
from .segment import Segment, extend, fsync_dir, list_segments

_ZERO = bytes(1 << 20)


class Tail(NamedTuple):
    """Where the next record goes."""

    seg: Segment
    off: int
    next_seq: int
    last_time: int
    sealed: bool  # the segment ends with an END record: the next append rolls


def scan(seg: Segment, durable: int) -> tuple[int, int, int, bool, bool]:
    """(offset, next_seq, last_time, sealed, clean) at the end of ``seg``'s
    records: ``clean`` is False if the scan stopped at bytes that do not
    check (rather than at a zero word)."""
    off, expected = seg.start_at(seq=max(durable - 1, 0))
    last_time = 0
    limit = seg.header.segment_size
    while True:
        r = seg.read(off)
        if isinstance(r, F.Rec) and r.seq == expected and r.next_off <= limit:
            last_time = r.time_ns
            if r.kind == F.KIND_END:
                return off, expected, last_time, True, True
            if r.next_off > seg.limit:  # no room left for the END record
                return off, expected, last_time, False, False
            expected += 1
            off = r.next_off
            continue
        return off, expected, last_time, False, r is F.EMPTY


def _zero_from(seg: Segment, off: int) -> None:
    """Zero every non-zero byte of ``seg`` from ``off`` on, and the index
    entries that point there (the caller msyncs)."""
    h = seg.header
    for i in range(h.n_index):
        at = F.INDEX_OFF + F.INDEX_ENTRY.size * i
        e = F.unpack_index(seg.buf, at)
        raw = seg.buf[at:at + F.INDEX_ENTRY.size]
        if (e is None or e[2] >= off) and raw != _ZERO[:F.INDEX_ENTRY.size]:
            seg.buf[at:at + F.INDEX_ENTRY.size] = _ZERO[:F.INDEX_ENTRY.size]
    a = _core.journal_nonzero(seg.buf, off, seg.size)
    while a < seg.size:
        b = min(seg.size, (a // len(_ZERO) + 1) * len(_ZERO))
        seg.buf[a:b] = _ZERO[:b - a]
        a = _core.journal_nonzero(seg.buf, b, seg.size)


def _unused(file: str) -> bool:
    """True if ``file`` is a segment whose header never reached the disk."""
    with open(file, "rb") as f:
        head = f.read(F.SEG_HEADER.size)
    return head.count(0) == len(head)


def recover(path: str, durable: int) -> Tail:
    """Find the tail and cut what follows it (writer lock held)."""
    segs = list_segments(path)
    if segs and len(segs) > 1 and _unused(segs[-1][1]):
        os.unlink(segs.pop()[1])  # created by a writer that crashed before its header landed
        fsync_dir(path)
    if not segs:
        raise F.corrupt(path, None, "the journal has no segment file")
    first, file = segs[-1]
    seg = Segment(file, first, writable=True)
    try:
        off, nxt, t, sealed, _ = scan(seg, durable)
        if nxt == first and off == seg.data_off and len(segs) > 1 and not sealed:
            # An empty last segment: is the one before it sealed?
            pfirst, pfile = segs[-2]
            prev = Segment(pfile, pfirst, writable=True)
            poff, pnxt, pt, psealed, _ = scan(prev, durable)
            if not psealed or pnxt != first:
                seg.close()
                os.unlink(file)
                fsync_dir(path)
                seg, off, nxt, t, sealed = prev, poff, pnxt, pt, psealed
                first, file = pfirst, pfile
            else:
                prev.sync()  # a writer killed before it msynced the sealed segment
                prev.close()
        if nxt < durable:
            raise F.corrupt(file, off, f"record {nxt} is missing or does not check, but the "
                            f"journal was durable up to {durable}")
        if not sealed:
            _zero_from(seg, off)
            if seg.size < seg.header.segment_size:
                seg = extend(seg)
        seg.sync()  # what a killed writer left in the page cache: on disk now
        return Tail(seg, off, nxt, t, sealed)
    except BaseException:
        seg.close()
        raise
