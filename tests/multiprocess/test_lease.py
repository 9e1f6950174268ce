"""A consumer stopped (SIGSTOP) while it holds an mpmc record: after the
channel's lease the supervisor hands the record to the other consumers, the
producer goes on, and the stopped consumer gets LeaseRevoked when it resumes
(never the record's bytes, never a record someone else now holds). A
pipeline worker stopped mid-item has its item done by another worker, and
its own output is refused when it resumes: each output goes on once.

Real processes, real SIGSTOP/SIGCONT, real shared memory; the supervisor runs
in this process, on a fake clock where the test needs no wall time and on
the real one where the bound on the producer's wait is what is tested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from channel_util import drain
from lease_storm import pipeline_storm, storm
from supervisor_util import Child, Env, FakeClock, clocked_supervisor, supervisor_env, wait_for

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._errors import LeaseRevoked
from shmring._supervisor.server import Supervisor

TIMEOUT = 5.0  # the supervisor's default lease in the fake-clock tests
MSG = 100  # 128-byte records: 32 fill a 4 KiB ring


@pytest.fixture
def sup(env: Env, clock: FakeClock) -> Iterator[Supervisor]:
    with clocked_supervisor(env, clock, lease_timeout=TIMEOUT) as s:
        yield s


def check(sup: Supervisor, clock: FakeClock, seconds: float = 0.0) -> None:
    """Move the fake clock and run one lease check in the supervisor's thread."""
    clock.advance(seconds)
    sup.call(sup.leases.check)


