"""The linked commit under a revoked lease, step by step: a pipeline worker
(a real process) holding an input of an mpmc channel is stopped (SIGSTOP)
at a chosen step of passing it on; the supervisor revokes its lease; the
input must come back with the count of outputs already committed (or be
done, if they all were), an output claim in flight must be revoked, and the
worker, once continued, must be refused (LeaseRevoked) and go on to its next
input. Each output is in the output channel exactly once.

The supervisor runs in this process on a fake clock.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from supervisor_util import Child, Env, FakeClock, clocked_supervisor, wait_for

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._errors import LeaseRevoked
from shmring._supervisor.server import Supervisor

TIMEOUT = 5.0


@pytest.fixture
def sup(env: Env, clock: FakeClock) -> Iterator[Supervisor]:
    with clocked_supervisor(env, clock, lease_timeout=TIMEOUT) as s:
        yield s


def check(sup: Supervisor, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    sup.call(sup.leases.check)


def record(item: int, payload: bytes) -> bytes:
    """An input record as a pipeline's source sends it (LINKED RECORD)."""
    return item.to_bytes(8, "little") + bytes(8) + payload


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# (step, single, outputs committed before the stop, input handed back?, its done count)
CASES = [
    ("taken", True, 0, True, 0),
    ("claimed", True, 0, True, 0),
    ("committed", True, 1, False, 0),  # map: that output completes the input
    ("committed", False, 1, True, 1),  # flat_map: it may have more to send
    ("two+claimed", False, 2, True, 2),
]


@pytest.mark.parametrize(("step", "single", "outputs", "back", "done"), CASES,
                         ids=[f"{c[0]}-{'single' if c[1] else 'many'}" for c in CASES])
def test_a_stopped_worker_is_refused_and_its_input_resumes_by_count(
        sup: Supervisor, clock: FakeClock, uname: str, step: str, single: bool,
        outputs: int, back: bool, done: int) -> None:
    cin = shmring.Channel.create(f"{uname}-in", capacity=1 << 16, pattern="mpmc")
    cout = shmring.Channel.create(f"{uname}-out", capacity=1 << 16, pattern="mpsc")
    tx_in, rx_out = cin.producer(), cout.consumer()
    tx_in.send(record(7, b"seven"))

    def worker(c: Child) -> None:
        wcin, wcout = shmring.Channel.open(cin.name), shmring.Channel.open(cout.name)
        rx, tx = wcin.consumer(), wcout.producer()
        region, in_region = wcout.region.inode, wcin.region.inode
        item, attempts, _done, _ = rx._link_take(5, single, None, 0, in_region)
        assert (item, attempts) == (7, 1)
        for k in range(outputs):
            tx._link_send(rx, b"out-%d" % k, item, region, False)
        claimed = step.endswith("claimed")
        if claimed:
            view = tx._link_claim(rx, 8, item, region)
            view[:] = b"late-out"
        c.signal()
        c.wait_go()  # stopped before this by the parent, then continued
        try:
            if claimed:
                tx._link_commit(rx, None, True)
            elif step == "committed" and single:
                rx._link_finish()
            else:
                tx._link_send(rx, b"late", item, region, True)
        except LeaseRevoked:
            c.signal(b"L")
        else:
            c.signal(b"C")
        item, _a, _d, _ = rx._link_take(10, single, None, 0, in_region)  # and goes on
        tx._link_send(rx, b"next-%d" % item, item, region, True)
        c.signal(b"N")

    c = Child(worker)
    c.ready()
    os.kill(c.pid, signal.SIGSTOP)
    wait_for(lambda: state(c.pid) in ("T", "t"), 5, "the worker to stop")
    c.go()
    check(sup, clock, 0.1)
    check(sup, clock, TIMEOUT + 0.1)
    assert sup.call(lambda: sup.stats["leases"]) == 1
    buf_out = cout.region._mapping()
    assert _core.load(buf_out, L.OFF_QUAR_COUNT) == (1 if step.endswith("claimed") else 0)
    rx_in = cin.consumer()
    if back:
        item, attempts, got_done, _ = rx_in._link_take(5, single, None, 0, cin.region.inode)
        assert (item, attempts, got_done) == (7, 2, done)
        rx_in._link_finish()
    else:
        with pytest.raises(shmring.WouldBlock):  # done: not handed back
            rx_in.recv_nowait()
    tx_in.send(record(8, b"eight"))  # for the worker, once continued
    os.kill(c.pid, signal.SIGCONT)
    assert c.ready() == b"L"
    assert c.ready() == b"N"
    assert c.wait() == 0
    got = []
    while True:
        try:
            got.append(rx_out.recv_nowait()[L.LINK_HDR:])
        except shmring.WouldBlock:
            break
    assert got == [b"out-%d" % k for k in range(outputs)] + [b"next-8"]
    cin.close()
    cout.close()
