"""How an item travels between stages: the bytes of one record.

Every record of a pipeline's channels is a *linked record* (csrc/layout.h,
LINKED RECORD): ``LINK_HDR`` bytes the ring owns (the item's id, the number
of attempts at it, the outputs already sent), then what this module writes:

    0  kind   u8   VALUE, TOMBSTONE (an item that produced nothing: ordered
                   runs only), END (a flat_map's outputs of one input are
                   all out: ordered runs only), ERROR, DEAD (control channel)
    1  depth  u8   the length of the item's path
    8  path   depth x u32, padded to 8 bytes: the item's place below its
                   source item (one index per flat_map it came out of)
    .. body   VALUE: the object, encoded as ``send_obj`` encodes it (a value
              record, pickle, or a frame with out-of-band buffers); END: the
              number of outputs, u32; ERROR/DEAD: a pickled :class:`Note`;
              CHUNK: a list of entries, COMPACT: (ids, values), encoded as a
              VALUE is

The body starts 8-byte aligned, so arrays decoded in place are aligned.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _core
from .. import _layout as L
from .._objects.frame import FramePlan, _decode_copy, _decode_view, encode
from .._objects.serializers import PICKLE
from .arrays import ArrayPool, PooledPlan

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from .._channel.endpoints import Consumer, Producer

VALUE, TOMBSTONE, END, ERROR, DEAD, CHUNK, COMPACT = range(7)

_LINK = struct.Struct("<QII")  # the ring's LINK_HDR: item, attempts, done
assert _LINK.size == L.LINK_HDR
_COUNT = struct.Struct("<I")
_encode_value = _core.encode_value
#: The prefix of a value at the top of its item (no path): the common case.
PLAIN = bytes(8)

Path = tuple[int, ...]


def prefix(kind: int, path: Path) -> bytes:
    """The kind, depth and path words of a record."""
    if not path and kind == VALUE:
        return PLAIN
    n = len(path)
    if n > 255:
        raise ValueError("items nest at most 255 flat_maps deep")
    body = struct.pack(f"<BB6x{n}I", kind, n, *path)
    return body + bytes(-len(body) % 8)


def parse(mv: memoryview) -> tuple[int, Path, int]:
    """(kind, path, offset of the body) of a record's payload after LINK_HDR."""
    kind = mv[0]
    n = mv[1]
    if not n:
        return kind, (), 8
    end = 8 + 4 * n
    return kind, struct.unpack_from(f"<{n}I", mv, 8), end + (-end % 8)


def decode(body: memoryview, zero_copy: bool) -> Any:
    """The object in a VALUE body: a copy, or (``zero_copy``) with its
    arrays as read-only views of the record, valid while it is held."""
    if zero_copy:
        return _decode_view(PICKLE, body)[0]
    return _decode_copy(PICKLE, body)


def count_of(body: memoryview) -> int:
    """The number of outputs an END record announces."""
    return int(_COUNT.unpack_from(body, 0)[0])


def end_body(n: int) -> bytes:
    """The body of an END record for ``n`` outputs."""
    return _COUNT.pack(n)


@dataclass
class Note:
    """An ERROR or DEAD record's body: which stage, why, and the item as its
    stage received it (``item``: the encoded VALUE body)."""

    stage: str
    reason: str | None  # None: the item killed its workers (the parent knows how)
    traceback: str
    item: bytes
    path: Path = ()
    outputs: int = 0  # outputs of the item sent before it failed (a flat_map's)
    fatal: bool = False  # the stage cannot run at all (its init raised)


def note_body(note: Note) -> bytes:
    """A note, pickled."""
    return pickle.dumps(note, 5)


def read_note(body: memoryview) -> Note:
    """The note in an ERROR or DEAD body."""
    note = pickle.loads(body)
    assert isinstance(note, Note)
    return note


