"""Python objects through a channel: ``tx.send_obj(obj)`` and ``rx.recv_obj()``.

Why it is built this way
------------------------
Pickle protocol 5 hands large buffers (numpy arrays, :class:`pickle.PickleBuffer`)
to a callback instead of copying them into the pickle stream. We take them
*out of band*: the pickle bytes, which describe the object and are small, and
then each buffer are written straight into ONE claimed record, so an 8 MB
array is copied exactly once on the way in (array -> ring) and once on the way
out (ring -> the received array), or not at all on the way out with
``copy=False``. No intermediate ``bytes`` object holds the array.

A *plain value* - built only from the exact types None, bool, int (int64),
float, str, bytes, tuple, list and dict - does not go through pickle at all
with the default serializer: the C value codec (``csrc/codec.c``) encodes it
straight into the claimed record and the receiver decodes it straight from
the ring, one C call each way (a *value record*, first byte ``0x01``). For a
small dict that is several times cheaper than ``pickle.dumps`` plus
``pickle.loads`` alone. Anything else - another type or a subclass, an int
beyond 64 bits, a str with lone surrogates, deep nesting, a list or dict
reached twice (pickle keeps that identity) - is pickled exactly as before.

Any other object without large buffers (numpy arrays, instances of your
classes) is one *bare* record: the serializer's bytes and nothing else, sent
with the C ``send`` in one call. A pickle starts with the PROTO opcode
``0x80``; a *framed* record starts with ``0x00``, so the first byte tells the
three kinds apart and small objects pay for no header at all.

Framed record (little-endian), for objects with out-of-band buffers::

    offset  size
    0       4       magic  b"\\x00SRF"
    4       2       version (1)
    6       2       nbuf: number of out-of-band buffers
    8       8       payload length (the pickle bytes)
    16      24*nbuf buffer table, one entry per buffer:
                      offset u64 (from the record start, a multiple of 64)
                      length u64
                      flags  u64 (bit 0: read-only, so the receiver rebuilds
                              it as bytes rather than bytearray)
    16+24*nbuf      payload
    ...             each buffer at its offset

Records start 16-byte aligned in the ring, so every buffer is at least
16-byte aligned in memory (what numpy's dtypes need). The receiver checks
every field against the record length before slicing anything: a malformed
record is a :class:`~shmring.DecodeError`, never a read out of bounds.

An object whose framed record would not fit the channel's ``max_message``
is *streamed* instead, where one producer writes and every consumer reads
all records in order (``spsc``, and ``broadcast`` unless lossy): a *stream
head* record - the frame's header, table and payload, magic ``b"\\x00SRS"``,
with the stream's id and total buffer bytes after the header and each
table entry's offset counted in the stream - then the buffers' bytes in
*chunk* records (``b"\\x00SRC"``, the stream id's low 32 bits, the offset)
of at most :data:`STREAM_CHUNK` bytes, none spanning two buffers. The
receiver copies each chunk into buffers it allocated from the head and
rebuilds the object once the last one came. So an object may be larger than
the ring, and a large array crosses in pieces that stay in cache: with 1 MiB
chunks through a 4 MiB ring an 8 MB array arrived at 73 % of a
cache-resident memcpy, 1.7 times the rate of one whole record through a
32 MiB ring, whose copies miss the last-level cache (``benchmarks/objects.py``;
docs/design.md).
A streamed object is always received as a copy (``copy=False`` gives an
:class:`ObjectView` of owned memory). A stream cut short - its sender got
``Timeout`` or died, so the object was never sent - is dropped when the next
head or another record arrives; a chunk of no stream in progress (a
broadcast consumer that joined mid-stream) is skipped. A receive that times
out mid-stream keeps what it has, and the next receive goes on from there.

Receiving copies by default. A small record comes out as ``bytes`` from one
C call (``recv``), which is also what pickle reads fastest. A framed record
received that way would cost a second copy of each writable buffer, so after
a large framed record a consumer reads records in place (``_peek``) and
copies each buffer once, until a small record comes again. ``copy=False``
returns an :class:`ObjectView` whose arrays are read-only views of the ring,
valid until the view is released.

What was rejected: a header on every record (costs a concatenation on send
and a slice on receive for every small object); pickling into a file object
the claim is made from (pickle needs the total size before the claim);
``persistent_id`` to catch ``bytes`` nested in containers (a Python call per
pickled object, which doubles the cost of small objects). So ``bytes`` and
``bytearray`` are out of band at the top level only; nested ones go in band
unless wrapped in :class:`pickle.PickleBuffer`.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import json
import os
import pickle
import struct
import time
from collections.abc import Callable, Sequence
from pickle import PickleBuffer
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

from .. import _core
from .._errors import DecodeError, Timeout, WouldBlock

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from .._channel.channel import Consumer, Producer

__all__ = [
    "FRAME_MAGIC",
    "JSONSerializer",
    "MsgspecSerializer",
    "ObjectView",
    "PickleSerializer",
    "Serializer",
]

FRAME_MAGIC = b"\x00SRF"
#: First byte of a value record (the C value codec, csrc/codec.c).
VALUE_TAG = 0x01
FRAME_VERSION = 1
_HEADER = struct.Struct("<4sHHQ")
_ENTRY = struct.Struct("<QQQ")
_FLAG_READONLY = 1
_BUF_ALIGN = 64
#: After a framed record larger than this, a consumer reads records in place.
LARGE_RECORD = 1 << 16
STREAM_MAGIC = b"\x00SRS"
CHUNK_MAGIC = b"\x00SRC"
_STREAM = struct.Struct("<QQ")  # after a stream head's _HEADER: stream id, total bytes
_CHUNK = struct.Struct("<4sIQ")  # magic, stream id (low 32 bits), offset in the stream
#: Records of a streamed object's chunks are at most this long (header
#: included): measured best on a 2-core x86-64 with a 1 MiB L2 and a 32 MiB
#: L3, in a 2-4 MiB ring (smaller chunks halved the rate).
STREAM_CHUNK = 1 << 20
_STREAMING = frozenset({"spsc", "broadcast"})
_MAX_STREAM = 1 << 48  # a head claiming more buffer bytes than this is corrupt
_stream_ids = itertools.count(int.from_bytes(os.urandom(4), "little"))


# ----------------------------------------------------------- serializers --
class Serializer(abc.ABC):
    """How objects become bytes: pickle by default, or JSON / msgpack for
    peers written in other languages.

    A serializer with ``out_of_band = True`` may hand large buffers to the
    ``buffers`` list given to :meth:`dumps`; they travel beside its bytes in
    one record and come back to :meth:`loads`. Its bare bytes must never
    start with ``0x00`` (that byte marks a framed record). A serializer with
    ``out_of_band = False`` owns the whole record: what :meth:`dumps` returns
    is exactly what a reader in another language sees.

    Example, a serializer of UTF-8 strings::

        class Text(shmring.Serializer):
            def dumps(self, obj, buffers):
                return obj.encode()
            def loads(self, data, buffers=()):
                return str(data, "utf-8")

        tx.send_obj("hi", serializer=Text())
    """

    #: True if :meth:`dumps` may return out-of-band buffers.
    out_of_band: bool = False

    @abc.abstractmethod
    def dumps(self, obj: Any, buffers: list[PickleBuffer]) -> ReadableBuffer:
        """Serialize ``obj``; append out-of-band buffers to ``buffers``
        (only if :attr:`out_of_band`)."""

    @abc.abstractmethod
    def loads(self, data: ReadableBuffer, buffers: Sequence[ReadableBuffer] = ()) -> Any:
        """Rebuild an object from the bytes (and buffers) :meth:`dumps` made."""


class PickleSerializer(Serializer):
    """Pickle protocol 5 with out-of-band buffers (the default).

    Buffers totalling at least ``oob_threshold`` bytes (numpy arrays,
    :class:`pickle.PickleBuffer`, and top-level ``bytes``, ``bytearray`` and
    C-contiguous ``memoryview``) travel out of band; smaller ones are cheaper
    in the pickle stream. ``oob_threshold=0`` sends every buffer out of band.

    Example::

        tx.send_obj({"frame": np.zeros((1080, 1920, 3), np.uint8), "seq": 7})
        msg = rx.recv_obj()        # msg["frame"] is a writable copy
    """

    out_of_band = True

    def __init__(self, oob_threshold: int = 8192) -> None:
        if oob_threshold < 0:
            raise ValueError("oob_threshold must be >= 0")
        self.oob_threshold = oob_threshold

    def dumps(self, obj: Any, buffers: list[PickleBuffer]) -> bytes:
        """Pickle ``obj``, its large buffers into ``buffers``."""
        if type(obj) in _WRAPPABLE:
            obj = _wrap_bytes_like(obj, self.oob_threshold)
        data = _dumps(obj, 5, buffer_callback=buffers.append)
        if buffers:
            data = self._inband_if_small(obj, data, buffers)
        return data

    def _inband_if_small(self, obj: Any, data: bytes, buffers: list[PickleBuffer]) -> bytes:
        threshold = self.oob_threshold
        if threshold and sum(memoryview(b).nbytes for b in buffers) < threshold:
            buffers.clear()
            return _dumps(obj, 5)
        return data

    def loads(self, data: ReadableBuffer, buffers: Sequence[ReadableBuffer] = ()) -> Any:
        """Unpickle, giving pickle the received out-of-band buffers."""
        return _loads(data, buffers=buffers)

    def __repr__(self) -> str:
        return f"PickleSerializer(oob_threshold={self.oob_threshold})"

    def __eq__(self, other: object) -> bool:
        return type(other) is PickleSerializer and other.oob_threshold == self.oob_threshold

    def __hash__(self) -> int:
        return hash((PickleSerializer, self.oob_threshold))


class JSONSerializer(Serializer):
    """Compact UTF-8 JSON, one document per record: readable from any language.

    ``default`` and ``object_hook`` are passed to :func:`json.dumps` and
    :func:`json.loads`. Example::

        tx.serializer = rx.serializer = shmring.JSONSerializer()
        tx.send_obj({"price": 101.5, "sym": "ABC"})
        assert rx.recv_obj() == {"price": 101.5, "sym": "ABC"}
    """

    def __init__(
        self,
        *,
        default: Callable[[Any], Any] | None = None,
        object_hook: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self._default = default
        self._object_hook = object_hook

    def dumps(self, obj: Any, buffers: list[PickleBuffer]) -> bytes:
        """``obj`` as compact JSON text, UTF-8."""
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                          default=self._default).encode()

    def loads(self, data: ReadableBuffer, buffers: Sequence[ReadableBuffer] = ()) -> Any:
        """Parse one JSON document."""
        return json.loads(str(data, "utf-8"), object_hook=self._object_hook)

    def __repr__(self) -> str:
        return "JSONSerializer()"


class MsgspecSerializer(Serializer):
    """msgspec's msgpack (default) or JSON codec: fast, typed, and readable
    from other languages. Needs the ``msgspec`` package.

    ``type`` is what :meth:`loads` decodes into (``msgspec.Struct`` classes
    are validated). Example::

        ser = shmring.MsgspecSerializer()
        tx.send_obj({"id": 1, "tags": ["a"]}, serializer=ser)
        assert rx.recv_obj(serializer=ser) == {"id": 1, "tags": ["a"]}
    """

    def __init__(self, protocol: Literal["msgpack", "json"] = "msgpack",
                 type: Any = Any) -> None:
        try:
            import msgspec
        except ImportError as e:
            raise ImportError("MsgspecSerializer needs msgspec: pip install msgspec") from e
        if protocol == "msgpack":
            self._enc: Any = msgspec.msgpack.Encoder()
            self._dec: Any = msgspec.msgpack.Decoder(type)
        elif protocol == "json":
            self._enc = msgspec.json.Encoder()
            self._dec = msgspec.json.Decoder(type)
        else:
            raise ValueError(f"protocol must be 'msgpack' or 'json', not {protocol!r}")
        self.protocol = protocol
        self._type = type

    def dumps(self, obj: Any, buffers: list[PickleBuffer]) -> bytes:
        """Encode ``obj``."""
        return self._enc.encode(obj)  # type: ignore[no-any-return]

    def loads(self, data: ReadableBuffer, buffers: Sequence[ReadableBuffer] = ()) -> Any:
        """Decode one message."""
        return self._dec.decode(data)

    def __repr__(self) -> str:
        return f"MsgspecSerializer({self.protocol!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (MsgspecSerializer, (self.protocol, self._type))


#: The serializer endpoints use unless told otherwise.
PICKLE = PickleSerializer()
_dumps = pickle.dumps
_loads = pickle.loads
_encode_value = _core.encode_value
_decode_value = _core.decode_value
_core.set_decode_error(DecodeError)


# ----------------------------------------- top-level bytes-like objects --
# pickle writes bytes and bytearray in band before any hook sees them, so a
# large one at the top level is wrapped: its reduction hands the buffer out
# of band and rebuilds the same type. bytes(b) of a bytes object is b itself,
# so a received bytes costs one copy in all. The pickles name these functions
# (shmring._objects._rebuild_*): they are part of the wire format.
def _rebuild_bytes(buf: Any) -> bytes:
    return buf if type(buf) is bytes else bytes(buf)


def _rebuild_bytearray(buf: Any) -> bytearray:
    return buf if type(buf) is bytearray else bytearray(buf)


def _rebuild_memoryview(buf: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    m = memoryview(buf)
    if fmt == "B" and len(shape) == 1:
        return m
    flat: Any = m.cast("B")  # fmt is checked at send time; typeshed wants a literal
    shaped: memoryview = flat.cast(fmt, shape)
    return shaped


class _OutOfBand:
    """A top-level bytes-like object whose reduction hands its buffer out of
    band (or, for a small memoryview, in band: pickle cannot pickle one)."""

    __slots__ = ("inband", "obj")

    def __init__(self, obj: bytes | bytearray | memoryview, inband: bool = False) -> None:
        self.obj = obj
        self.inband = inband

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        obj = self.obj
        if type(obj) is bytes:
            return (_rebuild_bytes, (PickleBuffer(obj),))
        if type(obj) is bytearray:
            return (_rebuild_bytearray, (PickleBuffer(obj),))
        assert isinstance(obj, memoryview)
        if self.inband:
            data = obj.tobytes() if obj.readonly else bytearray(obj)
            return (_rebuild_memoryview, (data, obj.format, obj.shape))
        return (_rebuild_memoryview, (PickleBuffer(obj), obj.format, obj.shape))


_WRAPPABLE = frozenset({bytes, bytearray, memoryview})


def _wrap_bytes_like(obj: Any, threshold: int) -> Any:
    if type(obj) is memoryview:
        fmt = obj.format.removeprefix("@")
        if len(fmt) != 1 or not obj.c_contiguous or obj.ndim == 0:
            return obj  # pickle refuses it, as it always did
        return _OutOfBand(obj, inband=obj.nbytes < threshold)
    return _OutOfBand(obj) if len(obj) >= threshold else obj


# ------------------------------------------------------------ encoding --
def _align(n: int) -> int:
    return (n + _BUF_ALIGN - 1) & -_BUF_ALIGN


def encode(obj: Any, serializer: Serializer,
           values: bool = True) -> tuple[ReadableBuffer, list[PickleBuffer]]:
    """Serialize ``obj``: its bytes and its out-of-band buffers (maybe none).
    ``values=False``: pickle even a plain value (one too large for a record)."""
    buffers: list[PickleBuffer] = []
    if values and serializer.__class__ is PickleSerializer:
        value = _encode_value(obj)
        if value is not None:
            return value, buffers  # a plain value: a value record
    if serializer.__class__ is PickleSerializer and type(obj) not in _WRAPPABLE:
        # The common case without a Python call per layer.
        pickled = _dumps(obj, 5, buffer_callback=buffers.append)
        if buffers:
            pickled = serializer._inband_if_small(obj, pickled, buffers)
        return pickled, buffers
    data = serializer.dumps(obj, buffers)
    if buffers and not serializer.out_of_band:
        raise TypeError(f"{serializer!r} returned out-of-band buffers but says out_of_band=False")
    return data, buffers


def framed_size(data: ReadableBuffer, buffers: Sequence[PickleBuffer]) -> int:
    """The length of the record :func:`write` makes of ``encode``'s output."""
    with memoryview(data) as m:
        end = m.nbytes
    if not buffers:
        return end
    end += _HEADER.size + _ENTRY.size * len(buffers)
    for b in buffers:
        with memoryview(b) as m:
            end = _align(end) + m.nbytes
    return end


