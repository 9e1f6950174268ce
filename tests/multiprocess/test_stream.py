"""Objects larger than a record, streamed in chunks (see shmring._objects):
round trips through a ring much smaller than the object, the wire format,
streams cut short by a sender's Timeout or SIGKILL, a receive that times out
mid-stream and resumes, stray and corrupt stream records, and the patterns
that do not stream."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shmring

CAP = 1 << 16  # a 64 KiB ring: max_message 16 KiB - 16, chunks of about 16 KiB
WAIT = 30.0
HEAD = struct.Struct("<4sHHQQQ")  # _HEADER and _STREAM
CHUNK = struct.Struct("<4sIQ")


@pytest.fixture
def ch(make_channel: Callable[..., shmring.Channel]) -> shmring.Channel:
    return make_channel("spsc", CAP)


def _send_mixed(name: str) -> None:
    with shmring.Channel.open(name) as c, c.producer() as tx:
        for o in mixed_objects():
            tx.send_obj(o)


def big_objects() -> list[Any]:
    chunk = CAP // 4 - 16 - 16  # a chunk's bytes, as _write_stream computes them
    sizes = [chunk - 1, chunk, chunk + 1, 3 * chunk, 200_003]
    objs: list[Any] = [np.arange(n, dtype=np.uint8) for n in sizes]
    ro = np.arange(100_000, dtype=np.float64)
    ro.flags.writeable = False
    objs += [
        ro,
        {"a": np.ones((300, 301), np.int32), "empty": np.zeros(0), "n": 7,
         "b": pickle.PickleBuffer(b"q" * 70_000), "small": np.arange(3)},
        b"x" * 1_000_000,
        [np.full(40_000, i, np.int16) for i in range(5)],
    ]
    return objs


def mixed_objects() -> list[Any]:
    """big_objects(), each followed by a small one."""
    objs = big_objects()
    return [x for i, o in enumerate(objs) for x in (o, {"i": i})]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and bool(np.array_equal(a, b)))
    if isinstance(a, pickle.PickleBuffer):
        return bytes(a.raw()) == bytes(b)
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and bool(a == b)


# ---------------------------------------------------------- round trips --
def test_objects_larger_than_the_ring_from_another_process(ch: shmring.Channel) -> None:
    mixed = mixed_objects()
    rx = ch.consumer()
    p = mp.get_context("spawn").Process(target=_send_mixed, args=(ch.name,))
    p.start()
    try:
        for want in mixed:
            got = rx.recv_obj(timeout=WAIT)
            assert same(want, got)
            if isinstance(want, np.ndarray) and want.nbytes > ch.max_message:
                assert got.flags.writeable == want.flags.writeable
    finally:
        p.join(WAIT)
    assert p.exitcode == 0
    assert rx._stream is None


def test_every_receive_path(ch: shmring.Channel) -> None:
    """recv_obj, recv_obj_nowait, copy=False, a serializer given per call,
    and recv_obj_async all take streamed objects."""
    import asyncio

    tx, rx = ch.producer(), ch.consumer()
    a = np.arange(50_000, dtype=np.float64)
    got: list[Any] = []

    def receive() -> None:
        got.append(rx.recv_obj())
        with rx.recv_obj(copy=False) as obj:
            got.append(obj.copy())
        got.append(rx.recv_obj(serializer=shmring.PickleSerializer(oob_threshold=0)))
        while True:
            try:
                got.append(rx.recv_obj_nowait())
                break
            except shmring.WouldBlock:
                time.sleep(0.0005)
        got.append(asyncio.run(rx.recv_obj_async(timeout=WAIT)))

    t = threading.Thread(target=receive)
    t.start()
    for k in range(5):
        tx.send_obj(a + k)
    t.join(WAIT)
    assert not t.is_alive()
    assert len(got) == 5
    for k, g in enumerate(got):
        assert np.array_equal(g, a + k)


def test_wire_format(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()
    a = np.arange(10_000, dtype=np.uint16)  # 20,000 bytes: two chunks
    b = b"r" * 5000
    obj = {"a": a, "b": pickle.PickleBuffer(b)}
    t = threading.Thread(target=tx.send_obj, args=(obj,))
    t.start()
    recs = [rx.recv(timeout=WAIT) for _ in range(4)]  # the head, then three chunks
    t.join(WAIT)
    magic, version, nbuf, plen, sid, total = HEAD.unpack_from(recs[0], 0)
    assert (magic, version, nbuf, total) == (b"\x00SRS", 1, 2, a.nbytes + len(b))
    entries = [struct.unpack_from("<QQQ", recs[0], HEAD.size + 24 * i) for i in range(nbuf)]
    assert entries == [(0, a.nbytes, 0), (a.nbytes, len(b), 1)]  # bytes are read-only
    payload = recs[0][HEAD.size + 24 * nbuf:]
    assert len(payload) == plen
    data = b""
    for r in recs[1:]:
        cm, csid, off = CHUNK.unpack_from(r, 0)
        assert (cm, csid, off) == (b"\x00SRC", sid & 0xFFFFFFFF, len(data))
        assert len(r) <= ch.max_message
        data += r[CHUNK.size:]
    assert data == a.tobytes() + b
    # No chunk spans two buffers: a's second chunk ends at a's end.
    assert [len(r) - CHUNK.size for r in recs[1:]] == [16_352, a.nbytes - 16_352, len(b)]
    got = pickle.loads(payload, buffers=[data[:a.nbytes], data[a.nbytes:]])
    assert np.array_equal(got["a"], a)


# ---------------------------------------------------- streams cut short --
def test_sender_timeout_mid_stream_drops_that_object_only(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()
    tx.send_obj("before")
    with pytest.raises(shmring.Timeout):
        tx.send_obj(np.zeros(10 * CAP, np.uint8), timeout=0.05)  # nobody reads: the ring fills
    assert rx.recv_obj(timeout=WAIT) == "before"
    a = np.arange(30_000, dtype=np.int64)
    def send_after() -> None:
        tx.send_obj({"after": 1})
        tx.send_obj(a)

    t = threading.Thread(target=send_after)
    t.start()
    # The head and the chunks that fitted come first: dropped at the next record.
    assert rx.recv_obj(timeout=WAIT) == {"after": 1}
    assert np.array_equal(rx.recv_obj(timeout=WAIT), a)
    t.join(WAIT)


def _stream_then_hang(name: str, started: Any) -> None:
    c = shmring.Channel.open(name)
    tx = c.producer()
    started.set()
    while True:  # each blocks for room once the consumer stops reading: killed then
        tx.send_obj(np.zeros(100 * CAP, np.uint8))


def test_sender_killed_mid_stream(ch: shmring.Channel) -> None:
    rx = ch.consumer()
    ctx = mp.get_context("fork")
    started = ctx.Event()
    p = ctx.Process(target=_stream_then_hang, args=(ch.name, started))
    p.start()
    assert started.wait(WAIT)
    deadline = time.monotonic() + WAIT
    # Take chunks until part of an object is in (under load one may come
    # whole before that: the next one is on its way), then stop reading.
    while rx._stream is None or rx._stream.got == 0:
        assert time.monotonic() < deadline
        try:
            rx.recv_obj_nowait()
        except shmring.WouldBlock:
            time.sleep(0.001)
    time.sleep(0.1)  # the sender fills the ring and waits for room
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join(WAIT)
    with pytest.raises(shmring.Timeout):
        rx.recv_obj(timeout=0.2)  # what it wrote before it died, then nothing
    assert rx._stream is not None and 0 < rx._stream.got < rx._stream.total
    ch.recover_dead()
    tx = ch.producer()  # the role is free again
    tx.send_obj(("next", 2))
    assert rx.recv_obj(timeout=WAIT) == ("next", 2)
    assert rx._stream is None


def test_receive_that_times_out_mid_stream_resumes(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()
    big = np.random.default_rng(1).integers(0, 255, 2_000_000, dtype=np.uint8)
    t = threading.Thread(target=tx.send_obj, args=(big,))
    t.start()
    mid_stream = 0
    while True:
        try:
            got = rx.recv_obj_nowait()
            break
        except shmring.WouldBlock:
            mid_stream += rx._stream is not None
    t.join(WAIT)
    assert np.array_equal(got, big)
    assert mid_stream > 0  # it did stop part way and go on from there


# ------------------------------------------------ stray and corrupt ones --
def _head(nbuf: int, plen: int, sid: int, total: int, entries: list[tuple[int, int, int]],
          payload: bytes) -> bytes:
    return (HEAD.pack(b"\x00SRS", 1, nbuf, plen, sid, total)
            + b"".join(struct.pack("<QQQ", *e) for e in entries) + payload)


def test_stray_chunks_are_skipped(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()
    tx.send(CHUNK.pack(b"\x00SRC", 5, 0) + b"x" * 100)  # a chunk of no stream
    tx.send(CHUNK.pack(b"\x00SRC", 5, 100) + b"y" * 100)
    tx.send_obj({"ok": True})
    assert rx.recv_obj(timeout=WAIT) == {"ok": True}
    # A chunk of another stream in the middle of one: the first was cut short.
    payload = pickle.dumps(pickle.PickleBuffer(b"z" * 10), 5, buffer_callback=lambda b: None)
    tx.send(_head(1, len(payload), 9, 10, [(0, 10, 0)], payload))
    tx.send(CHUNK.pack(b"\x00SRC", 8, 0) + b"z" * 10)
    tx.send_obj("after")
    assert rx.recv_obj(timeout=WAIT) == "after"
    # The same records, whole: the object comes out.
    tx.send(_head(1, len(payload), 9, 10, [(0, 10, 0)], payload))
    tx.send(CHUNK.pack(b"\x00SRC", 9, 0) + b"z" * 10)
    assert bytes(rx.recv_obj(timeout=WAIT)) == b"z" * 10


@pytest.mark.parametrize("case", ["short", "version", "gap", "sum", "huge", "overrun"])
def test_corrupt_stream_records_raise_decode_error(ch: shmring.Channel, case: str) -> None:
    tx, rx = ch.producer(), ch.consumer()
    payload = pickle.dumps(pickle.PickleBuffer(b"z" * 10), 5, buffer_callback=lambda b: None)
    good = _head(1, len(payload), 3, 10, [(0, 10, 0)], payload)
    rec = {
        "short": b"\x00SRS" + b"\x01" * 20,
        "version": HEAD.pack(b"\x00SRS", 9, 0, 0, 3, 0),
        "gap": _head(1, len(payload), 3, 10, [(2, 8, 0)], payload),
        "sum": _head(1, len(payload), 3, 11, [(0, 10, 0)], payload),
        "huge": _head(1, len(payload), 3, 1 << 60, [(0, 1 << 60, 0)], payload),
        "overrun": good,
    }[case]
    tx.send(rec)
    if case == "overrun":
        tx.send(CHUNK.pack(b"\x00SRC", 3, 0) + b"z" * 11)  # one byte past its buffer
    with pytest.raises(shmring.DecodeError):
        rx.recv_obj(timeout=WAIT)
    assert rx._stream is None
    tx.send_obj("next")
    assert rx.recv_obj(timeout=WAIT) == "next"


# --------------------------------------------------- what does not stream --
@pytest.mark.parametrize("pattern,lossy", [("mpsc", False), ("mpmc", False),
                                           ("broadcast", True)])
def test_other_patterns_refuse_an_object_too_large(uname: str, pattern: str,
                                                   lossy: bool) -> None:
    with shmring.Channel.create(uname, capacity=CAP, pattern=pattern, lossy=lossy) as c:
        tx = c.producer()
        with pytest.raises(shmring.MessageTooLarge):
            tx.send_obj(np.zeros(CAP, np.uint8))
        c.unlink()


def test_nowait_send_does_not_stream(ch: shmring.Channel) -> None:
    tx, rx = ch.producer(), ch.consumer()
    with pytest.raises(shmring.MessageTooLarge):
        tx.send_obj_nowait(np.zeros(CAP, np.uint8))
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()


def test_broadcast_streams_to_every_consumer(uname: str) -> None:
    with shmring.Channel.create(uname, capacity=CAP, pattern="broadcast") as c:
        tx = c.producer()
        rxs = [c.consumer(), c.consumer()]
        a = np.arange(100_000, dtype=np.int32)
        out: list[Any] = []
        threads = [threading.Thread(target=lambda r=r: out.append(r.recv_obj(timeout=WAIT)))
                   for r in rxs]
        for t in threads:
            t.start()
        tx.send_obj(a)
        for t in threads:
            t.join(WAIT)
        assert len(out) == 2 and all(np.array_equal(o, a) for o in out)
        for r in rxs:
            r.close()
        c.unlink()



def _stream_forever(name: str) -> None:
    with shmring.Channel.open(name) as c:
        tx = c.producer()
        for i in range(1_000_000):
            tx.send_obj({"i": i, "a": np.full(40_000 + i % 5000, i % 251, np.uint8)})


@pytest.mark.parametrize("seed", range(4))
def test_sender_killed_at_a_random_point(ch: shmring.Channel, seed: int) -> None:
    """Objects streamed while the consumer reads, the sender SIGKILLed at a
    random moment, a new sender after recovery: every object received is
    whole and in order, the one cut short is dropped, and the next arrives."""
    import random

    rx = ch.consumer()
    got: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while True:
                obj = rx.recv_obj(timeout=WAIT)
                if obj == "end":
                    return
                i = obj["i"]
                assert obj["a"].shape == (40_000 + i % 5000,)
                assert int(obj["a"].min()) == int(obj["a"].max()) == i % 251
                got.append(i)
        except BaseException as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=consume)
    t.start()
    p = mp.get_context("fork").Process(target=_stream_forever, args=(ch.name,))
    p.start()
    time.sleep(random.Random(seed).uniform(0.05, 0.3))
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join(WAIT)
    ch.recover_dead()
    with ch.producer() as tx:
        tx.send_obj("end")
        t.join(WAIT)
    assert not t.is_alive() and not errors, errors
    assert got == list(range(len(got))) and len(got) > 0
    assert rx._stream is None


class _Raw(shmring.Serializer):
    """A serializer that owns the whole record (out_of_band False)."""

    def dumps(self, obj: Any, buffers: list[pickle.PickleBuffer]) -> bytes:
        return bytes(obj)

    def loads(self, data: Any, buffers: Any = ()) -> Any:
        return bytes(data)


@pytest.mark.parametrize("copy", [True, False])
def test_records_of_a_serializer_without_buffers_are_never_stream_records(
        ch: shmring.Channel, copy: bool) -> None:
    tx, rx = ch.producer(), ch.consumer()
    msgs = [b"\x00SRC" + b"payload-bytes-16", b"\x00SRS" + b"x" * 40, b"second"]
    for m in msgs:
        tx.send_obj(m, serializer=_Raw())
    for m in msgs:
        got = rx.recv_obj(timeout=WAIT, serializer=_Raw(), copy=copy)
        if not copy:
            with got as o:
                got = bytes(o)
        assert got == m


def test_a_stream_receive_waits_its_timeout_not_more(ch: shmring.Channel) -> None:
    """A head that comes late, and then no chunk: the receive gives up when
    its timeout is over, counted from the call, and holds no memory yet."""
    tx, rx = ch.producer(), ch.consumer()
    payload = pickle.dumps(pickle.PickleBuffer(b"z" * 10), 5, buffer_callback=lambda b: None)
    timer = threading.Timer(0.5, tx.send, args=(_head(1, len(payload), 3, 1 << 40,
                                                       [(0, 1 << 40, 0)], payload),))
    timer.start()
    start = time.monotonic()
    with pytest.raises(shmring.Timeout):
        rx.recv_obj(timeout=1.0)
    took = time.monotonic() - start
    timer.join()
    assert 0.9 < took < 1.4
    assert rx._stream is not None and rx._stream.bufs == [None]  # 1 TiB announced, none taken
    tx.send_obj("next")
    assert rx.recv_obj(timeout=WAIT) == "next"
