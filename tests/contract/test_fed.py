"""Fed rings in one process (csrc/ring/feed.c; layout.h, FEED): keyed
records committed with ``ProducerCore._send_fed`` arrive as sent and only
they (a new epoch's note never reaches a consumer), ``_core.fed_state``
names the last key committed, and bad input gets a typed error with
nothing sent. Every kind of channel, the lossy broadcast included."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator

import pytest
from channel_util import CAPACITY, WAIT, Kind, drain
from fed_util import KEY, record

import shmring
from shmring import _core
from shmring import _layout as L

Make = Callable[..., shmring.Channel]


def state(ch: shmring.Channel) -> tuple[int, int]:
    return _core.fed_state(ch.region._mapping())


def keys(msgs: list[bytes]) -> list[tuple[int, int]]:
    return [KEY.unpack_from(m) for m in msgs]


def batch(epoch: int, first: int, n: int, size: int = 40) -> list[bytes]:
    return [record(epoch, first + i, size) for i in range(n)]


@contextlib.contextmanager
def receiving(rx: shmring.Consumer, n: int, kind: Kind) -> Iterator[list[bytes]]:
    """A thread receives n messages while the block runs (a lossy reader:
    what is still there once the block is done)."""
    got: list[bytes] = []
    if kind.lossy:
        yield got
        got += drain(rx)
        return

    def consume() -> None:
        while len(got) < n:
            got.append(rx.recv(timeout=WAIT))

    t = threading.Thread(target=consume)
    t.start()
    try:
        yield got
    finally:
        t.join(WAIT)
    assert not t.is_alive()


def test_a_ring_never_fed_says_zero(kind: Kind, make: Make) -> None:
    ch = make()
    assert state(ch) == (0, 0)
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"plain")  # plain sends leave the words alone
    assert rx.recv(timeout=WAIT) == b"plain"
    assert state(ch) == (0, 0)


def test_keys_round_trip(kind: Kind, make: Make) -> None:
    ch = make()
    rx, tx = ch.consumer(), ch.producer()
    first = 7
    for n in (1, 3, 10):
        items = batch(5, first, n)
        assert tx._send_fed(items, 5, first) == n
        assert state(ch) == (5, first + n - 1)
        assert drain(rx) == items  # the note of the first batch is not a message
        first += n
    assert tx._send_fed([memoryview(b"m" * 16), bytearray(16)], 5, first + 10) == 2
    assert state(ch) == (5, first + 11)
    assert drain(rx) == [b"m" * 16, bytes(16)]


def test_epoch_change(kind: Kind, make: Make) -> None:
    ch = make()
    rx, tx = ch.consumer(), ch.producer()
    tx._send_fed(batch(1, 100, 4), 1, 100)
    assert state(ch) == (1, 103)
    # A new epoch may start anywhere, seq 0 included, and go back to an old
    # epoch's number: only the last key's epoch constrains the next seq.
    tx._send_fed(batch(2, 0, 2), 2, 0)
    assert state(ch) == (2, 1)
    tx._send_fed(batch(1, 50, 1), 1, 50)
    assert state(ch) == (1, 50)
    tx._send_fed(batch(2**64 - 1, 2**64 - 3, 3), 2**64 - 1, 2**64 - 3)
    assert state(ch) == (2**64 - 1, 2**64 - 1)
    assert keys(drain(rx)) == [(1, 100), (1, 101), (1, 102), (1, 103), (2, 0), (2, 1),
                               (1, 50), (2**64 - 1, 2**64 - 3), (2**64 - 1, 2**64 - 2),
                               (2**64 - 1, 2**64 - 1)]


def test_a_new_producer_continues_from_the_words(kind: Kind, make: Make) -> None:
    ch = make()
    rx, tx = ch.consumer(), ch.producer()
    tx._send_fed(batch(3, 1, 5), 3, 1)
    tx.close()
    tx = ch.producer()
    with pytest.raises(shmring.InvalidArgument, match="not past the last record committed"):
        tx._send_fed(batch(3, 5, 1), 3, 5)
    assert tx._send_fed(batch(3, 6, 1), 3, 6) == 1
    assert state(ch) == (3, 6)
    assert keys(drain(rx)) == [(3, s) for s in range(1, 7)]


def advance(ch: shmring.Channel, tx: shmring.Producer, rx: shmring.Consumer,
            offset: int) -> None:
    """Moves the empty ring's tail to ``offset`` within a lap (plain sends)."""
    while (gap := (offset - ch.region.counter(L.OFF_TAIL)) % CAPACITY):
        tx.send(bytes(min(gap, 1024) - L.RECORD_HEADER))
        drain(rx)