def write(tx: Producer, data: ReadableBuffer, buffers: list[PickleBuffer],
          timeout: float | None, nowait: bool) -> None:
    """Send what :func:`encode` made: bare, or framed in one claimed record."""
    if not buffers:
        if nowait:
            tx.send_nowait(data)
        else:
            tx.send(data, timeout)
        return
    raws = [b.raw() for b in buffers]
    try:
        payload = memoryview(data)
        nbuf = len(raws)
        if nbuf > 0xFFFF:
            raise ValueError(f"too many out-of-band buffers ({nbuf}); at most 65535")
        p0 = _HEADER.size + _ENTRY.size * nbuf
        entries = []
        end = p0 + payload.nbytes
        for r in raws:
            off = _align(end)
            end = off + r.nbytes
            entries.append((off, r.nbytes, _FLAG_READONLY if r.readonly else 0))
        if end > tx._channel.max_message and not nowait and _streams(tx):
            _write_stream(tx, payload, raws, timeout)
            return
        try:
            view = tx._claim(end, 0.0 if nowait else timeout)
        except Timeout:
            if nowait:
                raise WouldBlock("channel full") from None
            raise
        try:
            _HEADER.pack_into(view, 0, FRAME_MAGIC, FRAME_VERSION, nbuf, payload.nbytes)
            for i, e in enumerate(entries):
                _ENTRY.pack_into(view, _HEADER.size + _ENTRY.size * i, *e)
            view[p0:p0 + payload.nbytes] = payload
            for (off, n, _), r in zip(entries, raws, strict=True):
                view[off:off + n] = r
        except BaseException:
            tx._abort()
            raise
        tx._commit()
    finally:
        for r in raws:
            r.release()


