"""Small corners of the public API that the docs promise, checked as a user
meets them: ``claim(0)`` (an empty message, as ``send(b"")``) and
``Queue.open(name)`` (what ``RegionExists`` tells a second creator to do),
across real processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import shmring

TIMEOUT = 60.0


@pytest.mark.parametrize("pattern", ["spsc", "mpmc", "broadcast"])
def test_claim_zero_commits_an_empty_message(
        make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    ch = make_channel(pattern)
    rx = ch.consumer()
    tx = ch.producer()
    with tx.claim(0) as buf:
        assert len(buf) == 0
    tx.send(b"after")
    assert rx.recv(timeout=5) == b""
    assert rx.recv(timeout=5) == b"after"
    tx.close()
    rx.close()


def test_claim_zero_is_documented() -> None:
    doc = shmring.Producer.claim.__doc__ or ""
    assert "claim(0)" in doc and 'send(b"")' in doc


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT)


@pytest.mark.parametrize("cls", [shmring.Queue, shmring.JoinableQueue, shmring.SimpleQueue])
def test_queue_open_by_name_in_another_process(make_queue: Callable[..., Any],
                                               cls: type) -> None:
    q = make_queue(cls)
    q.put(21)
    kind = cls.__name__
    child = _child(
        "import shmring\n"
        f"q = shmring.{kind}.open({q.name!r})\n"
        f"assert type(q) is shmring.{kind}, type(q)\n"
        "x = q.get()\n"
        "q.put(x * 2)\n"
        "if hasattr(q, 'task_done'): q.task_done()\n"
        "q.close()\n")
    assert child.returncode == 0, child.stderr
    assert q.get() == 42


def test_a_second_creator_is_told_to_open_and_can(make_queue: Callable[..., Any]) -> None:
    q = make_queue(shmring.Queue)
    with pytest.raises(shmring.RegionExists, match="open it"):
        shmring.Queue(name=q.name)
    other: shmring.Queue[str] = shmring.Queue.open(q.name)
    try:
        other.put("hi")
        assert q.get(timeout=5) == "hi"
    finally:
        other.close()


def test_queue_open_of_a_missing_name_raises_region_not_found(uname: str) -> None:
    with pytest.raises(shmring.RegionNotFound):
        shmring.Queue.open(uname + "-nothing")
    with pytest.raises(shmring.InvalidArgument):
        shmring.Queue.open(uname, namespace="bad/ns")
