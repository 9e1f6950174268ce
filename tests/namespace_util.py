"""One test's programs in a supervisor namespace of their own: the
environment they run with, the namespace's segments in /dev/shm, and the
wait for them to be gone once the test is over."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Seconds a test waits for what its programs should do.
TIMEOUT = 30.0

_runs = itertools.count()


def wait_for(what: str, cond: Callable[[], T], timeout: float = TIMEOUT) -> T:
    """Poll ``cond()`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.02)
    return got


def segments(ns: str) -> list[str]:
    """The /dev/shm entries of namespace ``ns``."""
    return sorted(e for e in os.listdir("/dev/shm") if e.startswith(f"shmring.{ns}."))


def wait_gone(ns: str, timeout: float = 10.0) -> list[str]:
    """What is left of namespace ``ns`` after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := segments(ns)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@contextlib.contextmanager
def program_env(prefix: str, **extra: str) -> Iterator[dict[str, str]]:
    """The environment of one test's programs: a namespace of its own
    (``prefix``, this process's pid for conftest's leak check, a counter), a
    supervisor that leaves a second after its last client, unbuffered output,
    and ``extra``. Every segment of the namespace must be gone at the end."""
    ns = f"{prefix}-{os.getpid()}-{next(_runs)}"
    env = dict(os.environ, SHMRING_NAMESPACE=ns, SHMRING_SUPERVISOR_IDLE="1",
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", **extra)
    yield env
    left = wait_gone(ns)
    assert not left, f"left in /dev/shm: {left}"
