"""A stopped subscriber of a lossless broadcast with ``slow_consumer_timeout``:
the producer (and so every other subscriber) goes on once it has been held
back that long by a cursor that did not move, not before; the stopped one,
continued, learns exactly how many messages it lost (``Consumer.missed``,
``Consumer.untethered``) and never keeps a torn message. Without the
timeout a stopped subscriber gates for ever, as before; a slow one that
keeps moving is never untethered; a dead one is recovered as before.

Real forked subscribers, real SIGSTOP/SIGCONT/SIGKILL, real shared memory.
The channels are unsupervised: the producer decides alone (ring/untether.c),
and recovery of the dead runs when the test says.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from supervisor_util import Child, wait_for
from untether_util import (
    MIN_SIZE,
    SIZES,
    Report,
    check_report,
    consumer_state,
    cont,
    message,
    stop,
    subscribe,
)

import shmring
from shmring import _layout as L

TIMEOUT = 0.4  # slow_consumer_timeout of these tests
MARGIN = 1.0  # a blocked producer looks every TIMEOUT / 4; scheduling on 2 busy cores
CAPACITY = 4096

Make = Callable[..., shmring.Channel]


def fill(tx: shmring.Producer, start: int, rng: random.Random) -> int:
    """Send numbered messages without waiting until the ring is full (not
    even the smallest fits); the next number."""
    i = start
    size = rng.choice(SIZES)
    while True:
        try:
            tx.send_nowait(message(i, size))
        except shmring.WouldBlock:
            if size == MIN_SIZE:
                return i
            size = MIN_SIZE
            continue
        i += 1
        size = rng.choice(SIZES)


def send_range(tx: shmring.Producer, start: int, end: int, rng: random.Random) -> None:
    for i in range(start, end):
        tx.send(message(i, rng.choice(SIZES)), timeout=10)


def reports(tmp: str, *children: tuple[Child, str]) -> list[Report]:
    out = []
    for c, path in children:
        assert c.wait(30) == 0, "a subscriber failed (its traceback is above)"
        out.append(Report.load(path))
    return out


@pytest.mark.parametrize("ways", [("recv",), ("recv_view", "recv_many", "recv_into")],
                         ids=["recv", "views-batches-into"])
def test_stopped_subscriber_is_untethered_after_the_timeout(
        make_channel: Make, tmp_path: object, ways: tuple[str, ...]) -> None:
    ch = make_channel("broadcast", CAPACITY, supervised=False,
                      slow_consumer_timeout=TIMEOUT)
    assert ch.slow_consumer_timeout == pytest.approx(TIMEOUT)
    tx = ch.producer()
    ra, rb = os.path.join(str(tmp_path), "a"), os.path.join(str(tmp_path), "b")
    a = Child(lambda c: subscribe(c, ch.name, ra, ways=ways))
    b = Child(lambda c: subscribe(c, ch.name, rb, ways=ways))
    a.ready()
    b.ready()
    rng = random.Random(1)
    stop(a.pid)
    sent = fill(tx, 0, rng)  # a is stopped: the ring fills up behind its cursor
    assert sent > 10
    t0 = time.monotonic()
    tx.send(message(sent, 100), timeout=TIMEOUT + MARGIN + 5)
    waited = time.monotonic() - t0
    sent += 1
    assert waited >= TIMEOUT - 0.01, f"untethered after {waited:.3f} s, before the timeout"
    assert waited <= TIMEOUT + MARGIN, f"still gated {waited:.3f} s after the timeout"
    assert consumer_state(ch, a.pid) == L.SLOT_UNTETHERED
    assert ch.consumers == 2  # untethered, still a consumer of the channel
    shown = subprocess.run([sys.executable, "-m", "shmring", "inspect", ch.name],
                           capture_output=True, text=True, timeout=30).stdout
    assert f"untethered after {TIMEOUT:g} s" in shown
    assert [ln for ln in shown.splitlines() if f" {a.pid} " in ln and "untethered" in ln]
    # The producer and b go on while a stays stopped: several rings more.
    send_range(tx, sent, sent + 2000, rng)
    sent += 2000
    cont(a.pid)
    # Continued, a gates again once it reads (before that it is untethered).
    wait_for(lambda: consumer_state(ch, a.pid) == L.SLOT_ACTIVE, 10, "a to gate again")
    after = sent
    send_range(tx, sent, sent + 500, rng)  # lossless again: a gets every one
    sent += 500
    ch.close_send()
    ra_r, rb_r = reports(str(tmp_path), (a, ra), (b, rb))
    check_report(rb_r, sent, "b")
    assert rb_r.missed == 0 and rb_r.untethered == 0
    check_report(ra_r, sent, "a")
    assert ra_r.untethered == 1
    assert ra_r.missed >= 2000 - ch.capacity // 16  # a ring holds at most capacity/16 messages
    assert ra_r.ids[-500:] == list(range(after, sent)), "a lost messages after it gated again"


def test_without_timeout_a_stopped_subscriber_gates_for_ever(
        make_channel: Make, tmp_path: object) -> None:
    ch = make_channel("broadcast", CAPACITY, supervised=False)
    assert ch.slow_consumer_timeout is None
    tx = ch.producer()
    ra = os.path.join(str(tmp_path), "a")
    a = Child(lambda c: subscribe(c, ch.name, ra))
    a.ready()
    rng = random.Random(2)
    stop(a.pid)
    sent = fill(tx, 0, rng)
    with pytest.raises(shmring.Timeout):
        tx.send(message(sent, 100), timeout=TIMEOUT * 3)
    assert consumer_state(ch, a.pid) == L.SLOT_ACTIVE
    cont(a.pid)
    send_range(tx, sent, sent + 300, rng)  # a reads on: nothing lost
    sent += 300
    ch.close_send()
    (r,) = reports(str(tmp_path), (a, ra))
    check_report(r, sent, "a")
    assert r.missed == 0 and r.untethered == 0 and r.received == sent


def test_slow_but_moving_subscriber_is_not_untethered(
        make_channel: Make, tmp_path: object) -> None:
    ch = make_channel("broadcast", CAPACITY, supervised=False,
                      slow_consumer_timeout=TIMEOUT)
    tx = ch.producer()
    ra = os.path.join(str(tmp_path), "a")
    # One message every TIMEOUT / 8: the producer waits for it all along,
    # far longer than TIMEOUT in all, but its cursor keeps moving.
    a = Child(lambda c: subscribe(c, ch.name, ra, delay=TIMEOUT / 8))
    a.ready()
    rng = random.Random(3)
    sent = fill(tx, 0, rng)
    t0 = time.monotonic()
    send_range(tx, sent, sent + 40, rng)
    held = time.monotonic() - t0
    sent += 40
    assert held > 3 * TIMEOUT, f"the producer was held back only {held:.2f} s"
    assert consumer_state(ch, a.pid) == L.SLOT_ACTIVE
    ch.close_send()
    (r,) = reports(str(tmp_path), (a, ra))
    check_report(r, sent, "a")
    assert r.missed == 0 and r.untethered == 0 and r.received == sent


def drain(rx: shmring.Consumer) -> int:
    """Messages ``rx`` takes without waiting."""
    n = 0
    while True:
        try:
            rx.recv_nowait()
        except shmring.WouldBlock:
            return n
        n += 1


@pytest.mark.parametrize("timeout", [None, TIMEOUT], ids=["no-timeout", "untethered-first"])
def test_dead_subscriber_is_recovered_as_before(
        make_channel: Make, tmp_path: object, timeout: float | None) -> None:
    ch = make_channel("broadcast", CAPACITY, supervised=False, slow_consumer_timeout=timeout)
    tx = ch.producer()
    live = ch.consumer()
    ra = os.path.join(str(tmp_path), "a")
    a = Child(lambda c: subscribe(c, ch.name, ra))
    a.ready()
    rng = random.Random(4)
    stop(a.pid)
    sent = fill(tx, 0, rng)
    assert sent > 10 and drain(live) == sent
    if timeout is None:
        with pytest.raises(shmring.Timeout):
            tx.send(message(sent, 100), timeout=TIMEOUT * 2)
    else:
        tx.send(message(sent, 100), timeout=TIMEOUT + MARGIN)  # a is untethered
        sent += 1
        assert consumer_state(ch, a.pid) == L.SLOT_UNTETHERED
        assert drain(live) == 1
    a.kill()
    if timeout is None:
        with pytest.raises(shmring.WouldBlock):
            tx.send_nowait(message(sent, 100))  # the dead cursor gates until recovery
    assert ch.recover_dead() >= 1  # untethered or not, its slot is recovered
    assert consumer_state(ch, a.pid) is None
    more = fill(tx, sent, rng) - sent  # gated by the live consumer alone now
    assert more > 10 and drain(live) == more


@pytest.mark.parametrize(("kw", "why"), [
    ({"pattern": "spsc", "slow_consumer_timeout": 1.0}, "lossless broadcast only"),
    ({"pattern": "broadcast", "lossy": True, "slow_consumer_timeout": 1.0},
     "lossless broadcast only"),
    ({"pattern": "broadcast", "slow_consumer_timeout": -1}, "must be None"),
    ({"pattern": "broadcast", "slow_consumer_timeout": float("nan")}, "must be None"),
    ({"pattern": "broadcast", "slow_consumer_timeout": "1"}, "must be None"),
    ({"pattern": "broadcast", "slow_consumer_timeout": True}, "must be None"),
])
def test_bad_slow_consumer_timeout_is_refused(uname: str, kw: dict[str, object],
                                              why: str) -> None:
    with pytest.raises(shmring.InvalidArgument, match=why):
        shmring.Channel.create(uname, capacity=CAPACITY, supervised=False, **kw)  # type: ignore[arg-type]


def test_zero_timeout_is_never(make_channel: Make) -> None:
    ch = make_channel("broadcast", CAPACITY, supervised=False, slow_consumer_timeout=0)
    assert ch.slow_consumer_timeout is None
    assert ch.producer()._validating is False  # today's lossless path, untouched


def test_objects_are_validated_copies_and_too_large_ones_are_not_streamed(
        make_channel: Make) -> None:
    ch = make_channel("broadcast", CAPACITY, supervised=False, slow_consumer_timeout=TIMEOUT)
    tx, rx = ch.producer(), ch.consumer()
    tx.send_obj({"n": 1, "s": "x" * 50})
    tx.send_obj(bytearray(b"y" * 300))  # a pickled record, read through a view
    assert rx.recv_obj(timeout=1) == {"n": 1, "s": "x" * 50}
    assert rx.recv_obj(timeout=1) == bytearray(b"y" * 300)
    with pytest.raises(shmring.MessageTooLarge):
        tx.send_obj(b"z" * (ch.max_message * 4))
    assert rx.missed == 0 and rx.untethered == 0
