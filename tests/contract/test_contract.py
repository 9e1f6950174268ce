"""One contract, every pattern: what a Channel promises, checked in one
process against spsc, mpsc, mpmc, broadcast and lossy broadcast alike.

Where a pattern's contract differs (lossy broadcast never blocks its
producer; single-role patterns refuse a second producer or consumer), the
test says so by branching on :class:`Kind`, never by skipping.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pattern_util
import pytest

import shmring
from shmring import _layout as L
from shmring._layout import TRAITS

CAPACITY = 4096
WAIT = 5.0  # bound on every wait that is expected to succeed


@dataclass(frozen=True)
class Kind:
    pattern: str
    lossy: bool = False

    @property
    def multi_producer(self) -> bool:
        return TRAITS[self.pattern].multi_producer

    @property
    def multi_consumer(self) -> bool:
        return TRAITS[self.pattern].multi_consumer

    @property
    def fanout(self) -> bool:
        return TRAITS[self.pattern].fan_out

    def __str__(self) -> str:
        return self.pattern + ("-lossy" if self.lossy else "")


KINDS = [Kind(pattern, lossy) for pattern, lossy in pattern_util.KINDS]
LOSSLESS = [k for k in KINDS if not k.lossy]

Make = Callable[..., shmring.Channel]


@pytest.fixture(params=KINDS, ids=str)
def kind(request: pytest.FixtureRequest) -> Kind:
    k: Kind = request.param
    return k


@pytest.fixture
def make(make_channel: Make, kind: Kind) -> Make:
    """Creates channels of this test's kind (``make_channel`` closes them)."""

    def _make(capacity: int = CAPACITY, suffix: str = "", **kw: object) -> shmring.Channel:
        return make_channel(kind.pattern, capacity, suffix=suffix, lossy=kind.lossy, **kw)

    return _make


def record_bytes(n: int) -> int:
    """Ring bytes a message of n payload bytes takes (header, alignment)."""
    a = L.RECORD_ALIGN
    return (n + L.RECORD_HEADER + a - 1) // a * a


def payload(seq: int, size: int) -> bytes:
    """Deterministic contents for message seq of a given size."""
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]


def tagged(producer: int, seq: int) -> bytes:
    return b"%d:%d:" % (producer, seq) + payload(seq, seq % 37)


def untag(msg: bytes) -> tuple[int, int]:
    p, s, rest = msg.split(b":", 2)
    producer, seq = int(p), int(s)
    assert rest == payload(seq, seq % 37), f"message {producer}:{seq} damaged"
    return producer, seq


def drain(rx: shmring.Consumer) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(rx.recv_nowait())
        except shmring.WouldBlock:
            return out


def fill(tx: shmring.Producer, msg: bytes) -> int:
    """Sends msg until the channel is full; how many went in."""
    n = 0
    while True:
        try:
            tx.send_nowait(msg)
        except shmring.WouldBlock:
            return n
        n += 1
        assert n < 10 * CAPACITY, "never full"


# ----------------------------------------------------------- delivery --


def test_order_no_loss_no_duplicates(kind: Kind, make: Make) -> None:
    """Per-producer order, nothing lost, nothing twice, across many wraps."""
    ch = make()
    rnd = random.Random(1)
    producers = [ch.producer() for _ in range(3 if kind.multi_producer else 1)]
    consumers = [ch.consumer() for _ in range(2 if kind.multi_consumer else 1)]
    sent: list[list[int]] = [[] for _ in producers]
    got: list[list[tuple[int, int]]] = [[] for _ in consumers]
    seq = 0
    for _ in range(300):
        # A burst small enough that even a lossy ring is never lapped.
        for _ in range(rnd.randint(1, 20)):
            p = rnd.randrange(len(producers))
            producers[p].send(tagged(p, seq), timeout=WAIT)
            sent[p].append(seq)
            seq += 1
        if kind.fanout:
            for c, rx in enumerate(consumers):
                got[c] += [untag(m) for m in drain(rx)]
        else:
            # Consumers take turns, a few messages each, until it is empty.
            while True:
                c = rnd.randrange(len(consumers))
                batch = []
                try:
                    for _ in range(rnd.randint(1, 4)):
                        batch.append(consumers[c].recv_nowait())
                except shmring.WouldBlock:
                    got[c] += [untag(m) for m in batch]
                    break
                got[c] += [untag(m) for m in batch]

    def per_producer(msgs: list[tuple[int, int]]) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in producers]
        for p, s in msgs:
            out[p].append(s)
        return out

    if kind.fanout:
        for c, rx in enumerate(consumers):
            assert per_producer(got[c]) == sent
            assert rx.missed == 0
    else:
        everything = [m for g in got for m in g]
        assert len(everything) == len(set(everything)) == seq
        # Each consumer sees its share of each producer in order.
        for g in got:
            for p, seqs in enumerate(per_producer(g)):
                assert seqs == sorted(seqs), f"producer {p} reordered"
        assert sorted(everything) == sorted((p, s) for p, ss in enumerate(sent) for s in ss)
        if len(consumers) > 1:
            assert all(got), "a consumer was starved in a single-threaded round robin"


