"""The supervisor: regions live exactly as long as some process uses them.

Real processes (forked children, auto-started daemons), real SIGKILL, real
/dev/shm. Each test has its own namespace and socket directory
(``supervisor_env``), and ends with no segment and no supervisor left.
"""

from __future__ import annotations

import os
import signal
import time

import posix_ipc
import pytest
from supervisor_util import Child, Env, FakeClock, sleep_forever, wait_for

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._supervisor.server import Supervisor


def gone(env: Env, name: str) -> bool:
    return not os.path.exists(env.shm(name))


# --------------------------------------------------------------- lifetime --
def test_last_close_unlinks_before_returning(sup: Supervisor, env: Env, uname: str) -> None:
    a = shmring.Channel.create(uname, capacity=4096)
    b = shmring.Channel.open(uname)
    a.close()
    assert not gone(env, uname)  # b still uses it
    b.close()
    assert gone(env, uname)  # synchronous: gone when close() returns
    b.unlink()  # idempotent after the supervisor removed the name
    a.unlink()


def test_region_whose_header_is_overwritten_is_still_unlinked(sup: Supervisor, env: Env,
                                                              uname: str) -> None:
    """A corrupt attach table cannot keep a region (and the supervisor) alive."""
    import struct

    from shmring import _layout as L

    ch = shmring.Channel.create(uname, capacity=4096)
    struct.pack_into("<I", ch.region._mapping(), L.HDR_SLOT_COUNT, 100_000)
    ch.close()
    assert gone(env, uname)
    ch.unlink()


def test_unlink_spares_a_newer_region_of_the_same_name(sup: Supervisor, env: Env,
                                                       uname: str) -> None:
    old = shmring.Channel.create(uname, capacity=4096, persistent=True)
    old.unlink()
    new = shmring.Channel.create(uname, capacity=4096, persistent=True)
    old.unlink()  # names the new region now: left alone
    old.close()
    assert not gone(env, uname)
    new.close()
    assert not gone(env, uname)  # persistent
    new.unlink()
    assert gone(env, uname)


def test_persistent_region_stays_until_unlinked(sup: Supervisor, env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, persistent=True)
    ch.producer().send(b"kept")
    ch.close()
    assert not gone(env, uname)
    again = shmring.Channel.open(uname)
    assert again.consumer().recv(timeout=1) == b"kept"
    again.close()
    assert not gone(env, uname)
    again.unlink()
    assert gone(env, uname)


