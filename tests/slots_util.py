"""Many processes on one queue, attached at once: forked putters that each
put one item and stay attached until released, and what the attach tables
of the queue's regions say about them meanwhile.

Shared by multiprocess/test_queue_slots.py (1,024 processes) and
stress/test_queue_slots_stress.py (4,096).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shmring import _layout as L

#: How long the parent waits for every item, and for the putters to exit.
WAIT = 300.0


@dataclass
class Attached:
    """What the parent saw while every putter was attached."""

    items: list[Any]
    #: Putters still running (attached: they hold the queue until released)
    #: once the parent had every item.
    alive: int
    #: Live producer endpoints in the rings the parent still has open (a
    #: drained ring is removed, with its putters' slots in it).
    producers: int
    #: The most slots one putter held in any one region.
    most_slots: int
    #: Slots ever taken (slot_high) in each ring, and the bytes tmpfs
    #: allocated for it, per ring: (slot_high, st_blocks * 512, data bytes).
    rings: list[tuple[int, int, int]] = field(default_factory=list)
    seconds: float = 0.0


def _rings(q: Any) -> list[Any]:
    h = q._h
    assert h is not None and h.chain is not None, "expected a growing queue"
    with h.chain.lock:
        return list(h.chain.chs.values())


def _putter(q: Any, i: int, gate: int, ready: int) -> None:
    """In a forked child: put one item, say so, stay attached until the
    parent closes the gate (EOF), then exit without Python's teardown."""
    code = 1
    try:
        q.put(i)
        os.write(ready, b"x")
        os.read(gate, 1)
        code = 0
    finally:
        os._exit(code)


def fork_putters(q: Any, n: int) -> Attached:
    """Fork ``n`` putters onto ``q`` (a growing shmring.Queue whose parent
    side is attached already); get every item while all of them are
    attached; then release them and check that each one exited cleanly."""
    gate_r, gate_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pids: list[int] = []
    t0 = time.monotonic()
    try:
        for i in range(n):
            pid = os.fork()
            if pid == 0:
                os.close(gate_w)
                os.close(ready_r)
                _putter(q, i, gate_r, ready_w)
            pids.append(pid)
        os.close(gate_r)
        os.close(ready_w)
        items = [q.get(timeout=WAIT) for _ in range(n)]
        said = 0
        while said < n:  # every putter has put and is still attached
            chunk = os.read(ready_r, 65536)
            assert chunk, f"only {said} of {n} putters said they had put"
            said += len(chunk)
        running = sum(1 for pid in pids if os.waitpid(pid, os.WNOHANG) == (0, 0))
        seen = Attached(items=items, alive=running, producers=0, most_slots=0,
                        seconds=time.monotonic() - t0)
        mine = set(pids)
        regions = [ch.region for ch in _rings(q)] + [q._h.ctl.region]
        for region in regions:
            per_pid = Counter(s.pid for s in region.slots() if s.pid in mine)
            seen.most_slots = max([seen.most_slots, *per_pid.values()])
        for ch in _rings(q):
            seen.producers += ch.producers
            st = os.stat("/dev/shm/" + ch.region.segment.lstrip("/"))
            seen.rings.append((ch.region.table.high, st.st_blocks * 512, ch.capacity))
        return seen
    finally:
        for fd in (gate_w, ready_r):
            with contextlib.suppress(OSError):  # closed already
                os.close(fd)
        _reap(pids)


def _reap(pids: list[int]) -> None:
    """Wait for every putter (released: they exit at once); one still there
    after WAIT is killed. Every one must have exited with status 0."""
    deadline = time.monotonic() + WAIT
    bad: list[tuple[int, int]] = []
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                done, status = os.waitpid(pid, 0)
                break
            time.sleep(0.001)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            bad.append((pid, status))
    assert not bad, f"{len(bad)} putters failed: {bad[:5]}"


def table_bytes_bound(high: int, capacity: int) -> int:
    """The most /dev/shm a ring region should hold: the header pages, the
    pages of the slots ever taken, and the ring."""
    head = 2 * L.PAGE_ALIGN
    slots = -(-(L.SLOTS_OFFSET + high * L.SLOT_SIZE) // L.PAGE_ALIGN) * L.PAGE_ALIGN
    return max(head, slots) + capacity
