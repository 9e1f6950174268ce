"""Objects larger than a record, streamed in chunk records.

An object whose framed record (``frame.py``) would not fit the channel's
``max_message`` is *streamed* instead, where one producer writes and every
consumer reads all records in order (``spsc``, and ``broadcast`` unless
lossy or given a ``slow_consumer_timeout``, where a reader may be
overrun): a *stream head* record - the frame's header, table and payload,
magic ``b"\\x00SRS"``, with the stream's id and total buffer bytes after the
header and each table entry's offset counted in the stream - then the
buffers' bytes in *chunk* records (``b"\\x00SRC"``, the stream id's low 32
bits, the offset) of at most :data:`STREAM_CHUNK` bytes, none spanning two
buffers. The receiver copies each chunk into buffers it allocated from the
head and rebuilds the object once the last one came.

So an object may be larger than the ring, and a large array crosses in
pieces that stay in cache: with 1 MiB chunks through a 4 MiB ring an 8 MB
array arrived at 73 % of a cache-resident memcpy, 1.7 times the rate of one
whole record through a 32 MiB ring, whose copies miss the last-level cache
(``benchmarks/objects.py``; docs/design.md).

A streamed object is always received as a copy (``copy=False`` gives an
:class:`~shmring.ObjectView` of owned memory). A stream cut short - its
sender got ``Timeout`` or died, so the object was never sent - is dropped
when the next head or another record arrives; a chunk of no stream in
progress (a broadcast consumer that joined mid-stream) is skipped. A receive
that times out mid-stream keeps what it has (in the consumer core's
``_stream``), and the next receive goes on from there.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Any

from .. import _core
from .. import _layout as L
from .._errors import DecodeError
from .frame import (
    _CHUNK,
    _ENTRY,
    _FLAG_READONLY,
    _HEADER,
    _STREAM,
    CHUNK_MAGIC,
    FRAME_VERSION,
    STREAM_MAGIC,
    _decode_copy,
    _decode_error,
)
from .serializers import Serializer
from .view import ObjectView, _peek, _view_of

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: Records of a streamed object's chunks are at most this long (header
#: included): measured best on a 2-core x86-64 with a 1 MiB L2 and a 32 MiB
#: L3, in a 2-4 MiB ring (smaller chunks halved the rate).
STREAM_CHUNK = 1 << 20
#: A streamed object's records must reach each consumer in a row, from one
#: writer: so only the patterns with one producer that hand every consumer
#: all records in order (spsc, broadcast) stream.
_STREAMING = frozenset(t.code for t in L.TRAITS.values()
                       if not t.multi_producer and (t.fan_out or not t.multi_consumer))
_MAX_STREAM = 1 << 48  # a head claiming more buffer bytes than this is corrupt
_stream_ids = itertools.count(int.from_bytes(os.urandom(4), "little"))


# ------------------------------------------------------------- sending --
def _streams(tx: _core.ProducerCore) -> bool:
    """True if objects too large for one record are streamed on tx's channel."""
    return tx._pattern in _STREAMING and not tx._validating


def _write_stream(tx: _core.ProducerCore, payload: memoryview, raws: list[memoryview],
                  timeout: float | None) -> None:
    """Send a stream head, then the buffers in chunks (see the module
    docstring). A Timeout part way leaves a stream the receiver drops."""
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    sid = next(_stream_ids) & 0xFFFFFFFF
    nbuf = len(raws)
    table = _HEADER.size + _STREAM.size
    p0 = table + _ENTRY.size * nbuf
    head = bytearray(p0 + payload.nbytes)
    total = 0
    for i, r in enumerate(raws):
        _ENTRY.pack_into(head, table + _ENTRY.size * i, total, r.nbytes,
                         _FLAG_READONLY if r.readonly else 0)
        total += r.nbytes
    _HEADER.pack_into(head, 0, STREAM_MAGIC, FRAME_VERSION, nbuf, payload.nbytes)
    _STREAM.pack_into(head, _HEADER.size, sid, total)
    head[p0:] = payload
    tx.send(head, timeout)
    step = min(STREAM_CHUNK - L.RECORD_HEADER, tx._max_message) - _CHUNK.size
    off = 0
    for r in raws:
        n = r.nbytes
        pos = 0
        while pos < n:
            k = min(step, n - pos)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            view = tx._claim(_CHUNK.size + k, left)
            try:
                _CHUNK.pack_into(view, 0, CHUNK_MAGIC, sid, off + pos)
                view[_CHUNK.size:] = r[pos:pos + k]
            except BaseException:
                tx._abort()
                raise
            tx._commit()
            pos += k
        off += n


