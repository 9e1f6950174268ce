"""Presence: processes that start in any order and can tell whether anyone
is on the other side of a channel.

- ``Channel.open(name, wait=s)`` waits for a channel another process has not
  created yet (a real second process creates it later); ``wait=0`` raises at
  once, a bounded wait raises after it and says how long it waited;
- ``ch.consumers`` / ``ch.producers`` count live endpoints of real processes
  and drop a SIGKILLed process's at once, before anyone recovers its slot;
- a send that times out says whether a live consumer is attached, sync and
  asyncio, including after the only consumer was SIGKILLed.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import pytest

import shmring

CTX = mp.get_context("fork")
Make = Callable[..., shmring.Channel]


def _opener(name: str, wait: float, conn: Connection) -> None:
    """Open ``name`` (waiting for it), take one message, report it."""
    conn.send("waiting")
    ch = shmring.Channel.open(name, wait=wait)
    try:
        conn.send(ch.consumer().recv(timeout=10))
    finally:
        ch.close()


def _consumer(name: str, conn: Connection) -> None:
    """Hold a consumer of ``name`` until told to close it (or killed)."""
    ch = shmring.Channel.open(name)
    rx = ch.consumer()
    conn.send("ready")
    conn.recv()
    rx.close()
    conn.send("closed")
    conn.recv()
    ch.close()


def _start(target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    here, there = CTX.Pipe()
    p = CTX.Process(target=target, args=(*args, there), daemon=True)
    p.start()
    return p, here


def _finish(*procs: Any) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(10)


def test_open_waits_for_a_channel_created_later(uname: str) -> None:
    p, conn = _start(_opener, uname, 20.0)
    ch = None
    try:
        assert conn.poll(10) and conn.recv() == "waiting"
        time.sleep(0.3)  # the opener is now polling for a name that does not exist
        assert p.is_alive()
        ch = shmring.Channel.create(uname, capacity=4096, pattern="spsc")
        ch.producer().send(b"first", timeout=10)
        assert conn.poll(10) and conn.recv() == b"first"
        p.join(10)
        assert p.exitcode == 0
    finally:
        _finish(p)
        if ch is not None:
            ch.close()
            ch.unlink()


def test_open_without_wait_raises_at_once(uname: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(shmring.RegionNotFound) as info:
        shmring.Channel.open(uname)
    assert time.monotonic() - t0 < 0.5
    assert "waited" not in str(info.value)


def test_bounded_wait_raises_after_it_and_says_so(uname: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(shmring.RegionNotFound, match=r"waited 0\.3 s for it"):
        shmring.Channel.open(uname, wait=0.3)
    took = time.monotonic() - t0
    assert 0.3 <= took < 2.0


@pytest.mark.parametrize("wait", [-1, float("nan")])
def test_bad_wait_is_refused(uname: str, wait: float) -> None:
    with pytest.raises(shmring.InvalidArgument, match="wait must be"):
        shmring.Channel.open(uname, wait=wait)


def test_counts_follow_real_processes(make_channel: Make) -> None:
    ch = make_channel(pattern="mpmc")
    assert (ch.consumers, ch.producers) == (0, 0)
    tx = ch.producer()
    assert ch.producers == 1
    kids = [_start(_consumer, ch.name) for _ in range(3)]
    try:
        for _p, conn in kids:
            assert conn.poll(10) and conn.recv() == "ready"
        assert ch.consumers == 3
        victim = kids[0][0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        assert ch.consumers == 2  # dead at once, before any recovery
        c1 = kids[1][1]
        c1.send("close")
        assert c1.poll(10) and c1.recv() == "closed"
        assert ch.consumers == 1
        tx.close()
        assert ch.producers == 0
        for p, conn in kids[1:]:
            if p.is_alive():
                conn.send("exit")
            p.join(10)
    finally:
        _finish(*(p for p, _ in kids))
        ch.recover_dead()


def _fill(tx: shmring.Producer) -> None:
    while True:
        try:
            tx.send_nowait(b"x" * 900)
        except shmring.WouldBlock:
            return


def test_send_timeout_says_the_consumer_died(make_channel: Make) -> None:
    ch = make_channel(pattern="spsc", capacity=4096)
    tx = ch.producer()
    p, conn = _start(_consumer, ch.name)
    try:
        assert conn.poll(10) and conn.recv() == "ready"
        _fill(tx)
        with pytest.raises(shmring.Timeout, match="1 live consumer attached, not keeping up"):
            tx.send(b"y" * 900, timeout=0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        with pytest.raises(shmring.Timeout, match="no live consumer is attached") as info:
            tx.send(b"y" * 900, timeout=0.05)
        assert info.value.channel == ch.name
    finally:
        _finish(p)
        ch.recover_dead()


def test_async_send_timeout_has_the_same_hint(make_channel: Make) -> None:
    ch = make_channel(pattern="spsc", capacity=4096)
    tx = ch.producer()
    _fill(tx)

    async def main() -> None:
        await tx.send_async(b"y" * 900, timeout=0.05)

    with pytest.raises(shmring.Timeout, match="no live consumer is attached"):
        asyncio.run(main())
