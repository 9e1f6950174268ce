"""The linked commit (csrc/ring/link.c), the ring-level guarantee pipelines
stand on: a worker holding an input of an mpmc channel and sending its
outputs to another channel is SIGKILLed at a chosen step, and recovery must
leave each input either done (every output committed) or handed back with
the count of outputs already sent, and each output committed exactly once.

Each case runs a real worker process, kills it with SIGKILL at the step,
then lets recovery run (the supervisor on the pidfd event, or
``recover_dead`` without one) and reads both channels.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import pytest
from channel_util import drain

import shmring
from shmring import _core
from shmring import _layout as L

LINK = struct.Struct("<QII")
CTX = multiprocessing.get_context("fork")


def record(item: int, payload: bytes) -> bytes:
    """An input record as a pipeline's source sends it."""
    return LINK.pack(item, 0, 0) + payload


def worker(in_name: str, out_name: str, step: str, single: bool, conn: Connection) -> None:
    """Take one input, go as far as ``step``, report, and wait to be killed."""
    cin = shmring.Channel.open(in_name)
    cout = shmring.Channel.open(out_name)
    rx, tx = cin.consumer(), cout.producer()
    region = cout.region.inode
    item, attempts, done, view = rx._link_take(5, single, None, 0, cin.region.inode)
    conn.send(("took", item, attempts, done, bytes(view)))
    n_out = {"taken": 0, "claimed": 0, "committed": 1, "two": 2, "two+claimed": 2,
             "finished": 1}[step]
    for k in range(n_out):
        tx._link_send(rx, b"out-%d-%d" % (item, k), item, region, False)
    if step in ("claimed", "two+claimed"):
        tx._link_claim(rx, 32, item, region)
    if step == "finished":
        rx._link_finish()
    conn.send("ready")
    time.sleep(60)


def run_and_kill(in_name: str, out_name: str, step: str, single: bool) -> tuple[Any, int]:
    """Start a worker, let it reach ``step``, SIGKILL it; (what it took, pid)."""
    parent, child = CTX.Pipe()
    p = CTX.Process(target=worker, args=(in_name, out_name, step, single, child))
    p.start()
    try:
        assert parent.poll(10), "the worker took nothing"
        took = parent.recv()
        assert parent.poll(10) and parent.recv() == "ready"
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.join(10)
    assert p.exitcode == -signal.SIGKILL
    return took, p.pid


def slots_of(ch: shmring.Channel, pid: int) -> list[int]:
    return [s.index for s in ch.region.slots() if s.pid & ~L.SLOT_RECOVERING == pid]


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


# (step, single, outputs that must arrive, input handed back?, its done count)
CASES = [
    ("taken", True, 0, True, 0),
    ("claimed", True, 0, True, 0),
    ("committed", True, 1, False, 0),  # map: one output completes the input
    ("committed", False, 1, True, 1),  # flat_map: it may have more to send
    ("two", False, 2, True, 2),
    ("two+claimed", False, 2, True, 2),
    ("finished", False, 1, False, 0),
]


@pytest.mark.parametrize("supervised", [True, False], ids=["supervisor", "recover_dead"])
@pytest.mark.parametrize(("step", "single", "outputs", "back", "done"), CASES,
                         ids=[f"{c[0]}-{'single' if c[1] else 'many'}" for c in CASES])
