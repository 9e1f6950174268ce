"""The C put and get of shmring's queues (csrc/py/queue.c): which calls they
take and which they hand to the Python paths, their lock (``_core.Lock``),
and the two paths used at once by threads of one process."""

from __future__ import annotations

import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import _core
from shmring._queue.base import _QueueBase

WAIT = 30.0


# ------------------------------------------------------------ dispatch --
def test_common_call_stays_in_c(make_queue: Callable[..., Any],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    q = make_queue(maxsize_bytes=1 << 16)  # bounded in bytes: the C paths
    q.put("warm")  # the first put and get make this process's endpoints
    assert q.get() == "warm"
    calls: list[str] = []
    real_put, real_get = _QueueBase._put, _QueueBase._get

    def put(self: Any, *a: Any, **k: Any) -> None:
        calls.append("put")
        real_put(self, *a, **k)

    def get(self: Any, *a: Any, **k: Any) -> Any:
        calls.append("get")
        return real_get(self, *a, **k)

    monkeypatch.setattr(_QueueBase, "_put", put)
    monkeypatch.setattr(_QueueBase, "_get", get)
    q.put({"a": [1, 2.5, "x"]})
    q.put((1, None), True, None)
    q.put(b"xy", block=True, timeout=None)
    assert q.get() == {"a": [1, 2.5, "x"]}
    assert q.get(True) == (1, None)
    assert q.get(block=True, timeout=None) == b"xy"
    assert calls == []
    # Anything else is the Python path's: a pickled object, a timeout,
    # block=False, and a plain value under another serializer.
    q.put({1, 2})
    q.put(1, timeout=WAIT)
    q.put_nowait(2)
    assert q.get() == {1, 2}  # a pickle record: taken by the C get through _take_record
    assert q.get(timeout=WAIT) == 1
    assert q.get_nowait() == 2
    assert calls == ["put", "put", "put", "get", "get"]
    j = make_queue(serializer=shmring.JSONSerializer())
    calls.clear()
    j.put([1, 2])
    assert j.get() == [1, 2]
    assert calls == ["put", "get"]


def test_put_of_a_value_too_large_undoes_its_counts(make_queue: Callable[..., Any]) -> None:
    q = make_queue(shmring.JoinableQueue, maxsize_bytes=1 << 16)
    with pytest.raises(shmring.MessageTooLarge):
        q.put("x" * (1 << 16))
    assert q.qsize() == 0
    q.join(timeout=0)  # no unfinished task was left behind
    q.put("ok")
    assert q.qsize() == 1
    assert q.get() == "ok"
    with pytest.raises(shmring.Timeout):
        q.join(timeout=0.05)
    q.task_done()
    q.join(timeout=0)


def test_full_queue_hands_the_common_put_to_python(make_queue: Callable[..., Any]) -> None:
    q = make_queue(maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full()
    t = threading.Thread(target=q.put, args=(3,))  # waits in _wait_for_room
    t.start()
    time.sleep(0.1)
    assert t.is_alive() and q.qsize() == 2
    assert q.get() == 1
    t.join(WAIT)
    assert not t.is_alive()
    assert [q.get(), q.get()] == [2, 3]
    assert q.qsize() == 0


def test_corrupt_pickle_record_is_counted_out_by_the_c_get(make_queue: Callable[..., Any]) -> None:
    q = make_queue(maxsize_bytes=1 << 16)
    q.put("warm")
    assert q.get() == "warm"
    h = q._h
    assert h.state.reserve()  # as put() counts an item
    h.tx.send(pickle.PROTO + b"\x05garbage")
    q.put("after")
    with pytest.raises(shmring.DecodeError):
        q.get()
    assert q.qsize() == 1
    assert q.get() == "after"
    assert q.qsize() == 0


# ------------------------------------------------------------- threads --
def test_threads_mix_both_paths(make_queue: Callable[..., Any]) -> None:
    """Putters and getters in threads of one process, each alternating the C
    call and the Python one (a timeout, a pickled object), on a queue small
    enough that the C put often finds it full: every item comes out once."""
    q = make_queue(maxsize=8)
    got: list[Any] = []
    lock = threading.Lock()
    n = 600

    def produce(k: int) -> None:
        for i in range(n):
            item = k * 10_000 + i
            if i % 3 == 0:
                q.put(item)
            elif i % 3 == 1:
                q.put(item, timeout=WAIT)
            else:
                q.put(frozenset([item]))  # not a plain value: pickled

    def consume() -> None:
        i = 0
        while True:
            item = q.get() if i % 2 else q.get(timeout=WAIT)
            i += 1
            if item is None:
                return
            with lock:
                got.append(next(iter(item)) if isinstance(item, frozenset) else item)

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(3)]
    consumers = [threading.Thread(target=consume) for _ in range(3)]
    for t in producers + consumers:
        t.start()
    for t in producers:
        t.join(WAIT)
    for _ in consumers:
        q.put(None)
    for t in consumers:
        t.join(WAIT)
    assert not any(t.is_alive() for t in producers + consumers)
    assert sorted(got) == sorted(k * 10_000 + i for k in range(3) for i in range(n))
    assert q.qsize() == 0


def test_a_waiting_c_get_leaves_other_calls_their_timeouts(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(q.get()))  # waits, holding the read lock
    t.start()
    time.sleep(0.05)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)
    assert time.monotonic() - start >= 0.09
    q.put("one")
    t.join(WAIT)
    assert out == ["one"]


