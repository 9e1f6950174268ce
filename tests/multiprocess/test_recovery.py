"""Processes that die: real children, real SIGKILLs, then recovery.

Without a supervisor (these channels are made with ``supervised=False``, so
that recovery happens here, when the test says), ``Channel.recover_dead()``
(or ``Region.reap_dead()``) repairs what a dead process left: a
multi-producer claim already in the ring becomes padding; an exclusive role
is freed; an mpmc record taken by a dead consumer is handed back; a dead
broadcast consumer stops gating the producer.
Each test checks invariant 1 of DESIGN.md: no committed message is lost,
duplicated or reordered, and the ring flows on afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

import pytest
from channel_util import drain
from forked_util import spawn_fixture  # noqa: F401  (the fixture)
from pattern_util import KIND_IDS, KINDS, patterns

import shmring
from shmring import _layout as L
from shmring._layout import TRAITS

CTX = get_context("fork")
CAPACITY = 4096
WAIT = 10.0  # bound on any wait expected to succeed
ROUNDS = 16  # producers killed per random-kill test



# ------------------------------------------------------------ helpers --




@pytest.fixture
def channel(make_channel: Callable[..., shmring.Channel]) -> Callable[..., shmring.Channel]:
    """Unsupervised channels of CAPACITY bytes: the test reaps the dead."""

    def _make(pattern: str, lossy: bool = False, **kw: Any) -> shmring.Channel:
        return make_channel(pattern, CAPACITY, lossy=lossy, supervised=False, **kw)

    return _make


def kill(p: BaseProcess) -> None:
    """SIGKILL and reap: afterwards the pid is gone, not a zombie."""
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join(WAIT)
    assert p.exitcode == -signal.SIGKILL


def wait(ev: Event, p: BaseProcess) -> None:
    if not ev.wait(WAIT):
        raise AssertionError(f"child never got ready (exit code {p.exitcode})")


def flows(ch: shmring.Channel, tx: shmring.Producer, consumers: list[shmring.Consumer],
          fanout: bool) -> None:
    """Many laps of traffic go through, nothing lost or doubled."""
    msgs = [b"flow-%d-" % i + b"f" * (i * 37 % 500) for i in range(600)]
    got: list[list[bytes]] = [[] for _ in consumers]
    for i in range(0, len(msgs), 3):
        tx.send_many(msgs[i : i + 3], timeout=WAIT)
        for c, rx in enumerate(consumers):
            got[c] += drain(rx)
    for c, rx in enumerate(consumers):
        got[c] += drain(rx)
    if fanout:
        assert got == [msgs] * len(consumers)
    else:
        assert sorted(m for g in got for m in g) == sorted(msgs)
        for g in got:
            assert g == sorted(g, key=msgs.index)
    assert ch.region.counter(L.OFF_TAIL) > 20 * CAPACITY


def my_pids(ch: shmring.Channel) -> set[int]:
    return {s.pid for s in ch.region.slots()}


# --------------------------------------------- producer dies mid-claim --


def produce_then_die_in_claim(name: str, pre: list[bytes], claim: int, ready: Event) -> None:
    ch = shmring.Channel.open(name, supervised=False)
    tx = ch.producer()
    for m in pre:
        tx.send(m, timeout=WAIT)
    c = tx.claim(claim, timeout=WAIT)
    c.view[: claim // 2] = b"X" * (claim // 2)  # half written, never committed
    ready.set()
    time.sleep(60)


def advance(ch: shmring.Channel, offset: int, tx: shmring.Producer,
            rx: shmring.Consumer) -> None:
    """Moves the (empty) ring's tail to `offset` within a lap."""
    assert offset % L.RECORD_ALIGN == 0
    for _ in range(100):
        t = ch.region.counter(L.OFF_TAIL) % CAPACITY
        if t == offset:
            return
        gap = (offset - t) % CAPACITY
        tx.send(b"z" * (min(gap, 1024) - L.RECORD_HEADER), timeout=WAIT)
        assert drain(rx)
    raise AssertionError("could not move the tail")