def test_a_killed_worker_loses_and_repeats_nothing(
        make_channel: Callable[..., shmring.Channel], monkeypatch: pytest.MonkeyPatch,
        step: str, single: bool, outputs: int, back: bool, done: int, supervised: bool) -> None:
    if not supervised:
        monkeypatch.setenv("SHMRING_SUPERVISOR", "0")
    cin = make_channel("mpmc", 1 << 16, suffix="-in")
    cout = make_channel("mpsc", 1 << 16, suffix="-out")
    tx_in = cin.producer()
    tx_in.send(record(7, b"seven"))
    tx_in.send(record(8, b"eight"))
    rx_out = cout.consumer()
    took, pid = run_and_kill(cin.name, cout.name, step, single)
    assert took == ("took", 7, 1, 0, b"seven")
    if supervised:
        assert wait_until(lambda: not slots_of(cin, pid) and not slots_of(cout, pid))
    else:
        # The output slot first: a linked claim waits for its input's
        # recovery, whatever order the channels are looked at in.
        cout.recover_dead()
        if step in ("claimed", "two+claimed"):
            assert slots_of(cout, pid), "a linked claim was recovered before its input"
        cin.recover_dead()
        cout.recover_dead()
        assert not slots_of(cin, pid) and not slots_of(cout, pid)
    # Exactly the committed outputs, once, and nothing from the claim.
    got = drain(rx_out)
    assert [g[L.LINK_HDR:] for g in got] == [b"out-7-%d" % k for k in range(outputs)]
    assert all(LINK.unpack_from(g)[0] == 7 for g in got)
    rx = cin.consumer()
    first = rx._link_take(0)
    if back:
        # Handed back: its second attempt, saying how many outputs were sent.
        assert first[:3] == (7, 2, done) and bytes(first[3]) == b"seven"
        rx._link_finish()
        first = rx._link_take(0)
    assert first[:3] == (8, 1, 0)
    rx._link_finish()
    with pytest.raises(shmring.Timeout):
        rx._link_take(0)


def test_a_linked_claim_is_not_revoked(make_channel: Callable[..., shmring.Channel]) -> None:
    """A stopped worker's linked claim stays (its pipeline kills it instead):
    revoking it would let padding read as a consumed output."""
    cin = make_channel("mpmc", 1 << 16, suffix="-in")
    cout = make_channel("mpmc", 1 << 16, suffix="-out")
    cin.producer().send(record(1, b"x"))
    rx, tx = cin.consumer(), cout.producer()
    rx._link_take(0)
    view = tx._link_claim(rx, 16, 1, cout.region.inode)
    buf = cout.region.buf
    assert buf is not None
    slot = tx._slot
    assert _core.load(buf, L.slot_offset(slot) + L.SLOT_LINK_IN) != 0
    assert _core.revoke_claim(buf, slot) == 0
    view[:] = b"y" * 16
    tx._link_commit(rx, None, True)
    assert _core.load(buf, L.slot_offset(slot) + L.SLOT_LINK_IN) == 0
    got = cout.consumer().recv(timeout=1)
    assert got == LINK.pack(1, 0, 0) + b"y" * 16


def test_misuse_raises(make_channel: Callable[..., shmring.Channel]) -> None:
    cin = make_channel("mpmc", 1 << 16, suffix="-in")
    cout = make_channel("mpsc", 1 << 16, suffix="-out")
    spsc = make_channel("spsc", 1 << 16, suffix="-spsc")
    rx, tx = cin.consumer(), cout.producer()
    with pytest.raises(RuntimeError, match="holds no input"):
        tx._link_send(rx, b"x", 1, 0)
    with pytest.raises(TypeError):
        tx._link_send(tx, b"x", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mpmc"):
        spsc.consumer()._link_take(0)
    cin.producer().send(b"short")  # not a linked record: shorter than its header
    with pytest.raises(shmring.CorruptRegion, match="shorter than its header"):
        rx._link_take(0)
    assert rx.recv(timeout=1) == b"short"  # it was given back, not lost


def test_forced_recovery_of_a_waiting_claim_stays_consistent(
        make_channel: Callable[..., shmring.Channel], monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor's last resort (LINK_WAIT): the linked claim is padded
    before the input is recovered; the input must then go back, not be
    taken for done."""
    monkeypatch.setenv("SHMRING_SUPERVISOR", "0")
    cin = make_channel("mpmc", 1 << 16, suffix="-in")
    cout = make_channel("mpsc", 1 << 16, suffix="-out")
    cin.producer().send(record(5, b"five"))
    rx_out = cout.consumer()
    _, pid = run_and_kill(cin.name, cout.name, "claimed", True)
    (slot,) = [i for i in slots_of(cout, pid) if cout.region.table.link_pending(i)]
    assert not cout.region.recover_slot(slot, pid)  # waits for its input
    assert cout.region.recover_slot(slot, pid, force=True)
    assert drain(rx_out) == []  # the padding is consumed, and nothing else
    cin.recover_dead()
    cout.recover_dead()
    rx = cin.consumer()
    item, attempts, done, view = rx._link_take(0)
    assert (item, attempts, done, bytes(view)) == (5, 2, 0, b"five")
    rx._link_finish()
