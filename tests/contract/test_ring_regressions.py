"""The smallest runs of the bugs the ring state machine
(test_state_machine.py) found, kept as plain regressions: each sets up the
exact ring state the machine reached, in one process, and checks the
outcome the model predicts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import shmring
from shmring import _layout as L

GARBAGE = 0xEE  # what an aborted claim holds, as in the state machine


@pytest.fixture(autouse=True)
def _unsupervised(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in the state machine: the test owns its channels' lifetimes.
    monkeypatch.setenv("SHMRING_SUPERVISOR", "0")


@pytest.fixture
def lossy(make_channel: Callable[..., shmring.Channel]) -> shmring.Channel:
    return make_channel("broadcast", 1024, lossy=True,
                        max_message=1024 // 2 - L.RECORD_HEADER)


def test_lossy_newest_record_being_overwritten_is_not_a_hang(lossy: shmring.Channel) -> None:
    """A claim that overwrites the newest record: readers behind it used to
    jump to it and back forever (holding the GIL); now there is nothing."""
    tx, rx = lossy.producer(), lossy.consumer()
    tx.send(b"a" * 480)  # record of 496 bytes
    tx.send(b"b" * 16)  # the newest record, at 496
    assert rx.recv_nowait() == b"a" * 480
    claim = tx.claim(496)  # pads from 528 to the end, then overwrites 0..512
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()
    with pytest.raises(shmring.Timeout):
        rx.recv(timeout=0.01)
    claim.view[:] = b"c" * 496
    claim.commit()
    assert rx.recv_nowait() == b"c" * 496
    assert rx.missed == 1


def test_lossy_aborted_claim_is_never_read(lossy: shmring.Channel) -> None:
    """Bytes an aborted claim wrote must not come back as a message after a
    smaller claim lowered the overwrite mark."""
    tx, rx = lossy.producer(), lossy.consumer()
    sent = [bytes([65 + i]) * 112 for i in range(13)]  # records of 128 bytes
    for m in sent[:8]:
        tx.send(m)
    for m in sent[:6]:
        assert rx.recv_nowait() == m  # the reader is at 768
    for m in sent[8:]:
        tx.send(m)  # the producer is at 1664
    claim = tx.claim(496)  # wraps; writes ring bytes 16..512 (records 1024..1536)
    claim.view[:] = bytes([GARBAGE]) * 496
    claim.abort()
    tx.send(b"Z" * 112)
    got = []
    with pytest.raises(shmring.WouldBlock):
        while True:
            got.append(rx.recv_nowait())
    assert all(g in sent or g == b"Z" * 112 for g in got), got
    assert got[-1] == b"Z" * 112
    assert rx.missed == 14 - 6 - len(got)


def test_lossy_join_after_prefix_commit_counts_missed(lossy: shmring.Channel) -> None:
    """A consumer that joins after a partly committed claim still counts
    exactly what it missed."""
    tx = lossy.producer()
    claim = tx.claim(100)
    claim.view[:10] = b"q" * 10
    claim.commit(10)  # a message, then padding up to the tail
    rx = lossy.consumer()
    for i in range(20):
        tx.send(b"%03d" % i + b"." * 97)
    assert rx.recv_nowait().startswith(b"019")
    assert rx.missed == 19


def test_lossy_join_while_newest_is_overwritten_counts_missed(lossy: shmring.Channel) -> None:
    """A consumer that joins while a claim overwrites the newest record
    still counts exactly what it missed (it used to count nothing)."""
    tx = lossy.producer()
    for n in (0, 0, 495):
        tx.send(b"m" * n)
    claim = tx.claim(495)  # wraps over the newest record
    rx = lossy.consumer()
    claim.abort()
    for n in (0, 0, 0, 0, 401, 495):
        tx.send(b"n" * n)
    assert rx.recv_nowait() == b"n" * 495
    assert rx.missed == 5


def test_mpmc_exactly_full_ring_is_empty_not_corrupt(
        make_channel: Callable[..., shmring.Channel]) -> None:
    """A full ring whose head record is held: read_claim meets the tail on
    that record's bytes, a lap older. Empty, not CorruptRegion."""
    ch = make_channel(capacity=1024, pattern="mpmc")
    tx, a, b = ch.producer(), ch.consumer(), ch.consumer()
    for _ in range(8):
        tx.send(b"x" * 112)  # exactly full
    view = a.recv_view()
    for _ in range(7):
        b.recv_nowait()
    with pytest.raises(shmring.WouldBlock):
        b.recv_nowait()
    with pytest.raises(shmring.Timeout):
        b.recv(timeout=0.01)
    view.release()
    tx.send_nowait(b"y")
    assert b.recv_nowait() == b"y"


def test_mpmc_consumer_closed_holding_a_view_gives_it_back(
        make_channel: Callable[..., shmring.Channel]) -> None:
    """Closing an mpmc consumer that holds a record hands the record to the
    others; it used to stay taken: lost, and the ring wedged behind it."""
    ch = make_channel(capacity=1024, pattern="mpmc")
    tx, a, b = ch.producer(), ch.consumer(), ch.consumer()
    tx.send(b"one")
    tx.send(b"two")
    view = a.recv_view()
    assert bytes(view.view) == b"one"
    a.close()
    assert sorted(b.recv_many(8, timeout=0)) == [b"one", b"two"]
    for i in range(64):  # many times round: nothing wedges
        tx.send_nowait(b"%d" % i + b"." * 100)
        assert b.recv_nowait().startswith(b"%d." % i)