def item_value(note: Note) -> Any:
    """The item a note is about, decoded (its repr if it cannot be)."""
    try:
        return _decode_copy(PICKLE, memoryview(note.item))
    except Exception as e:  # the note must still reach the user
        return f"<item not decodable: {e}>"


def send(tx: Producer, rx: Consumer, item: int, region: int, head: bytes, obj: Any,
         last: bool, timeout: float | None = None) -> None:
    """Send ``obj`` (after ``head``, a :func:`prefix`) as one output of the
    input ``rx`` holds: a linked commit. ``last``: the input is done."""
    data, buffers = encode(obj, PICKLE)
    if not buffers:
        tx._link_send(rx, head + data, item, region, last, timeout)
        return
    send_framed(tx, rx, item, region, head, FramePlan(data, buffers), last, timeout)


def send_raw(tx: Producer, rx: Consumer, item: int, region: int, data: ReadableBuffer,
             last: bool, timeout: float | None = None) -> None:
    """Send ready-made record bytes (a prefix and body) as one output."""
    tx._link_send(rx, data, item, region, last, timeout)


def send_framed(tx: Producer, rx: Consumer, item: int, region: int, head: bytes,
                plan: FramePlan, last: bool, timeout: float | None) -> None:
    """Write a framed object straight into the output's claim."""
    try:
        view = tx._link_claim(rx, len(head) + plan.size, item, region, timeout)
        try:
            view[:len(head)] = head
            plan.write(view[len(head):])
        except BaseException:
            tx._link_abort(rx)
            raise
        tx._link_commit(rx, None, last)
    finally:
        plan.release()


def source_record(item: int, obj: Any, kind: int = VALUE,
                  pool: ArrayPool | None = None) -> tuple[bytes, FramePlan | PooledPlan | None]:
    """The record of a source item (or, ``kind=CHUNK``, a list of entries):
    (bytes, None) for a small one, or (header, plan) for one with
    out-of-band buffers to write in place (into ``pool``, if given, for
    the large ones)."""
    head = _LINK.pack(item, 0, 0) + (PLAIN if kind == VALUE else prefix(kind, ()))
    value = _encode_value(obj)
    if value is not None:  # a plain value: one C call
        return head + value, None
    data, buffers = encode(obj, PICKLE)
    if not buffers:
        return head + bytes(data), None
    if pool is not None:
        return head, pool.plan(data, buffers, [], [])
    return head, FramePlan(data, buffers)


#: The most of an item a note carries (the control channel's records are
#: at most 256 KiB): a larger one is described instead.
NOTE_ITEM_MAX = 128 << 10


def encoded(obj: Any) -> bytes:
    """``obj`` as a VALUE body (for a note about it)."""
    data, buffers = encode(obj, PICKLE, values=True)
    if buffers:  # a note carries its item in band
        return note_item(pickle.dumps(obj, 5))
    return note_item(bytes(data))


def note_item(body: bytes) -> bytes:
    """``body`` (an encoded item), or, past NOTE_ITEM_MAX, the encoding of a
    string that says how large it was."""
    if len(body) <= NOTE_ITEM_MAX:
        return body
    return bytes(encode(f"<an item of {len(body)} encoded bytes, too large to keep in a note>",
                        PICKLE)[0])


def link_header(item: int) -> bytes:
    """LINK_HDR bytes of a record not sent by a linked commit (a control
    record of a worker's own)."""
    return _LINK.pack(item, 0, 0)


def send_planned(tx: Any, head: bytes, plan: Any) -> None:
    """Send one record: ``head`` (this module's prefix) then the body that
    ``plan`` (an ``_objects.frame.FramePlan``) writes in place."""
    view = tx._claim(len(head) + plan.size, 0.1)
    try:
        view[:len(head)] = head
        plan.write(view[len(head):])
    except BaseException:
        tx._abort()
        raise
    tx._commit()
    if isinstance(plan, PooledPlan):
        plan.commit()
    plan.release()
