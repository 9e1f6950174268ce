"""No lost wake-up where publishing meets going to sleep.

A publisher looks at the waiter count after its seq-cst publication, without a
fence of its own (wait.c: shm_notify_sc); a waiter raises the count, fences,
and looks at the ring once more before it sleeps. Were a wake-up lost, the
waiter would sleep out its slice (1 s, wait.c SLICE_NS) before it looked again.
Here one process publishes after random pauses of 0-400 µs, so that the other,
blocked, is by turns spinning, yielding, and on its way into or out of the
futex sleep when the publication lands (the spin and yield phases end at 20
and 120 µs). Every hand-over must arrive well within a slice, for data (a
blocked recv) and for space (a blocked send on a ring that holds two records),
on every pattern.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import random
import time
from collections.abc import Callable

import pytest

import shmring
from shmring._layout import TRAITS

ROUNDS = 300
MAX_PAUSE_S = 0.0004
#: A lost wake-up costs a whole sleep slice (1 s): far above any hand-over here.
LOST = 0.8
CAPACITY = 1024
BIG = CAPACITY // 2 - 16  # two records of this size fill CAPACITY: send i + 2 waits for recv i


def _pause(rng: random.Random) -> None:
    time.sleep(rng.uniform(0.0, MAX_PAUSE_S))


def _consume_data(name: str, out: mpc.Connection) -> None:
    """Receive ROUNDS stamped messages; report the largest send-to-receive delay."""
    ch = shmring.Channel.open(name)
    try:
        rx = ch.consumer()
        out.send("ready")
        worst = 0
        for _ in range(ROUNDS):
            msg = rx.recv(timeout=10)
            worst = max(worst, time.monotonic_ns() - int.from_bytes(msg[:8], "little"))
        out.send(worst)
    finally:
        ch.close()
        out.close()


def _consume_space(name: str, seed: int, out: mpc.Connection) -> None:
    """Receive ROUNDS messages after random pauses; report when each recv returned."""
    rng = random.Random(seed)
    ch = shmring.Channel.open(name)
    try:
        rx = ch.consumer()
        out.send("ready")
        stamps = []
        for _ in range(ROUNDS):
            _pause(rng)
            rx.recv(timeout=10)
            stamps.append(time.monotonic_ns())
        out.send(stamps)
    finally:
        ch.close()
        out.close()


def _start(target: Callable[..., None], args: tuple[object, ...]) -> tuple[mp.process.BaseProcess,
                                                             mpc.Connection]:
    ctx = mp.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, writer))
    proc.start()
    writer.close()
    assert reader.poll(20), "the consumer did not start"
    assert reader.recv() == "ready"
    return proc, reader


def _finish(proc: mp.process.BaseProcess, reader: mpc.Connection) -> object:
    try:
        assert reader.poll(60), "the consumer did not report"
        result = reader.recv()
        proc.join(10)
        assert proc.exitcode == 0
        return result
    finally:
        reader.close()
        if proc.is_alive():
            proc.kill()
            proc.join()


@pytest.mark.parametrize("pattern", list(TRAITS))
def test_a_blocked_recv_wakes_for_every_message(
        uname: str, make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    ch = make_channel(capacity=1 << 16, pattern=pattern)
    proc, reader = _start(_consume_data, (uname,))
    rng = random.Random(16)
    tx = ch.producer()
    try:
        for _ in range(ROUNDS):
            _pause(rng)
            tx.send(time.monotonic_ns().to_bytes(8, "little") + bytes(56))
    finally:
        tx.close()
    worst = _finish(proc, reader)
    assert isinstance(worst, int)
    assert worst < LOST * 1e9, f"a message took {worst / 1e6:.0f} ms to wake its consumer"


@pytest.mark.parametrize("pattern", list(TRAITS))
def test_a_blocked_send_wakes_for_every_release(
        uname: str, make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    ch = make_channel(capacity=CAPACITY, pattern=pattern, max_message=BIG)
    proc, reader = _start(_consume_space, (uname, 61))
    tx = ch.producer()
    done = []
    try:
        for _ in range(ROUNDS):
            tx.send(bytes(BIG), timeout=10)
            done.append(time.monotonic_ns())
    finally:
        tx.close()
    freed = _finish(proc, reader)
    assert isinstance(freed, list) and len(freed) == ROUNDS
    # Send i + 2 needs the space message i held: it returns soon after recv i.
    worst = max(d - f for d, f in zip(done[2:], freed[:-2], strict=False))
    assert worst < LOST * 1e9, f"a release took {worst / 1e6:.0f} ms to wake its producer"


def _free_one(name: str, out: mpc.Connection) -> None:
    """Once told, receive one message (freeing one small record) and read no
    more; report when it was freed; leave when told."""
    ch = shmring.Channel.open(name)
    try:
        rx = ch.consumer()
        out.send("ready")
        assert out.poll(20)
        out.recv()
        time.sleep(0.05)  # the producer is asleep by now, waiting for room
        rx.recv(timeout=10)
        out.send(time.monotonic_ns())
        assert out.poll(20)
        out.recv()
    finally:
        ch.close()
        out.close()


@pytest.mark.parametrize("pattern", list(TRAITS))
def test_a_blocked_send_gets_the_room_of_one_record(
        uname: str, make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    """An spsc or mpsc consumer wakes waiting producers only once a quarter
    of the ring is free (ring/produce.c, "room to wake"). One that frees a
    single small record and then reads no more must still let a producer
    waiting for that much room through, by the producer's own nap, well
    within a sleep slice."""
    ch = make_channel(capacity=1 << 14, pattern=pattern)
    ctx = mp.get_context("fork")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_free_one, args=(uname, theirs))
    proc.start()
    theirs.close()
    tx = ch.producer()
    try:
        assert mine.poll(20) and mine.recv() == "ready"
        msg = bytes(56)
        n = 0
        while True:
            try:
                tx.send_nowait(msg)
            except shmring.WouldBlock:
                break
            n += 1
        assert n > 100  # many records: one is far less than a quarter of the ring
        mine.send("free one")
        tx.send(msg, timeout=10)  # blocks until the consumer has taken one
        sent = time.monotonic_ns()
        assert mine.poll(20)
        freed = mine.recv()
        assert sent - freed < LOST * 1e9, f"the room took {(sent - freed) / 1e6:.0f} ms to reach us"
        with pytest.raises(shmring.WouldBlock):
            tx.send_nowait(msg)  # full again: the consumer took exactly one
        mine.send("bye")
        proc.join(10)
        assert proc.exitcode == 0
    finally:
        tx.close()
        mine.close()
        if proc.is_alive():
            proc.kill()
            proc.join()
