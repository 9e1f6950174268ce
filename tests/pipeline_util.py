"""Helpers of the pipeline tests: a pipeline name the leak check knows
(``pname``), functions importable by name (for ``spawn`` workers), and
checks that a run left no process and no segment behind."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_count = itertools.count()


@pytest.fixture
def pname() -> str:
    """A pipeline name unique to this test; its channels carry ``-<pid>-``,
    so the leak check of conftest.py sees them."""
    return f"p-{os.getpid()}-{next(_count)}"


def segments_of(name: str) -> list[str]:
    """The /dev/shm entries of pipeline ``name``'s channels."""
    return sorted(e for e in os.listdir("/dev/shm") if f".{name}." in e)


def gone(name: str, timeout: float = 10.0) -> bool:
    """True once no segment of pipeline ``name`` is left (bounded wait)."""
    deadline = time.monotonic() + timeout
    while segments_of(name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def all_exit(pids: list[int], timeout: float = 5.0) -> bool:
    """True once every pid has exited (bounded wait)."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------- functions a spawned worker imports --
def double(x: int) -> int:
    """2x."""
    return x * 2


def inc(x: int) -> int:
    """x + 1."""
    return x + 1


def odd(x: int) -> bool:
    """True for odd x."""
    return x % 2 == 1


def spread(x: int) -> list[int]:
    """x repeated x % 3 times (0, 1 or 2 outputs)."""
    return [x] * (x % 3)


def slow_inc(x: int) -> int:
    """x + 1, a little later."""
    time.sleep(0.001)
    return x + 1


def kill_self_on(x: int) -> int:
    """SIGKILL our own process on 13 (a poison item); x otherwise."""
    if x == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def naturals() -> Iterator[int]:
    """0, 1, 2, ... forever."""
    return itertools.count()


def read_ahead(name: str, build: Callable[[Any], Any]) -> list[int]:
    """How far the source of a run (``build(pipeline.source(...))`` over an
    endless source) was read ahead of its outputs, every 100 outputs of a
    slow loop, until the run is cancelled after 2,000."""
    import shmring

    pulled = itertools.count()
    last = [0]

    def source() -> Iterator[int]:
        for x in itertools.count():
            last[0] = next(pulled)
            yield x

    p = shmring.Pipeline(name)
    build(p.source(source()))
    ahead = []
    with p.run() as run:
        for n, _ in enumerate(run):
            if n % 100 == 0:
                time.sleep(0.05)  # a slow consumer: the edges fill
                ahead.append(last[0] - n)
            if n == 2000:
                run.cancel()
    return ahead