@pytest.mark.parametrize(("pattern", "lossy"), KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("wrap", [False, True], ids=["mid-ring", "wrapping"])
def test_producer_killed_mid_claim(channel: Callable[..., shmring.Channel],
                                   spawn: Callable[..., BaseProcess], uname: str,
                                   pattern: str, lossy: bool, wrap: bool) -> None:
    ch = channel(pattern, lossy)
    multi = TRAITS[pattern].multi_producer
    consumers = [ch.consumer()]
    if TRAITS[pattern].multi_consumer:
        consumers.append(ch.consumer())
    rx = consumers[0]
    tx = ch.producer()
    pre = [b"pre-%d" % i + b"p" * 90 for i in range(3)]  # 3 records of 112 bytes
    # Wrapping: the child's claim of 700 bytes does not fit before the end,
    # so it is preceded by a padding record (written by the claim).
    advance(ch, CAPACITY - 3 * 112 - 208 if wrap else 1024, tx, rx)
    for c in consumers[1:]:
        drain(c)
    if not multi:
        tx.close()  # the child takes the producer role
    ready = CTX.Event()
    child = spawn(produce_then_die_in_claim, uname, pre, 700, ready)
    wait(ready, child)
    assert child.pid in my_pids(ch)
    if multi:
        # The claim in flight is in the child's slot. Wrapping, the padding
        # to the end of the ring was claimed and committed on its own first.
        (claim_pos,) = [s.claim_pos for s in ch.region.slots()
                        if s.pid == child.pid and s.role == "producer"]
        assert claim_pos is not None
        assert claim_pos % CAPACITY == (0 if wrap else 1024 + 3 * 112)
    post = [b"post-%d" % i for i in range(5)]
    if multi:
        tx.send_many(post)  # these sit behind the dead claim in the ring
    else:
        with pytest.raises(shmring.RoleTaken):
            ch.producer()
    got = [drain(c) for c in consumers]
    # Every consumer is held up at the open claim.
    if TRAITS[pattern].fan_out:
        assert got == [pre] * len(consumers)
    else:
        assert sorted(m for g in got for m in g) == sorted(pre)
    kill(child)
    for c in consumers:
        assert drain(c) == []
    assert ch.recover_dead() >= 1
    assert child.pid not in my_pids(ch)
    assert ch.recover_dead() == 0  # once only
    if not multi:
        tx = ch.producer()  # the role is free; the new producer continues at the tail
        tx.send_many(post)
    got = [drain(c) for c in consumers]
    if TRAITS[pattern].fan_out:
        assert got == [post] * len(consumers)
    else:
        assert sorted(m for g in got for m in g) == sorted(post)
        assert all(g == sorted(g) for g in got)
    flows(ch, tx, consumers, TRAITS[pattern].fan_out)
    for c in consumers:
        assert c.missed == 0


def test_reap_dead_from_the_region(channel: Callable[..., shmring.Channel],
                                   spawn: Callable[..., BaseProcess], uname: str) -> None:
    """Region.reap_dead() is the same recovery as Channel.recover_dead()."""
    ch = channel("mpsc")
    rx = ch.consumer()
    ready = CTX.Event()
    child = spawn(produce_then_die_in_claim, uname, [b"a", b"b"], 100, ready)
    wait(ready, child)
    assert drain(rx) == [b"a", b"b"]
    kill(child)
    # One slot: the child's channel lent its own to its producer.
    assert [pid for _, pid in ch.region.dead_slots()] == [child.pid]
    assert ch.region.reap_dead() == 1
    assert ch.region.dead_slots() == []
    tx = ch.producer()
    tx.send(b"c")
    assert drain(rx) == [b"c"]


# ----------------------------------------------- consumer dies mid-read --


def consume_then_die_holding_view(name: str, first: int, joined: Event, start: Event,
                                  ready: Event, report: Queue[Any]) -> None:
    ch = shmring.Channel.open(name, supervised=False)
    rx = ch.consumer()
    joined.set()
    if not start.wait(WAIT):
        return
    got = [rx.recv(timeout=WAIT) for _ in range(first)]
    view = rx.recv_view(timeout=WAIT)
    report.put((got, bytes(view.view)))
    ready.set()
    time.sleep(60)


@pytest.mark.parametrize("pattern", patterns(multi_consumer=False))
def test_single_consumer_killed_holding_a_view(channel: Callable[..., shmring.Channel],
                                               spawn: Callable[..., BaseProcess], uname: str,
                                               pattern: str) -> None:
    ch = channel(pattern)
    tx = ch.producer()
    msgs = [b"m%d" % i for i in range(5)]
    tx.send_many(msgs)
    joined, start, ready, report = CTX.Event(), CTX.Event(), CTX.Event(), CTX.Queue()
    start.set()
    child = spawn(consume_then_die_holding_view, uname, 1, joined, start, ready, report)
    wait(ready, child)
    assert report.get(timeout=WAIT) == ([b"m0"], b"m1")
    with pytest.raises(shmring.RoleTaken):
        ch.consumer()
    kill(child)
    assert ch.recover_dead() >= 1
    rx = ch.consumer()
    # m0 was received; m1 was being read when its reader died: not delivered.
    assert drain(rx) == msgs[1:]
    flows(ch, tx, [rx], False)


def test_mpmc_consumer_killed_holding_a_view(channel: Callable[..., shmring.Channel],
                                             spawn: Callable[..., BaseProcess],
                                             uname: str) -> None:
    ch = channel("mpmc")
    tx, rx = ch.producer(), ch.consumer()
    msgs = [b"m%d" % i for i in range(5)]
    tx.send_many(msgs)
    joined, start, ready, report = CTX.Event(), CTX.Event(), CTX.Event(), CTX.Queue()
    start.set()
    child = spawn(consume_then_die_holding_view, uname, 1, joined, start, ready, report)
    wait(ready, child)
    assert report.get(timeout=WAIT) == ([b"m0"], b"m1")
    assert drain(rx) == msgs[2:]
    # The taken record holds head back: the ring fills up behind it.
    filler = [b"fill-%d" % i + b"f" * 200 for i in range(100)]
    sent = 0
    while True:
        try:
            tx.send_nowait(filler[sent])
        except shmring.WouldBlock:
            break
        sent += 1
        assert drain(rx) == [filler[sent - 1]]
    assert 0 < sent < len(filler)
    kill(child)
    with pytest.raises(shmring.WouldBlock):
        tx.send_nowait(filler[sent])  # still wedged until recovery
    assert ch.recover_dead() >= 1
    # m1 comes again, to the live consumer, exactly once.
    assert drain(rx) == [b"m1"]
    tx.send(b"after", timeout=WAIT)
    assert drain(rx) == [b"after"]
    rx2 = ch.consumer()
    flows(ch, tx, [rx, rx2], False)


def test_mpmc_redelivery_to_a_waiting_consumer(channel: Callable[..., shmring.Channel],
                                               spawn: Callable[..., BaseProcess],
                                               uname: str) -> None:
    """A consumer asleep in recv() is woken by recovery's hand-back."""
    ch = channel("mpmc")
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"only")
    joined, start, ready, report = CTX.Event(), CTX.Event(), CTX.Event(), CTX.Queue()
    start.set()
    child = spawn(consume_then_die_holding_view, uname, 0, joined, start, ready, report)
    wait(ready, child)
    assert report.get(timeout=WAIT) == ([], b"only")
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(rx.recv(timeout=WAIT)), daemon=True)
    t.start()
    t.join(0.2)
    assert t.is_alive()
    kill(child)
    ch.recover_dead()
    t.join(WAIT)
    assert out == [b"only"]