def test_opt_out_leaves_lifetime_to_the_caller(env: Env, uname: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHMRING_SUPERVISOR", "0")
    ch = shmring.Channel.create(uname, capacity=4096)
    ch.close()
    assert not gone(env, uname)
    assert not os.path.exists(env.sock)  # nobody was started
    ch.unlink()
    assert gone(env, uname)
    explicit = shmring.Channel.create(uname, capacity=4096, supervised=False)
    explicit.close()
    explicit.unlink()


def test_sigkill_of_the_last_user_unlinks(sup: Supervisor, env: Env, uname: str) -> None:
    def child(c: Child) -> None:
        ch = shmring.Channel.create(uname, capacity=4096, pattern="mpsc")
        ch.producer().claim(100)  # dies holding a claim
        c.signal()
        sleep_forever()

    c = Child(child)
    c.ready()
    assert not gone(env, uname)
    c.kill()
    wait_for(lambda: gone(env, uname), 5, "the unlink")
    assert sup.call(lambda: sup.stats["deaths"]) >= 1


def test_sigkill_recovers_claims_and_roles(sup: Supervisor, env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpsc")
    rx = ch.consumer()

    def child(c: Child) -> None:
        mine = shmring.Channel.open(uname)
        tx = mine.producer()
        tx.send(b"before")
        with tx.claim(64) as buf:
            buf[:3] = b"abc"
            c.signal()
            sleep_forever()

    c = Child(child)
    c.ready()
    assert rx.recv(timeout=1) == b"before"
    c.kill()
    # The dead claim becomes padding: the next message gets through.
    tx = ch.producer()
    tx.send(b"after")
    assert rx.recv(timeout=5) == b"after"
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()
    wait_for(lambda: c.pid not in {s.pid for s in ch.region.slots()}, 5, "the slots freed")
    ch.close()
    assert gone(env, uname)


def test_dead_exclusive_consumer_frees_its_role(sup: Supervisor, env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="spsc")
    tx = ch.producer()

    def child(c: Child) -> None:
        shmring.Channel.open(uname).consumer()
        c.signal()
        sleep_forever()

    c = Child(child)
    c.ready()
    with pytest.raises(shmring.RoleTaken):
        ch.consumer()
    c.kill()
    wait_for(lambda: _core.load(ch.region._mapping(), L.OFF_CONSUMER_OWNER) == 0, 5,
             "the role freed")
    rx = ch.consumer()
    tx.send(b"x")
    assert rx.recv(timeout=1) == b"x"
    ch.close()


def test_dead_broadcast_consumer_stops_gating(sup: Supervisor, env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=1024, pattern="broadcast")
    tx = ch.producer()

    def child(c: Child) -> None:
        shmring.Channel.open(uname).consumer()  # joins, never reads
        c.signal()
        sleep_forever()

    c = Child(child)
    c.ready()
    for _ in range(5):
        tx.send(bytes(100))
    with pytest.raises(shmring.WouldBlock):
        for _ in range(100):
            tx.send_nowait(bytes(100))
    c.kill()
    tx.send(bytes(100), timeout=5)  # no longer gated by the dead reader
    ch.close()


# ------------------------------------------------------------------- fork --
def test_forked_child_keeps_the_region_alive(sup: Supervisor, env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)
    tx = ch.producer()

    def child(c: Child) -> None:
        c.signal()
        sleep_forever()

    c = Child(child)
    c.ready()
    ch.close()
    assert not gone(env, uname)  # the child maps it too
    assert tx.closed
    c.kill()
    wait_for(lambda: gone(env, uname), 5, "the unlink after the child died")


def test_forked_child_close_leaves_parent_slots(sup: Supervisor, env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)
    tx, rx = ch.producer(), ch.consumer()
    before = {(s.index, s.pid, s.role) for s in ch.region.slots()}

    def child(c: Child) -> None:
        ch.close()  # the parent's endpoints and slots are not the child's to free
        c.signal()

    c = Child(child)
    c.ready()
    assert c.wait() == 0
    assert {(s.index, s.pid, s.role) for s in ch.region.slots()} == before
    tx.send(b"still mine")
    assert rx.recv(timeout=1) == b"still mine"
    ch.close()
    assert gone(env, uname)


def test_child_that_execs_lets_go(sup: Supervisor, env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)

    def child(c: Child) -> None:
        c.signal()
        os.execv("/bin/sleep", ["sleep", "30"])  # maps nothing of ours after exec

    c = Child(child)
    c.ready()
    try:
        wait_for(lambda: c.pid not in {p["pid"] for p in env.connection().status()["processes"]
                                       if p["holds"]}, 5, "the exec noticed")
        ch.close()
        assert gone(env, uname)
    finally:
        c.kill()


# --------------------------------------------------- the supervisor's death --
def test_supervisor_death_loses_nothing(env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc")  # auto-starts one
    tx, rx = ch.producer(), ch.consumer()
    side = shmring.Channel.create(uname + "-side", capacity=4096)
    stx, srx = side.producer(), side.consumer()
    first = env.supervisor_pid()
    assert first is not None

    def child(c: Child) -> None:
        mine = shmring.Channel.open(uname)
        mine.producer().claim(64)
        c.signal()
        sleep_forever()

    c = Child(child)
    c.ready()
    os.kill(first, signal.SIGKILL)
    stx.send(b"flowing")  # the data path never needed it
    assert srx.recv(timeout=1) == b"flowing"
    c.kill()  # dies while no supervisor runs
    conn = env.connection()
    wait_for(lambda: conn.supervisor_pid not in (None, first), 10, "a new supervisor")
    regions = conn.status()["regions"]
    assert sorted(r["segment"] for r in regions) == [
        f"/shmring.{env.namespace}.{uname}", f"/shmring.{env.namespace}.{uname}-side"]
    assert all(r["holders"][0]["pid"] == os.getpid() for r in regions)  # we re-registered
    tx.send(b"after")  # the dead claim is padded once the restart grace ends
    assert rx.recv(timeout=10) == b"after"
    ch.close()
    side.close()
    assert gone(env, uname) and gone(env, uname + "-side")


def test_startup_sweep_judges_by_pid_and_start_time(env: Env, uname: str) -> None:
    """A starting supervisor removes regions whose processes are all dead;
    a live pid with another start time (a reused pid) counts as dead."""
    names = {k: f"{uname}-{k}" for k in ("dead", "reused", "live", "young", "persist")}
    chans = {}
    for k, n in names.items():
        chans[k] = shmring.Channel.create(n, capacity=4096, supervised=False,
                                          persistent=k == "persist")
    slot = {k: ch._slot for k, ch in chans.items()}
    buf = {k: ch.region._mapping() for k, ch in chans.items()}
    helper = Child(lambda c: sleep_forever())  # a live process to point at
    try:
        so = {k: L.slot_offset(slot[k]) for k in names}
        _core.store(buf["dead"], so["dead"] + L.SLOT_PID, 4_000_000)  # nobody
        _core.store(buf["reused"], so["reused"] + L.SLOT_PID, helper.pid)  # live pid,
        _core.store(buf["reused"], so["reused"] + L.SLOT_START_TIME, 1)  # other start time
        _core.store(buf["persist"], so["persist"] + L.SLOT_PID, 4_000_000)
        _core.store(buf["young"], so["young"] + L.SLOT_PID, 0)  # no slot yet, creator alive
        clock = FakeClock()
        with Supervisor(env.namespace, socket_dir=env.socket_dir, clock=clock,
                        startup_grace=1.0) as s:
            assert all(not gone(env, n) for n in names.values())  # in the grace
            clock.advance(1.5)
            s.wake()
            s.call(lambda: None)
            assert gone(env, names["dead"])
            assert gone(env, names["reused"])
            assert not gone(env, names["live"])
            assert not gone(env, names["young"])
            assert not gone(env, names["persist"])
    finally:
        helper.kill()
        for k, ch in chans.items():
            if k != "young":
                _core.store(buf[k], L.slot_offset(slot[k]) + L.SLOT_PID, os.getpid())
            ch.close()
            ch.unlink()


def test_creation_that_died_half_way_is_removed(env: Env, uname: str) -> None:
    clock = FakeClock()
    seg = f"/shmring.{env.namespace}.{uname}"
    with Supervisor(env.namespace, socket_dir=env.socket_dir, clock=clock,
                    startup_grace=0.0, creation_grace=0.2) as s:
        def child(c: Child) -> None:
            env.connection().creating(seg)
            posix_ipc.SharedMemory(seg, posix_ipc.O_CREX, mode=0o600, size=8192)  # no header
            c.signal()
            sleep_forever()

        c = Child(child)
        c.ready()
        c.kill()
        wait_for(lambda: s.call(lambda: s.stats["deaths"]) == 1, 5, "the death")
        time.sleep(0.25)  # the segment's age is real time
        clock.advance(1.0)
        s.wake()
        wait_for(lambda: gone(env, uname), 5, "the half-made segment removed")
