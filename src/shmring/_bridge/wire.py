"""The frames two bridges exchange.

Every ZeroMQ message is a multipart message whose first frame is one byte,
its kind; control messages carry one JSON object, stream messages the
stream's channel name and fixed-size little-endian fields (``struct``), and
DATA a batch of records in two frames (an index, then every payload back
to back), so a batch of 256 small records is three frames, not 512.

A record's key is ``(epoch, seq)``. On channels whose exporter reads in
ring order (spsc, mpsc, broadcast) the epoch names the exported ring (its
creation time) and seq is 1 + the record's position in it: a bridge started
again on the same ring reads the same records under the same keys, so the
importer can drop what it already has. On mpmc the epoch names one run of
the exporting stream and seq counts from 1. Within an epoch keys increase;
DATA carries the key of the record sent just before the batch (``prev``),
so the importer sees a lost batch as a gap and asks for the rest again.
"""

from __future__ import annotations

import json
import struct
from array import array
from typing import Any

from .._errors import InvalidArgument

#: Protocol version: a peer speaking another is refused with a clear error.
VERSION = 1

HELLO = b"H"  # connector -> listener: who I am, what I export and import (JSON)
WELCOME = b"W"  # listener -> connector: the same (JSON)
PING = b"P"  # either way, every PING_INTERVAL: the link is alive
WANT = b"w"  # importer -> exporter: name (JSON {name})
META = b"m"  # exporter -> importer: the channel's shape (JSON)
SUB = b"s"  # importer -> exporter: name, epoch, seq it has (resume point)
DATA = b"d"  # exporter -> importer: name, batch index, payloads
ACK = b"a"  # importer -> exporter: name, epoch, seq committed
EOS = b"e"  # exporter -> importer: name, epoch, seq of the last record
ERROR = b"x"  # either way: name, JSON {error, message}
BYE = b"b"  # either way: this bridge is stopping (a planned exit, not a fault)

_KEY = struct.Struct("<QQ")
_BATCH = struct.Struct("<QQIQ")  # epoch, prev, count, missed

#: Largest batch index accepted (records per DATA message).
MAX_BATCH = 65536


def dump(obj: dict[str, Any]) -> bytes:
    """A control message's JSON body."""
    return json.dumps(obj, separators=(",", ":")).encode()


def load(frame: bytes) -> dict[str, Any]:
    """Decode a control message's JSON body (a dict), or raise InvalidArgument."""
    try:
        obj = json.loads(frame)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidArgument(f"bad bridge message: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidArgument("bad bridge message: not an object")
    return obj


def key(epoch: int, seq: int) -> bytes:
    """The (epoch, seq) frame of SUB, ACK and EOS."""
    return _KEY.pack(epoch, seq)


def unkey(frame: bytes) -> tuple[int, int]:
    """Decode a key frame."""
    if len(frame) != _KEY.size:
        raise InvalidArgument(f"bad bridge key frame ({len(frame)} bytes)")
    epoch, seq = _KEY.unpack(frame)
    return int(epoch), int(seq)


def batch(epoch: int, prev: int, seqs: list[int], payloads: list[bytes],
          missed: int = 0) -> tuple[bytes, bytes]:
    """The two frames of a DATA batch: the index (epoch, prev, count,
    missed, then each record's seq and length), and the payloads joined."""
    n = len(seqs)
    index = bytearray(_BATCH.pack(epoch, prev, n, missed))
    index += array("Q", seqs).tobytes()
    index += array("I", map(len, payloads)).tobytes()
    return bytes(index), b"".join(payloads)


def packed_index(epoch: int, prev: int, n: int, missed: int, keys: bytes | bytearray,
                 lens: bytes | bytearray) -> bytes:
    """The index frame of a DATA batch whose ``n`` keys (u64 each) and
    lengths (u32 each) are already packed, as ``_ahead_packed`` returns
    them (the exporter's path: no Python object per record)."""
    return b"".join((_BATCH.pack(epoch, prev, n, missed), keys, lens))


class Batch:
    """A DATA batch as received: the header decoded, the keys and lengths
    as views of the index frame, the payloads still packed in the body
    frame (``ProducerCore._send_fed_packed`` commits them from there: no
    Python object per record). Checked here: the sizes, the lengths
    against the body, the first key after ``prev``; that the keys increase
    is checked by ``_send_fed_packed`` (``InvalidArgument``)."""

    __slots__ = ("body", "epoch", "lens", "missed", "prev", "seqs")

    def __init__(self, index: bytes, body: memoryview) -> None:
        if len(index) < _BATCH.size:
            raise InvalidArgument("bad DATA batch: short index")
        epoch, prev, n, missed = _BATCH.unpack_from(index)
        if n > MAX_BATCH or len(index) != _BATCH.size + 12 * n:
            raise InvalidArgument(f"bad DATA batch: index of {len(index)} bytes for {n} records")
        view = memoryview(index)
        self.seqs = view[_BATCH.size:_BATCH.size + 8 * n].cast("Q")
        self.lens = view[_BATCH.size + 8 * n:].cast("I")
        if sum(self.lens) != len(body):
            raise InvalidArgument("bad DATA batch: lengths do not add up to the body")
        if n and self.seqs[0] <= prev:
            raise InvalidArgument("bad DATA batch: its first key is not after the one before it")
        self.epoch, self.prev, self.missed = int(epoch), int(prev), int(missed)
        self.body = body

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def payloads(self) -> list[memoryview]:
        """Each record's payload (slices of the body; for tests and tools)."""
        out, at = [], 0
        for ln in self.lens:
            out.append(self.body[at:at + ln])
            at += ln
        return out
