"""Objects through channels: send_obj / recv_obj, the wire format, zero-copy
receives, serializers, and errors."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytest

import shmring
from shmring import _layout as L
from shmring._objects import frame as _objects

CAP = 1 << 22  # 4 MiB ring; max_message 2 MiB - 16


@pytest.fixture(params=["spsc", "mpmc"])
def pair(make_channel: Callable[..., shmring.Channel], request: pytest.FixtureRequest
         ) -> tuple[shmring.Producer, shmring.Consumer]:
    ch = make_channel(request.param, CAP, max_message=CAP // 2 - 16)
    return ch.producer(), ch.consumer()


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and bool(np.array_equal(a, b)))
    if isinstance(a, memoryview):
        return (isinstance(b, memoryview) and a.format == b.format and a.shape == b.shape
                and a.tolist() == b.tolist())
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and bool(a == b)


OBJECTS: list[Any] = [
    None, 0, -1, 2**100, 3.5, "text", "ünïcode", b"", b"abc", (1, "a"), [1, [2, [3]]],
    {"id": 7, "tags": ["x", "y"], "ok": True},
    b"b" * 100_000,                                       # top-level bytes: out of band
    bytearray(b"a" * 50_000),
    memoryview(b"m" * 40_000),
    memoryview(np.arange(12, dtype=np.int32).reshape(3, 4)),  # type: ignore[arg-type]
    memoryview(b"tiny"),                                   # small memoryview: in band
    np.arange(10),                                        # small array: in band
    np.arange(200_000, dtype=np.float64).reshape(400, 500),
    np.asfortranarray(np.arange(60_000.0).reshape(200, 300)),
    np.arange(100_000)[::3],                              # not contiguous: pickled in band
    np.zeros((), dtype=np.int64),
    np.zeros(5000, dtype=[("a", "<i4"), ("b", "<f8")]),
    {"frames": [np.ones(20_000, np.uint8), np.zeros(30_000, np.int16)], "n": 2},
    pickle.PickleBuffer(bytearray(b"p" * 20_000)),
]


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: type(o).__name__)
def test_roundtrip(pair: tuple[shmring.Producer, shmring.Consumer], obj: Any) -> None:
    tx, rx = pair
    tx.send_obj(obj)
    got = rx.recv_obj()
    if isinstance(obj, pickle.PickleBuffer):
        # A bare PickleBuffer comes back as the buffer itself: owned, writable.
        assert type(got) is bytearray and got == bytes(obj.raw())
    else:
        assert same(obj, got), (obj, got)


def test_received_arrays_are_writable_copies(
        pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    a = np.arange(100_000, dtype=np.int64)
    tx.send_obj(a)
    b = rx.recv_obj()
    assert b.flags.writeable and b.flags.c_contiguous
    b[0] = 99
    assert a[0] == 0
    a.flags.writeable = False
    tx.send_obj(a)
    c = rx.recv_obj()
    assert not c.flags.writeable  # read-only in, read-only out, as pickle does
    assert np.array_equal(a, c)


def test_many_mixed_sizes_in_order(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    # Small and large records alternate: a consumer switches between
    # receiving whole records and reading them in place; nothing changes.
    tx, rx = pair
    sent = []
    for i in range(60):
        obj: Any = np.full(70_000 + i, i, np.uint8) if i % 3 == 0 else {"i": i, "s": "x" * i}
        if i % 7 == 0:
            obj = b"%d" % i * 30_000
        sent.append(obj)
        tx.send_obj(obj)
        if i % 2:
            assert same(sent.pop(0), rx.recv_obj())
    while sent:
        assert same(sent.pop(0), rx.recv_obj())


def test_small_object_is_a_bare_pickle(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    obj = {"a": 1, "b": (2.0, "three"), "s": {4}}  # a set: not a plain value
    tx.send_obj(obj)
    assert rx.recv() == pickle.dumps(obj, 5)
    tx.send_obj({"a": 1, "b": (2.0, "three")})  # plain: a value record (test_codec.py)
    assert rx.recv()[:1] == b"\x01"


def test_wire_format_of_a_framed_record(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    a = np.arange(50_000, dtype=np.float64)
    b = b"z" * 30_000
    tx.send_obj({"a": a, "b": pickle.PickleBuffer(b)})
    rec = rx.recv()
    magic, version, nbuf, plen = struct.unpack_from("<4sHHQ", rec, 0)
    assert (magic, version, nbuf) == (b"\x00SRF", 1, 2)
    table = [struct.unpack_from("<QQQ", rec, 16 + 24 * i) for i in range(nbuf)]
    p0 = 16 + 24 * nbuf
    assert plen < 1000  # the pickle only describes the object
    (o1, n1, f1), (o2, n2, f2) = table
    assert o1 % 64 == 0 and o2 % 64 == 0 and o1 >= p0 + plen and o2 >= o1 + n1
    assert (n1, f1) == (a.nbytes, 0) and (n2, f2) == (len(b), 1)  # bytes are read-only
    assert rec[o1:o1 + n1] == a.tobytes() and rec[o2:o2 + n2] == b
    assert len(rec) == o2 + n2
    obj = pickle.loads(rec[p0:p0 + plen], buffers=[rec[o1:o1 + n1], rec[o2:o2 + n2]])
    assert np.array_equal(obj["a"], a)


def test_buffers_are_not_copied_into_an_intermediate_object(
        make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 25, pattern="spsc",
                      max_message=(1 << 24) - 16)
    tx, rx = ch.producer(), ch.consumer()
    a = np.ones(8 << 20, np.uint8)
    q = b"q" * (4 << 20)
    tracemalloc.start()
    try:
        # Arrays, PickleBuffers and top-level bytes go out of band; nested
        # bytes would be copied into the pickle (documented).
        tx.send_obj({"big": a, "also": pickle.PickleBuffer(q)})
        tx.send_obj(q)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10, f"sending allocated {peak} bytes"
    got = rx.recv_obj()
    assert np.array_equal(got["big"], a) and got["also"] == q
    assert rx.recv_obj() == q


def test_small_buffers_stay_in_band(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    tx.send_obj(np.arange(100))
    assert rx.recv()[:1] == b"\x80"  # a bare pickle
    tx.send_obj(np.arange(100), serializer=shmring.PickleSerializer(oob_threshold=0))
    assert rx.recv()[:1] == b"\x00"  # framed


def test_copy_false_is_zero_copy_and_read_only(
        make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=CAP, pattern="spsc")
    tx, rx = ch.producer(), ch.consumer()
    a = np.arange(100_000, dtype=np.float32)
    tx.send_obj({"a": a})
    tx.send_obj("next")
    import ctypes

    buf = ch.region.buf
    assert buf is not None
    anchor = ctypes.c_char.from_buffer(buf)
    start = ctypes.addressof(anchor)
    del anchor
    with rx.recv_obj(copy=False) as obj:
        view = obj["a"]
        assert np.array_equal(view, a)
        assert not view.flags.writeable
        assert start <= view.ctypes.data < start + len(buf)  # inside the region
        assert view.ctypes.data % 16 == 0
        with pytest.raises(RuntimeError):
            rx.recv_obj()  # the record is still held
        del view
    assert rx.recv_obj() == "next"


def test_copy_false_release_and_small_objects(
        pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    tx.send_obj((1, 2))
    ov = rx.recv_obj(copy=False)
    assert isinstance(ov, shmring.ObjectView) and ov.obj == (1, 2)
    ov.release()
    ov.release()  # idempotent
    tx.send_obj(memoryview(b"w" * 20_000))
    with rx.recv_obj(copy=False) as mv:
        assert mv.readonly and mv.tobytes() == b"w" * 20_000
    with pytest.raises(shmring.WouldBlock):
        rx.recv_obj_nowait(copy=False)


def test_nowait_and_timeouts(make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 12, pattern="spsc")
    tx, rx = ch.producer(), ch.consumer()
    with pytest.raises(shmring.WouldBlock):
        rx.recv_obj_nowait()
    with pytest.raises(shmring.Timeout):
        rx.recv_obj(timeout=0.01)
    while True:
        try:
            tx.send_obj_nowait(b"x" * 500)
        except shmring.WouldBlock:
            break
    with pytest.raises(shmring.Timeout):
        tx.send_obj(b"x" * 500, timeout=0.01)
    assert rx.recv_obj_nowait() == b"x" * 500


def test_too_large_sends_nothing(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    if tx._pattern == L.PATTERN_MPMC:  # spsc streams it instead (test_stream.py)
        with pytest.raises(shmring.MessageTooLarge):
            tx.send_obj(np.zeros(CAP, np.uint8))
    with pytest.raises(shmring.MessageTooLarge):
        tx.send_obj(["x" * CAP])  # no out-of-band buffer: never streamed
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()
    tx.send_obj(1)
    assert rx.recv_obj() == 1


def test_unpicklable_raises_in_the_caller(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    import threading

    tx, rx = pair
    with pytest.raises(TypeError):
        tx.send_obj(threading.Lock())
    tx.send_obj("after")
    assert rx.recv_obj() == "after"


@pytest.mark.parametrize("record", [
    b"",
    b"not a pickle",
    b"\x80\x05truncated",
    b"\x00SRF",                                                   # header cut short
    b"\x00XXX" + bytes(12),                                       # wrong magic
    struct.pack("<4sHHQ", b"\x00SRF", 9, 0, 0),                   # unknown version
    struct.pack("<4sHHQ", b"\x00SRF", 1, 1000, 0),                # table past the end
    struct.pack("<4sHHQ", b"\x00SRF", 1, 0, 1 << 62),             # payload past the end
    struct.pack("<4sHHQQQQ", b"\x00SRF", 1, 1, 0, 64, 1 << 40, 0),  # buffer past the end
    struct.pack("<4sHHQQQQ", b"\x00SRF", 1, 1, 0, 8, 4, 0) + bytes(8),  # buffer in the table
])
def test_malformed_records_raise_decode_error(
        pair: tuple[shmring.Producer, shmring.Consumer], record: bytes) -> None:
    tx, rx = pair
    for copy in (True, False):
        tx.send(record)
        tx.send_obj("next")
        with pytest.raises(shmring.DecodeError):
            rx.recv_obj(copy=copy)
        assert rx.recv_obj() == "next"  # the bad record was consumed, nothing else


def test_decode_error_keeps_the_cause(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    tx.send(pickle.dumps(_Unloadable(), 5))
    with pytest.raises(shmring.DecodeError) as info:
        rx.recv_obj()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value, ValueError)


class _Unloadable:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_fail, ())


def _fail() -> None:
    raise RuntimeError("cannot rebuild")


def test_json_serializer_writes_plain_json(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    tx.serializer = rx.serializer = shmring.JSONSerializer()
    tx.send_obj({"price": 101.5, "sym": "ÄBC", "n": [1, 2]})
    raw = rx.recv()
    assert json.loads(raw) == {"price": 101.5, "sym": "ÄBC", "n": [1, 2]}
    assert raw == '{"price":101.5,"sym":"ÄBC","n":[1,2]}'.encode()
    tx.send_obj([1, None])
    assert rx.recv_obj() == [1, None]
    tx.send(b"{oops")
    with pytest.raises(shmring.DecodeError):
        rx.recv_obj()


def test_msgspec_serializer(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    msgspec = pytest.importorskip("msgspec")
    tx, rx = pair
    protos: tuple[Literal["msgpack", "json"], ...] = ("msgpack", "json")
    for proto in protos:
        ser = shmring.MsgspecSerializer(proto)
        tx.send_obj({"id": 1, "tags": ["a"]}, serializer=ser)
        tx.send_obj(0, serializer=ser)  # msgpack's 0 is the byte 0x00: still bare
        assert rx.recv_obj(serializer=ser) == {"id": 1, "tags": ["a"]}
        assert rx.recv_obj(serializer=ser) == 0
    assert pickle.loads(pickle.dumps(shmring.MsgspecSerializer("json"))).protocol == "json"

    class Point(msgspec.Struct):  # type: ignore[misc,name-defined]
        x: int
        y: int

    typed = shmring.MsgspecSerializer(type=Point)
    tx.send_obj(Point(1, 2), serializer=typed)
    assert rx.recv_obj(serializer=typed) == Point(1, 2)
    tx.send_obj({"x": "no"}, serializer=typed)
    with pytest.raises(shmring.DecodeError):
        rx.recv_obj(serializer=typed)


class Text(shmring.Serializer):
    def dumps(self, obj: Any, buffers: list[pickle.PickleBuffer]) -> bytes:
        return str(obj).encode()

    def loads(self, data: Any, buffers: Any = ()) -> Any:
        return str(data, "utf-8")


class Liar(Text):
    def dumps(self, obj: Any, buffers: list[pickle.PickleBuffer]) -> bytes:
        buffers.append(pickle.PickleBuffer(b"x"))
        return b"x"


def test_custom_serializer(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    tx.send_obj(42, serializer=Text())
    assert rx.recv_obj(serializer=Text()) == "42"
    with pytest.raises(TypeError):
        tx.send_obj(1, serializer=Liar())  # buffers from a serializer without out_of_band


def test_end_of_stream(uname: str) -> None:
    with shmring.Channel.create(uname, capacity=1 << 14, pattern="mpsc") as ch:
        tx, rx = ch.producer(), ch.consumer()
        tx.send_obj([1])
        ch.close_send()
        assert rx.recv_obj() == [1]
        with pytest.raises(shmring.EndOfStream):
            rx.recv_obj()
        with pytest.raises(shmring.Closed):
            tx.send_obj(2)
        ch.unlink()


def test_broadcast_every_consumer_gets_the_object(uname: str) -> None:
    with shmring.Channel.create(uname, capacity=CAP, pattern="broadcast",
                                max_message=CAP // 2 - 16) as ch:
        tx, a, b = ch.producer(), ch.consumer(), ch.consumer()
        arr = np.arange(100_000)
        tx.send_obj({"arr": arr})
        for rx in (a, b):
            assert np.array_equal(rx.recv_obj()["arr"], arr)
        ch.unlink()


def _child_sends(name: str) -> None:
    ch = shmring.Channel.open(name)
    tx = ch.producer()
    tx.send_obj({"arr": np.arange(300_000), "pid": mp.current_process().pid})
    tx.send_obj(("done", None))
    ch.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_objects_from_another_process(uname: str, method: str) -> None:
    with shmring.Channel.create(uname, capacity=1 << 23, pattern="mpsc",
                                max_message=(1 << 22) - 16) as ch:
        rx = ch.consumer()
        ctx: Any = mp.get_context(method)
        p = ctx.Process(target=_child_sends, args=(uname,))
        p.start()
        try:
            first = rx.recv_obj(timeout=30)
            assert np.array_equal(first["arr"], np.arange(300_000))
            assert first["pid"] == p.pid
            assert rx.recv_obj(timeout=30) == ("done", None)
        finally:
            p.join(30)
        assert p.exitcode == 0


def test_framed_size_matches_the_record(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    for obj in ({"a": np.ones(30_000)}, [b"x" * 10_000, np.zeros(9000, np.int8)], "small"):
        data, bufs = _objects.encode(obj, shmring.PickleSerializer(oob_threshold=0))
        size = _objects.framed_size(data, bufs)
        tx.send_obj(obj, serializer=shmring.PickleSerializer(oob_threshold=0))
        assert len(rx.recv()) == size
