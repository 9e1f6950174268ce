"""Forked children for multi-process tests: a ``spawn`` fixture that starts
them (any still running at the end is killed) and :func:`kill`, a SIGKILL
that waits for the child and checks it died of it. A test module takes the
fixture with ``from forked_util import spawn_fixture`` (registered as
``spawn``), and ``kill``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

CTX = get_context("fork")


@pytest.fixture(name="spawn")
def spawn_fixture() -> Iterator[Callable[..., BaseProcess]]:
    """Starts forked children; any still running at the end is killed."""
    procs: list[BaseProcess] = []

    def _spawn(target: Callable[..., None], *args: Any) -> BaseProcess:
        p = CTX.Process(target=target, args=args, daemon=True)
        p.start()
        procs.append(p)
        return p

    yield _spawn
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)


def kill(p: BaseProcess, wait: float = 10.0) -> None:
    """SIGKILL ``p``, wait for it, check it died of the signal."""
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join(wait)
    assert p.exitcode == -signal.SIGKILL
