"""The channel contract, every pattern: delivery, full and empty, waking, end of stream.

Each test runs once per kind of channel (``kind``, from channel_util).
"""

from __future__ import annotations

import random
import threading

import pytest
from channel_util import (
    CAPACITY,
    WAIT,
    Kind,
    Make,
    drain,
    fill,
    payload,
    record_bytes,
    tagged,
    untag,
)

import shmring
from shmring import _layout as L

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
