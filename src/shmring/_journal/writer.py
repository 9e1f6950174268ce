"""The one writer of a journal: ``append``, ``claim``, ``append_obj``,
``flush``, and the roll to a new segment.

A record is written in place in the mapped tail segment: payload, then
the rest of the header with its checksum, then the header's first word
with a release store (format.py), then the sparse index entry if the
record starts a new stride, then ``next_seq`` published on the meta page
(a seq-cst store), with a futex wake only when a reader sleeps. All of it
is one call of the C base, ``_core.JournalWriterCore.append``
(csrc/py/journal.c); what is rare stays here: the roll, the sync
policies' msyncs, the errors. ``append`` returns once that
store is done: the record is then in the page cache, so it survives the
writer's death (SIGKILL included); it survives the machine's once an msync
covered it (``flush()`` or the sync policy), which ``durable_seq`` tells.

When the next record does not fit, the writer creates the next segment
(``O_EXCL``, ``posix_fallocate``: a full disk is :class:`~shmring.NoSpace`
here, at this append, and nothing changes), then seals the old one with an
END record, msyncs it and unmaps it. The old mapping is never resized.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import _core
from .._errors import Closed, MessageTooLarge, SyncFailed, WriterTaken
from .._objects.frame import FramePlan, encode
from .._objects.serializers import PICKLE
from . import format as F
from .meta import LOCK_NAME, Meta
from .recovery import recover
from .segment import Segment, create_segment
from .sync import Flusher, Policy

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def take_lock(path: str, meta: Meta) -> int:
    """The writer lock's fd (flock, dropped by the kernel when the process
    dies), or :class:`WriterTaken`."""
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = meta.writer_pid or None
        err = WriterTaken(f"journal {path} already has a writer"
                          + (f" (pid {pid})" if pid else ""))
        err.pid = pid
        raise err from None
    return fd


class Writer(_core.JournalWriterCore):
    """Appends records to a journal (``j.writer()``; one at a time).

    The hot state (``_off``, ``_next``, ``_last_t``, the index position) and
    :meth:`append` are the C base's (csrc/py/journal.c): an append that fits
    is one C call; anything else (a roll, a closed or failed writer, the
    interval flusher's error) comes back here through :meth:`_append_slow`."""

    def __init__(self, path: str, meta: Meta, policy: Policy) -> None:
        super().__init__()
        self._path = path
        self._meta = meta
        self._policy = policy
        self._lock_fd = take_lock(path, meta)
        self._lock = threading.Lock()  # the segment swap and msync, against the flusher
        self._error: SyncFailed | None = None
        self._closed = False
        self._flusher: Flusher | None = None
        try:
            tail = recover(path, meta.durable)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._seg: Segment = tail.seg
        self._off = tail.off
        self._next = tail.next_seq
        self._last_t = tail.last_time
        self._sealed = tail.sealed
        self._synced = tail.off  # bytes of this segment below it are msynced or not ours
        self._durable = tail.next_seq  # recovery msynced the tail
        meta.set_durable(tail.next_seq)
        self._unsynced_bytes = 0
        self._idx = len(self._seg.index_entries())
        self._index_at = 0  # the offset from which a record gets an index entry
        self._eager = policy.kind in ("always", "bytes")
        self._attach_segment()
        meta.set_writer(os.getpid())
        meta.publish(self._next)
        if policy.kind == "interval":
            self._flusher = Flusher(policy.interval, self._flush_interval)

    def _flush_interval(self) -> None:
        """The flusher's flush: on an error, appends take the slow path, which
        raises it."""
        try:
            self.flush()
        except BaseException:
            self._slow = True
            raise

    def _attach_segment(self) -> None:
        """Hand the tail segment's mapping (and the meta page) to the C base."""
        h = self._seg.header
        self._attach(self._seg.buf, self._meta.mm, self._seg.limit, h.data_off, h.stride,
                     h.n_index)

    # ------------------------------------------------------------ state --
    @property
    def next_seq(self) -> int:
        """The sequence number the next record gets."""
        return self._next

    @property
    def durable_seq(self) -> int:
        """Every record with a lower sequence number is on disk (msynced)."""
        return self._durable

    @property
    def max_record(self) -> int:
        """The largest payload one record can hold."""
        return min(F.MAX_PAYLOAD, self._seg.limit - self._seg.data_off - F.REC_SIZE)

    def _check(self) -> None:
        if self._closed:
            raise Closed(f"this writer of journal {self._path} is closed")
        if self._error is None and self._flusher is not None and self._flusher.error:
            self._fail(self._flusher.error)
        if self._error is not None:
            raise self._error

    def _fail(self, e: BaseException) -> None:
        err = SyncFailed(getattr(e, "errno", None) or 5,
                         f"msync of journal {self._path} failed ({e}); the writer is unusable "
                         f"and records from {self._durable} on may not be on disk")
        err.__cause__ = e
        self._error = err
        self._slow = True
        raise err

    # ----------------------------------------------------------- append --
    def _reserve(self, n: int) -> int:
        if n > self.max_record:
            err = MessageTooLarge(f"a record of {n} bytes does not fit in a segment of journal "
                                  f"{self._path} (at most {self.max_record})")
            err.size, err.limit = n, self.max_record
            raise err
        if self._sealed or F.align(self._off + F.REC_SIZE + n) > self._seg.limit:
            self._roll()
        return self._off

    def _sync_policy(self, nbytes: int) -> None:
        if self._policy.kind == "always":
            self.flush()
            return
        self._unsynced_bytes += nbytes
        if self._unsynced_bytes >= self._policy.nbytes:
            self.flush()

    # append(data) -> seq is the C base's: one call when the record fits.

    def _append_slow(self, data: ReadableBuffer) -> int:
        """The append of a record the C base did not take: the checks (closed,
        failed, the flusher's error), a non-contiguous buffer, a roll."""
        self._check()
        with memoryview(data) as mv:
            if mv.c_contiguous:
                flat = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
            else:
                flat = memoryview(mv.tobytes())
            try:
                self._reserve(flat.nbytes)
                return self._append_here(flat)
            finally:
                if flat is not mv:
                    flat.release()

    @contextlib.contextmanager
    def claim(self, n: int) -> Iterator[memoryview]:
        """Write a record of ``n`` bytes in place: the block fills the view,
        and the record is committed when it ends (nothing is written if it
        raises). ``w.next_seq - 1`` is its sequence number afterwards::

            with w.claim(5) as buf:
                buf[:] = b"hello"
        """
        self._check()
        if not isinstance(n, int) or n < 0:
            from .._errors import InvalidArgument
            raise InvalidArgument(f"claim size must be an int >= 0, not {n!r}")
        off = self._reserve(n)
        view = self._seg.buf[off + F.REC_SIZE:off + F.REC_SIZE + n]
        try:
            yield view
        except BaseException:
            # Nothing is committed; zero what the block wrote, so no stray
            # bytes lie where the next records' header words will go.
            view[:] = bytes(n)
            raise
        finally:
            view.release()
        self._commit_claim(off, n)

    def append_obj(self, obj: Any) -> int:
        """Append an object, encoded as ``Producer.send_obj`` encodes it (a
        plain value by the C value codec, anything else pickled, large
        buffers out of band); read it back with ``Reader.objects``."""
        self._check()
        data, buffers = encode(obj, PICKLE)
        plan = FramePlan(data, buffers)
        try:
            with self.claim(plan.size) as view:
                plan.write(view)
        finally:
            plan.release()
        return self._next - 1

    # ------------------------------------------------------------- roll --
    def _roll(self) -> None:
        with self._lock:
            old = self._seg
            new = create_segment(self._path, self._next, old.header.segment_size)
            try:
                if not self._sealed:
                    buf, off = old.buf, self._off
                    crc = F.record_crc(F.KIND_END, self._next, self._last_t, b"")
                    F.REC.pack_into(buf, off, 0, crc, self._next, self._last_t, 0)
                    _core.store32(buf, off, F.KIND_END)
                    self._off = F.align(off + F.REC_SIZE)
                try:
                    old.sync(self._synced, self._off)
                except OSError as e:
                    self._fail(e)
            except BaseException:
                new.close()
                raise
            self._durable = self._next
            self._meta.set_durable(self._next)
            self._detach()
            old.close()
            self._seg = new
            self._off = self._synced = new.data_off
            self._idx = 0
            self._index_at = 0
            self._sealed = False
            self._attach_segment()
        self._meta.publish(self._next)  # readers at the END record go on

    # ------------------------------------------------------------ flush --
    def flush(self) -> int:
        """msync what was appended; return the durable sequence number
        (every record below it is on disk). Raises :class:`SyncFailed` if
        the msync failed, and from then on at every call."""
        if self._error is not None:
            raise self._error
        with self._lock:
            if self._closed and self._seg.mm is None:
                return self._durable
            seq, off = self._mark
            if seq > self._durable:
                try:
                    self._seg.sync(self._synced, off)
                except OSError as e:
                    self._fail(e)
                self._synced = off - off % 4096
                self._durable = seq
                self._unsynced_bytes = 0
                self._meta.set_durable(seq)
            return self._durable

    def close(self) -> None:
        """Flush, then let the journal go (the lock too). Idempotent. If an
        msync failed (now or before), the journal is let go all the same
        and :class:`SyncFailed` is raised: what was not durable may be lost."""
        if self._closed:
            return
        try:
            if self._flusher is not None:
                self._flusher.stop()
                if self._flusher.error is not None and self._error is None:
                    self._fail(self._flusher.error)
            if self._error is not None:
                raise self._error
            self.flush()
            self._meta.sync_page()
        finally:
            self._closed = True
            self._slow = True
            self._meta.set_writer(0)
            self._detach()
            self._seg.close()
            os.close(self._lock_fd)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
