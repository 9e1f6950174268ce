"""Consumers that read ahead and die: real children, real SIGKILLs.

A consumer holding many records read ahead (``_ahead``) and not settled
(``_settle``) loses none of them when it is killed: spsc and mpsc keep head
at the oldest unsettled record, so the next consumer reads them again; on
mpmc, recovery (``Channel.recover_dead()`` here, the supervisor's reap in
the supervised test) hands back every record the dead slot had taken.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
import read_ahead_util
from channel_util import drain
from pattern_util import patterns

import shmring

CTX = get_context("fork")
WAIT = 10.0  # bound on any wait expected to succeed
ALL = 2**64 - 1


@pytest.fixture
def spawn() -> Iterator[Callable[..., BaseProcess]]:
    """Starts forked children; any still running at the end is killed."""
    procs: list[BaseProcess] = []

    def _spawn(target: Callable[..., None], *args: Any) -> BaseProcess:
        p = CTX.Process(target=target, args=args, daemon=True)
        p.start()
        procs.append(p)
        return p

    yield _spawn
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)


def kill(p: BaseProcess) -> None:
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join(WAIT)
    assert p.exitcode == -signal.SIGKILL


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
    25 unsettled ones, in order, and the ring flows on."""
    ch = make_channel(pattern, 8192, supervised=False)
    tx = ch.producer()
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