@pytest.mark.parametrize("largest", [False, True], ids=["default-max", "largest-max"])
def test_wrap_around_random_sizes(kind: Kind, make: Make, largest: bool) -> None:
    """Random sizes 0..max_message through a small ring: it wraps often,
    padding records fill its end, and every message comes out intact."""
    max_message = CAPACITY // 2 - L.RECORD_HEADER if largest else None
    ch = make(max_message=max_message)
    tx, rx = ch.producer(), ch.consumer()
    mm = ch.max_message
    rnd = random.Random(2024)
    sizes = [rnd.choice([0, 1, 7, 8, 15, 16, 17, mm - 1, mm, rnd.randint(0, mm)])
             for _ in range(2500)]
    # A lossy ring is never gated: keep what is outstanding within one lap
    # (room for one padding record at the wrap included).
    budget = CAPACITY - record_bytes(mm) + L.RECORD_HEADER
    sent = received = outstanding = wraps = 0
    last_tail = 0
    while received < len(sizes):
        while sent < len(sizes):
            r = record_bytes(sizes[sent])
            if kind.lossy and outstanding and outstanding + r > budget:
                break
            try:
                tx.send_nowait(payload(sent, sizes[sent]))
            except shmring.WouldBlock:
                assert not kind.lossy, "a lossy producer never blocks"
                assert outstanding, "an empty ring refused a message"
                break
            outstanding += r
            sent += 1
        tail = ch.region.counter(L.OFF_TAIL)
        wraps += tail // CAPACITY != last_tail // CAPACITY
        last_tail = tail
        for _ in range(rnd.randint(1, max(1, sent - received))):
            if rnd.random() < 0.3:
                with rx.recv_view(timeout=WAIT) as v:
                    assert bytes(v) == payload(received, sizes[received]), received
            else:
                assert rx.recv(timeout=WAIT) == payload(received, sizes[received]), received
            outstanding -= record_bytes(sizes[received])
            received += 1
    assert outstanding == 0
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()
    assert rx.missed == 0
    assert wraps > 20
    counts = {s.role: s.messages for s in ch.region.slots() if s.role != "attach"}
    assert counts == {"producer": len(sizes), "consumer": len(sizes)}


# ----------------------------------------------------- full and empty --


