"""The channel contract, every pattern: zero-copy claims and views, and batches.

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
    payload,
)

import shmring
from shmring import _layout as L

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
