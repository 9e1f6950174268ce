"""Thousands of processes on one queue (issue 13): attach tables of up to
``MAX_SLOTS`` slots that cost no /dev/shm until used, one slot per process
and endpoint, and record owners past slot 255 (the record word's owner
field is 13 bits).

The 4,096-process run is tests/stress/test_queue_slots_stress.py."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

from slots_util import fork_putters, table_bytes_bound

import shmring
from shmring import _layout as L

PUTTERS = 1024
SPAWNED = 4


def _blocks(ch: shmring.Channel) -> int:
    return os.stat("/dev/shm/" + ch.region.segment.lstrip("/")).st_blocks * 512


def test_a_full_size_table_costs_nothing_until_used(
        make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel("mpmc", 1 << 14, slots=L.MAX_SLOTS)
    assert ch.region.slot_count == L.MAX_SLOTS
    size = os.stat("/dev/shm/" + ch.region.segment.lstrip("/")).st_size
    assert size > L.MAX_SLOTS * L.SLOT_SIZE  # 1 MiB of table in the segment's size...
    at_start = _blocks(ch)
    assert at_start == 2 * L.PAGE_ALIGN + (1 << 14), at_start  # ...none of it allocated
    # Walks of the table read only the slots ever taken: no page is allocated.
    for _ in range(3):
        ch.region.slots()
        ch.region.live_pids()
        ch.region.dead_slots()
        assert (ch.consumers, ch.producers) == (0, 0)
    ch.recover_dead()
    assert _blocks(ch) == at_start
    assert ch.region.table.high == 1  # the channel's own slot
    # 300 endpoints: slot pages are allocated as the slots are first taken.
    eps = [ch.producer() for _ in range(300)]
    high = ch.region.table.high
    assert high == 300  # the first producer has the channel's slot
    assert _blocks(ch) == table_bytes_bound(high, 1 << 14)
    for ep in eps[100:]:
        ep.close()
    eps = eps[:100] + [ch.producer() for _ in range(200)]  # freed slots are reused
    assert ch.region.table.high == high
    assert ch.producers == 300
    for ep in eps:
        ep.close()


def test_every_slot_can_be_taken_and_no_more(
        make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel("mpsc", 1 << 12, slots=L.MAX_SLOTS)
    eps = [ch.producer() for _ in range(L.MAX_SLOTS)]
    assert sorted(ep._slot for ep in eps) == list(range(L.MAX_SLOTS))
    try:
        ch.producer()
        raise AssertionError("a slot past MAX_SLOTS was handed out")
    except shmring.AttachTableFull as e:
        assert str(L.MAX_SLOTS) in str(e)
    eps[-1].send(b"from the last slot")
    eps[0].close()  # the channel's own slot, lent to it: the channel's again
    eps[1].close()  # freed: for the consumer's channel, lent to its consumer
    rx_ch = shmring.Channel.open(ch.name)
    try:
        rx = rx_ch.consumer()
        assert rx._slot == 1
        assert rx.recv(timeout=5) == b"from the last slot"
    finally:
        for ep in eps:
            ep.close()
        rx_ch.close()


def _take_and_die(name: str, ready: Any) -> None:
    ch = shmring.Channel.open(name)
    rx = ch.consumer()
    with rx.recv_view(timeout=10) as view:  # held: taken in its word, owner = our slot
        ready.send((rx._slot, bytes(view)))
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_record_taken_by_a_slot_past_255_is_handed_back(
        make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel("mpmc", 1 << 14, slots=L.MAX_SLOTS, supervised=False)
    fillers = [ch.producer() for _ in range(400)]  # the child's slot is past them
    fillers[0].send(b"job")
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_take_and_die, args=(ch.name, child))
    p.start()
    try:
        assert parent.poll(30), "the child took nothing"
        slot, got = parent.recv()
        assert got == b"job" and slot > 255
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        ch.recover_dead()  # here, or by the supervisor (the child's open was supervised)
        rx = ch.consumer()
        assert rx.recv(timeout=5) == b"job"  # redelivered: the owner field held the slot
    finally:
        if p.is_alive():
            p.kill()
        p.join()
        for f in fillers:
            f.close()


def test_a_thousand_forked_putters_at_once(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    q.put("parent")
    assert q.get(timeout=10) == "parent"  # the parent's endpoints exist before the fork
    seen = fork_putters(q, PUTTERS)
    assert sorted(seen.items) == list(range(PUTTERS))
    assert seen.alive == PUTTERS  # all attached at once
    assert seen.producers >= 1
    assert seen.most_slots == 1  # one slot per putter, in every region
    for high, allocated, capacity in seen.rings:
        assert allocated <= table_bytes_bound(high, capacity), (high, allocated, capacity)


def _spawned_putter(q: Any, i: int, gate: Any) -> None:
    q.put(i)
    gate.wait(60)


def test_spawned_children_take_one_slot_each(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    ctx = mp.get_context("spawn")
    gate = ctx.Event()
    procs = [ctx.Process(target=_spawned_putter, args=(q, i, gate)) for i in range(SPAWNED)]
    for p in procs:
        p.start()
    try:
        got = sorted(q.get(timeout=60) for _ in range(SPAWNED))
        assert got == list(range(SPAWNED))
        pids = {p.pid for p in procs}
        h = q._h
        assert h is not None and h.chain is not None
        for region in [ch.region for ch in h.chain.chs.values()] + [h.ctl.region]:
            per_pid = Counter(s.pid for s in region.slots() if s.pid in pids)
            # Each child holds the queue (the ring and the control block) and
            # puts: one slot in each region, its channel's lent to its producer.
            assert set(per_pid.values()) <= {1}, (region.name, per_pid)
        ring0 = h.chain.chs[0].region
        assert {s.pid for s in ring0.slots() if s.role == "producer"} >= pids
    finally:
        gate.set()
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
