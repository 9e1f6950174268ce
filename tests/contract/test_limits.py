"""The channel contract, every pattern: what a channel refuses (messages
too large, a second holder of a single role, a closed channel, bad
arguments).

Each test runs once per kind of channel (``kind``, from channel_util).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from channel_util import (
    WAIT,
    Kind,
    Make,
    drain,
)

import shmring
from shmring import _layout as L

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
