"""Durable broadcast subscriptions with real SIGKILLs and the real
supervisor: a subscriber killed with records read ahead and not settled is
held as an orphan (the producer waits for it), and the next process asking
for its tag gets exactly the unsettled records; an orphan nobody adopts is
freed by the supervisor once its hold has passed.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
from channel_util import drain
from durable_util import TAG, keep_sending, relay
from forked_util import kill as _kill
from forked_util import spawn_fixture  # noqa: F401  (the fixture)

import shmring

CTX = get_context("fork")
WAIT = 20.0
Make = Callable[..., shmring.Channel]




def kill(p: BaseProcess) -> None:
    """SIGKILL ``p`` and wait for it (forked_util.kill, with this file's WAIT)."""
    _kill(p, WAIT)


def wait_for(what: str, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def read_ahead_and_wait(name: str, hold: float, n: int, settle: int, joined: Event,
                        report: Queue[list[bytes]]) -> None:
    """Durable subscriber: reads ``n`` ahead, settles ``settle``, reports,
    then waits to be killed."""
    ch = shmring.Channel.open(name)
    rx = ch._durable_consumer(TAG, hold)
    joined.set()
    got: list[tuple[int, bytes]] = []
    while len(got) < n:
        got += rx._ahead(n - len(got), 1 << 30, timeout=WAIT)
    assert rx._settle(got[settle - 1][0]) == settle
    report.put([m for _, m in got])
    time.sleep(60)


def adopt_and_report(name: str, hold: float, report: Queue[list[bytes]]) -> None:
    """Another process: asks for the tag and reports everything it reads."""
    ch = shmring.Channel.open(name)
    rx = ch._durable_consumer(TAG, hold)
    report.put(drain(rx))
    rx.close()
    ch.close()


def test_killed_subscriber_is_adopted_with_exactly_its_unsettled_records(
        make_channel: Make, spawn: Callable[..., BaseProcess], uname: str) -> None:
    """40 records read ahead (across the end of the ring), 15 settled,
    SIGKILL: the supervisor holds the slot as an orphan (the producer has
    room for the 15 only), and a new process gets the other 25 and what was
    sent after, nothing twice."""
    ch = make_channel("broadcast", 8192)
    tx = ch.producer()
    warm = ch.consumer()
    for _ in range(58):  # tail to 58 * 128: the 40 below wrap
        tx.send(b"w" * 100)
    warm.close()
    msgs = [b"ra-%03d-" % i + b"x" * (i % 50) for i in range(40)]
    joined, report = CTX.Event(), CTX.Queue()
    child = spawn(read_ahead_and_wait, uname, 60.0, 40, 15, joined, report)
    assert joined.wait(WAIT), f"child never joined (exit code {child.exitcode})"
    tx.send_many(msgs)
    assert report.get(timeout=WAIT) == msgs
    kill(child)
    wait_for("the supervisor to hold the orphan", lambda: ch._orphans() == 1)
    assert ch.consumers == 0
    extra = [b"ex-%04d" % i for i in range(1000)]  # more than the ring holds
    sent = 0
    with pytest.raises(shmring.Timeout, match="durable subscription"):
        for m in extra:
            tx.send(m, timeout=0.2)  # gated by the orphan, as by a live slow consumer
            sent += 1
    assert 0 < sent < len(extra)
    out: Queue[list[bytes]] = CTX.Queue()
    adopter = spawn(adopt_and_report, uname, 60.0, out)
    assert out.get(timeout=WAIT) == msgs[15:] + extra[:sent]
    adopter.join(WAIT)
    assert adopter.exitcode == 0
    assert ch._orphans() == 0  # closed in order: the subscription ended


def test_supervisor_frees_an_orphan_after_its_hold(
        make_channel: Make, spawn: Callable[..., BaseProcess], uname: str) -> None:
    """Nobody adopts: a producer blocked by the orphan goes on once the
    hold (1 s) has passed, not before."""
    ch = make_channel("broadcast", 4096)
    tx = ch.producer()
    joined, report = CTX.Event(), CTX.Queue()
    msgs = [b"h" * 100] * 32  # the whole ring
    child = spawn(read_ahead_and_wait, uname, 1.0, 32, 1, joined, report)
    assert joined.wait(WAIT)
    tx.send_many(msgs)
    assert report.get(timeout=WAIT) == msgs
    killed = time.monotonic()
    kill(child)
    wait_for("the orphan", lambda: ch._orphans() == 1)
    tx.send(b"h" * 100, timeout=WAIT)  # the one settled record's room
    tx.send(b"h" * 100, timeout=WAIT)  # waits for the hold to pass
    assert time.monotonic() - killed >= 0.9
    assert ch._orphans() == 0
    for _ in range(100):
        tx.send_nowait(b"free")  # nobody gates it now


def test_relays_killed_at_random_lose_and_duplicate_nothing(
        make_channel: Make, spawn: Callable[..., BaseProcess], uname: str,
        tmp_path: Path) -> None:
    """A producer sends 60000 numbered records into a 16 KiB broadcast ring
    while relays (durable subscribers that record what they settle) are
    SIGKILLed 13 times, at random points of the stream, each with records
    read ahead and not settled, and started again at once: what the relays
    recorded is every record exactly once, in order."""
    n, rnd = 60000, random.Random(1717)
    ch = make_channel("broadcast", 1 << 14)
    log = tmp_path / "relayed"
    log.write_bytes(b"")

    def lines() -> int:
        return log.read_bytes().count(b"\n")

    relay_proc = spawn(relay, uname, str(log), 64, 0)
    wait_for("the first relay to join", lambda: ch.consumers == 1)
    kill(relay_proc)  # before any record: the orphan is at the first one
    stops = sorted(rnd.sample(range(1, n), 12))
    relay_proc = spawn(relay, uname, str(log), 64, stops[0])
    producer = spawn(keep_sending, uname, n)
    for i, stop in enumerate(stops):

        def relayed(s: int = stop) -> bool:
            return lines() >= s

        wait_for(f"{stop} records relayed", relayed)
        assert lines() == stop
        kill(relay_proc)
        nxt = stops[i + 1] if i + 1 < len(stops) else 0
        relay_proc = spawn(relay, uname, str(log), rnd.choice([1, 16, 64, 256]), nxt)
    relay_proc.join(60)
    assert relay_proc.exitcode == 0
    producer.join(WAIT)
    assert producer.exitcode == 0
    values = [int(line.split()[1]) for line in log.read_bytes().splitlines()]
    assert values == list(range(n))


def test_a_held_orphan_keeps_its_region_until_its_hold_ends(
        spawn: Callable[..., BaseProcess], uname: str) -> None:
    """The subscriber is killed and every other user closes: the supervisor
    keeps the region for the orphan (a subscriber started again finds its
    records), then unlinks it once the hold (1.5 s) has passed."""
    ch = shmring.Channel.create(uname, capacity=4096, pattern="broadcast")
    seg = "/dev/shm/" + ch.region.segment.lstrip("/")
    try:
        tx = ch.producer()
        joined, report = CTX.Event(), CTX.Queue()
        child = spawn(read_ahead_and_wait, uname, 1.5, 3, 1, joined, report)
        assert joined.wait(WAIT)
        tx.send_many([b"a", b"b", b"c"])
        assert report.get(timeout=WAIT) == [b"a", b"b", b"c"]
        killed = time.monotonic()
        kill(child)
        wait_for("the orphan", lambda: ch._orphans() == 1)
    finally:
        ch.close()
    try:
        wait_for("the region to go", lambda: not os.path.exists(seg))
        assert time.monotonic() - killed >= 1.4  # kept while the orphan was held
    finally:
        if os.path.exists(seg):
            shmring.Channel.open(uname).unlink()
