"""The value codec (csrc/value/, its endpoint glue in csrc/py/objects.c):
plain objects through send_obj/recv_obj and Queue without pickle. Round
trips give what pickle gives (values and exact types), everything else falls
back to pickle unchanged, and corrupt records from another process raise
DecodeError, never crash."""

from __future__ import annotations

import collections
import contextlib
import math
import multiprocessing as mp
import pickle
import random
import struct
import threading
import time
from collections.abc import Callable
from queue import Empty, Full
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring
from shmring import _core
from shmring._layout import TRAITS

TAG = b"\x01"
CAP = 1 << 20


def same(a: Any, b: Any) -> bool:
    """Equal values of exactly the same types; floats bit for bit (nan, -0.0);
    dicts in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(k1, k2) and same(v1, v2)
            for (k1, v1), (k2, v2) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


def via_pickle(v: Any) -> Any:
    return pickle.loads(pickle.dumps(v, 5))


# Plain values: what the codec takes. Dict keys are hashable plain values.
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(st.characters(blacklist_categories=["Cs"]))  # no lone surrogates
           | st.binary())
keys = st.recursive(scalars, lambda k: st.tuples(k, k), max_leaves=4)
plain = st.recursive(
    scalars,
    lambda kids: (st.lists(kids, max_size=20) | st.lists(kids, max_size=20).map(tuple)
                  | st.dictionaries(keys, kids, max_size=20)),
    max_leaves=60)

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(plain)
def test_round_trip_equals_pickle(value: Any) -> None:
    record = _core.encode_value(value)
    assert record is not None and record[:1] == TAG
    got = _core.decode_value(record)
    assert same(got, via_pickle(value)), (value, got)


EDGES: list[Any] = [
    None, True, False, 0, 1, 127, 128, -1, -128, -129, 2**15, -(2**15) - 1, 2**31, -(2**31) - 1,
    2**63 - 1, -(2**63), 0.0, -0.0, math.inf, -math.inf, math.nan,
    struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0],  # a nan with a payload
    "", "a", "x" * 31, "x" * 32, "ünïcödé", "日本語", "🐍" * 50, "\x00", b"", b"\x00\xff" * 3000,
    (), [], {}, ((),), [[]], {(): {}}, (1,), [None] * 16, tuple(range(16)),
    {i: str(i) for i in range(16)}, {"b": 1, "a": 2, 3: "c"},  # order kept
    {(1, "a"): [1.5, b"x"], None: True, 2.5: False, b"k": "v", -0.0: 0},
    [[[[[[[[[[1]]]]]]]]]], "x" * 100_000, [b"y" * 5000] * 3,
    list(range(10_000)), {str(i): i for i in range(2000)},
]


@pytest.mark.parametrize("value", EDGES, ids=lambda v: repr(v)[:30])
def test_edge_values_round_trip(value: Any) -> None:
    record = _core.encode_value(value)
    assert record is not None
    assert same(_core.decode_value(record), via_pickle(value))


@pytest.mark.parametrize("n", [4090, 4094, 4095, 4096, 4097, 8192, 8193, 70_000, 1 << 20])
def test_values_around_and_past_the_stack_buffer(n: int) -> None:
    """One encoding pass: past its 4 KiB stack buffer the record goes on in a
    heap buffer that grows (csrc/value/encode.c); every size comes back the
    same, and a value refused after growing is refused whole."""
    for value in (b"z" * (n - 6), "s" * (n - 6), list(range(n // 5)),
                  [b"q" * 100] * (n // 102), {i: b"v" * 10 for i in range(n // 16)}):
        record = _core.encode_value(value)
        assert record is not None
        assert same(_core.decode_value(record), value)
    assert _core.encode_value([*range(n // 5), collections.OrderedDict()]) is None
    shared: list[Any] = []
    assert _core.encode_value([b"w" * n, shared, shared]) is None


class Int(int):
    pass


Point = collections.namedtuple("Point", "x y")


class Dict(dict):  # type: ignore[type-arg]
    pass


shared = [1]
loop: list[Any] = [1]
loop.append(loop)
deep: Any = 0
for _ in range(40):
    deep = [deep]

FALLBACKS: list[Any] = [
    2**63, -(2**63) - 1, 2**200,                  # beyond int64
    "\udc80", ["ok", "lone \ud800 surrogate"],    # not UTF-8
    Int(3), Dict(a=1), [Int(3)], {"k": Dict()},    # subclasses
    collections.OrderedDict(a=1), Point(1, 2),
    {1, 2}, frozenset(), bytearray(b"x"), 1j, object,
    [shared, shared], {"a": shared, "b": (shared,)},  # one list reached twice
    loop, deep,
]


@pytest.mark.parametrize("value", FALLBACKS, ids=lambda v: type(v).__name__)
def test_what_the_codec_refuses_goes_to_pickle(uname: str, value: Any) -> None:
    assert _core.encode_value(value) is None
    with shmring.Channel.create(uname, capacity=CAP, pattern="spsc") as ch:
        tx, rx = ch.producer(), ch.consumer()
        assert tx._send_value(value) is False  # nothing sent
        tx.send_obj(value)
        record = rx.recv()
        assert record[:1] in (b"\x80", b"\x00")
        tx.send_obj(value)
        got = rx.recv_obj()
        assert type(got) is type(value)
        assert pickle.dumps(got, 5) == pickle.dumps(via_pickle(value), 5)
        ch.unlink()


def test_shared_list_keeps_its_identity(uname: str) -> None:
    with shmring.Channel.create(uname, capacity=CAP, pattern="spsc") as ch:
        tx, rx = ch.producer(), ch.consumer()
        inner: list[int] = []
        tx.send_obj((inner, inner))
        a, b = rx.recv_obj()
        assert a is b
        tx.send_obj(loop)
        got = rx.recv_obj()
        assert got[1] is got
        ch.unlink()


def test_many_containers_use_the_seen_set() -> None:
    # More lists and dicts than the inline array holds, all distinct: encoded.
    value = [[i] for i in range(500)] + [{"k": i} for i in range(500)]
    record = _core.encode_value(value)
    assert record is not None and _core.decode_value(record) == value
    value.append(value[250])  # and one repeat among them: refused
    assert _core.encode_value(value) is None


# ------------------------------------------------------------ corruption --
def _decodes_or_raises(record: bytes) -> None:
    with contextlib.suppress(shmring.DecodeError):
        _core.decode_value(record)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(body: bytes) -> None:
    _decodes_or_raises(TAG + body)


@settings(max_examples=200, deadline=None)
@given(plain, st.data())
def test_truncated_and_mutated_records(value: Any, data: st.DataObject) -> None:
    record = _core.encode_value(value)
    assert record is not None
    # Every proper prefix is cut short somewhere (up to 200 of them).
    cuts = range(1, len(record))
    for cut in cuts if len(cuts) <= 200 else random.Random(len(cuts)).sample(cuts, 200):
        with pytest.raises(shmring.DecodeError):
            _core.decode_value(record[:cut])
    # Mutations decode to something or raise DecodeError.
    buf = bytearray(record)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(1, len(buf) - 1)) if len(buf) > 1 else 0
        buf[i] = data.draw(st.integers(0, 255))
    _decodes_or_raises(bytes(buf))
    _decodes_or_raises(bytes(buf) + data.draw(st.binary(max_size=8)))


@pytest.mark.parametrize("record, cause", [
    (TAG, None),                                    # no value
    (TAG + b"\xd0\xd0", None),                      # bytes after the value
    (TAG + b"\xdd", None),                          # unknown type byte
    (TAG + b"\xff", None),
    (TAG + b"\xd6\x01\x02", None),                  # int64 cut short
    (TAG + b"\xd8\xff\xff\xff\xff", None),          # str longer than the record
    (TAG + b"\xda\xff\xff\xff\xff" + b"\x00" * 8, None),  # 4 G items: no allocation
    (TAG + b"\xdc\xff\xff\xff\x7f" + b"\x00" * 8, None),
    (TAG + b"\xa1" * 40 + b"\x00", None),           # nested deeper than the limit
    (TAG + b"\x82\xff\xfe", UnicodeDecodeError),    # not UTF-8
    (TAG + b"\xc1\xb0\x00", TypeError),             # a list as a dict key
    (b"\x80\x05N.", None),                          # not a value record
    (b"", None),
])
def test_malformed_value_records(record: bytes, cause: type[BaseException] | None) -> None:
    with pytest.raises(shmring.DecodeError) as info:
        _core.decode_value(record)
    assert isinstance(info.value, ValueError)
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


@pytest.fixture(params=list(TRAITS))
def pair(make_channel: Callable[..., shmring.Channel], request: pytest.FixtureRequest
         ) -> tuple[shmring.Producer, shmring.Consumer]:
    ch = make_channel(request.param, CAP)
    return ch.producer(), ch.consumer()


def test_corrupt_record_in_the_ring_is_consumed(
        pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    rng = random.Random(7)
    for i in range(200):
        tx.send(TAG + rng.randbytes(rng.randrange(0, 40)))
        tx.send_obj(("next", i))
        try:
            got = rx.recv_obj(copy=bool(i % 2))  # some random bodies are valid values
            if isinstance(got, shmring.ObjectView):
                got.release()
        except shmring.DecodeError:
            pass
        assert rx.recv_obj() == ("next", i)  # nothing else was consumed


@settings(FUZZ, max_examples=50)
@given(value=plain)
def test_through_every_pattern(pair: tuple[shmring.Producer, shmring.Consumer],
                               value: Any) -> None:
    tx, rx = pair
    tx.send_obj(value)
    tx.send_obj_nowait(value)
    expect = via_pickle(value)
    assert same(rx.recv_obj(timeout=5), expect)
    with rx.recv_obj(copy=False) as got:
        assert same(got, expect)


# ------------------------------------------------- same behaviour as pickle --
def test_records_of_all_three_kinds_interleave(
        pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    import numpy as np

    tx, rx = pair
    sent: list[Any] = []
    for i in range(40):
        obj: Any = ({"i": i}, np.full(100_000, i, np.uint8), {i, -i}, None)[i % 4]
        tx.send_obj(obj)
        sent.append(obj)
    for i, obj in enumerate(sent):
        got = rx.recv_obj() if i % 3 else rx.recv_obj_nowait()
        if isinstance(obj, np.ndarray):
            assert np.array_equal(got, obj) and got.flags.writeable
        else:
            assert got == obj


def test_timeouts_nowait_closed_and_end_of_stream(uname: str) -> None:
    with shmring.Channel.create(uname, capacity=1 << 12, pattern="mpsc") as ch:
        tx, rx = ch.producer(), ch.consumer()
        with pytest.raises(shmring.WouldBlock):
            rx.recv_obj_nowait()
        start = time.monotonic()
        with pytest.raises(shmring.Timeout):
            rx.recv_obj(timeout=0.05)
        assert time.monotonic() - start >= 0.05
        value = {"pad": "x" * 200}
        n = 0
        while True:
            try:
                tx.send_obj_nowait(value)
                n += 1
            except shmring.WouldBlock:
                break
        with pytest.raises(shmring.Timeout):
            tx.send_obj(value, timeout=0.05)
        with pytest.raises(ValueError):
            tx.send_obj(value, timeout=-1)
        with pytest.raises(shmring.MessageTooLarge):
            tx.send_obj(["x" * (1 << 12)])
        ch.close_send()
        with pytest.raises(shmring.Closed):
            tx.send_obj(value)
        for _ in range(n):
            assert rx.recv_obj() == value
        with pytest.raises(shmring.EndOfStream):
            rx.recv_obj()
        with pytest.raises(shmring.EndOfStream):
            rx.recv_obj_nowait()
        rx.close()
        with pytest.raises(shmring.Closed):
            rx.recv_obj()
        ch.unlink()


def test_a_held_view_blocks_recv_obj(pair: tuple[shmring.Producer, shmring.Consumer]) -> None:
    tx, rx = pair
    tx.send_obj([1])
    tx.send_obj([2])
    with rx.recv_obj(copy=False) as one:
        assert one == [1]
        with pytest.raises(RuntimeError):
            rx.recv_obj()
    assert rx.recv_obj() == [2]


def test_a_list_changed_while_send_waits_for_room(uname: str) -> None:
    """The value is encoded twice when it is large: before waiting (to learn
    its size) and into the claim. A list another thread grows meanwhile is
    sent as it is when the room comes; one that stops being plain is pickled."""
    with shmring.Channel.create(uname, capacity=1 << 16, pattern="spsc") as ch:
        tx, rx = ch.producer(), ch.consumer()
        for tail in ("more", {1, 2}):
            fillers = 0
            while True:
                try:
                    tx.send_nowait(b"f" * 1000)
                    fillers += 1
                except shmring.WouldBlock:
                    break
            big: list[Any] = [b"b" * 6000]
            t = threading.Thread(target=tx.send_obj, args=(big, 10))
            t.start()
            time.sleep(0.3)  # the sender now waits for room, GIL released
            big.append(tail)
            for _ in range(fillers):
                assert rx.recv() == b"f" * 1000
            t.join(10)
            assert not t.is_alive()
            record = rx.recv()
            assert record[:1] == (TAG if tail == "more" else b"\x80")
            got = _core.decode_value(record) if tail == "more" else pickle.loads(record)
            assert got == big
        ch.unlink()


# ------------------------------------------------ processes and the Queue --
def _child_echo(name_in: str, name_out: str, n: int) -> None:
    rx = shmring.Channel.open(name_in).consumer()
    tx = shmring.Channel.open(name_out).producer()
    for _ in range(n):
        tx.send_obj(rx.recv_obj(timeout=30), timeout=30)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_values_through_another_process(uname: str, method: str) -> None:
    values = [EDGES[i % len(EDGES)] for i in range(3 * len(EDGES))]
    with shmring.Channel.create(uname + "-a", capacity=1 << 22, pattern="spsc") as a, \
            shmring.Channel.create(uname + "-b", capacity=1 << 22, pattern="mpsc") as b:
        tx, rx = a.producer(), b.consumer()
        ctx: Any = mp.get_context(method)
        p = ctx.Process(target=_child_echo, args=(a.name, b.name, len(values)))
        p.start()
        try:
            for v in values:
                tx.send_obj(v, timeout=30)
                assert same(rx.recv_obj(timeout=30), via_pickle(v))
        finally:
            p.join(30)
        assert p.exitcode == 0
        a.unlink()
        b.unlink()


def _queue_worker(q: Any, out: Any) -> None:
    while True:
        item = q.get(timeout=30)
        if item is None:
            break
        out.put((item[0], item), timeout=30)


def test_queue_moves_plain_values_between_processes(uname: str) -> None:
    q: shmring.Queue[Any] = shmring.Queue(name=uname)
    out: shmring.Queue[Any] = shmring.Queue(name=uname + "-out")
    try:
        ctx = mp.get_context("fork")
        workers = [ctx.Process(target=_queue_worker, args=(q, out)) for _ in range(2)]
        for w in workers:
            w.start()
        sent = {i: (i, {"x": [i, -0.0, None], "s": "é" * (i % 5)}, b"b" * i) for i in range(300)}
        for item in sent.values():
            q.put(item)
        got = dict(out.get(timeout=30) for _ in sent)
        for _ in workers:
            q.put(None)
        for w in workers:
            w.join(30)
            assert w.exitcode == 0
        assert all(same(got[i], sent[i]) for i in sent)
    finally:
        q.close()
        out.close()


def test_queue_value_records_and_fallbacks(uname: str) -> None:
    q: shmring.JoinableQueue[Any] = shmring.JoinableQueue(name=uname, maxsize=3)
    try:
        for v in ({"a": 1}, {1, 2}, None):
            q.put(v)
        with pytest.raises(Full):
            q.put("x", timeout=0.01)
        assert q.get() == {"a": 1}
        assert q.get(timeout=1) == {1, 2}
        assert q.get(block=False) is None  # a None item is an item
        with pytest.raises(Empty):
            q.get(timeout=0.01)
        for _ in range(3):
            q.task_done()
        q.join(timeout=1)
        # A corrupt value record is consumed and counted as taken.
        h = q._h
        assert h is not None
        # Both get paths: with a timeout (Python) and the common call (C).
        getters: tuple[Callable[[], Any], ...] = (lambda: q.get(timeout=1), q.get)
        for get in getters:
            assert h.state is not None and h.state.reserve()  # as put() counts an item
            (h.tx or h.producer()).send(TAG + b"\xdd")
            q.put("after")
            assert q.qsize() == 2
            with pytest.raises(shmring.DecodeError):
                get()
            assert q.qsize() == 1
            assert get() == "after"
            assert q.qsize() == 0
    finally:
        q.close()


class _SubPickle(shmring.PickleSerializer):
    pass


def test_send_obj_and_recv_obj_arguments(uname: str) -> None:
    """The C send_obj/recv_obj take the common call themselves and hand any
    other to the Python functions: every form behaves as before."""
    with shmring.Channel.create(uname, capacity=CAP, pattern="spsc") as ch:
        tx, rx = ch.producer(), ch.consumer()
        v = {"a": (1, None)}
        tx.send_obj(v, 5)
        tx.send_obj(v, timeout=5)
        tx.send_obj(v, None, serializer=None)
        tx.send_obj(obj=v)
        assert rx.recv_obj(5) == v
        assert rx.recv_obj(timeout=5) == v
        assert rx.recv_obj(copy=True, serializer=None) == v
        assert rx.recv_obj(5, copy=True) == v
        for bad in ((), (1, 2, 3)):
            with pytest.raises(TypeError):
                tx.send_obj(*bad)
        with pytest.raises(TypeError):
            tx.send_obj(1, bogus=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            rx.recv_obj(1, 2)  # type: ignore[call-overload]
        with pytest.raises(ValueError):
            rx.recv_obj(-1)
        # Another serializer, per call or per endpoint: not the value codec.
        js = shmring.JSONSerializer()
        tx.send_obj(v, serializer=js)
        assert rx.recv() == b'{"a":[1,null]}'
        tx.serializer = rx.serializer = _SubPickle()
        tx.send_obj(v)
        assert rx.recv()[:1] == b"\x80"
        tx.send_obj(v)
        assert rx.recv_obj() == v
        del tx.serializer, rx.serializer
        tx.send_obj(v)
        with rx.recv_obj(copy=False) as got:
            assert got == v
        ch.unlink()
