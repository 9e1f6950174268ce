"""SIGKILL at every step, and storms of them: the supervisor recovers what
dead processes left half-done, no committed message is lost or duplicated,
nothing is left in /dev/shm, nothing hangs.

The steps of a multi-producer claim (csrc/ring/produce.c, ``ring_claim``/``commit``)
are: record the intent in the slot, compare-exchange the tail, mark the claim
confirmed in the slot, write the end-of-ring padding if the claim wraps,
write the claimed header, write the payload, publish the header and clear the
intent. A child
reproduces the ring's exact state after each step with the same atomic
operations, then is SIGKILLed; steps D and E use the real ``claim()``.
"""

from __future__ import annotations

import os

import pytest
from pattern_util import patterns
from storm_util import storm
from supervisor_util import Child, Env, sleep_forever, wait_for

import shmring
from shmring import _core
from shmring import _layout as L


def _word(length: int, rtype: int, pos: int, cap: int) -> int:
    return (length & 0xFFFFFFFF) | (rtype << 32) | (((pos // cap) & 0x7FF) << 53)


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


@pytest.mark.parametrize("pattern", patterns(multi_producer=True))
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
        taken = (w & ~(0x1FFFF << 36)) | (L.ST_TAKEN << 36) | ((slot + 1) << 40)
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
# The storm itself is storm_util.storm; its long run is under stress/.
@pytest.mark.parametrize("pattern", patterns(multi_producer=True))
def test_sigkill_storm(env: Env, uname: str, tmp_path: object, pattern: str) -> None:
    storm(env, uname, str(tmp_path), pattern, seed=1234, seconds=3.0)
