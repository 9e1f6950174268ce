"""The record kinds of an object, and the framed record's format.

The first byte of a record tells its kind, so small objects pay for no header:

- a *value record* (first byte ``0x01``): a plain value - built only from
  the exact types None, bool, int (int64), float, str, bytes, tuple, list
  and dict - encoded by the C value codec (``csrc/value/``) straight into
  the claimed record and decoded straight from the ring, one C call each way.
  For a small dict that is several times cheaper than ``pickle.dumps`` plus
  ``pickle.loads`` alone. Anything else - another type or a subclass, an int
  beyond 64 bits, a str with lone surrogates, deep nesting, a list or dict
  reached twice (pickle keeps that identity) - is pickled;
- a *bare* record: the serializer's bytes and nothing else, sent with the C
  ``send`` in one call (a pickle starts with the PROTO opcode ``0x80``);
- a *framed* record (first byte ``0x00``), for objects with out-of-band
  buffers; and the two records of a streamed object (``stream.py``), which
  share its header.

Framed record (little-endian)::

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

What was rejected: a header on every record (costs a concatenation on send
and a slice on receive for every small object); pickling into a file object
the claim is made from (pickle needs the total size before the claim).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pickle import PickleBuffer
from typing import TYPE_CHECKING, Any

from .. import _core
from .._errors import DecodeError
from .serializers import _WRAPPABLE, PickleSerializer, Serializer, _dumps

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

FRAME_MAGIC = b"\x00SRF"
#: First byte of a value record (the C value codec, csrc/value/).
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

_encode_value = _core.encode_value
_decode_value = _core.decode_value


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


class FramePlan:
    """Where each part of a framed record goes: ``encode``'s bytes and
    out-of-band buffers laid out (header, buffer table, payload, each buffer
    ``_BUF_ALIGN``-aligned), ``size`` bytes in all. :meth:`write` puts them
    into a claimed view; :meth:`release` lets the buffers go."""

    def __init__(self, data: ReadableBuffer, buffers: Sequence[PickleBuffer]) -> None:
        self.raws = [b.raw() for b in buffers]
        self.payload = memoryview(data)
        nbuf = len(self.raws)
        if nbuf > 0xFFFF:
            self.release()
            raise ValueError(f"too many out-of-band buffers ({nbuf}); at most 65535")
        self.p0 = _HEADER.size + _ENTRY.size * nbuf if nbuf else 0
        self.entries: list[tuple[int, int, int]] = []
        end = self.p0 + self.payload.nbytes
        for r in self.raws:
            off = _align(end)
            end = off + r.nbytes
            self.entries.append((off, r.nbytes, _FLAG_READONLY if r.readonly else 0))
        self.size = end

    def write(self, view: memoryview) -> None:
        """Write the record into ``view`` (at least ``size`` bytes): framed
        if there are out-of-band buffers, else the bare bytes."""
        n = self.payload.nbytes
        if not self.raws:
            view[:n] = self.payload
            return
        _HEADER.pack_into(view, 0, FRAME_MAGIC, FRAME_VERSION, len(self.raws), n)
        for i, e in enumerate(self.entries):
            _ENTRY.pack_into(view, _HEADER.size + _ENTRY.size * i, *e)
        view[self.p0:self.p0 + n] = self.payload
        for (off, size, _), r in zip(self.entries, self.raws, strict=True):
            view[off:off + size] = r

    def release(self) -> None:
        """Release the raw views of the out-of-band buffers."""
        for r in self.raws:
            r.release()


# ------------------------------------------------------------ decoding --
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

