"""One segment file: create it (``O_EXCL``, ``ftruncate``,
``posix_fallocate``, header, ``fsync``), map it ``MAP_SHARED``, and find
records in it through the sparse index.

A segment is mapped once, at its full size, and never remapped: the writer
grows the journal by adding segment files. A mapping covers only the bytes
the file has (a tail segment cut short by a crash is mapped short), and the
SIGBUS guard of the extension watches every mapping, so a file truncated
under a reader reads as zeros and is reported, never a crash.
"""

from __future__ import annotations

import errno
import mmap
import os
import time

from .. import _core
from .._errors import NoSpace
from . import format as F


def list_segments(path: str) -> list[tuple[int, str]]:
    """(first_seq, file) of every segment in the journal at ``path``, in order."""
    out = []
    for entry in os.listdir(path):
        m = F.SEG_NAME.match(entry)
        if m:
            out.append((int(m.group(1)), os.path.join(path, entry)))
    out.sort()
    return out


def fsync_dir(path: str) -> None:
    """Make the directory's entries (a new or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Segment:
    """A mapped segment file."""

    def __init__(self, file: str, first_seq: int, writable: bool) -> None:
        self.file = file
        self.first_seq = first_seq
        self.writable = writable
        self.fd = os.open(file, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        self.mm: mmap.mmap | None = None
        self._watch = 0
        try:
            size = os.fstat(self.fd).st_size
            head = os.pread(self.fd, F.SEG_HEADER.size, 0)
            self.header = F.unpack_header(head, file, first_seq)
            #: How many bytes are mapped (less than segment_size if cut short).
            self.size = min(size, self.header.segment_size)
            if self.size < self.header.data_off:
                raise F.corrupt(file, self.size, f"file is {size} bytes, shorter than its index")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self.mm = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, prot)
            self.buf = memoryview(self.mm)
            self._watch = _core.watch(self.buf)
        except BaseException:
            self.close()
            raise

    @property
    def data_off(self) -> int:
        """Where the first record starts."""
        return self.header.data_off

    @property
    def limit(self) -> int:
        """The end of the record area when the segment is full size (an END
        record always fits below it)."""
        return self.header.segment_size - F.REC_SIZE

    def faulted(self) -> bool:
        """True if a read of the mapping faulted (the file was truncated)."""
        return _core.faults(self.buf) > 0

    def read(self, off: int) -> F.Rec | str | None:
        """The record at ``off`` (see :func:`format.read_record`)."""
        r = F.read_record(self.buf, off, self.size)
        if self.faulted():
            raise F.corrupt(self.file, off, "the file was truncated while mapped")
        return r

    # --------------------------------------------------------- the index --
    def index_entries(self) -> list[tuple[int, int, int]]:
        """The sparse index's entries that check and make sense, in order:
        (seq, time_ns, offset), offsets inside the record area and 16-byte
        aligned, seqs and offsets increasing."""
        h = self.header
        out: list[tuple[int, int, int]] = []
        for i in range(h.n_index):
            e = F.unpack_index(self.buf, F.INDEX_OFF + F.INDEX_ENTRY.size * i)
            if e is None:
                break
            seq, _, off = e
            if (off < h.data_off or off >= self.size or off % F.REC_ALIGN
                    or (out and (seq < out[-1][0] or off < out[-1][2]))):
                break
            out.append(e)
        return out

    def start_at(self, seq: int | None = None, time_ns: int | None = None) -> tuple[int, int]:
        """(offset, seq) of a record at or before the first with sequence
        ``seq`` (or time ``time_ns``), from the index: scanning forward
        from there finds it. Every entry used is verified against its record."""
        best = (self.data_off, self.first_seq)
        for s, t, off in self.index_entries():
            if (seq is not None and s > seq) or (time_ns is not None and t > time_ns):
                break
            r = self.read(off)
            if not isinstance(r, F.Rec) or r.seq != s:
                break
            best = (off, s)
        return best

    def write_index(self, i: int, seq: int, time_ns: int, offset: int) -> None:
        """Write index entry ``i`` (writer only)."""
        at = F.INDEX_OFF + F.INDEX_ENTRY.size * i
        self.buf[at:at + F.INDEX_ENTRY.size] = F.pack_index(seq, time_ns, offset)

    def sync(self, start: int = 0, end: int | None = None) -> None:
        """msync(MS_SYNC) the pages holding bytes ``start..end``."""
        assert self.mm is not None
        end = self.size if end is None else min(end, self.size)
        lo = start - start % mmap.PAGESIZE
        if end > lo:
            self.mm.flush(lo, end - lo)

    def close(self) -> None:
        """Unmap and close."""
        if self._watch:
            _core.unwatch(self._watch)
            self._watch = 0
        if self.mm is not None:
            self.buf.release()
            self.mm.close()
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def create_segment(path: str, first_seq: int, segment_size: int) -> Segment:
    """Create, size, allocate and map a new segment: :class:`NoSpace` if the
    file system cannot hold it (nothing is left behind then)."""
    file = os.path.join(path, F.segment_name(first_seq))
    fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, segment_size)
        os.posix_fallocate(fd, 0, segment_size)
        os.pwrite(fd, F.pack_header(segment_size, first_seq, time.time_ns()), 0)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(file)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            err = NoSpace(e.errno, f"no room for a new journal segment of {segment_size} bytes "
                          f"in {path}: {os.strerror(e.errno)}")
            raise err from e
        raise
    os.close(fd)
    fsync_dir(path)
    return Segment(file, first_seq, writable=True)


def extend(seg: Segment) -> Segment:
    """A tail segment cut short (a crash), brought back to full size and
    mapped again (writer only, before any append)."""
    file, first = seg.file, seg.first_seq
    size = seg.header.segment_size
    seg.close()
    fd = os.open(file, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(e.errno, f"no room to restore journal segment {file} to "
                              f"{size} bytes: {os.strerror(e.errno)}") from e
            raise
        os.fsync(fd)
    finally:
        os.close(fd)
    return Segment(file, first, writable=True)
