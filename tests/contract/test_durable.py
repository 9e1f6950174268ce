"""Durable broadcast subscriptions (``Channel._durable_consumer(tag, hold)``):
the slot of a dead subscriber is kept as an orphan that gates the producer
for ``hold`` seconds, and a process asking for the same tag adopts it and
reads on from its cursor.

The subscriber that dies is a forked child that exits without closing
(``os._exit``: its slot stays taken by a dead pid, as after a crash); the
channels are unsupervised, so only ``Channel.recover_dead()`` (``reap_dead``)
recovers, and each step is observed exactly. The supervisor's side and
SIGKILL are in tests/multiprocess/test_durable_kill.py.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import pytest
from channel_util import drain, fill
from forked_util import spawn_fixture  # noqa: F401  (the fixture)

import shmring
from shmring import _layout as L
from shmring._errors import InvalidArgument, RoleTaken

CTX = get_context("fork")
WAIT = 10.0
TAG = 0x5EED_0000_0000_0001
HOLD = 30.0
MSG = b"d" * 100  # 128 ring bytes a record
Make = Callable[..., shmring.Channel]




def subscribe_read_settle_exit(name: str, tag: int, hold: float, n: int, settle: int,
                               joined: Event, report: Queue[list[bytes]]) -> None:
    """Joins as durable subscriber ``tag``, reads ``n`` records ahead,
    settles the first ``settle``, reports what it read and exits without
    closing (its slot stays, held by a dead pid)."""
    ch = shmring.Channel.open(name, supervised=False)
    rx = ch._durable_consumer(tag, hold)
    joined.set()
    got: list[tuple[int, bytes]] = []
    while len(got) < n:
        got += rx._ahead(n - len(got), 1 << 30, timeout=WAIT)
    if settle:
        assert rx._settle(got[settle - 1][0]) == settle
    report.put([m for _, m in got])
    report.close()
    report.join_thread()  # flushed before the exit that skips every cleanup
    os._exit(0)


def ask(name: str, tag: int, report: Queue[str], done: Event | None = None) -> None:
    """Asks for durable subscription ``tag``; reports the outcome, then
    (if given ``done``) stays alive until it is set."""
    ch = shmring.Channel.open(name, supervised=False)
    try:
        ch._durable_consumer(tag, HOLD)
        report.put("joined")
    except RoleTaken as e:
        report.put(f"RoleTaken {e.pid}")
    report.close()
    report.join_thread()
    if done is not None:
        done.wait(WAIT)
    os._exit(0)


def dead_subscriber(make_channel: Make, spawn: Callable[..., BaseProcess], uname: str,
                    msgs: list[bytes], settle: int, *, tag: int = TAG, hold: float = HOLD,
                    capacity: int = 4096) -> tuple[shmring.Channel, shmring.Producer]:
    """A lossless broadcast channel whose durable subscriber ``tag`` read
    ``msgs`` ahead, settled ``settle`` of them and died; nobody recovered it
    yet."""
    ch = make_channel("broadcast", capacity, supervised=False)
    tx = ch.producer()
    joined, report = CTX.Event(), CTX.Queue()
    child = spawn(subscribe_read_settle_exit, uname, tag, hold, len(msgs), settle, joined,
                  report)
    assert joined.wait(WAIT), f"child never joined (exit code {child.exitcode})"
    tx.send_many(msgs)
    assert report.get(timeout=WAIT) == msgs
    child.join(WAIT)
    assert child.exitcode == 0
    return ch, tx


def ungated(tx: shmring.Producer) -> None:
    """100 records go into the 32-record ring at once: nobody gates it."""
    for _ in range(100):
        tx.send_nowait(MSG)


def numbered(n: int, size: int = 100) -> list[bytes]:
    return [(b"%05d-" % i).ljust(size, b"x") for i in range(n)]


def test_orphan_keeps_gating_and_adoption_keeps_the_cursor(
        make_channel: Make, spawn: Callable[..., BaseProcess], uname: str) -> None:
    """The ring is full of the dead subscriber's 32 records, 10 settled:
    after recovery its slot is an orphan, so the producer has room for
    exactly the 10 settled; the adopter then gets the 22 unsettled and the
    10 new, in order, nothing before."""
    msgs = numbered(32)  # 32 * 128 = 4096: the whole ring
    ch, tx = dead_subscriber(make_channel, spawn, uname, msgs, 10)
    assert ch.recover_dead() == 1
    assert ch._orphans() == 1 and ch.consumers == 0
    (info,) = [s for s in ch.region.slots() if s.role == "consumer"]
    assert info.orphan and info.pid > 0
    assert ch.recover_dead() == 0  # nothing more to do: held, not due
    more = numbered(10)
    assert fill(tx, more[0]) == 10  # gated by the orphan's cursor
    with pytest.raises(shmring.Timeout, match="durable subscription is held"):
        tx.send(more[0], timeout=0.05)
    rx = ch._durable_consumer(TAG, HOLD)
    assert ch._orphans() == 0 and ch.consumers == 1
    assert rx._slot == info.index  # the orphan's slot, taken over
    assert drain(rx) == msgs[10:] + [more[0]] * 10
    for i in range(100):  # laps on, gated by the adopter now
        tx.send(b"after-%d" % i, timeout=WAIT)
        assert rx.recv(timeout=WAIT) == b"after-%d" % i
    rx.close()


def test_adoption_reads_ahead_and_settles_on(make_channel: Make,
                                             spawn: Callable[..., BaseProcess],
                                             uname: str) -> None:
    """The adopter reads ahead from the dead one's oldest unsettled record
    (the records span the end of the ring), and its settles free room."""
    ch = make_channel("broadcast", 4096, supervised=False)
    tx = ch.producer()
    warm = ch.consumer()
    for _ in range(25):  # tail to 25 * 128: the records below wrap
        tx.send(MSG)
    warm.close()
    msgs = numbered(20)
    joined, report = CTX.Event(), CTX.Queue()
    child = spawn(subscribe_read_settle_exit, uname, TAG, HOLD, 20, 7, joined, report)
    assert joined.wait(WAIT)
    tx.send_many(msgs)
    assert report.get(timeout=WAIT) == msgs
    child.join(WAIT)
    # Not recovered by anyone yet: the asker recovers the dead holder itself.
    rx = ch._durable_consumer(TAG, HOLD)
    got = rx._ahead(100, 1 << 30, 0)
    assert [m for _, m in got] == msgs[7:]
    assert rx._settle(got[-1][0]) == 13
    assert fill(tx, MSG) == 4096 // 128
    rx.close()


def test_a_wrong_tag_joins_at_the_newest_and_the_orphan_still_gates(
        make_channel: Make, spawn: Callable[..., BaseProcess], uname: str) -> None:
    msgs = numbered(32)
    ch, tx = dead_subscriber(make_channel, spawn, uname, msgs, 4)
    ch.recover_dead()
    other = ch._durable_consumer(TAG + 1, HOLD)
    assert drain(other) == []  # at the newest record
    assert ch._orphans() == 1  # not taken
    assert fill(tx, MSG) == 4  # still gated by the orphan
    assert drain(other) == [MSG] * 4
    rx = ch._durable_consumer(TAG, HOLD)  # the right tag still adopts it
    assert drain(rx) == msgs[4:] + [MSG] * 4
    other.close()
    rx.close()


def test_hold_expiry_frees_the_orphan(make_channel: Make,
                                      spawn: Callable[..., BaseProcess], uname: str) -> None:
    """Past its hold, reap_dead frees the orphan: the producer goes on, and
    the tag then joins at the newest record."""
    msgs = numbered(32)
    ch, tx = dead_subscriber(make_channel, spawn, uname, msgs, 0, hold=0.2)
    t0 = time.monotonic_ns()
    assert ch.recover_dead() == 1 and ch._orphans() == 1
    assert ch.region.expire_orphans(t0) == 0  # not yet
    assert fill(tx, MSG) == 0
    assert ch.region.expire_orphans(t0 + 10**9) == 1
    assert ch._orphans() == 0 and ch.region.slots() == [
        s for s in ch.region.slots() if s.role != "consumer"]
    ungated(tx)  # nobody gates it
    rx = ch._durable_consumer(TAG, 0.2)
    assert drain(rx) == []
    rx.close()


def test_reap_dead_expires_on_its_own(make_channel: Make,
                                      spawn: Callable[..., BaseProcess], uname: str) -> None:
    ch, tx = dead_subscriber(make_channel, spawn, uname, numbered(32), 0, hold=0.05)
    assert ch.recover_dead() == 1
    deadline = time.monotonic() + WAIT
    while ch._orphans() and time.monotonic() < deadline:
        time.sleep(0.01)  # polls reap_dead until the hold (0.05 s) has passed
        ch.recover_dead()
    assert ch._orphans() == 0
    ungated(tx)


def test_hold_zero_is_an_ordinary_consumer(make_channel: Make,
                                           spawn: Callable[..., BaseProcess],
                                           uname: str) -> None:
    ch, tx = dead_subscriber(make_channel, spawn, uname, numbered(32), 3, hold=0)
    assert ch.recover_dead() == 1
    assert ch._orphans() == 0
    ungated(tx)  # freed at once
    rx = ch._durable_consumer(TAG, 0)
    assert drain(rx) == []
    rx.close()


def test_two_live_takers(make_channel: Make, spawn: Callable[..., BaseProcess],
                         uname: str) -> None:
    """While a live process holds the tag, another process (or the same one)
    gets RoleTaken naming it; after an orderly close the tag is free (and
    starts at the newest record: a close ends the subscription)."""
    ch = make_channel("broadcast", 4096, supervised=False)
    tx = ch.producer()
    rx = ch._durable_consumer(TAG, HOLD)
    with pytest.raises(RoleTaken) as err:
        ch._durable_consumer(TAG, HOLD)
    assert err.value.pid == os.getpid()
    report: Queue[str] = CTX.Queue()
    child = spawn(ask, uname, TAG, report)
    assert report.get(timeout=WAIT) == f"RoleTaken {os.getpid()}"
    child.join(WAIT)
    tx.send(b"one")
    rx.close()
    assert ch._orphans() == 0
    again = ch._durable_consumer(TAG, HOLD)
    assert drain(again) == []
    tx.send(b"two")
    assert drain(again) == [b"two"]
    again.close()


def test_two_processes_race_for_one_orphan(make_channel: Make,
                                           spawn: Callable[..., BaseProcess],
                                           uname: str) -> None:
    """Two processes ask for the orphan's tag at once: one adopts it, the
    other gets RoleTaken."""
    ch, _tx = dead_subscriber(make_channel, spawn, uname, numbered(32), 5)
    ch.recover_dead()
    report: Queue[str] = CTX.Queue()
    done = CTX.Event()
    kids = [spawn(ask, uname, TAG, report, done) for _ in range(2)]
    outcomes = sorted(report.get(timeout=WAIT) for _ in kids)
    done.set()
    for k in kids:
        k.join(WAIT)
    assert outcomes[0].split()[0] == "RoleTaken"
    assert int(outcomes[0].split()[1]) in {k.pid for k in kids}
    assert outcomes[1] == "joined"
    # The winner exited without closing: its slot is an orphan again.
    ch.recover_dead()
    assert ch._orphans() == 1
    rx = ch._durable_consumer(TAG, HOLD)
    assert len(drain(rx)) == 27
    rx.close()


@pytest.mark.parametrize("tag, hold", [(-1, 1.0), (1 << 64, 1.0), (1.5, 1.0), (True, 1.0),
                                       (1, -1.0), (1, math.nan), (1, math.inf), (1, "1")])
def test_bad_arguments(make_channel: Make, tag: Any, hold: Any) -> None:
    ch = make_channel("broadcast", 4096, supervised=False)
    with pytest.raises(InvalidArgument):
        ch._durable_consumer(tag, hold)


@pytest.mark.parametrize("pattern, lossy", [("spsc", False), ("mpsc", False),
                                            ("mpmc", False), ("broadcast", True)])
def test_only_lossless_broadcast(make_channel: Make, pattern: str, lossy: bool) -> None:
    ch = make_channel(pattern, 4096, lossy=lossy, supervised=False)
    with pytest.raises(InvalidArgument, match="lossless broadcast"):
        ch._durable_consumer(TAG, HOLD)


def test_layout_words_of_a_durable_slot(make_channel: Make) -> None:
    """The tag and hold sit in the slot (layout.h, DURABLE); the link words
    a pipeline's recovery looks at stay zero."""
    ch = make_channel("broadcast", 4096, supervised=False)
    rx = ch._durable_consumer(TAG, 2.5)
    buf = ch.region._mapping()
    so = L.slot_offset(rx._slot)
    from shmring import _core

    assert _core.load(buf, so + L.SLOT_DURABLE_TAG) == TAG
    assert _core.load(buf, so + L.SLOT_DURABLE_HOLD) == 2_500_000_000
    assert _core.load(buf, so + L.SLOT_DURABLE_UNTIL) == 0
    assert _core.load(buf, so + L.SLOT_LINK_IN) == 0
    assert not ch.region.table.links_input(rx._slot)
    rx.close()


