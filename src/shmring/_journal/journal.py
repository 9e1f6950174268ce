"""``shmring.Journal``: a durable, file-backed log of records in a directory
of segment files (format.py), with one writer and any number of readers in
any processes.

Opening a journal that no live writer holds recovers it at once (takes the
writer lock for a moment, cuts a torn tail: recovery.py), so every reader
sees a clean end; a writer recovers again when it starts, under its lock.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from .._errors import Closed, InvalidArgument, NoSpace, RegionExists, RegionNotFound, WriterTaken
from . import format as F
from .meta import Meta, create_meta
from .reader import Reader
from .recovery import recover, scan
from .retention import retain
from .segment import Segment, create_segment, fsync_dir, list_segments
from .sync import parse
from .writer import Writer, take_lock


class Journal:
    """A durable journal in a directory: records appended by one writer,
    read (replayed, then followed live) by any number of readers in any
    processes, kept on disk (docs/journal.md). Example::

        import shmring

        j = shmring.Journal.create("events", segment_size=1 << 20, sync="interval:10ms")
        w = j.writer()
        seq = w.append(b"payload")                  # 0: the record's sequence number
        w.append_obj({"id": 7, "tags": ["a", "b"]})  # the codec of Channel.send_obj
        assert w.flush() == 2 == j.durable_seq      # msync: both records on disk
        with shmring.Journal.open("events") as again:  # usually another process
            r = again.reader(from_seq=0, timeout=0)  # timeout=0: stop at the end
            assert r.read() == (0, b"payload")
            assert list(r.objects()) == [(1, {"id": 7, "tags": ["a", "b"]})]
        j.close()
    """

    def __init__(self, path: str, meta: Meta, sync: str) -> None:
        self._path = path
        self._meta = meta
        self._sync = sync
        self._policy = parse(sync)
        self._writer: Writer | None = None
        self._readers: list[Reader] = []
        self._closed = False

    # ------------------------------------------------------- construction --
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, segment_size: int = 64 << 20,
               sync: str = "none") -> Journal:
        """Create a journal in the new directory ``path`` (its parent must
        exist): :class:`RegionExists` if ``path`` exists, :class:`NoSpace`
        if the file system cannot hold its first segment."""
        path = os.fspath(path)
        if (not isinstance(segment_size, int) or isinstance(segment_size, bool)
                or not F.MIN_SEGMENT <= segment_size <= F.MAX_SEGMENT
                or segment_size % F.PAGE):
            raise InvalidArgument(f"segment_size must be a multiple of {F.PAGE} from "
                                  f"{F.MIN_SEGMENT} to {F.MAX_SEGMENT}, not {segment_size!r}")
        parse(sync)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            raise RegionExists(f"{path} exists already; Journal.open opens a journal") from None
        except FileNotFoundError:
            raise RegionNotFound(f"the parent directory of {path} does not exist") from None
        try:
            create_meta(path, segment_size, sync)
            create_segment(path, 0, segment_size).close()
            fsync_dir(path)
            fsync_dir(os.path.dirname(os.path.abspath(path)))
        except BaseException as e:
            for entry in os.listdir(path):
                os.unlink(os.path.join(path, entry))
            os.rmdir(path)
            if isinstance(e, OSError) and not isinstance(e, NoSpace) and e.errno == 28:
                raise NoSpace(28, f"no room for journal {path}: {e}") from e
            raise
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, sync: str | None = None) -> Journal:
        """Open the journal at ``path``; a writer it makes uses ``sync``
        (default: the policy the journal was created with). If no writer is
        alive, a torn tail left by one is cut now."""
        path = os.fspath(path)
        if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "journal.meta")):
            raise RegionNotFound(f"no journal at {path}")
        meta = Meta(path)
        try:
            policy = meta.sync if sync is None else sync
            parse(policy)
            try:
                fd = take_lock(path, meta)
            except WriterTaken:
                pass  # a live writer recovered it
            else:
                try:
                    tail = recover(path, meta.durable)
                    tail.seg.close()
                    meta.set_durable(tail.next_seq)  # recovery msynced the tail
                    meta.publish(tail.next_seq)
                finally:
                    os.close(fd)
        except BaseException:
            meta.close()
            raise
        return cls(path, meta, policy)

    # -------------------------------------------------------------- roles --
    def _check(self) -> None:
        if self._closed:
            raise Closed(f"journal {self._path} is closed")

    def writer(self) -> Writer:
        """The journal's writer: :class:`WriterTaken` if a writer is alive
        (in any process, this one included)."""
        self._check()
        if self._writer is not None and not self._writer._closed:
            err = WriterTaken(f"journal {self._path} already has a writer (this process's)")
            err.pid = os.getpid()
            raise err
        self._writer = Writer(self._path, self._meta, self._policy)
        return self._writer

    def reader(self, from_seq: int | None = None, *, from_time: float | None = None,
               name: str | None = None, timeout: float | None = None) -> Reader:
        """A reader from ``from_seq`` (or the first record at or after
        ``from_time``, seconds since the epoch; default: the start, or a
        named cursor's position). Iterating it follows live appends and
        ends after ``timeout`` seconds without one (None: never)."""
        self._check()
        r = Reader(self._path, self._meta, from_seq=from_seq, from_time=from_time, name=name,
                   timeout=timeout)
        self._readers.append(r)
        return r

    # -------------------------------------------------------------- state --
    @property
    def path(self) -> str:
        """The journal's directory."""
        return self._path

    @property
    def next_seq(self) -> int:
        """The sequence number the next record appended gets."""
        if self._writer is not None and not self._writer._closed:
            return self._writer.next_seq
        return self._meta.next_seq

    @property
    def durable_seq(self) -> int:
        """Every record with a lower sequence number is on disk."""
        if self._writer is not None and not self._writer._closed:
            return self._writer.durable_seq
        return self._meta.durable

    def info(self) -> dict[str, Any]:
        """What ``shmring inspect`` shows, as plain data::

            {"path": str, "segment_size": int, "sync": str,
             "first_seq": int, "next_seq": int, "durable_seq": int,
             "writer_pid": int | None,
             "cursors": {name: next_seq_to_read},
             "segments": [{"file": str, "first_seq": int, "last_seq": int | None,
                           "records": int, "bytes": int, "used": int,
                           "sealed": bool}]}

        ``bytes`` is the file's size, ``used`` the bytes its records take
        (index included); ``last_seq`` is None for a segment with no record.
        """
        self._check()
        segs = list_segments(self._path)
        next_seq = self.next_seq
        durable = self.durable_seq
        out = []
        for k, (first, file) in enumerate(segs):
            seg = Segment(file, first, writable=False)
            try:
                off, nxt, _, sealed, _ = scan(seg, 0 if k + 1 < len(segs) else durable)
            finally:
                seg.close()
            if k + 1 == len(segs):
                nxt = max(nxt, next_seq) if not sealed else nxt
            out.append({"file": os.path.basename(file), "first_seq": first,
                        "last_seq": nxt - 1 if nxt > first else None, "records": nxt - first,
                        "bytes": os.stat(file).st_size, "used": off, "sealed": sealed})
        pid = self._meta.writer_pid
        return {"path": self._path, "segment_size": self._meta.segment_size,
                "sync": self._sync, "first_seq": segs[0][0] if segs else 0,
                "next_seq": next_seq, "durable_seq": durable,
                "writer_pid": pid or None, "cursors": self._meta.cursors(), "segments": out}

    def retain(self, max_bytes: int) -> int:
        """Remove the oldest whole segments while the journal's files take
        more than ``max_bytes`` and no named cursor still needs them (the
        tail segment always stays). Returns the bytes removed."""
        self._check()
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise InvalidArgument(f"max_bytes must be an int >= 0, not {max_bytes!r}")
        return retain(self._path, self._meta, max_bytes)

    # ------------------------------------------------------------ closing --
    def close(self) -> None:
        """Close the writer (flushing it) and every reader. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            for r in self._readers:
                with contextlib.suppress(Exception):
                    r.close()
            self._meta.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<shmring.Journal {self._path!r} next_seq={self.next_seq}>"


__all__ = ["Journal"]
