"""A growing ``shmring.Queue`` (``_queue/chain.py``): unbounded by default
as multiprocessing's is, small at rest, items of any size, and the chain of
rings it grows kept safe with many putters and getters in real processes,
putters SIGKILLed at random points included."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from queue_util import segments

import shmring
from shmring._queue import chain as C

WAIT = 30.0


def _shm_bytes(q: Any) -> int:
    """The /dev/shm the queue's regions hold: bytes allocated (their attach
    tables' segments are larger, but untouched slot pages are holes)."""
    return sum(os.stat(p).st_blocks * 512 for p in segments(q) if os.path.exists(p))


def test_small_at_rest_and_put_never_blocks(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    at_rest = _shm_bytes(q)
    assert at_rest < 128 * 1024, at_rest  # tens of KiB, not 8 MiB
    for i in range(200):  # 20 MB before anyone reads: put_nowait never finds it full
        q.put_nowait(bytes([i]) * 100_000)
    assert q.qsize() == 200 and not q.full()
    assert len(segments(q)) > 3  # it grew rings
    for i in range(200):
        assert q.get(timeout=WAIT) == bytes([i]) * 100_000
    q.put("small")  # drained: the next put moves back to a small ring
    assert q.get(timeout=WAIT) == "small"
    deadline = time.monotonic() + WAIT
    while _shm_bytes(q) > 3 * at_rest and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _shm_bytes(q) <= 3 * at_rest


def test_an_item_of_any_size(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    a = np.arange(10_000_000, dtype=np.uint8)
    q.put(a)
    q.put("after")
    b = q.get(timeout=WAIT)
    assert b.dtype == np.uint8 and np.array_equal(a, b)
    assert q.get(timeout=WAIT) == "after"


def test_maxsize_and_maxsize_bytes_still_bound_it(make_queue: Callable[..., Any]) -> None:
    q = make_queue(shmring.Queue, 2)
    q.put(1)
    q.put(2)
    try:
        q.put_nowait(3)
        raise AssertionError("put_nowait beyond maxsize did not raise")
    except queue.Full:
        pass
    b = make_queue(maxsize_bytes=4096)
    try:
        for _ in range(100):
            b.put_nowait(b"x" * 100)
        raise AssertionError("put_nowait beyond maxsize_bytes did not raise")
    except queue.Full:
        pass


def _put_many(q: Any, n: int, size: int) -> None:
    for i in range(n):
        q.put((i, bytes([i % 256]) * size))


def test_items_outlive_the_putter_that_grew_the_rings(make_queue: Callable[..., Any]) -> None:
    """A child grows the queue and exits before the parent reads a thing:
    the parent's watcher holds every ring the child made."""
    q = make_queue()
    for method in ("fork", "spawn"):
        ctx: Any = mp.get_context(method)
        p = ctx.Process(target=_put_many, args=(q, 200, 100_000))
        p.start()
        p.join(WAIT)
        assert p.exitcode == 0
        for i in range(200):
            assert q.get(timeout=WAIT) == (i, bytes([i % 256]) * 100_000)


def _producer(q: Any, done: Any, k: int, n: int, seed: int) -> None:
    rnd = random.Random(seed)
    for i in range(n):
        # Mostly small, sometimes large enough to need a ring of its own.
        size = rnd.choice((8, 200, 3000, 20_000, C.BASE_CAPACITY * 3))
        q.put((k, i, b"p" * size))
        done.put((k, i))  # committed: reported only once put() returned


def _consumer(q: Any, out: Any, j: int) -> None:
    while True:
        item = q.get(timeout=WAIT)
        if item is None:
            return
        out.put((j, *item[:2]))


def _drain(reports: list[Any], procs: list[Any], timeout: float) -> list[Any]:
    """Everything ``procs`` report, read as it comes (a full pipe would
    stop its writer), until they have all exited (then joined)."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        running = any(p.is_alive() for p in procs)  # before the last read
        for r in reports:
            while not r.empty():
                got.append(r.get())
        if not running or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for p in procs:
        p.join(1)
    return got


def test_many_putters_and_getters_with_sigkills(make_queue: Callable[..., Any]) -> None:
    """Four putters (two SIGKILLed at random points) and three getters (one
    SIGKILLed) on one queue that grows and shrinks under them: every item
    reported put arrives at most once, in each putter's order, and none is
    lost but the one the killed getter may have taken and not reported."""
    ctx: Any = mp.get_context("fork")
    q = make_queue()
    # One report queue per process: a process SIGKILLed inside a shared
    # queue's put would hold its lock for good and hang the others.
    done: list[Any] = [ctx.SimpleQueue() for _ in range(4)]
    out: list[Any] = [ctx.SimpleQueue() for _ in range(3)]
    n = 400
    putters = [ctx.Process(target=_producer, args=(q, done[k], k, n, k)) for k in range(4)]
    getters = [ctx.Process(target=_consumer, args=(q, out[j], j)) for j in range(3)]
    for p in getters + putters:
        p.start()
    rnd = random.Random()
    time.sleep(rnd.uniform(0.05, 0.3))
    for p in (putters[0], getters[0], putters[1]):
        os.kill(p.pid or 0, signal.SIGKILL)
        time.sleep(rnd.uniform(0.0, 0.1))
    committed = set(_drain(done, putters, WAIT))
    assert [p.exitcode for p in putters[2:]] == [0, 0]
    for _ in getters[1:]:
        q.put(None)
    seen: list[tuple[int, int, int]] = _drain(out, getters, WAIT)
    assert [p.exitcode for p in getters[1:]] == [0, 0]
    got = [(k, i) for _, k, i in seen]
    assert len(got) == len(set(got)), "an item arrived twice"
    lost = committed - set(got)
    assert len(lost) <= 1, f"lost: {sorted(lost)[:5]}"  # taken by the killed getter
    assert all((k, i) in committed or k < 2 for k, i in got)
    assert len([1 for k, _ in got if k >= 2]) >= 2 * n - 1
    runs: dict[tuple[int, int], list[int]] = {}
    for j, k, i in seen:  # what one getter took of one putter came in its order
        runs.setdefault((j, k), []).append(i)
    assert all(r == sorted(r) for r in runs.values())
    assert q._h.chain.gen() > 0  # it grew while they ran
    q.close()