def test_inspect_shows_a_held_orphan(make_channel: Make, spawn: Callable[..., BaseProcess],
                                     uname: str, capsys: pytest.CaptureFixture[str]) -> None:
    from shmring._cli.main import main

    ch, _tx = dead_subscriber(make_channel, spawn, uname, numbered(32), 3)
    ch.recover_dead()
    (info,) = [s for s in ch.region.slots() if s.orphan]
    assert main(["inspect", uname]) == 0
    row = next(x for x in capsys.readouterr().out.splitlines()
               if x.split()[:1] == [str(info.index)] and "consumer" in x)
    assert str(info.pid) in row.split() and "NO (held)" in row


def test_leave_keeps_the_subscription_held(make_channel: Make) -> None:
    """``Channel._leave`` closes a durable subscriber but holds its slot as a
    death would: the producer stays gated at its oldest unsettled record,
    and the next asker (this process too) reads on from there."""
    ch = make_channel("broadcast", 4096, supervised=False)
    tx = ch.producer()
    rx = ch._durable_consumer(TAG, HOLD)
    msgs = numbered(32)
    tx.send_many(msgs)
    got = rx._ahead(32, 1 << 30, 0)
    assert rx._settle(got[2][0]) == 3
    assert ch._leave(rx)
    assert rx.closed and ch._orphans() == 1 and ch.consumers == 0
    assert fill(tx, MSG) == 3
    again = ch._durable_consumer(TAG, HOLD)
    assert drain(again) == msgs[3:] + [MSG] * 3
    assert not ch._leave(ch.consumer())  # not durable: a plain close
    again.close()
    assert ch._orphans() == 0


def test_left_subscription_expires(make_channel: Make) -> None:
    ch = make_channel("broadcast", 4096, supervised=False)
    tx = ch.producer()
    rx = ch._durable_consumer(TAG, 0.5)
    tx.send_many(numbered(32))
    assert ch._leave(rx)
    assert ch.region.expire_orphans() == 0
    assert ch.region.expire_orphans(time.monotonic_ns() + 10**9) == 1
    ungated(tx)