def test_broadcast_dead_consumer_stops_gating(channel: Callable[..., shmring.Channel],
                                              spawn: Callable[..., BaseProcess],
                                              uname: str) -> None:
    ch = channel("broadcast")
    tx, live = ch.producer(), ch.consumer()
    joined, start, ready, report = CTX.Event(), CTX.Event(), CTX.Event(), CTX.Queue()
    child = spawn(consume_then_die_holding_view, uname, 0, joined, start, ready, report)
    wait(joined, child)
    tx.send(b"first")
    start.set()
    wait(ready, child)
    assert report.get(timeout=WAIT) == ([], b"first")
    # Fill the ring: the held view gates; the live consumer reads it all.
    sent = [b"first"]
    while True:
        m = b"b-%d" % len(sent) + b"b" * 150
        try:
            tx.send_nowait(m)
        except shmring.WouldBlock:
            break
        sent.append(m)
    assert len(sent) > 10
    assert drain(live) == sent
    errors: list[BaseException] = []

    def blocked_send() -> None:
        try:
            tx.send(b"unblocked", timeout=WAIT)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=blocked_send, daemon=True)
    t.start()
    kill(child)
    t.join(0.3)
    assert t.is_alive(), "the dead consumer's cursor should gate until recovery"
    assert ch.recover_dead() >= 1
    t.join(WAIT)
    assert not t.is_alive() and errors == []
    assert drain(live) == [b"unblocked"]
    late = ch.consumer()  # joins at the tail
    flows(ch, tx, [live, late], True)


