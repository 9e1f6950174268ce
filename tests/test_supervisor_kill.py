"""SIGKILL at every step, and storms of them: the supervisor recovers what
dead processes left half-done, no committed message is lost or duplicated,
nothing is left in /dev/shm, nothing hangs.

The steps of a multi-producer claim (csrc/ring.c, ``ring_claim``/``commit``)
are: record the intent in the slot, compare-exchange the tail, mark the claim
confirmed in the slot, write the end-of-ring padding if the claim wraps,
write the claimed header, write the payload, publish the header and clear the
intent. A child
reproduces the ring's exact state after each step with the same atomic
operations, then is SIGKILLed; steps D and E use the real ``claim()``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import struct
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from supervisor_util import Child, Env, sleep_forever, supervisor_env, wait_for

import shmring
from shmring import _core
from shmring import _layout as L


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with supervisor_env(monkeypatch) as e:
        yield e


def _word(length: int, rtype: int, pos: int, cap: int) -> int:
    return (length & 0xFFFFFFFF) | (rtype << 32) | (((pos // cap) & 0xFFFF) << 48)


def _emulate(ch: shmring.Channel, step: str, size: int) -> None:
    """In the child: leave the ring as a producer dying after ``step``."""
    tx = ch.producer()
    buf = ch.region.buf
    assert buf is not None
    cap = ch.capacity
    so = L.slot_offset(tx._slot)
    doff = L.data_offset(ch.region.slot_count)
    t = _core.load(buf, L.OFF_TAIL)
    reclen = (size + L.RECORD_HEADER + L.RECORD_ALIGN - 1) // L.RECORD_ALIGN * L.RECORD_ALIGN
    idx = t % cap
    pad = cap - idx if idx + reclen > cap else 0
    if step in ("intent", "cas", "confirmed", "pad"):
        _core.store(buf, so + L.SLOT_CLAIM_LEN, pad + reclen)
        _core.store(buf, so + L.SLOT_CLAIM_POS, t)
        if step == "intent":
            return
        assert _core.cas(buf, L.OFF_TAIL, t, t + pad + reclen)
        if step == "cas":
            return
        _core.store(buf, so + L.SLOT_CLAIM_LEN, (pad + reclen) | L.CLAIM_CONFIRMED)
        if step == "pad":
            assert pad, "the pad step needs a wrapping claim"
            _core.store(buf, doff + idx + 8, t)
            _core.store(buf, doff + idx, _word(pad, L.REC_PAD, t, cap))
        return
    if step in ("header", "payload"):
        claim = tx.claim(size)
        if step == "payload":
            claim.view[: size // 2] = b"\xee" * (size // 2)
        ch._dead_claim = claim  # type: ignore[attr-defined]  # keep it open
        return
    assert step == "committed"
    tx.send(b"C" * size)  # published; then the intent comes back as if not yet cleared
    _core.store(buf, so + L.SLOT_CLAIM_LEN, (pad + reclen) | L.CLAIM_CONFIRMED)
    _core.store(buf, so + L.SLOT_CLAIM_POS, t)


STEPS = ["intent", "cas", "confirmed", "header", "payload", "committed"]


# End padding exists only at a wrap: the "pad" step is run for wrapping claims.
CASES = [(step, wrap) for wrap in (False, True) for step in STEPS] + [("pad", True)]


@pytest.mark.parametrize("pattern", ["mpsc", "mpmc"])
@pytest.mark.parametrize(("step", "wrap"), CASES,
                         ids=[f"{s}-{'wrap' if w else 'inside'}" for s, w in CASES])
def test_producer_killed_after_each_step(env: Env, uname: str, pattern: str, wrap: bool,
                                         step: str) -> None:
    ch = shmring.Channel.create(uname, capacity=1024, pattern=pattern)
    rx, tx = ch.consumer(), ch.producer()
    before = [b"b%d" % i + bytes(90) for i in range(8 if wrap else 2)]
    for m in before:  # 8 records of 112 bytes: the next 192-byte claim wraps
        tx.send(m)
        assert rx.recv(timeout=1) == m
    size = 192 if wrap else 64

    def child(c: Child) -> None:
        mine = shmring.Channel.open(uname)
        _emulate(mine, step, size)
        c.signal()
        sleep_forever()

    c = Child(child)
    c.ready()
    c.kill()
    wait_for(lambda: c.pid not in {s.pid for s in ch.region.slots()}, 10, "the recovery")
    after = [b"a%d" % i + bytes(i * 7) for i in range(20)]  # past the wrap, twice
    got = []
    for m in after:
        tx.send(m, timeout=5)
        got.append(rx.recv(timeout=5))
    expected = ([b"C" * size] if step == "committed" else []) + after
    if step == "committed":
        got.append(rx.recv(timeout=5))
    assert got == expected
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()
    ch.close()
    assert not os.path.exists(env.shm(uname))


def test_mpmc_consumer_killed_holding_a_record(env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc")
    tx, rx = ch.producer(), ch.consumer()
    for i in range(3):
        tx.send(b"m%d" % i)

    def child(c: Child) -> None:
        theirs = shmring.Channel.open(uname).consumer()
        view = theirs.recv_view(timeout=5)
        assert bytes(view.view) == b"m0"
        c.signal()
        sleep_forever()

    c = Child(child)
    c.ready()
    assert rx.recv(timeout=1) == b"m1"
    c.kill()
    got = sorted(rx.recv(timeout=5) for _ in range(2))
    assert got == [b"m0", b"m2"]  # m0 handed back to the work queue
    ch.close()


def test_mpmc_consumer_killed_between_take_and_read_claim(env: Env, uname: str) -> None:
    """Taking an mpmc record is a compare-exchange of its word, then a move
    of read_claim: a consumer dying between the two still gives it back."""
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpmc")
    tx, rx = ch.producer(), ch.consumer()
    for i in range(3):
        tx.send(b"m%d" % i)

    def child(c: Child) -> None:
        theirs = shmring.Channel.open(uname)
        slot = theirs.consumer()._slot
        buf = theirs.region.buf
        assert buf is not None
        word = L.data_offset(theirs.region.slot_count) + _core.load(buf, L.OFF_READ_CLAIM) % 4096
        w = _core.load(buf, word)
        taken = (w & ~(0xFFF << 36)) | (L.ST_TAKEN << 36) | ((slot + 1) << 40)
        assert _core.cas(buf, word, w, taken)
        c.signal()
        sleep_forever()

    c = Child(child)
    c.ready()
    c.kill()
    assert sorted(rx.recv(timeout=5) for _ in range(3)) == [b"m0", b"m1", b"m2"]
    buf = ch.region.buf
    assert buf is not None
    assert _core.load(buf, L.OFF_HEAD) == _core.load(buf, L.OFF_TAIL)  # nothing stuck
    ch.close()


def test_every_kill_unlinks(env: Env, uname: str) -> None:
    """SIGKILL of the only user, many times: each region is unlinked (the
    timings are in benchmarks/supervisor.py)."""
    for i in range(20):
        name = f"{uname}-{i}"

        def child(c: Child, name: str = name) -> None:
            shmring.Channel.create(name, capacity=4096, pattern="mpmc").producer().claim(8)
            c.signal()
            sleep_forever()

        c = Child(child)
        c.ready()
        c.kill()
        path = env.shm(name)
        wait_for(lambda: not os.path.exists(path), 5, "the unlink")  # noqa: B023


# ------------------------------------------------------------------ storm --
HDR = struct.Struct("<QQ")


def _producer(name: str, tag: int) -> None:
    ch = shmring.Channel.open(name)
    tx = ch.producer()
    rng = random.Random(tag)
    seq = 0
    try:
        while True:
            size = rng.choice((16, 40, 100, 200, 450))
            if rng.random() < 0.3:
                with tx.claim(size, timeout=30) as view:
                    view[:16] = HDR.pack(tag, seq)
                    view[16:] = b"\x5a" * (size - 16)
            else:
                tx.send(HDR.pack(tag, seq) + bytes(size - 16), timeout=30)
            seq += 1
    except shmring.Closed:
        return


def _consumer(name: str, log: str) -> None:
    ch = shmring.Channel.open(name)
    deadline = time.monotonic() + 30
    while True:
        try:
            rx = ch.consumer()
            break
        except shmring.RoleTaken:  # a dead one's role: the supervisor frees it
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    while True:
        try:
            with rx.recv_view(timeout=0.2) as view:
                os.write(fd, bytes(view[:16]))  # logged before it is released
        except shmring.Timeout:
            continue
        except shmring.EndOfStream:
            return


def _storm(env: Env, name: str, tmp: str, pattern: str, seed: int, seconds: float) -> None:
    rng = random.Random(seed)
    ch = shmring.Channel.create(name, capacity=1 << 14, pattern=pattern, slots=128)
    n_cons = 2 if pattern == "mpmc" else 1
    tags = iter(range(1, 1_000_000))
    producers: dict[int, Child] = {}
    consumers: dict[str, Child] = {}
    killed_logs: list[str] = []

    def spawn_producer() -> None:
        tag = next(tags)
        producers[tag] = Child(lambda c: _producer(name, tag))

    def spawn_consumer() -> None:
        log = os.path.join(tmp, f"c{next(tags)}")
        consumers[log] = Child(lambda c: _consumer(name, log))

    try:
        for _ in range(3):
            spawn_producer()
        for _ in range(n_cons):
            spawn_consumer()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.005, 0.12))
            kind = rng.choices(("producer", "consumer", "supervisor"), (4, 3, 1))[0]
            if kind == "producer":
                tag = rng.choice(sorted(producers))
                producers.pop(tag).kill()
                spawn_producer()
            elif kind == "consumer":
                log = rng.choice(sorted(consumers))
                consumers.pop(log).kill()
                killed_logs.append(log)
                spawn_consumer()
            else:
                pid = env.supervisor_pid()
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        for c in producers.values():
            c.kill()  # mid-send, most likely
        # End the stream once every dead worker is recovered: a claim or a
        # taken record still in front of committed ones would end it early
        # (after a supervisor restart, recovery waits for its grace).
        live = {c.pid for c in consumers.values()}
        deadline = time.monotonic() + 30
        while not {s.pid for s in ch.region.slots()} <= live | {os.getpid()}:
            if time.monotonic() > deadline:
                log = os.path.join(env.socket_dir, f"{env.namespace}.log")
                with open(log) as f:
                    tail = f.readlines()[-40:]
                st = env.connection().status()
                raise AssertionError("dead workers not recovered:\n" + _dump(ch) + "\n"
                                     + repr({k: st[k] for k in ("pid", "in_grace", "stats")})
                                     + "\n" + repr(st["processes"]) + "\n" + "".join(tail))
            time.sleep(0.01)
        ch.close_send()
        for c in consumers.values():
            assert c.wait(60) == 0, "a consumer failed"
        buf = ch.region.buf
        assert buf is not None  # drained: nothing committed is stuck in the ring
        assert _core.load(buf, L.OFF_HEAD) == _core.load(buf, L.OFF_TAIL), _dump(ch)
    finally:
        for c in [*producers.values(), *consumers.values()]:
            c.kill()
        ch.close()
    assert not os.path.exists(env.shm(name))
    _check_delivery(tmp, killed_logs, ordered=pattern == "mpsc")


def _dump(ch: shmring.Channel) -> str:
    buf = ch.region.buf
    assert buf is not None
    cap, doff = ch.capacity, L.data_offset(ch.region.slot_count)
    c = {k: _core.load(buf, getattr(L, "OFF_" + k.upper()))
         for k in ("head", "tail", "read_claim", "redeliver")}
    out = [str(c)]
    q = c["head"]
    for _ in range(6):
        w = _core.load(buf, doff + q % cap)
        ln = w & 0xFFFFFFFF
        out.append(f"@{q}: len={ln if ln < 1 << 31 else ln - (1 << 32)} type={(w >> 32) & 15} "
                   f"state={(w >> 36) & 15} owner={(w >> 40) & 255} lap={w >> 48} "
                   f"(lap of pos {(q // cap) & 0xFFFF}) seq={_core.load(buf, doff + q % cap + 8)}")
        if ln <= 0 or ln >= 1 << 31:
            break
        q += (ln + 15) // 16 * 16
    out += [repr(x) for x in ch.region.slots()]
    return "\n".join(out)


def _check_delivery(tmp: str, killed_logs: list[str], *, ordered: bool) -> None:
    logs = {}
    for f in os.listdir(tmp):
        with open(os.path.join(tmp, f), "rb") as fh:
            data = fh.read()
        assert len(data) % 16 == 0
        logs[os.path.join(tmp, f)] = [HDR.unpack_from(data, i) for i in range(0, len(data), 16)]
    counts = Counter(m for entries in logs.values() for m in entries)
    # A consumer killed after logging a record but before releasing it did
    # not consume it: the record is delivered again. Nothing else repeats.
    allowance = Counter(logs[f][-1] for f in killed_logs if logs.get(f))
    dups = {m: n - 1 for m, n in counts.items() if n > 1}
    assert all(allowance[m] >= d for m, d in dups.items()), f"duplicated: {dups}"
    by_producer: dict[int, set[int]] = {}
    for tag, seq in counts:
        by_producer.setdefault(tag, set()).add(seq)
    for tag, seqs in by_producer.items():
        assert seqs == set(range(max(seqs) + 1)), f"producer {tag} lost messages"
    if ordered:
        for entries in logs.values():
            last: dict[int, int] = {}
            for tag, seq in entries:
                assert seq >= last.get(tag, -1), "reordered"
                last[tag] = seq
    assert sum(counts.values()) > 100  # the storm let work through


@pytest.mark.parametrize("pattern", ["mpmc", "mpsc"])
def test_sigkill_storm(env: Env, uname: str, tmp_path: object, pattern: str) -> None:
    _storm(env, uname, str(tmp_path), pattern, seed=1234, seconds=3.0)


@pytest.mark.stress
@pytest.mark.parametrize("pattern", ["mpmc", "mpsc"])
def test_sigkill_storm_many_seeds(monkeypatch: pytest.MonkeyPatch, uname: str,
                                  tmp_path: object, pattern: str) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90"))
    end = time.monotonic() + budget
    seed = 0
    while time.monotonic() < end:
        seed += 1
        d = os.path.join(str(tmp_path), f"s{seed}")
        os.mkdir(d)
        with supervisor_env(monkeypatch) as e:
            _storm(e, f"{uname}-{seed}", d, pattern, seed=seed, seconds=4.0)