def _streams(tx: Producer) -> bool:
    """True if objects too large for one record are streamed on tx's channel."""
    ch = tx._channel
    return ch.pattern in _STREAMING and not ch.region.lossy


def _write_stream(tx: Producer, payload: memoryview, raws: list[memoryview],
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
    step = min(STREAM_CHUNK - _core.LAYOUT["RECORD_HEADER"], tx._channel.max_message) - _CHUNK.size
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


# ------------------------------------------------------------ decoding --
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


def _left(timeout: float | None, start: float | None) -> float | None:
    """What is left of ``timeout`` (seconds) since the monotonic ``start``."""
    if timeout is None or start is None:
        return timeout
    return max(0.0, timeout - (time.monotonic() - start))


def _is_stream(head: ReadableBuffer) -> bool:
    """Does this record start a stream head or a chunk?"""
    with memoryview(head) as m:
        return m.nbytes >= _CHUNK.size and m[:4].tobytes() in (STREAM_MAGIC, CHUNK_MAGIC)


def _stream_take(rx: Consumer, ser: Serializer, timeout: float | None, nowait: bool,
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


def _frame(mv: memoryview) -> tuple[memoryview, list[tuple[int, int, int]]]:
    """Parse and bounds-check a framed record: (payload, buffer table)."""
    n = mv.nbytes
    if n < _HEADER.size:
        raise DecodeError(f"framed record of {n} bytes is shorter than its header")
    magic, version, nbuf, plen = _HEADER.unpack_from(mv, 0)
    if magic != FRAME_MAGIC:
        raise DecodeError(f"record starts with {bytes(magic)!r}: not a shmring object frame")
    if version != FRAME_VERSION:
        raise DecodeError(f"object frame version {version}; this shmring reads "
                          f"{FRAME_VERSION}")
    p0 = _HEADER.size + _ENTRY.size * nbuf
    if p0 + plen > n:
        raise DecodeError(f"object frame of {n} bytes: its table and payload need {p0 + plen}")
    table = []
    low = p0 + plen
    for i in range(nbuf):
        off, length, flags = _ENTRY.unpack_from(mv, _HEADER.size + _ENTRY.size * i)
        if off < low or off + length > n:
            raise DecodeError(f"object frame buffer {i} ({length} bytes at {off}) lies "
                              f"outside the record's {low}..{n}")
        table.append((off, length, flags))
    return mv[p0:p0 + plen], table


def _decode_copy(ser: Serializer, mv: memoryview) -> Any:
    """Decode a record into an object that owns all its memory."""
    if mv.nbytes and mv[0] == VALUE_TAG and ser.__class__ is PickleSerializer:
        return _decode_value(mv)
    try:
        if ser.out_of_band and mv.nbytes and mv[0] == 0:
            payload, table = _frame(mv)
            bufs: list[bytes | bytearray] = [
                bytes(mv[o:o + n]) if f & _FLAG_READONLY else bytearray(mv[o:o + n])
                for o, n, f in table
            ]
            return ser.loads(payload, bufs)
        return ser.loads(mv, ())
    except DecodeError:
        raise
    except Exception as e:
        raise _decode_error(ser, e) from e


def _decode_error(ser: Serializer, e: Exception) -> DecodeError:
    return DecodeError(f"could not decode a received object with {ser!r}: {e}")


def _decode_view(ser: Serializer, mv: memoryview) -> tuple[Any, list[memoryview]]:
    """Decode a held record with its buffers as read-only views of it."""
    if mv.nbytes and mv[0] == VALUE_TAG and ser.__class__ is PickleSerializer:
        return _decode_value(mv), []
    try:
        if ser.out_of_band and mv.nbytes and mv[0] == 0:
            payload, table = _frame(mv)
            views = [mv[o:o + n] for o, n, _ in table]
            return ser.loads(payload, views), views
        return ser.loads(mv, ()), []
    except DecodeError:
        raise
    except Exception as e:
        raise _decode_error(ser, e) from e


class ObjectView:
    """An object received with ``copy=False``: its out-of-band buffers
    (numpy arrays, ...) are read-only views of the record, which stays held
    in the ring until :meth:`release` or the end of the ``with`` block::

        with rx.recv_obj(copy=False) as frame:
            total += frame["pixels"].sum()   # read in place, no copy

    Nothing received through it may be used after the block: the ring
    reuses those bytes. Keep a copy (``arr.copy()``) of anything you need
    longer, or receive with ``copy=True`` (the default). While the record is
    held, this consumer receives nothing else.
    """

    __slots__ = ("_consumer", "_done", "_views", "obj")

    def __init__(self, consumer: Consumer, obj: Any, views: list[memoryview],
                 held: bool = True) -> None:
        self._consumer = consumer
        self._views = views
        self._done = not held  # a streamed object holds no record
        #: The received object.
        self.obj = obj

    def __enter__(self) -> Any:
        return self.obj

    def release(self) -> None:
        """Give the record back to the ring (idempotent)."""
        if self._done:
            self.obj = None
            return
        self._done = True
        for v in self._views:
            # An array may still export it: then it must not be used any more.
            with contextlib.suppress(BufferError):
                v.release()
        self._views = []
        self.obj = None
        self._consumer._release()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _decode_owned(rx: Consumer, ser: Serializer, data: bytes) -> Any:
    """Decode a record received as ``bytes`` (the whole record, copied)."""
    if data[:1] == b"\x01" and ser.__class__ is PickleSerializer:
        return _decode_value(data)
    if not (ser.out_of_band and data[:1] == b"\x00"):
        try:
            return ser.loads(data, ())
        except Exception as e:
            raise _decode_error(ser, e) from e
    if len(data) > LARGE_RECORD:
        # Framed records are large: read the next ones in place, so each
        # buffer is copied once rather than twice (see _take_in_place).
        rx._obj_in_place = True
    mv = memoryview(data)
    payload, table = _frame(mv)
    # Read-only buffers can stay in the received bytes; writable ones (a
    # numpy array is writable) get memory of their own.
    bufs: list[memoryview | bytearray] = [
        mv[o:o + n] if f & _FLAG_READONLY else bytearray(mv[o:o + n]) for o, n, f in table
    ]
    try:
        return ser.loads(payload, bufs)
    except Exception as e:
        raise _decode_error(ser, e) from e


def _peek(rx: Consumer, timeout: float | None, nowait: bool) -> memoryview:
    """Hold the next record; WouldBlock instead of waiting when ``nowait``."""
    try:
        return rx._peek(0.0 if nowait else timeout)
    except Timeout:
        if nowait:
            raise WouldBlock("channel empty") from None
        raise


def _take_in_place(rx: Consumer, ser: Serializer, timeout: float | None, nowait: bool) -> Any:
    """Receive by reading the record in place and copying each buffer once."""
    start = None if timeout is None else time.monotonic()
    mv = _peek(rx, timeout, nowait)
    if ser.out_of_band and _is_stream(mv):
        return _stream_take(rx, ser, _left(timeout, start), nowait, True, mv=mv)
    try:
        small = mv.nbytes <= LARGE_RECORD
        if small:
            rx._obj_in_place = False  # back to recv() for the next one
        if not small or (mv.nbytes and (mv[0] == VALUE_TAG or (ser.out_of_band and mv[0] == 0))):
            return _decode_copy(ser, mv)
        data = bytes(mv)  # pickle reads bytes faster than a view
    finally:
        rx._release()
    try:
        return ser.loads(data, ())
    except Exception as e:
        raise _decode_error(ser, e) from e


def _take_copy(rx: Consumer, ser: Serializer, timeout: float | None, nowait: bool) -> Any:
    """Receive one object that owns its memory.

    A value record is decoded in place by one C call (``_recv_value``).
    Other small records come as ``bytes`` from one C call (``recv``), which
    is also what pickle reads fastest. A large framed record taken that way
    costs a second copy of each writable buffer, so after one the consumer
    switches to reading records in place until a small one comes again.
    """
    if ser.__class__ is PickleSerializer:
        start = None if timeout is None else time.monotonic()
        obj = rx._recv_value(None if nowait else timeout, nowait)
        if obj is not NotImplemented:
            return obj
        # Not a value record: it is held, and taken below at once.
        timeout = _left(timeout, start)
    return _take_other(rx, ser, timeout, nowait)


def _take_other(rx: Consumer, ser: Serializer, timeout: float | None, nowait: bool) -> Any:
    """:func:`_take_copy` for records other than value records."""
    if rx._stream is not None:
        return _stream_take(rx, ser, timeout, nowait, True)
    if rx._obj_in_place:
        return _take_in_place(rx, ser, timeout, nowait)
    start = None if timeout is None else time.monotonic()
    data = rx.recv_nowait() if nowait else rx.recv(timeout)
    if data[:1] == b"\x00" and ser.out_of_band and _is_stream(data):
        return _stream_take(rx, ser, _left(timeout, start), nowait, True, data=data)
    return decode_bytes(rx, ser, data)


def decode_bytes(rx: Consumer, ser: Serializer, data: bytes) -> Any:
    """Decode one received record that arrived as ``bytes``: a plain pickle
    goes straight to ``pickle.loads``, anything framed through the serializer."""
    if data[:1] == b"\x80" and ser.__class__ is PickleSerializer:
        try:
            return _loads(data)
        except Exception as e:
            raise _decode_error(ser, e) from e
    return _decode_owned(rx, ser, data)


def _take_view(rx: Consumer, ser: Serializer, timeout: float | None,
               nowait: bool) -> ObjectView:
    if rx._stream is not None:
        return _stream_take(rx, ser, timeout, nowait, False)  # type: ignore[no-any-return]
    start = None if timeout is None else time.monotonic()
    mv = _peek(rx, timeout, nowait)
    if ser.out_of_band and _is_stream(mv):
        return _stream_take(rx, ser, _left(timeout, start), nowait, False, mv=mv)  # type: ignore[no-any-return]
    return _view_of(rx, ser, mv)


def _view_of(rx: Consumer, ser: Serializer, mv: memoryview) -> ObjectView:
    """An ObjectView of the held record ``mv``."""
    try:
        obj, views = _decode_view(ser, mv)
    except BaseException:
        rx._release()
        raise
    return ObjectView(rx, obj, views)


# ------------------------------------------- methods of Producer/Consumer --
def _send_obj(self: Producer, obj: Any, timeout: float | None = None, *,
              serializer: Serializer | None = None) -> None:
    """Send one Python object, waiting up to ``timeout`` seconds for space.

    Large buffers (numpy arrays, big ``bytes``) are written straight into
    one claimed record, without an intermediate copy. Raises
    :class:`~shmring.Timeout`, :class:`~shmring.MessageTooLarge` (the
    encoded object exceeds the channel's ``max_message``; nothing was sent),
    or whatever the serializer raises for an object it cannot encode.

    Example::

        tx.send_obj({"id": 7, "image": np.zeros((480, 640), np.uint8)})
    """
    ser = self.serializer if serializer is None else serializer
    if ser.__class__ is PickleSerializer and self._send_value(obj, timeout):
        return  # a plain value, encoded into the ring by one C call
    _send_encoded(self, obj, timeout, ser)


def _send_encoded(self: Producer, obj: Any, timeout: float | None, ser: Serializer) -> None:
    """send_obj for what is not a plain value (or a serializer other than
    pickle's): serialize, then send bare or framed."""
    if ser.__class__ is PickleSerializer and type(obj) not in _WRAPPABLE:
        # encode()'s common case, inlined.
        buffers: list[PickleBuffer] = []
        pickled = _dumps(obj, 5, buffer_callback=buffers.append)
        if not buffers:
            self.send(pickled, timeout)
            return
        data: ReadableBuffer = ser._inband_if_small(obj, pickled, buffers)
    else:
        data, buffers = encode(obj, ser, values=False)  # the value path declined it
    if buffers:
        write(self, data, buffers, timeout, False)
    else:
        self.send(data, timeout)


def send_obj_nowait(self: Producer, obj: Any, *,
                    serializer: Serializer | None = None) -> None:
    """Send one object, or raise :class:`~shmring.WouldBlock` if the channel
    has no room for it now. Example::

        try:
            tx.send_obj_nowait(reading)
        except shmring.WouldBlock:
            dropped += 1
    """
    ser = self.serializer if serializer is None else serializer
    if ser.__class__ is PickleSerializer and self._send_value(obj, None, True):
        return
    data, buffers = encode(obj, ser)
    write(self, data, buffers, None, True)


@overload
def _recv_obj(self: Consumer, timeout: float | None = ..., *, copy: Literal[True] = ...,
              serializer: Serializer | None = ...) -> Any: ...
@overload
def _recv_obj(self: Consumer, timeout: float | None = ..., *, copy: Literal[False],
              serializer: Serializer | None = ...) -> ObjectView: ...
@overload
def _recv_obj(self: Consumer, timeout: float | None = ..., *, copy: bool,
              serializer: Serializer | None = ...) -> Any: ...
def _recv_obj(self: Consumer, timeout: float | None = None, *, copy: bool = True,
              serializer: Serializer | None = None) -> Any:
    """Receive one object, waiting up to ``timeout`` seconds for it.

    With ``copy=True`` (the default) the object owns its memory: a received
    numpy array is a writable copy (read-only if the sent one was).
    ``copy=False`` returns an :class:`ObjectView` to use as a context
    manager: its arrays are zero-copy, read-only views of the ring, valid
    inside the block. Raises :class:`~shmring.Timeout`,
    :class:`~shmring.EndOfStream`, or :class:`~shmring.DecodeError` (the
    record could not be decoded; it is consumed).

    Example::

        obj = rx.recv_obj(timeout=5)
        with rx.recv_obj(copy=False) as frame:
            mean = frame["image"].mean()
    """
    ser = self.serializer if serializer is None else serializer
    if copy and ser.__class__ is PickleSerializer:
        # A value record: decoded from the ring by one C call.
        start = None if timeout is None else time.monotonic()
        obj = self._recv_value(timeout)
        if obj is not NotImplemented:
            return obj
        # Otherwise the record is held and _recv_other takes it at once.
        timeout = _left(timeout, start)
    if copy:
        return _recv_other(self, timeout, ser)
    return _take_view(self, ser, timeout, False)


def _recv_other(self: Consumer, timeout: float | None, ser: Serializer) -> Any:
    """recv_obj (copy=True) for records other than value records."""
    if not self._obj_in_place and self._stream is None:
        # _take_other's common case, inlined: one C call and pickle.loads.
        start = None if timeout is None else time.monotonic()
        data = self.recv(timeout)
        if data[:1] == b"\x80" and ser.__class__ is PickleSerializer:
            try:
                return _loads(data)
            except Exception as e:
                raise _decode_error(ser, e) from e
        if data[:1] == b"\x00" and ser.out_of_band and _is_stream(data):
            return _stream_take(self, ser, _left(timeout, start), False, True, data=data)
        return _decode_owned(self, ser, data)
    return _take_other(self, ser, timeout, False)


# Producer.send_obj and Consumer.recv_obj are C methods (csrc/codec.c) that
# handle the common call - the default serializer, a plain value, copy=True -
# without a Python frame, and hand every other call to the functions above.
_core.set_object_paths(PickleSerializer, _send_obj, _send_encoded, _recv_obj, _recv_other)
if TYPE_CHECKING:
    send_obj = _send_obj
    recv_obj = _recv_obj
else:
    send_obj = _core.ProducerCore.send_obj
    recv_obj = _core.ConsumerCore.recv_obj


@overload
def recv_obj_nowait(self: Consumer, *, copy: Literal[True] = ...,
                    serializer: Serializer | None = ...) -> Any: ...
@overload
def recv_obj_nowait(self: Consumer, *, copy: Literal[False],
                    serializer: Serializer | None = ...) -> ObjectView: ...
@overload
def recv_obj_nowait(self: Consumer, *, copy: bool,
                    serializer: Serializer | None = ...) -> Any: ...
def recv_obj_nowait(self: Consumer, *, copy: bool = True,
                    serializer: Serializer | None = None) -> Any:
    """Receive one object, or raise :class:`~shmring.WouldBlock` if none is
    waiting. See :meth:`recv_obj`. Example::

        while True:
            try:
                handle(rx.recv_obj_nowait())
            except shmring.WouldBlock:
                break
    """
    ser = self.serializer if serializer is None else serializer
    if copy:
        return _take_copy(self, ser, None, True)
    return _take_view(self, ser, None, True)