def test_full(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msg = b"f" * 100
    if kind.lossy:
        # Never full: the producer overruns the reader, which is told.
        for i in range(10 * CAPACITY // len(msg)):
            tx.send_nowait(payload(i, 100))
        tx.send(b"last", timeout=0.05)
        got = drain(rx)
        assert got[-1] == b"last"
        assert rx.missed > 0
        assert rx.missed + len(got) == 10 * CAPACITY // len(msg) + 1
        return
    n = fill(tx, msg)
    assert 0 < n <= CAPACITY // record_bytes(len(msg))
    with pytest.raises(shmring.WouldBlock):
        tx.send_nowait(msg)
    with pytest.raises(shmring.Timeout) as ei:
        tx.send(msg, timeout=0.05)
    assert isinstance(ei.value, TimeoutError)
    with pytest.raises(TimeoutError):
        tx.send(msg, timeout=0)
    with pytest.raises(shmring.Timeout):
        tx.claim(10, timeout=0.05)
    assert not tx._claimed
    with pytest.raises(shmring.Timeout) as ei:
        tx.send_many([msg, msg], timeout=0.05)
    assert ei.value.sent == 0  # type: ignore[attr-defined]
    # One message out makes room for exactly one more of the same size.
    assert rx.recv(timeout=WAIT) == msg
    tx.send_nowait(msg)
    with pytest.raises(shmring.WouldBlock):
        tx.send_nowait(msg)
    assert drain(rx) == [msg] * n


def test_send_many_on_a_full_ring_says_how_many_went(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    items = [payload(i, 90) for i in range(200)]
    if kind.lossy:
        assert tx.send_many(items[:20]) == 20
        assert drain(rx) == items[:20]
        return
    with pytest.raises(shmring.Timeout) as ei:
        tx.send_many(items, timeout=0.05)
    sent = ei.value.sent  # type: ignore[attr-defined]
    assert 0 < sent < len(items)
    assert drain(rx) == items[:sent]
    # The caller resends the rest.
    assert tx.send_many(items[sent : sent + 10], timeout=WAIT) == 10
    assert drain(rx) == items[sent : sent + 10]


def test_empty(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()
    with pytest.raises(shmring.Timeout) as ei:
        rx.recv(timeout=0.05)
    assert isinstance(ei.value, TimeoutError)
    with pytest.raises(shmring.Timeout):
        rx.recv(timeout=0)
    with pytest.raises(shmring.Timeout):
        rx.recv_many(10, timeout=0.05)
    with pytest.raises(shmring.Timeout):
        rx.recv_view(timeout=0.05)
    with pytest.raises(shmring.Timeout):
        rx.recv_into(bytearray(10), timeout=0.05)
    tx.send(b"one")
    assert rx.recv(timeout=0) == b"one"
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()


def test_blocked_receiver_wakes_on_send(kind: Kind, make: Make) -> None:
    """A receiver asleep on the futex (not just spinning) is woken."""
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(rx.recv(timeout=WAIT)))
    t.start()
    t.join(0.2)  # long past the spin and yield phases: it sleeps
    tx.send(b"wake")
    t.join(WAIT)
    assert not t.is_alive()
    assert out == [b"wake"]


def test_blocked_sender_wakes_on_space(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    if kind.lossy:
        return  # never blocks: see test_full
    n = fill(tx, b"s" * 200)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            tx.send(b"L" * 200, timeout=WAIT)
        except BaseException as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=send)
    t.start()
    t.join(0.2)
    assert t.is_alive()
    assert rx.recv(timeout=WAIT) == b"s" * 200
    t.join(WAIT)
    assert not t.is_alive()
    assert errors == []
    assert drain(rx) == [b"s" * 200] * (n - 1) + [b"L" * 200]


# ------------------------------------------------------ end of stream --


def test_end_of_stream(kind: Kind, make: Make) -> None:
    ch = make()
    tx = ch.producer()
    consumers = [ch.consumer() for _ in range(2 if kind.multi_consumer else 1)]
    msgs = [payload(i, i) for i in range(20)]
    tx.send_many(msgs)
    ch.close_send()
    with pytest.raises(shmring.Closed):
        tx.send(b"more")
    with pytest.raises(shmring.Closed):
        tx.send_nowait(b"more")
    with pytest.raises(shmring.Closed):
        tx.send_many([b"more"])
    with pytest.raises(shmring.Closed):
        tx.claim(4)
    with pytest.raises(shmring.Closed):
        ch.producer()
    got: list[list[bytes]] = []
    for i, rx in enumerate(consumers):
        if i == 0:
            # mpmc: the first consumer takes a few, the second the rest.
            part = [rx.recv(timeout=WAIT) for _ in range(5)] if not kind.fanout else list(rx)
        else:
            part = list(rx)  # iteration ends at end of stream
        got.append(part)
    if not kind.fanout:
        got[0] += list(consumers[0])
    for rx in consumers:
        with pytest.raises(shmring.EndOfStream):
            rx.recv(timeout=WAIT)
        with pytest.raises(shmring.EndOfStream):
            rx.recv_nowait()
        with pytest.raises(shmring.EndOfStream):
            rx.recv_many(3, timeout=WAIT)
        with pytest.raises(shmring.EndOfStream):
            rx.recv_view(timeout=WAIT)
        assert list(rx) == []
    if kind.fanout:
        assert got == [msgs] * len(consumers)
    else:
        assert sorted(m for g in got for m in g) == sorted(msgs)
        assert got[0][:5] == msgs[:5]


def test_end_of_stream_wakes_blocked_peers(kind: Kind, make: Make) -> None:
    ch = make()
    rx = ch.consumer()
    errors: list[BaseException] = []

    def recv() -> None:
        try:
            rx.recv(timeout=WAIT)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=recv)
    t.start()
    t.join(0.2)
    ch.close_send()
    t.join(WAIT)
    assert not t.is_alive()
    assert [type(e) for e in errors] == [shmring.EndOfStream]


def test_end_of_stream_wakes_blocked_sender(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    if kind.lossy:
        return  # never blocks
    fill(tx, b"x" * 64)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            tx.send(b"x" * 64, timeout=WAIT)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=send)
    t.start()
    t.join(0.2)
    ch.close_send()
    t.join(WAIT)
    assert not t.is_alive()
    assert [type(e) for e in errors] == [shmring.Closed]
    assert all(m == b"x" * 64 for m in rx)


# ------------------------------------------------------------- claims --


def test_claim_commits_on_exit(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    with tx.claim(11) as buf:
        assert isinstance(buf, memoryview)
        assert len(buf) == 11 and not buf.readonly
        buf[:] = b"hello world"
    with pytest.raises(ValueError):
        buf[0]  # released with the claim
    with tx.claim(0) as buf:
        assert len(buf) == 0
    assert rx.recv(timeout=WAIT) == b"hello world"
    assert rx.recv(timeout=WAIT) == b""


def test_claim_aborts_on_exception(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    rnd = random.Random(7)
    # Far more aborted bytes than the ring holds: they must not pile up.
    for i in range(400):
        n = rnd.randint(0, ch.max_message)
        with pytest.raises(KeyError), tx.claim(n) as buf:
            buf[: min(n, 3)] = b"bad"[: min(n, 3)]
            raise KeyError(i)
        assert not tx._claimed
        if i % 3 == 0:
            c = tx.claim(rnd.randint(0, 50))
            c.abort()
            c.commit()  # after abort: nothing
        tx.send(payload(i, i % 50), timeout=WAIT)
        assert rx.recv(timeout=WAIT) == payload(i, i % 50)
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()


def test_claim_commit_prefix(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    for n, k in [(100, 10), (100, 0), (64, 48), (33, 17), (ch.max_message, 1), (5, 5)]:
        claim = tx.claim(n)
        with claim as buf:
            buf[:] = payload(n, n)
            claim.commit(k)
        tx.send(b"after")  # the rest of the claimed record is not a message
        assert rx.recv(timeout=WAIT) == payload(n, n)[:k]
        assert rx.recv(timeout=WAIT) == b"after"
    claim = tx.claim(8)
    with pytest.raises(ValueError):
        claim.commit(9)
    claim.commit(8)
    assert len(rx.recv(timeout=WAIT)) == 8
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()


def test_no_send_while_a_claim_is_open(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    claim = tx.claim(4)
    with pytest.raises(RuntimeError):
        tx.send(b"x")
    with pytest.raises(RuntimeError):
        tx.claim(4)
    claim.view[:] = b"abcd"
    claim.commit()
    assert rx.recv(timeout=WAIT) == b"abcd"


def test_claim_too_large(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    with pytest.raises(shmring.MessageTooLarge):
        tx.claim(ch.max_message + 1)
    with pytest.raises(ValueError):
        tx.claim(-1)
    assert not tx._claimed
    tx.send(b"ok")
    assert rx.recv(timeout=WAIT) == b"ok"


# -------------------------------------------------------------- views --


def test_recv_view(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msgs = [payload(i, i * 7) for i in range(30)]
    tx.send_many(msgs)
    for m in msgs[:10]:
        with rx.recv_view(timeout=WAIT) as v:
            assert isinstance(v, memoryview)
            assert v.readonly
            assert bytes(v) == m
            # Held: a second read on this consumer must wait for release.
            with pytest.raises(RuntimeError):
                rx.recv_nowait()
        with pytest.raises(ValueError):
            bytes(v)  # released with the block
    # An exception in the block still releases the record (it was read).
    with pytest.raises(KeyError), rx.recv_view(timeout=WAIT) as v:
        assert bytes(v) == msgs[10]
        raise KeyError
    view = rx.recv_view(timeout=WAIT)
    assert bytes(view.view) == msgs[11]
    view.release()
    view.release()
    assert drain(rx) == msgs[12:]


def test_views_recycle_the_ring(kind: Kind, make: Make) -> None:
    """Views and claims only, many laps: released bytes are reused."""
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    for i in range(2000):
        n = (i * 13) % 300
        with tx.claim(n) as buf:
            buf[:] = payload(i, n)
        with rx.recv_view(timeout=WAIT) as v:
            assert v == payload(i, n)
    assert ch.region.counter(L.OFF_TAIL) > 50 * CAPACITY


def test_recv_into(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"0123456789")
    small = bytearray(4)
    if not kind.lossy:
        with pytest.raises(ValueError):
            rx.recv_into(small, timeout=WAIT)  # the message stays
        buf = bytearray(16)
        assert rx.recv_into(buf, timeout=WAIT) == 10
        assert buf[:10] == b"0123456789"
    else:
        buf = bytearray(16)
        assert rx.recv_into(buf, timeout=WAIT) == 10
        assert buf[:10] == b"0123456789"


# ------------------------------------------------------------ batches --


def test_batches(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msgs = [payload(i, i % 40) for i in range(25)]
    assert tx.send_many(msgs) == 25
    assert tx.send_many([]) == 0
    buffers: list[bytes | bytearray | memoryview] = [b"g1", bytearray(b"g2"), memoryview(b"g3")]
    assert tx.send_many(iter(buffers)) == 3
    got: list[bytes] = []
    while len(got) < 28:
        batch = rx.recv_many(10, timeout=WAIT)
        assert 1 <= len(batch) <= 10
        got += batch
    assert got == [*msgs, b"g1", b"g2", b"g3"]
    tx.send(b"x")
    assert rx.recv_many(1000, timeout=0) == [b"x"]
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()


def test_batches_exact_split(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    tx.send_many([b"%d" % i for i in range(12)])
    assert rx.recv_many(5, timeout=WAIT) == [b"%d" % i for i in range(5)]
    assert rx.recv_many(5, timeout=WAIT) == [b"%d" % i for i in range(5, 10)]
    assert rx.recv_many(5, timeout=WAIT) == [b"10", b"11"]


def test_batches_through_a_small_ring(kind: Kind, make: Make) -> None:
    """Batches larger than the ring: send_many waits for space part-way."""
    if kind.lossy:
        return  # a lossy batch larger than the ring overruns by design
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msgs = [payload(i, 100) for i in range(500)]
    got: list[bytes] = []

    def receive() -> None:
        while len(got) < len(msgs):
            got.extend(rx.recv_many(64, timeout=WAIT))

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    try:
        assert tx.send_many(msgs, timeout=WAIT) == 500
    finally:
        t.join(2 * WAIT)
    assert got == msgs


# ------------------------------------------------------ too large ----


def test_message_too_large(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    big = b"b" * (ch.max_message + 1)
    tail = ch.region.counter(L.OFF_TAIL)
    for send in (tx.send, tx.send_nowait, lambda m: tx.send(m, timeout=0.01)):
        with pytest.raises(shmring.MessageTooLarge) as ei:
            send(big)
        assert isinstance(ei.value, ValueError)
    # Nothing was written: no record, no tail movement, no claim left open.
    assert ch.region.counter(L.OFF_TAIL) == tail
    assert not tx._claimed
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()
    with pytest.raises(shmring.MessageTooLarge) as ei:
        tx.send_many([b"a", big, b"c"])
    assert ei.value.sent == 1  # type: ignore[attr-defined]
    assert drain(rx) == [b"a"]
    exact = b"e" * ch.max_message
    tx.send(exact)
    assert rx.recv(timeout=WAIT) == exact


def test_message_too_large_with_explicit_max(kind: Kind, make: Make) -> None:
    ch = make(max_message=100)
    tx, rx = ch.producer(), ch.consumer()
    assert ch.max_message == 100
    with pytest.raises(shmring.MessageTooLarge):
        tx.send(b"x" * 101)
    tx.send(b"x" * 100)
    assert rx.recv(timeout=WAIT) == b"x" * 100


# -------------------------------------------------------------- roles --


def test_producer_role(kind: Kind, make: Make, uname: str) -> None:
    ch = make()
    rx = ch.consumer()
    tx = ch.producer()
    other = shmring.Channel.open(uname)
    try:
        if kind.multi_producer:
            tx2 = ch.producer()
            tx3 = other.producer()
            tx.send(b"1")
            tx2.send(b"2")
            tx3.send(b"3")
            assert drain(rx) == [b"1", b"2", b"3"]
            return
        with pytest.raises(shmring.RoleTaken):
            ch.producer()
        with pytest.raises(shmring.RoleTaken):
            other.producer()  # the role is the region's, not the object's
        tx.send(b"first")
        tx.close()
        assert tx.closed
        with pytest.raises(shmring.Closed):
            tx.send(b"closed")
        tx2 = other.producer()  # the freed role goes to another channel object
        tx2.send(b"second")
        with pytest.raises(shmring.RoleTaken):
            ch.producer()
        other.close()  # closing a channel gives back its endpoints' roles
        tx3 = ch.producer()
        tx3.send(b"third")
        assert drain(rx) == [b"first", b"second", b"third"]
    finally:
        other.close()


def test_consumer_role(kind: Kind, make: Make, uname: str) -> None:
    ch = make()
    tx = ch.producer()
    rx = ch.consumer()
    other = shmring.Channel.open(uname)
    try:
        if kind.multi_consumer:
            rx2 = other.consumer()
            tx.send(b"m")
            if kind.fanout:
                assert rx.recv(timeout=WAIT) == rx2.recv(timeout=WAIT) == b"m"
            else:
                assert sorted(drain(rx) + drain(rx2)) == [b"m"]
            return
        with pytest.raises(shmring.RoleTaken):
            ch.consumer()
        with pytest.raises(shmring.RoleTaken):
            other.consumer()
        tx.send_many([b"a", b"b", b"c"])
        assert rx.recv(timeout=WAIT) == b"a"
        rx.close()
        with pytest.raises(shmring.Closed):
            rx.recv_nowait()
        # The next consumer continues where the first stopped.
        rx2 = other.consumer()
        assert rx2.recv(timeout=WAIT) == b"b"
        other.close()
        rx3 = ch.consumer()
        assert drain(rx3) == [b"c"]
    finally:
        other.close()


def test_closed_channel(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    ch.close()
    assert ch.closed and tx.closed and rx.closed
    with pytest.raises(shmring.Closed):
        tx.send(b"x")
    with pytest.raises(shmring.Closed):
        rx.recv(timeout=0)
    with pytest.raises(shmring.Closed):
        ch.producer()
    ch.close()  # twice is fine


# ----------------------------------------------------------- bad args --


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, -math.inf])
def test_bad_timeouts(kind: Kind, make: Make, bad: float) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    calls: list[Callable[[], object]] = [
        lambda: tx.send(b"x", timeout=bad),
        lambda: tx.send_many([b"x"], timeout=bad),
        lambda: tx.claim(1, timeout=bad),
        lambda: rx.recv(timeout=bad),
        lambda: rx.recv_many(1, timeout=bad),
        lambda: rx.recv_view(timeout=bad),
        lambda: rx.recv_into(bytearray(1), timeout=bad),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    # Nothing happened.
    assert not tx._claimed
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()


def test_bad_counts(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"kept")
    for n in (0, -1):
        with pytest.raises(ValueError):
            rx.recv_many(n)
    with pytest.raises(TypeError):
        rx.recv_many("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tx.send("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tx.send_many([b"ok", 5])  # type: ignore[list-item]
    assert rx.recv_many(5, timeout=WAIT) == [b"kept", b"ok"]
