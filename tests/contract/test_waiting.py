"""Blocking calls: they sleep rather than spin, honour their timeout, wake on
data, end-of-stream and close, and let signal handlers run."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

import shmring
from shmring._layout import TRAITS


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _block_on_recv(name: str, started: mp.synchronize.Event) -> None:
    ch = shmring.Channel.open(name)
    rx = ch.consumer()
    started.set()
    with contextlib.suppress(shmring.EndOfStream):
        rx.recv(timeout=30)
    ch.close()


@pytest.mark.parametrize("pattern", list(TRAITS))
def test_blocked_consumer_sleeps(
        uname: str, make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    ch = make_channel(capacity=1 << 12, pattern=pattern)
    ctx = mp.get_context("fork")
    started = ctx.Event()
    proc = ctx.Process(target=_block_on_recv, args=(uname, started))
    proc.start()
    try:
        assert started.wait(10)
        time.sleep(0.2)  # past the spin and yield phases
        assert proc.pid is not None
        before = _cpu_seconds(proc.pid)
        time.sleep(1.0)
        used = _cpu_seconds(proc.pid) - before
        # A spinning waiter would burn a whole core (1.0 s); a sleeping one
        # costs a clock tick at most.
        assert used < 0.05, f"blocked consumer used {used:.3f} s of CPU in 1 s"
        ch.close_send()  # wakes it: end of stream
        proc.join(10)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def test_timeout_is_honoured(make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 12)
    rx, tx = ch.consumer(), ch.producer()
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout):
        rx.recv(timeout=0.3)
    assert time.monotonic() - t0 >= 0.3
    with pytest.raises(TimeoutError):  # Timeout is a TimeoutError
        rx.recv(timeout=0)
    while True:
        try:
            tx.send_nowait(b"x" * 100)
        except shmring.WouldBlock:
            break
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout):
        tx.send(b"x" * 100, timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(ValueError):
        rx.recv(timeout=-1)


def test_wakes_on_data_from_another_thread(make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 12)
    rx, tx = ch.consumer(), ch.producer()
    timer = threading.Timer(0.3, tx.send, args=(b"late",))
    timer.start()
    assert rx.recv(timeout=10) == b"late"
    timer.join()


def test_close_under_a_waiting_thread_raises_closed(uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=1 << 12)
    rx = ch.consumer()
    seen: list[BaseException] = []

    def wait() -> None:
        try:
            rx.recv(timeout=20)
        except BaseException as e:
            seen.append(e)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    ch.close()
    t.join(10)
    ch.unlink()
    assert not t.is_alive()
    assert len(seen) == 1 and isinstance(seen[0], shmring.Closed)
    with pytest.raises(shmring.Closed):
        rx.recv_nowait()


def test_signal_handler_runs_during_a_blocked_recv(
        make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel(capacity=1 << 12)
    rx = ch.consumer()

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            rx.recv(timeout=20)
        # The channel still works after the interruption.
        tx = ch.producer()
        tx.send(b"after")
        assert rx.recv(timeout=5) == b"after"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
