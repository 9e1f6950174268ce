"""Real processes on real shared memory: 1-4 producer processes times 1-4
consumer processes, each opening the channel by name.

Every producer numbers its messages and mixes the ways of sending (send,
send_many, claims); every consumer mixes the ways of receiving (recv,
recv_many, views) and checks each payload. The parent closes the channel for
sending once the producers are done and collects what each consumer got:

- spsc, mpsc: everything, once, in order per producer;
- mpmc: every message exactly once over all consumers, each consumer's share
  in order per producer;
- broadcast: everything, once, in order, by every consumer (they join before
  the first message: the parent waits for each to say it is ready);
- lossy broadcast with a slow consumer: received + missed == sent exactly,
  and what was received is in order and intact.

Every wait is bounded; leftover children are killed in ``finally``.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import pytest

import shmring
from shmring._layout import TRAITS

CTX = mp.get_context("fork")
WAIT = 20.0  # bound on any one blocking call in a child
DEADLINE = 60.0  # bound on a whole run


def payload(producer: int, seq: int) -> bytes:
    body = bytes([(producer * 31 + seq) & 0xFF]) * ((seq * 7 + producer) % 200)
    return b"%d:%d:" % (producer, seq) + body


def check(msg: bytes | memoryview) -> tuple[int, int]:
    """(producer, seq) of an intact message; raises on a damaged one."""
    raw = bytes(msg)
    p, s, _ = raw.split(b":", 2)
    producer, seq = int(p), int(s)
    if raw != payload(producer, seq):
        raise AssertionError(f"message {producer}:{seq} damaged: {raw[:40]!r}")
    return producer, seq


# ----------------------------------------------------------- children --


def producer_main(name: str, index: int, count: int, seed: int) -> None:
    rnd = random.Random(seed)
    ch = shmring.Channel.open(name)
    try:
        tx = ch.producer()
        seq = 0
        while seq < count:
            how = rnd.random()
            if how < 0.6:
                tx.send(payload(index, seq), timeout=WAIT)
                seq += 1
            elif how < 0.8:
                n = min(rnd.randint(1, 16), count - seq)
                assert tx.send_many([payload(index, seq + i) for i in range(n)],
                                    timeout=WAIT) == n
                seq += n
            else:
                msg = payload(index, seq)
                with tx.claim(len(msg), timeout=WAIT) as buf:
                    buf[:] = msg
                seq += 1
        tx.close()
    finally:
        ch.close()


def consumer_main(name: str, index: int, ready: Event, results: Queue[Any], seed: int,
                  delay: float) -> None:
    rnd = random.Random(seed)
    ch = shmring.Channel.open(name)
    got: list[tuple[int, int]] = []
    error = ""
    missed = 0
    try:
        rx = ch.consumer()
        ready.set()
        try:
            while True:
                how = rnd.random()
                if how < 0.5:
                    got.append(check(rx.recv(timeout=WAIT)))
                elif how < 0.8:
                    got += [check(m) for m in rx.recv_many(rnd.randint(1, 32), timeout=WAIT)]
                else:
                    with rx.recv_view(timeout=WAIT) as v:
                        got.append(check(v))
                if delay:
                    time.sleep(delay)
        except shmring.EndOfStream:
            pass
        missed = rx.missed
        rx.close()
    except BaseException as e:  # reported to the parent, which fails the test
        error = repr(e)
    finally:
        ch.close()
        results.put((index, got, missed, error))


# ------------------------------------------------------------- parent --


@dataclass
class Outcome:
    sent: int  # per producer
    got: list[list[tuple[int, int]]]  # per consumer
    missed: list[int]  # per consumer


@pytest.fixture
def reaper() -> Iterator[list[BaseProcess]]:
    """Processes to kill if the test ends with them still running."""
    procs: list[BaseProcess] = []
    yield procs
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)


def join_all(procs: Sequence[BaseProcess], deadline: float) -> None:
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        assert not p.is_alive(), f"{p.name} still running at the deadline"
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


def run(name: str, pattern: str, producers: int, consumers: int, count: int,
        procs: list[BaseProcess], *, lossy: bool = False, capacity: int = 8192,
        delays: tuple[float, ...] = ()) -> Outcome:
    deadline = time.monotonic() + DEADLINE
    ch = shmring.Channel.create(name, capacity=capacity, pattern=pattern, lossy=lossy)
    try:
        results: Queue[Any] = CTX.Queue()
        ready = [CTX.Event() for _ in range(consumers)]
        cons = [
            CTX.Process(target=consumer_main, name=f"consumer-{i}",
                        args=(name, i, ready[i], results, 100 + i,
                              delays[i] if i < len(delays) else 0.0))
            for i in range(consumers)
        ]
        procs += cons
        for p in cons:
            p.start()
        for i, ev in enumerate(ready):
            assert ev.wait(max(0.0, deadline - time.monotonic())), f"consumer {i} not ready"
        prods = [
            CTX.Process(target=producer_main, name=f"producer-{i}",
                        args=(name, i, count, 200 + i))
            for i in range(producers)
        ]
        procs += prods
        for p in prods:
            p.start()
        join_all(prods, deadline)
        ch.close_send()
        got: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]
        missed = [0] * consumers
        for _ in range(consumers):
            i, g, m, error = results.get(timeout=max(0.1, deadline - time.monotonic()))
            assert not error, f"consumer {i}: {error}"
            got[i], missed[i] = g, m
        join_all(cons, deadline)
        return Outcome(count, got, missed)
    finally:
        ch.close()
        ch.unlink()


def per_producer(got: list[tuple[int, int]], producers: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(producers)]
    for p, s in got:
        out[p].append(s)
    return out


# -------------------------------------------------------------- tests --


@pytest.mark.parametrize(("pattern", "producers", "consumers"), [
    ("spsc", 1, 1),
    ("mpsc", 1, 1),
    ("mpsc", 2, 1),
    ("mpsc", 4, 1),
    ("mpmc", 1, 3),
    ("mpmc", 2, 2),
    ("mpmc", 3, 1),
    ("mpmc", 4, 4),
    ("broadcast", 1, 1),
    ("broadcast", 1, 4),
])
def test_every_message_once_in_order(uname: str, reaper: list[BaseProcess], pattern: str,
                                     producers: int, consumers: int) -> None:
    count = 10_000
    out = run(uname, pattern, producers, consumers, count, reaper)
    expected = [list(range(count))] * producers
    if TRAITS[pattern].fan_out:
        for g in out.got:
            assert per_producer(g, producers) == expected
        return
    for g in out.got:
        for p, seqs in enumerate(per_producer(g, producers)):
            assert seqs == sorted(seqs), f"producer {p} reordered"
    everything = [m for g in out.got for m in g]
    assert len(everything) == len(set(everything)), "a message was delivered twice"
    assert sorted(everything) == [(p, s) for p in range(producers) for s in range(count)]
    if pattern == "mpsc":
        assert per_producer(out.got[0], producers) == expected


@pytest.mark.parametrize("consumers", [2, 3])
def test_lossy_broadcast_counts_what_a_slow_consumer_missed(
        uname: str, reaper: list[BaseProcess], consumers: int) -> None:
    count = 20_000
    for attempt in range(5):  # overruns land at random points: several runs
        # Consumer 0 is slowed down: the producer, never gated, laps it.
        out = run(f"{uname}-{attempt}", "broadcast", 1, consumers, count, reaper, lossy=True,
                  capacity=4096, delays=(0.0005,))
        for i, (g, missed) in enumerate(zip(out.got, out.missed, strict=True)):
            seqs = [s for _, s in g]
            assert seqs == sorted(set(seqs)), f"consumer {i}: out of order or twice"
            assert len(seqs) + missed == count, (
                f"run {attempt}, consumer {i}: {len(seqs)} received + {missed} missed != {count}")
            # The newest message is never lost: an overrun reader jumps to it.
            assert seqs[-1] == count - 1
        assert out.missed[0] > 0, "the slow consumer was never overrun: the test tested nothing"