# --------------------------------------------------- random-point kills --


def numbered_producer(name: str, start: int, last: Synchronized[int], seed: int) -> None:
    rnd = random.Random(seed)
    ch = shmring.Channel.open(name, supervised=False)
    tx = ch.producer()
    seq = start
    while True:
        msg = struct.pack("<Q", seq) + bytes([seq & 0xFF]) * rnd.randint(0, 600)
        if rnd.random() < 0.5:
            with tx.claim(len(msg), timeout=WAIT) as buf:
                # Written piecewise: kills often land inside a claim.
                for i in range(0, len(msg), 8):
                    buf[i : i + 8] = msg[i : i + 8]
        else:
            tx.send(msg, timeout=WAIT)
        last.value = seq  # after send() returned: this one must arrive
        seq += 1


def steady_producer(name: str, count: int) -> None:
    ch = shmring.Channel.open(name, supervised=False)
    tx = ch.producer()
    for i in range(count):
        tx.send(struct.pack("<Q", 1 << 62 | i) + b"s" * (i % 300), timeout=WAIT)
    tx.close()
    ch.close()


@pytest.mark.parametrize("pattern", list(TRAITS))
def test_random_kills(channel: Callable[..., shmring.Channel],
                      spawn: Callable[..., BaseProcess], uname: str, pattern: str) -> None:
    """Producers killed at random points, over and over: whatever send()
    returned for arrives once, in order; a message that was in flight arrives
    whole or not at all; the next producer continues after the last one
    received."""
    ch = channel(pattern)
    rx = ch.consumer()
    rnd = random.Random(hash(pattern) % 1000 + 7)
    steady: BaseProcess | None = None
    steady_count = 20_000
    if TRAITS[pattern].multi_producer:
        # Another producer runs throughout: dead claims sit among its records.
        steady = spawn(steady_producer, uname, steady_count)
    received: list[int] = []
    steady_got: list[int] = []

    def take(msgs: list[bytes]) -> None:
        for m in msgs:
            (seq,) = struct.unpack_from("<Q", m)
            if seq >= 1 << 62:
                steady_got.append(seq - (1 << 62))
                assert m[8:] == b"s" * (steady_got[-1] % 300)
            else:
                assert m[8:] == bytes([seq & 0xFF]) * (len(m) - 8), f"message {seq} damaged"
                received.append(seq)

    next_seq = 0
    kills = 0
    for round_ in range(ROUNDS):
        last = CTX.Value("q", -1, lock=False)
        child = spawn(numbered_producer, uname, next_seq, last, rnd.randrange(1 << 30))
        kill_at = time.monotonic() + rnd.uniform(0.002, 0.06)
        while time.monotonic() < kill_at:
            with contextlib.suppress(shmring.Timeout):
                take(rx.recv_many(64, timeout=0.002))
        kill(child)
        kills += 1
        ch.recover_dead()
        take(drain(rx))
        acked = last.value
        if acked >= 0:
            assert received and received[-1] >= acked, (
                f"round {round_}: send() returned for {acked} but only "
                f"{received[-1] if received else None} arrived")
        assert received == list(range(len(received))), f"round {round_}: gap or duplicate"
        next_seq = len(received)
    assert kills == ROUNDS and len(received) > 100
    if steady is not None:
        deadline = time.monotonic() + 3 * WAIT
        while steady.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(shmring.Timeout):
                take(rx.recv_many(256, timeout=0.01))
        steady.join(WAIT)
        assert steady.exitcode == 0
        take(drain(rx))
        assert steady_got == list(range(steady_count))
