"""shmring.Queue, JoinableQueue and SimpleQueue against the behaviour that
multiprocessing's own test suite asks of its queues (put/get order, Full and
Empty with and without timeouts, qsize/empty/full, close, task_done/join),
restated here in our own words; then what a shared-memory queue adds:
passing it to processes and pools under every start method, and a lifetime
that ends with its last holder, SIGKILL included."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from queue_util import segments, wait_gone

import shmring

START_METHODS = ["fork", "spawn", "forkserver"]
T = 0.1  # a short timeout
WAIT = 30.0  # a bound on anything that should happen soon


QUEUES = [shmring.Queue, shmring.JoinableQueue]


# ------------------------------------------------------- child bodies --
def _getter(q: Any, results: Any, n: int) -> None:
    results.put([q.get(timeout=WAIT) for _ in range(n)])


def _getter_after_hello(q: Any, results: Any, n: int) -> None:
    results.put("hello")
    time.sleep(0.1)
    results.put([q.get(timeout=WAIT) for _ in range(n)])


def _putter(q: Any, items: list[Any]) -> None:
    for item in items:
        q.put(item)


def _echo(jobs: Any, results: Any) -> None:
    while True:
        item = jobs.get(timeout=WAIT)
        if item is None:
            return
        results.put((os.getpid(), item))


def _task_worker(q: Any, done: Any) -> None:
    while True:
        item = q.get(timeout=WAIT)
        if item is None:
            q.task_done()
            return
        done.put(item * 2)
        q.task_done()


def _hold(q: Any, go: Any) -> None:
    q.put("ready")
    go.wait(WAIT)  # then exit without closing: the exit itself lets go


_POOL_Q: Any = None


def _pool_init(q: Any) -> None:
    global _POOL_Q
    _POOL_Q = q


def _pool_work(x: int) -> int:
    _POOL_Q.put(x * x)
    return os.getpid()


# ------------------------------------------------ put / get / ordering --
@pytest.mark.parametrize("cls", [*QUEUES, shmring.SimpleQueue])
def test_fifo_order(make_queue: Callable[..., Any], cls: type) -> None:
    q = make_queue(cls)
    items = [i if i % 3 else {"i": i, "pad": "x" * i} for i in range(300)]
    for item in items:
        q.put(item)
    assert [q.get() for _ in items] == items


@pytest.mark.parametrize("cls", QUEUES)
def test_put_until_full(make_queue: Callable[..., Any], cls: type) -> None:
    # A queue of six: every spelling of put fills it, then each spelling of
    # a put that must not wait raises Full, and a put with a timeout raises
    # Full once the timeout has passed. A child then finds all six, in order.
    q = make_queue(cls, maxsize=6)
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put(1)
    q.put(2, True)
    q.put(3, True, None)
    q.put(4, False)
    q.put(5, False, None)
    q.put_nowait(6)
    assert q.qsize() == 6 and q.full() and not q.empty()
    attempts: list[Callable[[], None]] = [
        lambda: q.put(7, False), lambda: q.put(7, False, None),
        lambda: q.put_nowait(7), lambda: q.put(7, True, -1)]
    for attempt in attempts:
        with pytest.raises(queue.Full):
            attempt()
    for attempt in (lambda: q.put(7, True, T), lambda: q.put(7, timeout=T)):
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            attempt()
        assert T - 0.01 <= time.monotonic() - t0 < T + 2
    assert q.qsize() == 6
    results = make_queue()
    p = mp.get_context("fork").Process(target=_getter, args=(q, results, 6))
    p.start()
    assert results.get(timeout=WAIT) == [1, 2, 3, 4, 5, 6]
    p.join(WAIT)
    assert q.empty() and not q.full() and q.qsize() == 0


@pytest.mark.parametrize("cls", QUEUES)
def test_get_what_a_child_put(make_queue: Callable[..., Any], cls: type) -> None:
    q = make_queue(cls)
    p = mp.get_context("fork").Process(target=_putter, args=(q, [1, 2, 3, 4, 5]))
    p.start()
    p.join(WAIT)
    assert q.qsize() == 5 and not q.empty()
    assert q.get() == 1
    assert q.get(True) == 2
    assert q.get(True, None) == 3
    assert q.get(False) == 4
    assert q.get_nowait() == 5
    assert q.empty()
    for attempt in (lambda: q.get(False), lambda: q.get(False, None), q.get_nowait,
                    lambda: q.get(True, -1)):
        with pytest.raises(queue.Empty):
            attempt()
    for attempt in (lambda: q.get(True, T), lambda: q.get(timeout=T)):
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            attempt()
        assert T - 0.01 <= time.monotonic() - t0 < T + 2


def test_forked_child_gets_items_put_before_the_fork(make_queue: Callable[..., Any]) -> None:
    q, results = make_queue(), make_queue()
    for i in range(10):
        q.put(i)
    p = mp.get_context("fork").Process(target=_getter, args=(q, results, 10))
    p.start()
    assert results.get(timeout=WAIT) == list(range(10))
    p.join(WAIT)
    assert p.exitcode == 0
    q.put("parent still works")
    assert q.get(timeout=WAIT) == "parent still works"


def test_forked_child_puts_after_the_parents_items(make_queue: Callable[..., Any]) -> None:
    # The parent puts 0..9, forks a child that puts 10..19: the parent gets
    # 0..19 in order, then nothing.
    q = make_queue()
    for i in range(10):
        q.put(i)
    p = mp.get_context("fork").Process(target=_putter, args=(q, list(range(10, 20))))
    p.start()
    assert [q.get(timeout=WAIT) for _ in range(20)] == list(range(20))
    with pytest.raises(queue.Empty):
        q.get(False)
    p.join(WAIT)


def test_get_timeout_waits_at_least_the_timeout(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(True, 0.2)
    assert time.monotonic() - t0 >= 0.19


def test_put_and_get_while_importing(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A module that uses a queue at import time must not deadlock
    # (multiprocessing's feeder thread once did, on the import lock).
    (tmp_path / "uses_a_queue_on_import.py").write_text(
        "import shmring\n"
        "q = shmring.Queue()\n"
        "q.put('knock knock')\n"
        "ANSWER = q.get(timeout=3)\n"
        "q.close()\n"
        "del q\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    try:
        mod = importlib.import_module("uses_a_queue_on_import")
        assert mod.ANSWER == "knock knock"
    finally:
        sys.modules.pop("uses_a_queue_on_import", None)


def test_qsize_counts_items(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    for i in range(5):
        assert q.qsize() == i
        q.put(i)
    for i in range(5):
        q.get()
        assert q.qsize() == 4 - i


def test_unpicklable_item_raises_and_queue_carries_on(make_queue: Callable[..., Any]) -> None:
    # multiprocessing reports this from its feeder thread; we raise in put().
    q = make_queue(shmring.JoinableQueue, maxsize=2)
    with pytest.raises(TypeError):
        q.put(threading.Lock())
    assert q.qsize() == 0 and q.empty()
    q.put(1)
    q.put(2)
    assert q.full() and [q.get(), q.get()] == [1, 2]
    q.task_done()
    q.task_done()
    q.join(timeout=1)  # the failed put left no unfinished task behind


def test_full_in_bytes(make_queue: Callable[..., Any]) -> None:
    q = make_queue(maxsize_bytes=4096)
    n = 0
    with pytest.raises(queue.Full):
        while True:
            q.put_nowait(b"x" * 100)
            n += 1
    assert q.full() and n > 10 and q.qsize() == n
    with pytest.raises(shmring.MessageTooLarge):
        q.put(b"y" * 4096)
    assert [q.get() for _ in range(n)] == [b"x" * 100] * n
    assert not q.full()


def test_large_items(make_queue: Callable[..., Any]) -> None:
    q = make_queue(maxsize_bytes=1 << 24)  # items up to 8 MiB
    a = np.arange(1 << 19, dtype=np.float64)
    for _ in range(3):
        q.put({"a": a, "n": 1})
        got = q.get(timeout=WAIT)
        assert np.array_equal(got["a"], a) and got["a"].flags.writeable
    q.put("small after large")
    assert q.get() == "small after large"


# -------------------------------------------------------------- close --
@pytest.mark.parametrize("cls", [*QUEUES, shmring.SimpleQueue])
def test_closed_queue_raises_value_error(make_queue: Callable[..., Any], cls: type) -> None:
    q = make_queue(cls)
    q.put("left behind")
    q.close()
    q.close()  # idempotent
    calls: list[Callable[[], Any]] = [lambda: q.put("x"), q.get]
    if cls is not shmring.SimpleQueue:
        calls += [lambda: q.put_nowait("x"), q.get_nowait, lambda: q.get(timeout=1)]
    for call in calls:
        with pytest.raises(ValueError, match="is closed"):
            call()
    with pytest.raises(OSError, match="is closed"):
        q.empty()  # as multiprocessing once a used queue is closed
    with pytest.raises(shmring.Closed):
        q.get()
    if cls is not shmring.SimpleQueue:
        q.join_thread()  # nothing to join: puts are synchronous
        q.cancel_join_thread()
    assert "closed" in repr(q)


def test_join_thread_before_close_is_an_error(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    with pytest.raises(AssertionError):
        q.join_thread()
    q.cancel_join_thread()  # harmless at any time


def test_close_in_one_process_leaves_the_queue_to_others(make_queue: Callable[..., Any]) -> None:
    q, results = make_queue(), make_queue()
    q.put("a")
    q.put("b")
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_getter_after_hello, args=(q, results, 3))
    p.start()
    q.put("c")
    # A spawned child opens the queue when it unpickles it: until then the
    # parent must hold it (documented). After that, the parent may let go.
    assert results.get(timeout=WAIT) == "hello"
    q.close()
    assert results.get(timeout=WAIT) == ["a", "b", "c"]
    p.join(WAIT)
    assert p.exitcode == 0


# -------------------------------------------------------- joinable --
def test_task_done_and_join_across_processes(make_queue: Callable[..., Any]) -> None:
    q, done = make_queue(shmring.JoinableQueue), make_queue()
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=_task_worker, args=(q, done)) for _ in range(3)]
    for w in workers:
        w.start()
    for i in range(100):
        q.put(i)
    q.join(timeout=WAIT)
    assert sorted(done.get(timeout=WAIT) for _ in range(100)) == [2 * i for i in range(100)]
    for _ in workers:
        q.put(None)
    q.join(timeout=WAIT)
    for w in workers:
        w.join(WAIT)
        assert w.exitcode == 0


def test_task_done_too_many_times(make_queue: Callable[..., Any]) -> None:
    q = make_queue(shmring.JoinableQueue)
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.put(1)
    q.get()
    q.task_done()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


def test_join_waits_for_the_last_task(make_queue: Callable[..., Any]) -> None:
    q = make_queue(shmring.JoinableQueue)
    q.join()  # nothing put: returns at once
    q.put("job")
    with pytest.raises(shmring.Timeout):
        q.join(timeout=T)

    def finish() -> None:
        time.sleep(0.1)
        q.get()
        q.task_done()

    t = threading.Thread(target=finish)
    t.start()
    t0 = time.monotonic()
    q.join(timeout=WAIT)
    assert time.monotonic() - t0 < WAIT / 2
    t.join()


# ----------------------------------------------------- maxsize waits --
def test_full_queue_put_waits_for_a_get(make_queue: Callable[..., Any]) -> None:
    q = make_queue(maxsize=2)
    q.put(1)
    q.put(2)
    threading.Timer(0.1, q.get).start()
    t0 = time.monotonic()
    q.put(3, timeout=WAIT)  # woken by the get, not by the timeout
    assert 0.05 < time.monotonic() - t0 < WAIT / 2
    assert [q.get(), q.get()] == [2, 3]


def test_full_queue_put_is_woken_from_another_process(make_queue: Callable[..., Any]) -> None:
    q, results = make_queue(maxsize=1), make_queue()
    q.put("first")
    p = mp.get_context("fork").Process(target=_getter, args=(q, results, 2))
    p.start()
    q.put("second", timeout=WAIT)
    assert results.get(timeout=WAIT) == ["first", "second"]
    p.join(WAIT)


# ------------------------------------------------- processes, pools --
@pytest.mark.parametrize("method", START_METHODS)
def test_pass_to_process(make_queue: Callable[..., Any], method: str) -> None:
    jobs, results = make_queue(), make_queue(shmring.SimpleQueue)
    ctx: Any = mp.get_context(method)
    procs = [ctx.Process(target=_echo, args=(jobs, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for i in range(50):
        jobs.put(i)
    for _ in procs:
        jobs.put(None)
    got = [results.get() for _ in range(50)]
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == 0
    assert sorted(item for _, item in got) == list(range(50))
    assert {pid for pid, _ in got} <= {p.pid for p in procs}


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_initializer(make_queue: Callable[..., Any], method: str) -> None:
    q = make_queue()
    with mp.get_context(method).Pool(2, initializer=_pool_init, initargs=(q,)) as pool:
        pids = pool.map(_pool_work, range(20))
        pool.close()
        pool.join()
    assert len(set(pids)) >= 1
    assert sorted(q.get(timeout=WAIT) for _ in range(20)) == [x * x for x in range(20)]


def test_queue_sent_through_a_queue(make_queue: Callable[..., Any]) -> None:
    # Unlike multiprocessing's, a shmring queue pickles at any time (by name).
    q, carrier = make_queue(), make_queue()
    carrier.put(q)
    inner = carrier.get(timeout=WAIT)
    assert inner.name == q.name
    inner.put("through")
    assert q.get(timeout=WAIT) == "through"
    inner.close()
    assert pickle.loads(pickle.dumps(q)).name == q.name


def test_many_processes_each_item_once(make_queue: Callable[..., Any]) -> None:
    jobs, results = make_queue(), make_queue()
    ctx = mp.get_context("fork")
    producers = [ctx.Process(target=_putter, args=(jobs, [(k, i) for i in range(200)]))
                 for k in range(3)]
    consumers = [ctx.Process(target=_echo, args=(jobs, results)) for _ in range(3)]
    for p in producers + consumers:
        p.start()
    for p in producers:
        p.join(WAIT)
    for _ in consumers:
        jobs.put(None)
    got = [results.get(timeout=WAIT)[1] for _ in range(600)]
    for p in consumers:
        p.join(WAIT)
    assert sorted(got) == sorted((k, i) for k in range(3) for i in range(200))
    assert results.empty() and jobs.empty()


def test_threads_share_a_queue(make_queue: Callable[..., Any]) -> None:
    q = make_queue(maxsize=16)
    got: list[int] = []
    lock = threading.Lock()

    def produce(k: int) -> None:
        for i in range(500):
            q.put(k * 1000 + i, timeout=WAIT)

    def consume() -> None:
        while True:
            item = q.get(timeout=WAIT)
            if item is None:
                return
            with lock:
                got.append(item)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=consume) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads[:4]:
        t.join()
    for _ in range(4):
        q.put(None)
    for t in threads[4:]:
        t.join()
    assert sorted(got) == sorted(k * 1000 + i for k in range(4) for i in range(500))


def test_os_fork_child_uses_its_own_endpoints(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    q.put("before")  # the parent's producer exists before the fork
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            assert q.get(timeout=WAIT) == "before"
            q.put("from child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert q.get(timeout=WAIT) == "from child"
    q.put("parent again")
    assert q.get() == "parent again"


# ---------------------------------------------------------- lifetime --
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_region_lives_while_any_holder_lives(make_queue: Callable[..., Any], how: str) -> None:
    q = make_queue()
    ctx = mp.get_context("spawn")
    # A holder that puts and exits: its items stay.
    a = ctx.Process(target=_putter, args=(q, [0, 1, 2]))
    a.start()
    a.join(WAIT)
    assert a.exitcode == 0
    assert [q.get(timeout=WAIT) for _ in range(3)] == [0, 1, 2]
    # A holder that outlives our own handle.
    go = ctx.Event()
    b = ctx.Process(target=_hold, args=(q, go))
    b.start()
    try:
        assert q.get(timeout=WAIT) == "ready"
        paths = segments(q)
        q.close()
        assert all(os.path.exists(p) for p in paths), "gone while a holder lives"
        if how == "exit":
            go.set()
        else:
            os.kill(b.pid, signal.SIGKILL)  # type: ignore[arg-type]
        b.join(WAIT)
        # The last holder is gone: so is the queue (bounded wait).
        assert wait_gone(paths, timeout=15), f"{paths} left after the last holder's {how}"
    finally:
        if b.is_alive():
            b.kill()
            b.join()


def test_garbage_queue_lets_go(uname: str) -> None:
    q: shmring.Queue[int] = shmring.Queue(name=uname)
    q.put(1)
    paths = segments(q)
    assert all(os.path.exists(p) for p in paths)
    del q
    gc.collect()
    assert wait_gone(paths)


# ------------------------------------------------------------ simple --
def _report_empty(q: Any, child_can_start: Any, parent_can_continue: Any) -> None:
    child_can_start.wait(WAIT)
    try:
        q.put(q.empty())
        q.put(q.empty())
    finally:
        parent_can_continue.set()


@pytest.mark.parametrize("method", START_METHODS)
def test_simple_queue_empty_seen_from_a_child(make_queue: Callable[..., Any], method: str) -> None:
    q = make_queue(shmring.SimpleQueue)
    ctx: Any = mp.get_context(method)
    child_can_start, parent_can_continue = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_report_empty, args=(q, child_can_start, parent_can_continue))
    p.start()
    assert q.empty()
    child_can_start.set()
    assert parent_can_continue.wait(WAIT)
    assert not q.empty()
    assert q.get() is True  # empty before the child's first put
    assert q.get() is False  # not empty after it
    assert q.empty()
    p.join(WAIT)


def test_simple_queue(make_queue: Callable[..., Any]) -> None:
    q = make_queue(shmring.SimpleQueue)
    assert q.empty()
    q.put(("result", 1))
    assert not q.empty()
    assert q.get() == ("result", 1)
    assert q.empty()


def test_repr_name_and_generic(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    assert q.name in repr(q) and repr(q).startswith("<shmring.Queue")
    assert shmring.Queue[int] is not None and shmring.SimpleQueue[str] is not None
    with pytest.raises(shmring.RegionExists):
        shmring.Queue(name=q.name)
