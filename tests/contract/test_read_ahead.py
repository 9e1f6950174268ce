"""Reading ahead, every pattern, one process: ``ConsumerCore._ahead`` holds
many records at once without releasing any, ``_settle(key)`` releases those
whose key (the record's position) is at most key, ``_ahead_count`` counts
the unsettled ones.

Each test runs once per kind of channel (``kind``, from channel_util); where
a pattern differs (a new broadcast consumer starts at the tail, a lossy
producer is never held back) the test branches on the kind's traits.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from itertools import accumulate

import pytest
from channel_util import CAPACITY, WAIT, Kind, Make, drain, fill, payload, record_bytes

import shmring
from shmring import _layout as L

ALL = 2**64 - 1  # a key past every record


def sent(n: int, size: int = 40) -> list[bytes]:
    return [b"%04d:" % i + payload(i, size) for i in range(n)]


def slot_messages(ch: shmring.Channel, slot: int) -> int:
    return next(s.messages for s in ch.region.slots() if s.index == slot)


def test_reads_ahead_without_releasing(kind: Kind, make: Make) -> None:
    """Records come as (position, copy); nothing is freed until settled, so
    a lossless producer runs out of room exactly as if nobody read."""
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msg = b"a" * 100
    n = CAPACITY // record_bytes(100) if kind.lossy else fill(tx, msg)
    if kind.lossy:
        tx.send_many([msg] * n)
    got = rx._ahead(n + 10, 1 << 30, 0)
    assert [m for _, m in got] == [msg] * n
    keys = [k for k, _ in got]
    assert keys == [i * record_bytes(100) for i in range(n)]
    assert rx._ahead_count == n
    assert rx._ahead(10, 1 << 30, 0) == []  # nothing more, no wait
    if kind.lossy:
        tx.send_nowait(b"b")  # a lossy producer is never held back
        assert rx._settle(ALL) == n
        return
    with pytest.raises(shmring.WouldBlock):
        tx.send_nowait(b"b")
    assert rx._settle(keys[0]) == 1
    tx.send_nowait(b"b")  # one record's room again
    with pytest.raises(shmring.WouldBlock):
        tx.send_nowait(msg)
    assert rx._settle(ALL) == n - 1
    assert rx._ahead_count == 0
    assert [m for _, m in rx._ahead(10, 1 << 30, 0)] == [b"b"]
    assert rx._settle(ALL) == 1


def test_settle_releases_by_key_in_order(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msgs = sent(12)
    tx.send_many(msgs)
    got = rx._ahead(100, 1 << 30, 0)
    assert [m for _, m in got] == msgs
    keys = [k for k, _ in got]
    assert keys[0] == 0 and keys == sorted(keys)
    assert rx._settle(keys[4]) == 5
    assert rx._ahead_count == 7
    assert rx._settle(keys[4]) == 0  # already settled: nothing
    assert rx._settle(keys[11] - 1) == 6
    assert rx._ahead_count == 1
    assert rx._settle(ALL) == 1
    assert rx._ahead_count == 0
    assert rx._settle(ALL) == 0
    assert slot_messages(ch, rx._slot) == 12  # the slot counts settled records


def test_max_count_and_max_bytes(kind: Kind, make: Make) -> None:
    """At most max_count, stopping before max_bytes would be exceeded but
    never returning nothing when a record is there; what is left comes next,
    in order, once."""
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msgs = sent(20, 100)  # 105 bytes each
    tx.send_many(msgs)
    out: list[bytes] = []
    out += [m for _, m in rx._ahead(3, 1 << 30, 0)]
    assert len(out) == 3
    out += [m for _, m in rx._ahead(100, 3 * 105 + 104, 0)]
    assert len(out) == 6
    out += [m for _, m in rx._ahead(100, 0, 0)]  # at least one
    assert len(out) == 7
    out += [m for _, m in rx._ahead(100, 1 << 30, 0)]
    assert out == msgs
    assert rx._ahead_count == 20
    assert rx._settle(ALL) == 20


def test_timeout_returns_empty_and_data_wakes(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    assert rx._ahead(8, 1 << 20, 0) == []
    assert rx._ahead(8, 1 << 20, timeout=0.02) == []
    tx.send(b"first")
    assert [m for _, m in rx._ahead(8, 1 << 20)] == [b"first"]
    # Waiting with records read ahead: woken by the next one only.
    t = threading.Timer(0.05, tx.send, (b"second",))
    t.start()
    try:
        assert [m for _, m in rx._ahead(8, 1 << 20, timeout=WAIT)] == [b"second"]
    finally:
        t.join()
    assert rx._settle(ALL) == 2


def test_one_record_calls_refused_while_read_ahead(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    tx.send_many([b"x", b"y", b"z"])
    assert len(rx._ahead(1, 1 << 20, 0)) == 1
    calls: list[Callable[[], object]] = [
        lambda: rx.recv(timeout=0),
        rx.recv_nowait,
        lambda: rx.recv_many(4, timeout=0),
        lambda: rx.recv_into(bytearray(16), timeout=0),
        lambda: rx.recv_view(timeout=0),
        lambda: rx.recv_obj(timeout=0),
    ]
    for call in calls:
        with pytest.raises(shmring.InvalidArgument, match="read ahead"):
            call()
    assert rx._ahead_count == 1
    assert rx._settle(ALL) == 1
    assert rx.recv(timeout=WAIT) == b"y"  # they work again, from where it was
    with rx.recv_view(timeout=WAIT) as v:
        assert bytes(v) == b"z"
        with pytest.raises(shmring.InvalidArgument, match="view is held"):
            rx._ahead(4, 1 << 20, 0)


def test_bad_arguments(kind: Kind, make: Make) -> None:
    rx = make().consumer()
    with pytest.raises(shmring.InvalidArgument, match="max_count"):
        rx._ahead(0, 100, 0)
    with pytest.raises(shmring.InvalidArgument, match="max_bytes"):
        rx._ahead(1, -1, 0)
    with pytest.raises(shmring.InvalidArgument, match="key"):
        rx._settle(-1)
    with pytest.raises(TypeError):
        rx._settle("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rx._ahead(1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        rx._ahead(1, 1, timeout=-1)


def test_end_of_stream_only_after_everything(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msgs = sent(10)
    tx.send_many(msgs)
    ch.close_send()
    got = rx._ahead(4, 1 << 30, 0)
    got += rx._ahead(100, 1 << 30, 0)  # the rest, not EndOfStream yet
    assert [m for _, m in got] == msgs
    # Read ahead but not settled does not count as left to read.
    with pytest.raises(shmring.EndOfStream):
        rx._ahead(4, 1 << 30, 0)
    assert rx._settle(got[4][0]) == 5
    with pytest.raises(shmring.EndOfStream):
        rx._ahead(4, 1 << 30, timeout=WAIT)
    assert rx._settle(ALL) == 5
    with pytest.raises(shmring.EndOfStream):
        rx.recv(timeout=WAIT)


def test_close_gives_back_what_is_unsettled(kind: Kind, make: Make) -> None:
    """Read ahead, settle half, close: the next consumer gets exactly the
    unsettled ones (a new broadcast consumer starts at the tail instead, and
    one that was there all along gets everything)."""
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    other = ch.consumer() if kind.fanout else None
    msgs = sent(16)
    tx.send_many(msgs)
    got = rx._ahead(100, 1 << 30, 0)
    assert rx._settle(got[7][0]) == 8
    assert slot_messages(ch, rx._slot) == 8
    rx.close()
    rx2 = ch.consumer()
    if kind.fanout:
        assert other is not None
        assert drain(rx2) == []
        assert drain(other) == msgs
    else:
        assert drain(rx2) == msgs[8:]
    tx.send(b"after")
    assert drain(rx2) == [b"after"]


def test_settling_wakes_a_blocked_producer(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    if kind.lossy:  # never blocked: a ring's worth more goes in while all is unsettled
        tx.send_many([b"w" * 200] * 4)
        assert len(rx._ahead(10, 1 << 30, 0)) == 4
        tx.send_many([b"v" * 200] * (CAPACITY // 200))
        assert rx._settle(ALL) == 4
        return
    n = fill(tx, b"w" * 200)
    got = rx._ahead(n, 1 << 30, 0)
    assert len(got) == n
    with pytest.raises(shmring.WouldBlock):
        tx.send_nowait(b"w" * 200)  # read ahead is not released
    done: list[bool] = []
    started = threading.Event()

    def send_late() -> None:
        started.set()
        tx.send(b"l" * 200, timeout=WAIT)
        done.append(True)

    th = threading.Thread(target=send_late)
    th.start()
    try:
        assert started.wait(WAIT)
        assert rx._settle(got[0][0]) == 1  # room for one: the waiting send goes in
        th.join(WAIT)
        assert done == [True]
    finally:
        th.join()
    assert [m for _, m in rx._ahead(10, 1 << 30, 0)] == [b"l" * 200]
    assert rx._settle(ALL) == n


def test_mpmc_records_are_taken(make_channel: Make) -> None:
    """mpmc: records read ahead are this consumer's; the others take the rest,
    and a record settled twice is not counted twice."""
    ch = make_channel("mpmc", CAPACITY)
    tx, a, b = ch.producer(), ch.consumer(), ch.consumer()
    msgs = sent(10)
    tx.send_many(msgs)
    mine = a._ahead(4, 1 << 30, 0)
    assert [m for _, m in mine] == msgs[:4]
    assert drain(b) == msgs[4:]
    assert a._settle(mine[1][0]) == 2
    a.close()  # the other two go back to the queue
    assert drain(b) == msgs[2:4]
    assert slot_messages(ch, b._slot) == 8


def test_lossy_broadcast_jumps_and_counts_missed(make_channel: Make) -> None:
    ch = make_channel("broadcast", CAPACITY, lossy=True)
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"m0")
    first = rx._ahead(4, 1 << 30, 0)
    assert [m for _, m in first] == [b"m0"]
    msgs = [b"m%d" % i + b"." * 90 for i in range(1, 200)]  # many laps
    tx.send_many(msgs)
    got = first + rx._ahead(1000, 1 << 30, 0)
    keys = [k for k, _ in got]
    assert keys == sorted(keys)
    assert keys[1] - keys[0] > CAPACITY  # jumped ahead
    assert [m for _, m in got[1:]] == msgs[-(len(got) - 1):]  # the newest, in order
    assert rx.missed == 200 - len(got)
    assert rx._settle(ALL) == len(got)


def test_untethered_reader_behaves_as_recv(make_channel: Make) -> None:
    """Lossless broadcast with slow_consumer_timeout: a reader whose records
    read ahead hold the producer back too long is untethered as a slow recv
    reader is; it reads on from the newest record, counting what it missed,
    and its settle never moves its cursor back."""
    ch = make_channel("broadcast", CAPACITY, slow_consumer_timeout=0.05)
    tx, rx = ch.producer(), ch.consumer()
    msg = b"u" * 100
    n = fill(tx, msg)
    held = rx._ahead(n, 1 << 30, 0)
    assert len(held) == n
    more = [b"v%04d" % i + b"." * 95 for i in range(3 * n)]
    for m in more:  # waits out the timeout once, then overruns the reader
        tx.send(m, timeout=WAIT)
    assert rx.untethered == 0  # told when it reads next
    got = rx._ahead(10 * n, 1 << 30, 0)
    assert rx.untethered == 1
    assert [m for _, m in got] == more[len(more) - len(got):]
    assert rx.missed == len(more) - len(got)
    assert rx._settle(ALL) == n + len(got)
    tx.send(b"after", timeout=WAIT)  # gating again, from where it is
    assert [m for _, m in rx._ahead(10, 1 << 30, 0)] == [b"after"]
    assert rx._settle(ALL) == 1
    assert 0 < fill(tx, msg) <= CAPACITY // record_bytes(100)  # gated by it again


def _ahead(rx: shmring.Consumer, n: int, nbytes: int) -> tuple[list[int], list[bytes]]:
    got = rx._ahead(n, nbytes, 0)
    return [k for k, _ in got], [m for _, m in got]


def _ahead_packed(rx: shmring.Consumer, n: int, nbytes: int) -> tuple[list[int], list[bytes]]:
    _, poss, lens, body = rx._ahead_packed(n, nbytes, 0, -1)
    ends = list(accumulate(memoryview(lens).cast("I")))
    return (list(memoryview(poss).cast("Q")),
            [body[e - k:e] for e, k in zip(ends, memoryview(lens).cast("I"), strict=True)])


@pytest.mark.parametrize("read", [_ahead, _ahead_packed], ids=["ahead", "packed"])
def test_many_laps_random_windows(kind: Kind, make: Make,
                                  read: Callable[..., tuple[list[int], list[bytes]]]) -> None:
    """Random sizes (padding at every wrap), random windows, random settles
    over many laps: every record once, in order; then recv takes over.
    ``_ahead_packed`` reads the same records, packed."""
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    rnd = random.Random(5)
    msgs = [b"%05d:" % i + payload(i, rnd.choice([0, 10, 100, 300, 700])) for i in range(3000)]
    got: list[bytes] = []
    held: list[int] = []
    sent = 0
    while len(got) < len(msgs):
        # A lossy ring is never lapped here: at most 4 records (under 3 KiB)
        # are sent and not read.
        while sent < len(msgs) and not (kind.lossy and sent - len(got) >= 4):
            try:
                tx.send_nowait(msgs[sent])
            except shmring.WouldBlock:
                break
            sent += 1
        keys, window = read(rx, rnd.randint(1, 20), rnd.choice([0, 500, 1 << 20]))
        got += window
        held += keys
        if held and (rnd.random() < 0.5 or not window):
            i = rnd.randrange(len(held))
            assert rx._settle(held[i]) == i + 1
            held = held[i + 1:]
        assert rx._ahead_count == len(held)
    assert got == msgs
    assert rx._settle(ALL) == len(held)
    assert ch.region.counter(L.OFF_TAIL) > 50 * CAPACITY
    tx.send(b"plain")
    assert rx.recv(timeout=WAIT) == b"plain"