def test_close_while_a_c_get_waits(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    q.put("warm")
    assert q.get() == "warm"
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(q.get()))
    t.start()
    time.sleep(0.05)
    q.close()  # the waiting get keeps the handles until it is done
    assert q._h is not None
    other = pickle.loads(pickle.dumps(q))  # a second attachment in this process
    other.put("late")
    t.join(WAIT)
    assert out == ["late"]
    assert q._h is None and q._state is None  # let go on the way out
    with pytest.raises(shmring.QueueClosed):
        q.get()
    other.close()


# ---------------------------------------------------------------- Lock --
def test_lock_behaves_as_threading_lock() -> None:
    lk = _core.Lock()
    assert not lk.locked()
    assert lk.acquire()
    assert lk.locked()
    assert not lk.acquire(False)
    start = time.monotonic()
    assert not lk.acquire(timeout=0.05)
    assert time.monotonic() - start >= 0.045
    with pytest.raises(ValueError):
        lk.acquire(False, 1.0)
    with pytest.raises(ValueError):
        lk.acquire(timeout=-2)
    with pytest.raises(ValueError):
        lk.acquire(timeout=float("nan"))
    with pytest.raises(OverflowError):
        lk.acquire(timeout=1e300)
    lk.release()
    with pytest.raises(RuntimeError):
        lk.release()
    with lk:
        assert lk.locked()
    assert not lk.locked()
    # Released by another thread, as threading.Lock allows.
    lk.acquire()
    threading.Thread(target=lk.release).start()
    assert lk.acquire(timeout=WAIT)
    lk.release()


def test_lock_wait_runs_signal_handlers() -> None:
    lk = _core.Lock()
    lk.acquire()

    class Alarm(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Alarm

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        start = time.monotonic()
        with pytest.raises(Alarm):
            lk.acquire(timeout=WAIT)
        assert time.monotonic() - start < WAIT / 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert lk.locked()
    lk.release()


def test_queue_state_checks_its_arguments() -> None:
    lk = _core.Lock()
    with pytest.raises(ValueError, match="512-byte mapping"):
        _core.QueueState(bytearray(512), 0, 0, False, lk, lk)  # too small
    with pytest.raises(ValueError):
        _core.QueueState(bytearray(4096), 64, 0, False, lk, lk)  # not on a line
    with pytest.raises(TypeError):
        _core.QueueState(bytearray(4096), 0, 0, False, object(), lk)  # type: ignore[arg-type]
    st = _core.QueueState(bytearray(4096), 0, 0, False, lk, lk)
    with pytest.raises(TypeError):
        st.tx = object()
    st.invalidate()
    assert st.tx is None and st.rx is None


def test_count_many_counts_a_batch_as_many_single_calls_would() -> None:
    """A bridge's batch counts: puts (and tasks), items out, tasks done at
    most down to zero; the same counts as one call per item."""
    lk = _core.Lock()
    many = _core.QueueState(bytearray(4096), 0, 10, True, lk, lk)
    buf = bytearray(4096)
    single = _core.QueueState(buf, 0, 0, True, lk, lk)
    assert many.count_many(7, 0, 0) == 0
    for _ in range(7):
        assert single.reserve()
    assert many.count() == single.count() == 7
    assert many.count_many(0, 3, 3) == 3
    for _ in range(3):
        single.taken()
        assert single.task_done()
    assert many.count() == single.count() == 4
    assert many.count_many(0, 0, 10) == 4  # only the 4 unfinished are done
    assert many.task_done() is False
    assert many.count_many(0, 0, 0) == 0
    with pytest.raises(TypeError):
        many.count_many(1, 2)  # type: ignore[call-arg]
    with pytest.raises(OverflowError):
        many.count_many(-1, 0, 0)
    many.invalidate()
    single.invalidate()
    with pytest.raises(ValueError, match="invalidated"):
        many.count_many(1, 0, 0)