def leases(sup: Supervisor) -> int:
    return int(sup.call(lambda: sup.stats["leases"]))


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def stop(pid: int) -> None:
    """SIGSTOP and wait until the process is stopped."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: state(pid) in ("T", "t"), 5, "the child to stop")


def slot_leases(ch: shmring.Channel, pid: int) -> int:
    """Leases revoked from ``pid``'s consumer slot (SLOT_LEASE's count)."""
    buf = ch.region._mapping()
    for i in range(ch.region.slot_count):
        so = L.slot_offset(i)
        if _core.load(buf, so + L.SLOT_PID) == pid and \
                _core.load32(buf, so + L.SLOT_ROLE) == L.ROLE_CONSUMER:
            return int(_core.load(buf, so + L.SLOT_LEASE)) & L.LEASE_COUNT_MASK
    raise AssertionError(f"pid {pid} has no consumer slot")


def msg(i: int) -> bytes:
    return i.to_bytes(4, "little") * (MSG // 4)


def holder(uname: str, expect: bytes) -> Child:
    """A child that takes one record into a recv_view block, is stopped
    there by the parent, and says how its release went when continued: L
    (LeaseRevoked), C (released: it was consumed here). Then it receives
    once more and says A if that was b"again"."""

    def run(c: Child) -> None:
        rx = shmring.Channel.open(uname).consumer()
        try:
            with rx.recv_view(timeout=5) as v:
                c.signal(b"H" if bytes(v) == expect else b"?")
                c.wait_go()  # stopped here by the parent, then continued
        except LeaseRevoked:
            c.signal(b"L" if rx.leases_revoked == 1 else b"?")
        else:
            c.signal(b"C" if rx.leases_revoked == 0 else b"?")
        c.signal(b"A" if rx.recv(timeout=10) == b"again" else b"?")

    c = Child(run)
    assert c.ready() == b"H"
    stop(c.pid)
    c.go()  # queued: read once it is continued
    return c


def fill(tx: shmring.Producer, start: int) -> list[bytes]:
    """Send until the ring is full; what was sent."""
    sent: list[bytes] = []
    while True:
        m = msg(start + len(sent))
        try:
            tx.send_nowait(m)
        except shmring.WouldBlock:
            return sent
        sent.append(m)


# ------------------------------------------------------------- channels --
def test_a_stopped_consumers_record_goes_to_the_others_after_the_lease(
        sup: Supervisor, clock: FakeClock, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc")
    assert ch.lease == "supervisor"
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"held")
    c = holder(uname, b"held")
    sent = fill(tx, 0)
    assert len(sent) == 31  # the held record at head keeps the rest of the ring
    assert drain(rx) == sent  # the others get what is behind it...
    assert fill(tx, 100) == []  # ...and the producer is stuck behind it
    check(sup, clock, 0.1)  # first seen
    check(sup, clock, TIMEOUT - 1)
    assert leases(sup) == 0 and drain(rx) == []
    check(sup, clock, 1.5)  # held past the lease: handed back
    assert leases(sup) == 1
    assert rx.recv(timeout=5) == b"held"
    more = fill(tx, 200)  # the producer goes on: the whole ring again
    assert len(more) >= 31  # a ring again (less the padding at its end)
    assert drain(rx) == more
    assert slot_leases(ch, c.pid) == 1
    os.kill(c.pid, signal.SIGCONT)
    assert c.ready() == b"L"  # told when it releases; nothing consumed twice
    tx.send(b"again")
    assert c.ready() == b"A"  # and it receives on
    assert c.wait() == 0
    assert drain(rx) == []
    ch.close()


def test_a_channels_own_lease_overrides_the_supervisors(
        sup: Supervisor, clock: FakeClock, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc", lease=1.5)
    assert ch.lease == 1.5
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"held")
    c = holder(uname, b"held")
    check(sup, clock, 0.1)
    check(sup, clock, 1.0)
    assert leases(sup) == 0
    check(sup, clock, 0.6)  # 1.6 s > 1.5 s, well below the default 5 s
    assert leases(sup) == 1
    assert rx.recv(timeout=5) == b"held"
    os.kill(c.pid, signal.SIGCONT)
    assert c.ready() == b"L"
    tx.send(b"again")
    assert c.ready() == b"A"
    assert c.wait() == 0
    ch.close()


@pytest.mark.parametrize("lease", [0, None])
def test_lease_zero_or_none_never_revokes(
        sup: Supervisor, clock: FakeClock, uname: str, lease: float | None) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc", lease=lease)
    assert ch.lease is None
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"held")
    c = holder(uname, b"held")
    for _ in range(5):
        check(sup, clock, TIMEOUT * 10)
    assert leases(sup) == 0
    assert drain(rx) == []
    os.kill(c.pid, signal.SIGCONT)
    assert c.ready() == b"C"  # it kept its record and consumed it
    tx.send(b"again")
    assert c.ready() == b"A"
    assert c.wait() == 0
    ch.close()


def test_a_supervisor_without_a_default_lease_revokes_only_channels_with_one(
        env: Env, clock: FakeClock, uname: str) -> None:
    s = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0, clock=clock,
                   lease_timeout=0).start()
    try:
        assert s.leases.lease_timeout is None
        ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc")
        ch2 = shmring.Channel.create(uname + "-2", capacity=4096, pattern="mpmc", lease=2.0)
        ch.producer().send(b"held")
        ch2.producer().send(b"held")
        c, c2 = holder(uname, b"held"), holder(uname + "-2", b"held")
        for _ in range(3):
            check(s, clock, 100)
        assert leases(s) == 1  # ch2's only
        assert ch2.consumer().recv(timeout=5) == b"held"
        for cc, exp in ((c, b"C"), (c2, b"L")):
            os.kill(cc.pid, signal.SIGCONT)
            assert cc.ready() == exp
        ch.producer().send(b"again")
        ch2.producer().send(b"again")
        assert c.ready() == b"A" and c2.ready() == b"A"
        assert c.wait() == 0 and c2.wait() == 0
        ch.close()
        ch2.close()
    finally:
        s.stop()


def test_bad_leases_are_refused(uname: str) -> None:
    for bad in (-1, "soon", True, float("nan")):
        with pytest.raises(shmring.InvalidArgument):
            shmring.Channel.create(uname, capacity=4096, pattern="mpmc", lease=bad)  # type: ignore[arg-type]
    with pytest.raises(shmring.InvalidArgument, match="mpmc"):
        shmring.Channel.create(uname, capacity=4096, pattern="mpsc", lease=3)


def test_the_producer_waits_no_longer_than_the_lease(env: Env, uname: str) -> None:
    """Real time: a 0.5 s lease, the supervisor looking every 0.125 s."""
    lease = 0.5
    s = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0).start()
    try:
        ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc", lease=lease)
        tx, rx = ch.producer(), ch.consumer()
        tx.send(b"held")
        c = holder(uname, b"held")
        n = 300
        got: list[bytes] = []
        done = threading.Event()

        def drainer() -> None:
            while len(got) < n + 1:
                got.append(rx.recv(timeout=lease + 10))
            done.set()

        t = threading.Thread(target=drainer, daemon=True)
        t.start()
        worst = 0.0
        for i in range(n):
            t0 = time.monotonic()
            tx.send(msg(i), timeout=lease + 10)
            worst = max(worst, time.monotonic() - t0)
        assert done.wait(lease + 10)
        t.join()
        assert worst < lease + 2.0, f"the producer waited {worst:.2f} s"
        assert sorted(got) == sorted([b"held"] + [msg(i) for i in range(n)])  # once each
        assert s.stats["leases"] == 1
        os.kill(c.pid, signal.SIGCONT)
        assert c.ready() == b"L"
        tx.send(b"again")
        assert c.ready() == b"A"
        assert c.wait() == 0
        ch.close()
    finally:
        s.stop()


def test_a_copy_stopped_half_way_is_dropped_not_returned_torn(
        sup: Supervisor, clock: FakeClock, uname: str) -> None:
    """recv() of a 4 MiB message copies without the GIL; a thread of the
    child that is waiting for the GIL then stops the whole child, inside that
    copy. Meanwhile the record goes to another consumer and its bytes are
    overwritten: the resumed recv raises LeaseRevoked. (The thread may win
    the GIL only after the copy: then the child holds nothing, is continued,
    and the next message is tried; up to 20.)"""
    big = 4 << 20
    ch = shmring.Channel.create(uname, capacity=16 << 20, pattern="mpmc",
                                max_message=(8 << 20) - L.RECORD_HEADER)
    tx, rx = ch.producer(), ch.consumer()
    buf = ch.region._mapping()

    def original(i: int) -> bytes:
        return bytes((i + k) % 256 for k in range(256)) * (big // 256)

    def run(c: Child) -> None:
        crx = shmring.Channel.open(uname).consumer()
        sys.setswitchinterval(1000.0)  # nothing but a blocking call gives the GIL up
        for i in range(20):
            gate = threading.Lock()
            gate.acquire()

            def stopper(gate: threading.Lock = gate) -> None:
                with gate:  # then it waits for the GIL: recv's copy gives it up
                    os.kill(os.getpid(), signal.SIGSTOP)

            t = threading.Thread(target=stopper)
            t.start()
            c.signal()
            c.wait_go()  # message i is there
            gate.release()
            spin = time.perf_counter() + 0.002  # the stopper gets to wait for the GIL
            while time.perf_counter() < spin:
                pass
            try:
                data = crx.recv(timeout=5)
            except LeaseRevoked:
                t.join()
                c.signal(b"L")
                return
            t.join()
            c.signal(b"O" if data == original(i) else b"T")  # T: torn bytes returned

    c = Child(run)
    for i in range(20):
        c.ready()
        tx.send(original(i))
        c.go()
        wait_for(lambda: state(c.pid) in ("T", "t"), 10, "the child to stop itself")
        if _core.lease_scan(buf):
            break  # stopped holding it: inside the copy
        os.kill(c.pid, signal.SIGCONT)  # it had finished the copy
        assert c.ready() == b"O"
    else:
        pytest.fail("the child was never stopped inside its copy")
    check(sup, clock, 0.1)
    check(sup, clock, TIMEOUT + 0.1)
    assert leases(sup) == 1
    assert rx.recv(timeout=5) == original(i)  # the record went to another consumer whole
    for k in range(4):  # a ring of other bytes over it
        tx.send(bytes([k]) * big)
        assert rx.recv(timeout=5) == bytes([k]) * big
    os.kill(c.pid, signal.SIGCONT)
    assert c.ready() == b"L"
    assert c.wait() == 0
    ch.close()


# ------------------------------------------------------------- pipelines --
def _stop_once(marker: Path, log: Path, x: int) -> int:
    """Stage function: item 7's first attempt stops its own worker, which
    then logs each item it finishes computing."""
    if x == 7 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGSTOP)
    with log.open("a") as f:
        f.write(f"{os.getpid()} {x}\n")
    return x * 10


def test_a_stopped_pipeline_worker_has_its_item_redone_once(
        env: Env, tmp_path: Path) -> None:
    lease = 0.5
    marker, log = tmp_path / "stopped", tmp_path / "log"
    s = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0).start()
    fed: list[int] = []

    def logged_after_resume() -> bool:
        if not marker.exists() or not log.exists():
            return False
        pid = marker.read_text()
        mine = [ln.split()[1] for ln in log.read_text().splitlines() if ln.split()[0] == pid]
        return "7" in mine and mine[-1] != "7"  # it went on past item 7

    def source() -> Iterator[int]:
        i = 0
        while i < 20 or (i < 5000 and not logged_after_resume()):
            fed.append(i)
            yield i
            i += 1
            if i >= 20:
                time.sleep(0.002)  # pace the tail, so both workers take items

    try:
        p = shmring.Pipeline(f"lease-{os.getpid()}")
        (p.source(source())
         .map(lambda x: _stop_once(marker, log, x), workers=2, lease=lease)
         .map(lambda y: y + 1, workers=1))
        outs: list[int] = []
        with p.run() as run:
            for y in run:
                outs.append(y)
                if y == 71:  # item 7, done by the other worker
                    os.kill(int(marker.read_text()), signal.SIGCONT)
        assert logged_after_resume(), "the resumed worker did not go on"
        assert sorted(outs) == [10 * x + 1 for x in fed]  # each once, 71 too
        assert s.stats["leases"] >= 1
    finally:
        if marker.exists():
            with contextlib.suppress(ProcessLookupError):  # gone with its run
                os.kill(int(marker.read_text()), signal.SIGCONT)
        s.stop()


# ------------------------------------------------------------- a storm --
def test_a_short_stop_storm_loses_nothing_and_hangs_nothing(
        monkeypatch: pytest.MonkeyPatch, uname: str, tmp_path: Path) -> None:
    """One seed of the stop storm (stress/test_lease_storm_stress.py runs many)."""
    with supervisor_env(monkeypatch) as e:
        got = storm(e, uname, str(tmp_path), "mpmc", seed=1, seconds=3.0)
    assert got["stops"] > 0
    assert got["revoked"] <= got["leases"]  # a look told so is one the supervisor took


def test_a_short_stop_storm_over_a_pipeline_repeats_no_output(env: Env, pname: str) -> None:
    """One seed of the pipeline stop storm (the stress run has many)."""
    got = pipeline_storm(env, pname, seed=1, items=3000, stops=8)
    assert got["stops"] > 0


# --------------------------------------------------- the supervisor's flag --
def test_an_auto_started_supervisor_takes_its_lease_from_the_environment(
        env: Env, monkeypatch: pytest.MonkeyPatch, uname: str) -> None:
    """$SHMRING_LEASE_TIMEOUT reaches the daemon the first client starts."""
    monkeypatch.setenv("SHMRING_LEASE_TIMEOUT", "0.4")
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc")
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"held")
    c = holder(uname, b"held")
    t0 = time.monotonic()
    assert rx.recv(timeout=10) == b"held"  # handed back by the daemon
    assert time.monotonic() - t0 < 0.4 + 3.0
    assert slot_leases(ch, c.pid) == 1
    os.kill(c.pid, signal.SIGCONT)
    assert c.ready() == b"L"
    tx.send(b"again")
    assert c.ready() == b"A"
    assert c.wait() == 0
    ch.close()


@pytest.mark.parametrize(("argv", "env_value", "words"), [
    (["--lease-timeout", "-3"], None, ["--lease-timeout", "'-3'"]),
    (["--lease-timeout", "nan"], None, ["--lease-timeout"]),
    ([], "soon", ["--lease-timeout", "$SHMRING_LEASE_TIMEOUT"]),
])
def test_bad_lease_timeouts_are_refused(env: Env, argv: list[str], env_value: str | None,
                                        words: list[str]) -> None:
    e = dict(os.environ)
    if env_value is not None:
        e["SHMRING_LEASE_TIMEOUT"] = env_value
    p = subprocess.run([sys.executable, "-m", "shmring", "supervisor", "--exit-when-idle", "0",
                        *argv], env=e, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    for w in words:
        assert w in p.stderr
