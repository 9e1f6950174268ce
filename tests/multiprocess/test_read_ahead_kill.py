"""Consumers that read ahead and die: real children, real SIGKILLs.

A consumer holding many records read ahead (``_ahead``) and not settled
(``_settle``) loses none of them when it is killed: spsc and mpsc keep head
at the oldest unsettled record, so the next consumer reads them again; on
mpmc, recovery (``Channel.recover_dead()`` here, the supervisor's reap in
the supervised test) hands back every record the dead slot had taken.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
import read_ahead_util
from channel_util import drain
from forked_util import kill as _kill
from forked_util import spawn_fixture  # noqa: F401  (the fixture)
from pattern_util import patterns
from supervisor_util import Env, FakeClock, clocked_supervisor

import shmring
from shmring._errors import LeaseRevoked

CTX = get_context("fork")
WAIT = 10.0  # bound on any wait expected to succeed
ALL = 2**64 - 1




def kill(p: BaseProcess) -> None:
    """SIGKILL ``p`` and wait for it (forked_util.kill, with this file's WAIT)."""
    _kill(p, WAIT)


def read_ahead_then_wait(name: str, supervised: bool, n: int, settle: int, ready: Event,
                         report: Queue[list[bytes]]) -> None:
    """Reads n records ahead, settles the first `settle`, then waits to die."""
    ch = shmring.Channel.open(name, supervised=supervised)
    rx = ch.consumer()
    got: list[tuple[int, bytes]] = []
    while len(got) < n:
        got += rx._ahead(n - len(got), 1 << 30, timeout=WAIT)
    assert rx._settle(got[settle - 1][0]) == settle
    report.put([m for _, m in got])
    ready.set()
    time.sleep(60)


@pytest.mark.parametrize("pattern", patterns(fan_out=False))
def test_killed_with_records_read_ahead(make_channel: Callable[..., shmring.Channel],
                                        spawn: Callable[..., BaseProcess], uname: str,
                                        pattern: str) -> None:
    """Read ahead 40, settle 15, SIGKILL: the next consumer gets exactly the
    25 unsettled ones, in order, and the ring flows on. The 40 span the end
    of the ring (padding read past, not yet settled)."""
    ch = make_channel(pattern, 8192, supervised=False)
    tx = ch.producer()
    first = ch.consumer()
    for _ in range(58):  # tail to 58 * 128 = 7424: 768 bytes before the end
        tx.send(b"f" * 100)
        assert drain(first) == [b"f" * 100]
    first.close()
    msgs = [b"ra-%03d-" % i + b"x" * (i % 50) for i in range(40)]
    tx.send_many(msgs)
    ready, report = CTX.Event(), CTX.Queue()
    child = spawn(read_ahead_then_wait, uname, False, 40, 15, ready, report)
    assert ready.wait(WAIT), f"child never got ready (exit code {child.exitcode})"
    assert report.get(timeout=WAIT) == msgs
    kill(child)
    assert ch.recover_dead() >= 1
    rx = ch.consumer()
    assert drain(rx) == msgs[15:]
    for i in range(300):  # many laps on
        tx.send(b"after-%d" % i + b"y" * 100, timeout=WAIT)
        assert drain(rx) == [b"after-%d" % i + b"y" * 100]


def test_supervisor_hands_back_every_record_read_ahead(
        make_channel: Callable[..., shmring.Channel], spawn: Callable[..., BaseProcess],
        uname: str) -> None:
    """mpmc, supervised: the supervisor's reap of the killed consumer hands
    its 30 unsettled records to a consumer that waits in recv."""
    ch = make_channel("mpmc", 8192)
    tx = ch.producer()
    msgs = [b"sv-%03d" % i for i in range(50)]
    tx.send_many(msgs)
    ready, report = CTX.Event(), CTX.Queue()
    child = spawn(read_ahead_then_wait, uname, True, 50, 20, ready, report)
    assert ready.wait(WAIT), f"child never got ready (exit code {child.exitcode})"
    assert report.get(timeout=WAIT) == msgs
    rx = ch.consumer()
    assert drain(rx) == []  # all 30 are the child's
    kill(child)
    got = [rx.recv(timeout=WAIT)]  # woken by the supervisor's hand-back
    deadline = time.monotonic() + WAIT
    while len(got) < 30 and time.monotonic() < deadline:
        got += rx.recv_many(30, timeout=WAIT)
    assert sorted(got) == msgs[20:]
    assert drain(rx) == []


def test_mpmc_many_outstanding_killed_at_random(make_channel: Callable[..., shmring.Channel],
                                                uname: str, tmp_path: Path) -> None:
    """Consumers that hold up to ~200 records read ahead are killed at random
    points (40 of them) while a live consumer takes records too; after
    recovery every record was delivered exactly once, counting the ones the
    dead settled."""
    ch = make_channel("mpmc", 1 << 18, supervised=False)
    o = read_ahead_util.storm(ch, uname, tmp_path, seed=17, total=12000, rounds=40)
    assert o.settled > 100 and o.received > 100  # both sides took part


def test_leases_of_records_read_ahead(env: Env, clock: FakeClock, uname: str) -> None:
    """mpmc: records read ahead past the lease (no settle meanwhile) are
    handed to the other consumers, every one of them; the holder's settle
    settles the rest and then raises LeaseRevoked, and a record is never
    consumed twice."""
    with clocked_supervisor(env, clock, lease_timeout=5.0) as sup:
        ch = shmring.Channel.create(uname, capacity=8192, pattern="mpmc")
        try:
            tx, rx, other = ch.producer(), ch.consumer(), ch.consumer()
            msgs = [b"ls-%02d" % i for i in range(10)]
            tx.send_many(msgs)
            got = rx._ahead(10, 1 << 20, 0)
            assert rx._settle(got[2][0]) == 3
            sup.call(sup.leases.check)
            clock.advance(6.0)
            sup.call(sup.leases.check)  # held unchanged past the lease: all 7 go
            assert sup.call(lambda: sup.stats["leases"]) == 7
            assert rx.leases_revoked == 7
            assert sorted(drain(other)) == msgs[3:]
            tx.send_many([b"new-0", b"new-1"])
            assert [m for _, m in rx._ahead(10, 1 << 20, 0)] == [b"new-0", b"new-1"]
            assert rx._ahead_count == 9
            with pytest.raises(LeaseRevoked):
                rx._settle(ALL)  # the two new ones are settled all the same
            assert rx._ahead_count == 0
            assert drain(other) == []
            (mine,) = [s.messages for s in ch.region.slots() if s.index == rx._slot]
            assert mine == 5
        finally:
            ch.close()
            ch.unlink()


def close_and_exit(ch: shmring.Channel) -> None:
    ch.close()  # the parent's endpoints, inherited: only this process's hold goes
    os._exit(0)


def test_forked_child_closing_gives_back_nothing(make_channel: Callable[..., shmring.Channel],
                                                 spawn: Callable[..., BaseProcess]) -> None:
    """mpmc: a forked child that closes its copy of the parent's consumer
    does not hand back the records the parent holds read ahead."""
    ch = make_channel("mpmc", 8192, supervised=False)
    tx, rx, other = ch.producer(), ch.consumer(), ch.consumer()
    msgs = [b"fk-%02d" % i for i in range(12)]
    tx.send_many(msgs)
    got = rx._ahead(12, 1 << 20, 0)
    assert [m for _, m in got] == msgs
    child = spawn(close_and_exit, ch)
    child.join(WAIT)
    assert child.exitcode == 0
    assert drain(other) == []
    assert rx._settle(ALL) == 12
    rx.close()  # nothing left to give back
    assert drain(other) == []
