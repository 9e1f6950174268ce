"""Reading a journal: replay from a sequence number or a time, then follow
live appends, sleeping on the meta page's futex word between them.

A reader maps each segment read-only, checks every record (kind, length
inside the mapping, checksum, the sequence number it expects) before it
copies a byte, and moves to the next segment at an END record. A record
that does not check below the journal's durable point is
:class:`~shmring.CorruptJournal`; at or above it, it is a tail not written
yet (or being cut by a recovering writer), so the reader waits for it.

A named reader's position, ``ack``ed, is a cursor on the meta page: a new
reader of that name starts after the last record acked, and ``retain``
keeps every segment a cursor still needs.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterator
from typing import Any

from .. import _core
from .._errors import Closed, InvalidArgument, Timeout
from .._objects.frame import _decode_copy
from .._objects.serializers import PICKLE
from . import format as F
from .meta import Meta
from .segment import Segment, list_segments

#: Records (and payload bytes) one C scan checks and copies at most.
BATCH_RECORDS = 1024
BATCH_BYTES = 64 << 10  # freed and reused below malloc's trim threshold (128 KiB)
_FAULTED = 5  # journal_read_many's status: the mapping faulted (truncated)


def decode_obj(data: bytes | memoryview) -> Any:
    """The object of a record written by ``Writer.append_obj``."""
    with memoryview(data) as mv:
        return _decode_copy(PICKLE, mv)


class Reader:
    """Iterates ``(seq, data)`` over a journal's records (``j.reader()``)."""

    def __init__(self, path: str, meta: Meta, *, from_seq: int | None, from_time: float | None,
                 name: str | None, timeout: float | None) -> None:
        if from_seq is not None and (not isinstance(from_seq, int) or from_seq < 0):
            raise InvalidArgument(f"from_seq must be an int >= 0, not {from_seq!r}")
        if from_time is not None and not isinstance(from_time, (int, float)):
            raise InvalidArgument(f"from_time must be a number (seconds since the epoch), "
                                  f"not {from_time!r}")
        if from_seq is not None and from_time is not None:
            raise InvalidArgument("give from_seq or from_time, not both")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidArgument(f"timeout must be None or a number >= 0, not {timeout!r}")
        self._path = path
        self._meta = meta
        self._timeout = timeout
        self._seg: Segment | None = None
        self._closed = False
        # Records the C scan checked and copied ahead, the next one last (so
        # pop() hands them out); self._seq is the one after them all.
        self._pending: list[tuple[int, bytes]] = []
        self._seq = 0
        #: The cursor's name (None for an anonymous reader).
        self.name = name
        self._slot = None if name is None else meta.cursor_slot(name)
        #: Records skipped because ``retain`` removed them before they were read.
        self.missed = 0
        if from_seq is None and from_time is None:
            from_seq = 0 if self._slot is None else meta.cursor(self._slot)
        if from_time is not None:
            self._seek_time(int(from_time * 1e9))
        else:
            assert from_seq is not None
            self._seek_seq(from_seq)

    @property
    def seq(self) -> int:
        """The sequence number of the next record this reader returns."""
        if self._pending:
            return self._pending[-1][0]
        return self._seq

    @seq.setter
    def seq(self, value: int) -> None:
        self._seq = value

    # -------------------------------------------------------- positioning --
    def _segments(self) -> list[tuple[int, str]]:
        segs = list_segments(self._path)
        if not segs:
            raise F.corrupt(self._path, None, "the journal has no segment file")
        return segs

    def _enter(self, first: int, file: str) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None
        self._seg = Segment(file, first, writable=False)

    def _seek_seq(self, seq: int) -> None:
        segs = self._segments()
        i = max(bisect.bisect_right([s for s, _ in segs], seq) - 1, 0)
        first, file = segs[i]
        if seq < first:
            self.missed += first - seq
            seq = first
        self._enter(first, file)
        assert self._seg is not None
        self._off, self._seq = self._seg.start_at(seq=seq)
        while self._seq < seq and self._step(skip=True) is not None:
            pass

    def _seek_time(self, t: int) -> None:
        segs = self._segments()
        i = 0
        for k, (first, file) in enumerate(segs):
            with open(file, "rb") as f:
                head = F.unpack_header(f.read(F.SEG_HEADER.size), file, first)
            if head.created_ns < t:
                i = k
        first, file = segs[i]
        self._enter(first, file)
        assert self._seg is not None
        self._off, self._seq = self._seg.start_at(time_ns=t)
        while True:
            r = self._peek()
            if not isinstance(r, F.Rec) or (r.kind == F.KIND_DATA and r.time_ns >= t):
                return
            self._step(skip=True)

    # ------------------------------------------------------------ reading --
    def _peek(self) -> F.Rec | str | None:
        """The record at the position if it checks and is the one expected,
        following END records into the next segment; None if nothing is
        there yet; raises CorruptJournal below the durable point."""
        while True:
            seg = self._seg
            assert seg is not None
            if self._off + F.REC_SIZE > seg.size and seg.size < seg.header.segment_size:
                self._enter(seg.first_seq, seg.file)  # a tail cut short, since restored
                seg = self._seg
                assert seg is not None
            r = seg.read(self._off)
            if isinstance(r, F.Rec) and r.seq == self._seq:
                if r.kind == F.KIND_DATA:
                    return r
                if self._next_segment(r.seq):
                    continue
                return None  # sealed, and the next segment is not made yet
            if r is not F.EMPTY and self._seq < self._meta.durable:
                raise F.corrupt(seg.file, self._off,
                                f"record {self._seq} does not check (the journal is durable "
                                f"up to {self._meta.durable})")
            if r is F.EMPTY and self._seq < self._meta.durable:
                raise F.corrupt(seg.file, self._off,
                                f"record {self._seq} is missing (the journal is durable up "
                                f"to {self._meta.durable})")
            return None

    def _next_segment(self, first: int) -> bool:
        """Move to the segment after an END record for ``first``; False if
        there is none yet (a writer recovered a sealed tail and makes it at
        its next append)."""
        assert self._seg is not None
        file = os.path.join(self._path, F.segment_name(first))
        if not os.path.exists(file):
            later = [s for s in self._segments() if s[0] > self._seg.first_seq]
            if not later:
                return False
            if later[0][0] < first:
                raise F.corrupt(later[0][1], None, f"starts at {later[0][0]}, inside the "
                                f"segment before it (which ends at {first})")
            self.missed += later[0][0] - first
            first, file = later[0]
        self._enter(first, file)
        assert self._seg is not None
        self._off, self._seq = self._seg.data_off, first
        return True

    def _step(self, skip: bool = False) -> tuple[int, bytes] | None:
        """The next record, moving past it (None if there is none yet): many
        at once by the C scan while records check and follow on, one by one
        here at anything else (an END record, bytes that do not check, a
        tail cut short)."""
        seg = self._seg
        if not skip and seg is not None:
            recs, off, nxt, status = _core.journal_read_many(
                seg.buf, self._off, seg.size, self._seq, BATCH_RECORDS, BATCH_BYTES)
            if status == _FAULTED:
                raise F.corrupt(seg.file, self._off, "the file was truncated while mapped")
            if recs:
                self._off, self._seq = off, nxt
                recs.reverse()
                self._pending = recs
                return recs.pop()
        r = self._peek()
        if not isinstance(r, F.Rec):
            return None
        assert self._seg is not None
        data = b"" if skip else bytes(self._seg.buf[r.payload_off:r.payload_off + r.length])
        self._off = r.next_off
        self._seq = r.seq + 1
        return r.seq, data

    def read(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next record as ``(seq, data)``, waiting up to ``timeout``
        seconds (None: for ever) for it to be appended; :class:`Timeout`
        if none came. Example::

            seq, data = r.read(timeout=1.0)
        """
        if self._closed:
            raise Closed(f"this reader of journal {self._path} is closed")
        if self._pending:
            return self._pending.pop()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rec = self._step()
            if rec is not None:
                return rec
            seen = self._meta.wake_value()
            with self._meta.waiting():
                if self._peek() is not None:
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._meta.sleep(seen, left)
        err = Timeout(f"no record {self.seq} in journal {self._path} within {timeout} s")
        err.timeout = timeout
        raise err

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """``(seq, data)`` for every record, following live appends; ends
        when none came for the reader's ``timeout`` (None: never ends)."""
        while True:
            pending = self._pending
            while pending:
                yield pending.pop()
            try:
                yield self.read(self._timeout)
            except Timeout:
                return

    def objects(self) -> Iterator[tuple[int, Any]]:
        """``(seq, object)`` for records written by ``append_obj``, as
        :meth:`__iter__` does for bytes."""
        for seq, data in self:
            yield seq, decode_obj(data)

    def ack(self, seq: int) -> None:
        """Record in the journal that this named reader is done with every
        record up to ``seq``: a reader of that name opened later starts at
        ``seq + 1``, and ``retain`` keeps what it still needs."""
        if self._slot is None:
            raise InvalidArgument("ack needs a named reader: j.reader(name=...)")
        if not isinstance(seq, int) or seq < 0:
            raise InvalidArgument(f"ack(seq): seq must be an int >= 0, not {seq!r}")
        self._meta.set_cursor(self._slot, seq + 1)

    def close(self) -> None:
        """Let the mapping go. Idempotent."""
        self._closed = True
        self._pending.clear()  # in place: an iteration under way holds the list
        if self._seg is not None:
            self._seg.close()
            self._seg = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