# ----------------------------------------------------------- receiving --
class _Stream:
    """A streamed object being received: its payload, and buffers that the
    chunks fill in order."""

    __slots__ = ("bufs", "ends", "got", "i", "payload", "readonly", "sid", "total", "views")

    def __init__(self, mv: memoryview) -> None:
        n = mv.nbytes
        if n < _HEADER.size + _STREAM.size:
            raise DecodeError(f"stream head of {n} bytes is shorter than its header")
        _, version, nbuf, plen = _HEADER.unpack_from(mv, 0)
        if version != FRAME_VERSION:
            raise DecodeError(f"object stream version {version}; this shmring reads "
                              f"{FRAME_VERSION}")
        sid, total = _STREAM.unpack_from(mv, _HEADER.size)
        table = _HEADER.size + _STREAM.size
        p0 = table + _ENTRY.size * nbuf
        if p0 + plen != n:
            raise DecodeError(f"stream head of {n} bytes: its table and payload need {p0 + plen}")
        if total > _MAX_STREAM:
            raise DecodeError(f"stream head announces {total} bytes")
        self.ends: list[int] = []
        self.readonly: list[bool] = []
        at = 0
        for i in range(nbuf):
            off, length, flags = _ENTRY.unpack_from(mv, table + _ENTRY.size * i)
            if off != at or at + length > total:
                raise DecodeError(f"stream buffer {i} ({length} bytes at {off}) does not "
                                  f"follow at {at} within {total}")
            at += length
            self.ends.append(at)
            self.readonly.append(bool(flags & _FLAG_READONLY))
        if at != total:
            raise DecodeError(f"stream buffers add up to {at} bytes, its head says {total}")
        self.sid = sid & 0xFFFFFFFF
        self.total = total
        self.payload = bytes(mv[p0:])
        # Each buffer is allocated when its first chunk comes, so a head
        # alone (corrupt, or cut short) reserves no memory.
        self.bufs: list[bytearray | None] = [None] * nbuf
        self.views: list[memoryview | None] = [None] * nbuf
        self.got = 0
        self.i = 0

    def add(self, mv: memoryview) -> bool:
        """Copy in a chunk record; False if it is not this stream's next one."""
        _, sid, off = _CHUNK.unpack_from(mv, 0)
        k = mv.nbytes - _CHUNK.size
        if sid != self.sid or off != self.got:
            return False
        ends = self.ends
        while self.i < len(ends) and off >= ends[self.i]:
            self.i += 1  # skips empty buffers too
        i = self.i
        if i == len(ends) or off + k > ends[i]:
            raise DecodeError(f"stream chunk of {k} bytes at {off} crosses its buffer's end")
        start = ends[i - 1] if i else 0
        view = self.views[i]
        if view is None:
            try:
                buf = self.bufs[i] = _core.empty_bytearray(ends[i] - start)
            except MemoryError:
                raise DecodeError(f"no memory for a streamed buffer of {ends[i] - start} "
                                  f"bytes") from None
            # Chunks are copied in through a memoryview: a bytearray's slice
            # assignment from another buffer would copy it to a temporary first.
            view = self.views[i] = memoryview(buf)
        view[off - start:off - start + k] = mv[_CHUNK.size:]
        self.got += k
        return True

    def done(self, ser: Serializer) -> Any:
        """The object, once every chunk is in."""
        for v in self.views:
            if v is not None:
                v.release()
        bufs: list[bytearray | memoryview] = []
        for b, ro in zip(self.bufs, self.readonly, strict=True):
            b = bytearray() if b is None else b  # an empty buffer gets no chunk
            bufs.append(memoryview(b).toreadonly() if ro else b)
        try:
            return ser.loads(self.payload, bufs)
        except Exception as e:
            raise _decode_error(ser, e) from e


def _is_stream(head: ReadableBuffer) -> bool:
    """Does this record start a stream head or a chunk?"""
    with memoryview(head) as m:
        return m.nbytes >= _CHUNK.size and m[:4].tobytes() in (STREAM_MAGIC, CHUNK_MAGIC)


def _stream_take(rx: _core.ConsumerCore, ser: Serializer, timeout: float | None, nowait: bool,
                 copy: bool, mv: memoryview | None = None, data: bytes | None = None) -> Any:
    """Take records until an object is whole: the chunks of the stream in
    progress (``rx._stream``), a head that starts another, or any other
    record, which is returned decoded (a stream before it was cut short).
    ``mv`` is a record already held, ``data`` one already taken as bytes.
    Returns the object, or with ``copy=False`` an :class:`ObjectView`."""
    deadline = None if timeout is None or nowait else time.monotonic() + max(0.0, timeout)
    # ``data``: a head, or a chunk of no stream (consumed: skipped).
    if data is not None and data[:4] == STREAM_MAGIC:
        rx._stream = _Stream(memoryview(data))
    while True:
        st = rx._stream
        if st is not None and st.got == st.total:
            rx._stream = None
            obj = st.done(ser)
            return obj if copy else ObjectView(rx, obj, [], held=False)
        if mv is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            mv = _peek(rx, left, nowait)  # Timeout or WouldBlock: rx._stream is kept
        kind = bytes(mv[:4]) if mv.nbytes >= _CHUNK.size else b""
        if kind != CHUNK_MAGIC and kind != STREAM_MAGIC:
            rx._stream = None  # cut short, if one was in progress
            if not copy:
                return _view_of(rx, ser, mv)
            try:
                return _decode_copy(ser, mv)
            finally:
                rx._release()
        try:
            if kind == STREAM_MAGIC:
                rx._stream = _Stream(mv)
            elif st is None or not st.add(mv):
                rx._stream = None  # another stream's chunk: this one was cut short
        except BaseException:
            rx._stream = None
            raise
        finally:
            rx._release()
        mv = None
