"""A stop storm over one supervised channel: while producers send numbered
messages, random consumers are stopped (SIGSTOP) for random spans up to
twice the lease and continued (SIGCONT). Then every message must have been
consumed exactly once (a consumer whose lease was revoked says so, and its
look at the message does not count), no send may have waited longer than
the lease (mpmc, where other consumers go on) or the stop (spsc, mpsc: the
one consumer is the one stopped) plus a margin, and every process ends.

``pipeline_storm`` does the same to a pipeline's workers (every stage with
a lease): every output exactly once, and the run ends.

Shared by multiprocess/test_lease.py (one seed, a few seconds) and
stress/test_lease_storm_stress.py (many seeds, a time budget).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import struct
import threading
import time
from collections import Counter

from supervisor_util import Child, Env, wait_for

import shmring
from shmring._errors import LeaseRevoked
from shmring._supervisor.server import Supervisor

HDR = struct.Struct("<QQ")
LEASE = 0.3
#: Slack for a loaded machine (two cores shared by many runs) on every bound.
MARGIN = 3.0


def _producer(name: str, tag: int, count: int, waits: str) -> None:
    tx = shmring.Channel.open(name).producer()
    rng = random.Random(tag)
    worst = 0.0
    for seq in range(count):
        size = rng.choice((16, 40, 100, 200, 450))
        t0 = time.monotonic()
        tx.send(HDR.pack(tag, seq) + bytes(size - 16), timeout=60)
        worst = max(worst, time.monotonic() - t0)
    with open(waits, "a") as f:
        f.write(f"{worst}\n")


def _consumer(name: str, log: str, seed: int) -> None:
    """Logs V tag seq while it holds a message (a look with side effects),
    and R tag seq if its lease on it was then revoked."""
    rx = shmring.Channel.open(name).consumer()
    rng = random.Random(seed)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    while True:
        key = b""
        try:
            if rng.random() < 0.5:
                with rx.recv_view(timeout=0.2) as view:
                    key = bytes(view[:16])
                    os.write(fd, b"V" + key)
                    busy = time.perf_counter() + 0.0005  # some work on it, held
                    while time.perf_counter() < busy:
                        pass
            else:
                key = rx.recv(timeout=0.2)[:16]
                os.write(fd, b"V" + key)
        except LeaseRevoked:
            if key:  # seen, then taken from us: not consumed here
                os.write(fd, b"R" + key)
        except shmring.Timeout:
            continue
        except shmring.EndOfStream:
            return


def _run_producer(name: str, tag: int, count: int, waits: str, c: Child) -> None:
    _producer(name, tag, count, waits)


def _run_consumer(name: str, log: str, seed: int, c: Child) -> None:
    _consumer(name, log, seed)


def _records(path: str) -> list[tuple[bytes, tuple[int, int]]]:
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) % 17 == 0, f"{path}: a torn log line"
    return [(data[i:i + 1], HDR.unpack(data[i + 1:i + 17])) for i in range(0, len(data), 17)]


def storm(env: Env, name: str, tmp: str, pattern: str, seed: int,
          seconds: float) -> dict[str, int]:
    """One storm; what happened: stops, leases the supervisor revoked,
    and looks of consumers that were then told LeaseRevoked."""
    rng = random.Random(seed)
    sup = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0,
                     lease_timeout=LEASE).start()
    children: list[Child] = []
    try:
        ch = shmring.Channel.create(name, capacity=1 << 14, pattern=pattern, slots=32)
        n_prod = 1 if pattern == "spsc" else 2
        n_cons = 3 if pattern == "mpmc" else 1
        count = 4000
        waits = os.path.join(tmp, "waits")
        logs = [os.path.join(tmp, f"c{i}") for i in range(n_cons)]
        consumers = [Child(functools.partial(_run_consumer, name, logs[i], seed * 10 + i))
                     for i in range(n_cons)]
        producers = [Child(functools.partial(_run_producer, name, t, count, waits))
                     for t in range(1, n_prod + 1)]
        children += consumers + producers
        end = time.monotonic() + seconds
        longest = 0.0
        stops = 0
        while time.monotonic() < end and any(p.poll() is None for p in producers):
            victim = rng.choice(consumers)  # one at a time: the others go on
            span = rng.uniform(0, 2 * LEASE)
            os.kill(victim.pid, signal.SIGSTOP)
            stops += 1
            time.sleep(span)  # the stop itself: how long it stays stopped
            os.kill(victim.pid, signal.SIGCONT)
            longest = max(longest, span)
            time.sleep(rng.uniform(0, LEASE))  # traffic between stops
        for p in producers:
            assert p.wait(timeout=120) == 0, "a producer failed"
        ch.close_send()
        for c in consumers:
            assert c.wait(timeout=60) == 0, "a consumer failed or hung"
        # Every message consumed exactly once; a second look only where a
        # lease was revoked (and then the first did not count).
        seen: Counter[tuple[int, int]] = Counter()
        for log in logs:
            if not os.path.exists(log):
                continue
            for kind, key in _records(log):
                seen[key] += 1 if kind == b"V" else -1
        sent = {(t, s) for t in range(1, n_prod + 1) for s in range(count)}
        lost = sent - {k for k, n in seen.items() if n >= 1}
        assert not lost, f"seed {seed}: {len(lost)} messages lost, e.g. {sorted(lost)[:5]}"
        # A look whose lease was then revoked may have seen the record's room
        # already reused (handed over, consumed, released and zeroed while
        # the looker was stopped between taking the view and reading it): a
        # key nobody sent, seen and revoked (net 0). Any other key not sent,
        # or a net count other than 1, is a fault.
        stray = {k: n for k, n in seen.items() if k not in sent and n != 0}
        assert not stray, f"seed {seed}: consumed what nobody sent: {list(stray.items())[:5]}"
        twice = {k: n for k, n in seen.items() if k in sent and n != 1}
        assert not twice, f"seed {seed}: consumed more than once: {list(twice.items())[:5]}"
        with open(waits) as f:
            worst = max(float(x) for x in f.read().split())
        bound = (LEASE + 2 * sup.leases.interval() if pattern == "mpmc" else longest) + MARGIN
        assert worst < bound, f"seed {seed}: a send waited {worst:.2f} s (bound {bound:.2f})"
        revoked = sum(1 for log in logs if os.path.exists(log)
                      for kind, _ in _records(log) if kind == b"R")
        ch.close()
        wait_for(lambda: not os.path.exists(f"/dev/shm{ch.region.segment}"), 10,
                 "the region to be unlinked")
        return {"stops": stops, "leases": int(sup.stats["leases"]), "revoked": revoked}
    finally:
        for c in children:
            if c.poll() is None:
                os.kill(c.pid, signal.SIGCONT)
                c.kill()
        sup.stop()


# ------------------------------------------------------------ pipelines --
def nap_plus(x: int) -> int:
    """x + 1 after half a millisecond: workers are often stopped mid-item."""
    time.sleep(0.0005)
    return x + 1


def pipeline_storm(env: Env, name: str, seed: int, items: int = 8000, stops: int = 15,
                   lease: float = LEASE, timeout: float = 120.0) -> dict[str, int]:
    """A pipeline (map, flat_map, map; every stage with a lease) while a
    thread stops random workers for up to twice the lease and continues
    them: every output exactly once, and the run ends (``run.wait`` times
    out on a hang). What happened: stops, outputs, leases revoked."""
    sup = Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0).start()
    try:
        return _pipeline_storm(sup, name, seed, items, stops, lease, timeout)
    finally:
        sup.stop()


def _pipeline_storm(sup: Supervisor, name: str, seed: int, items: int, stops: int,
                    lease: float, timeout: float) -> dict[str, int]:
    from pipeline_storm import fan, work  # the SIGKILL storm's stage functions
    from pipeline_util import gone

    rng = random.Random(seed)
    never = 10**6  # no item is given up: a stopped worker is no poison
    p = shmring.Pipeline(name)
    (p.source(range(items))
     .map(nap_plus, workers=3, lease=lease, max_redeliveries=never)
     .flat_map(fan, workers=2, lease=lease, max_redeliveries=never)
     .map(work, workers=2, lease=lease, max_redeliveries=never))
    done = threading.Event()
    stopped = [0]
    with p.run() as run:
        stages = p.stages

        def stopper() -> None:
            for _ in range(stops):
                if done.wait(rng.uniform(0.001, 0.05)):
                    return
                pids = run.pids(rng.choice(stages))
                if not pids:
                    continue
                pid = rng.choice(pids)
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                stopped[0] += 1
                done.wait(rng.uniform(0, 2 * lease))  # how long it stays stopped
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        t = threading.Thread(target=stopper)
        t.start()
        try:
            out = run.wait(timeout=timeout)  # Timeout: a hang
        finally:
            done.set()
            t.join()
    assert gone(name), f"segments of {name} outlived the run"
    want = Counter(work(v) for x in range(items) for v in fan(x + 1))
    got = Counter(out)
    assert got == want, (f"seed {seed}: {sum((want - got).values())} lost, "
                         f"{sum((got - want).values())} twice")
    return {"stops": stopped[0], "outputs": len(out), "leases": int(sup.stats["leases"])}
