"""``ConsumerCore._ahead_packed``, every pattern, one process: the records
``_ahead`` would read, packed as a bridge's DATA batch carries them (u64
keys, u64 positions, u32 lengths, the payloads back to back), held the same
way until ``_settle``. (test_read_ahead.py's random laps run both ways.)"""

from __future__ import annotations

from itertools import accumulate

import pytest
from channel_util import CAPACITY, WAIT, Kind, Make, fill, payload, record_bytes

import shmring

ALL = 2**64 - 1


def unpack(got: tuple[bytearray, bytearray, bytearray, bytes]
           ) -> tuple[list[int], list[int], list[bytes]]:
    """(keys, positions, payloads) of one call's result."""
    keys, poss, lens, body = got
    ks, ps, ls = (list(memoryview(keys).cast("Q")), list(memoryview(poss).cast("Q")),
                  list(memoryview(lens).cast("I")))
    assert len(ks) == len(ps) == len(ls)
    ends = list(accumulate(ls))
    assert (ends[-1] if ends else 0) == len(body)
    return ks, ps, [body[e - n:e] for e, n in zip(ends, ls, strict=True)]


def test_packed_is_what_ahead_reads_keyed_both_ways(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msgs = [b"%03d:" % i + payload(i, 7 * i % 90) for i in range(30)]
    tx.send_many(msgs)
    keys, poss, got = unpack(rx._ahead_packed(10, 1 << 30, 0, -1))
    assert got == msgs[:10]
    assert keys == [p + 1 for p in poss]  # ordered streams: position + 1
    assert poss == sorted(poss) and len(set(poss)) == 10
    keys2, poss2, got2 = unpack(rx._ahead_packed(100, 1 << 30, 0, 41))
    assert got2 == msgs[10:]
    assert keys2 == list(range(42, 42 + 20))  # counted: an mpmc stream's seqs
    assert poss2[0] > poss[-1]
    assert rx._ahead_count == 30
    assert unpack(rx._ahead_packed(5, 1 << 30, 0, -1)) == ([], [], [])  # nothing, no wait
    assert rx._settle(poss[4]) == 5
    assert rx._settle(ALL) == 25
    assert rx._ahead_count == 0


def test_max_count_and_max_bytes(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    msgs = [b"%04d:" % i + payload(i, 100) for i in range(20)]  # 105 bytes each
    tx.send_many(msgs)
    out: list[bytes] = []
    out += unpack(rx._ahead_packed(3, 1 << 30, 0, -1))[2]
    assert len(out) == 3
    out += unpack(rx._ahead_packed(100, 3 * 105 + 104, 0, -1))[2]
    assert len(out) == 6
    out += unpack(rx._ahead_packed(100, 0, 0, -1))[2]  # at least one
    assert len(out) == 7
    out += unpack(rx._ahead_packed(100, 1 << 30, 0, -1))[2]
    assert out == msgs
    assert rx._settle(ALL) == 20


def test_end_of_stream_only_after_everything(kind: Kind, make: Make) -> None:
    ch = make()
    tx, rx = ch.producer(), ch.consumer()
    tx.send_many([b"a", b"bb"])
    ch.close_send()
    assert unpack(rx._ahead_packed(10, 1 << 30, WAIT, -1))[2] == [b"a", b"bb"]
    with pytest.raises(shmring.EndOfStream):
        rx._ahead_packed(10, 1 << 30, WAIT, -1)
    assert rx._settle(ALL) == 2


def test_bad_arguments(kind: Kind, make: Make) -> None:
    rx = make().consumer()
    with pytest.raises(shmring.InvalidArgument):
        rx._ahead_packed(0, 10, 0, -1)
    with pytest.raises(shmring.InvalidArgument):
        rx._ahead_packed(1, -1, 0, -1)
    with pytest.raises(TypeError):
        rx._ahead_packed(1, 10, 0)  # type: ignore[call-arg]


def test_lossy_broadcast_jumps_and_counts_missed(make_channel: Make) -> None:
    ch = make_channel("broadcast", CAPACITY, lossy=True)
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"m0")
    assert unpack(rx._ahead_packed(4, 1 << 30, 0, -1))[2] == [b"m0"]
    msgs = [b"m%d" % i + b"." * 90 for i in range(1, 200)]  # many laps
    tx.send_many(msgs)
    keys, _, got = unpack(rx._ahead_packed(1000, 1 << 30, 0, -1))
    assert keys == sorted(keys)
    assert got == msgs[-len(got):]  # the newest, in order
    assert rx.missed == 199 - len(got)
    assert rx._settle(ALL) == 1 + len(got)


def test_a_large_record_comes_whole_and_alone(kind: Kind, make: Make) -> None:
    """Over max_bytes alone, and large enough to be copied with the GIL
    released: whole, by itself; its room comes back once settled."""
    ch = make(capacity=1 << 21, max_message=400_000)
    big = payload(3, 300_000)
    tx, rx = ch.producer(), ch.consumer()
    tx.send(big)
    tx.send(b"small")
    _, _, got = unpack(rx._ahead_packed(10, 100, 0, -1))
    assert got == [big]
    assert unpack(rx._ahead_packed(10, 100, 0, -1))[2] == [b"small"]
    assert rx._settle(ALL) == 2
    if not kind.lossy:
        assert fill(tx, big) == (1 << 21) // record_bytes(300_000)


def test_inplace_records_come_alone_as_views_of_the_ring(kind: Kind, make: Make) -> None:
    """``inplace``: a record at least that long comes by itself, its body a
    read-only view of it in the mapping (no copy), which stays readable
    while the record is held, the channel closed or not (the view keeps the
    mapping); where records can change under a reader (lossy broadcast) it
    is copied and packed as before."""
    ch = make(capacity=1 << 21, max_message=400_000)
    big = payload(5, 300_000)
    tx, rx = ch.producer(), ch.consumer()
    tx.send_many([b"one", b"two"])
    tx.send(big)
    tx.send(b"after")
    if kind.lossy:
        assert unpack(rx._ahead_packed(10, 1 << 30, 0, -1, 256_000))[2] == [
            b"one", b"two", big, b"after"]
        assert rx._settle(ALL) == 4
        return
    _, first, got = unpack(rx._ahead_packed(10, 1 << 30, 0, -1, 256_000))
    assert got == [b"one", b"two"]
    keys, poss, lens, body = rx._ahead_packed(10, 1 << 30, 0, -1, 256_000)
    assert list(memoryview(lens).cast("I")) == [300_000]
    assert list(memoryview(keys).cast("Q")) == [p + 1 for p in memoryview(poss).cast("Q")]
    assert isinstance(body, memoryview) and body.readonly and body == big
    with pytest.raises(TypeError):
        body[0] = 0  # type: ignore[index]
    assert unpack(rx._ahead_packed(10, 1 << 30, 0, -1, 256_000))[2] == [b"after"]
    assert unpack(rx._ahead_packed(10, 1 << 30, 0, -1, 0))[2] == []  # 0: never in place
    assert rx._settle(first[-1]) == 2  # one, two; big still held
    ch.close()
    assert body == big  # held, so not reused; mapped, as the view keeps the mapping
    body.release()


def test_inplace_is_copied_on_an_untethering_channel(make_channel: Make) -> None:
    """A lossless broadcast reader that may be untethered validates its
    copies: a record there can be overwritten under it, so it is copied."""
    ch = make_channel("broadcast", 1 << 21, max_message=400_000, slow_consumer_timeout=5.0)
    tx, rx = ch.producer(), ch.consumer()
    big = payload(6, 300_000)
    tx.send(big)
    _, _, _, body = rx._ahead_packed(10, 1 << 30, 0, -1, 256_000)
    assert isinstance(body, bytes) and body == big
    assert rx._settle(ALL) == 1


def test_inplace_bad_argument(kind: Kind, make: Make) -> None:
    rx = make().consumer()
    with pytest.raises(shmring.InvalidArgument, match="inplace"):
        rx._ahead_packed(1, 10, 0, -1, -1)