@pytest.mark.parametrize("shift", range(0, CAPACITY, 208))
def test_epoch_changes_at_every_offset_of_the_ring(kind: Kind, make: Make, shift: int) -> None:
    """A note and its message are one claim: wherever the tail is, and
    whatever the size, up to the largest message the ring takes."""
    ch = make(max_message=CAPACITY // 2 - L.RECORD_HEADER)
    rx, tx = ch.consumer(), ch.producer()
    rng = random.Random(shift)
    advance(ch, tx, rx, shift)
    for epoch in range(1, 25):
        size = rng.choice((16, 100, 1000, CAPACITY // 2 - L.RECORD_HEADER))
        items = [record(epoch, 0, size), *batch(epoch, 1, rng.randint(0, 2))]
        with receiving(rx, len(items), kind) as got:
            assert tx._send_fed(items, epoch, 0, timeout=WAIT) == len(items)
        assert state(ch) == (epoch, len(items) - 1)
        # (A lossy reader may be lapped inside one batch: it gets the newest.)
        assert got == items[-len(got):] if kind.lossy else got == items
        assert got


def test_a_batch_larger_than_the_ring(kind: Kind, make: Make) -> None:
    """The ring fills mid-batch: what is in is published, the rest waits."""
    ch = make()
    if kind.lossy:
        tx = ch.producer()
        assert tx._send_fed(batch(1, 0, 200), 1, 0) == 200  # never gated: overwrites
        assert state(ch) == (1, 199)
        return
    rx, tx = ch.consumer(), ch.producer()
    items = batch(9, 0, 300)
    with receiving(rx, len(items), kind) as got:
        assert tx._send_fed(items, 9, 0, timeout=WAIT) == 300
    assert got == items
    assert state(ch) == (9, 299)


def test_timeout_returns_the_count(kind: Kind, make: Make) -> None:
    ch = make()
    if kind.lossy:  # never gated: it never waits
        assert ch.producer()._send_fed(batch(4, 10, 100), 4, 10, timeout=0) == 100
        assert state(ch) == (4, 109)
        return
    rx, tx = ch.consumer(), ch.producer()
    items = batch(4, 10, 100)
    n = tx._send_fed(items, 4, 10, timeout=0.05)
    assert 0 < n < 100
    assert state(ch) == (4, 10 + n - 1)
    assert tx._send_fed(items[n:], 4, 10 + n, timeout=0.02) == 0  # none fits: none sent
    assert state(ch) == (4, 10 + n - 1)
    assert drain(rx) == items[:n]


def test_one_seq_per_item(kind: Kind, make: Make) -> None:
    """seqs may skip (an exporter's lossy broadcast): one per item."""
    ch = make()
    rx, tx = ch.consumer(), ch.producer()
    seqs = [3, 4, 9, 2**64 - 1]
    items = [record(6, s, 30) for s in seqs]
    assert tx._send_fed(items, 6, seqs) == 4
    assert state(ch) == (6, 2**64 - 1)
    assert keys(drain(rx)) == [(6, s) for s in seqs]
    assert tx._send_fed([record(7, 5, 30)], epoch=7, seqs=(5,)) == 1
    assert state(ch) == (7, 5)
    for bad, why in (([1, 1], "must increase"), ([2, 1], "must increase"), ([1], "1 seqs for 2"),
                     ([1, -1], "must be in"), ([1, 2**64], "must be in")):
        with pytest.raises(shmring.InvalidArgument, match=why):
            tx._send_fed([b"a", b"b"], 8, bad)
    with pytest.raises(TypeError, match="must be an int"):
        tx._send_fed([b"a"], 8, ["1"])  # type: ignore[list-item]
    assert state(ch) == (7, 5)
    assert drain(rx) == [record(7, 5, 30)]


def test_an_error_mid_batch_says_how_many_were_sent(kind: Kind, make: Make) -> None:
    ch = make()
    rx, tx = ch.consumer(), ch.producer()
    big = bytes(ch.max_message + 1)
    with pytest.raises(shmring.MessageTooLarge) as e:
        tx._send_fed([record(2, 0, 20), record(2, 1, 20), big, record(2, 3, 20)], 2, 0)
    assert e.value.sent == 2  # type: ignore[attr-defined]
    assert state(ch) == (2, 1)
    assert keys(drain(rx)) == [(2, 0), (2, 1)]
    ch.close_send()
    with pytest.raises(shmring.Closed):
        tx._send_fed([record(2, 2, 20)], 2, 2)
    assert state(ch) == (2, 1)


@pytest.mark.parametrize(("epoch", "first"), [
    (0, 1), (-1, 1), (2**64, 1), (1, -1), (1, 2**64),
])
def test_keys_out_of_range(kind: Kind, make: Make, epoch: int, first: int) -> None:
    ch = make()
    tx = ch.producer()
    with pytest.raises(shmring.InvalidArgument, match="must be in"):
        tx._send_fed([b"x"], epoch, first)
    assert state(ch) == (0, 0)


def test_bad_arguments(kind: Kind, make: Make) -> None:
    ch = make()
    rx, tx = ch.consumer(), ch.producer()
    with pytest.raises(shmring.InvalidArgument, match="runs past"):
        tx._send_fed([b"x", b"y"], 1, 2**64 - 1)
    with pytest.raises(TypeError, match="epoch must be an int"):
        tx._send_fed([b"x"], 1.0, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="first_seq must be an int"):
        tx._send_fed([b"x"], 1, True)
    with pytest.raises(TypeError, match="seqs must be an int or a sequence"):
        tx._send_fed([b"x"], 1, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sequence"):
        tx._send_fed(7, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tx._send_fed([b"x"], 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        tx._send_fed([b"x"], 1, 1, 1.0, 5)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        tx._send_fed([1], 1, 1)  # type: ignore[list-item]
    assert tx._send_fed([], 1, 1) == 0
    assert tx._send_fed(items=[b"k"], epoch=1, first_seq=1, timeout=WAIT) == 1  # type: ignore[call-arg]
    assert state(ch) == (1, 1)
    with pytest.raises(shmring.InvalidArgument, match="not past"):
        tx._send_fed([b"x"], 1, 1)
    assert drain(rx) == [b"k"]
    tx.close()
    with pytest.raises(shmring.Closed):
        tx._send_fed([b"x"], 1, 2)


def test_fed_state_of_a_wrong_buffer() -> None:
    with pytest.raises(shmring.CorruptRegion):
        _core.fed_state(bytearray(100))
    with pytest.raises(shmring.CorruptRegion):
        _core.fed_state(bytes(64 * 1024))
    with pytest.raises(TypeError):
        _core.fed_state(12)  # type: ignore[arg-type]
