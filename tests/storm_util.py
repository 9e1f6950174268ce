"""A SIGKILL storm over one supervised channel: producers (sending and
claiming), consumers and the supervisor itself are killed at random while
messages flow; then every dead worker must be recovered, the ring drained,
the region unlinked, and no committed message lost, reordered (mpsc) or
duplicated (beyond the one record a consumer killed between logging and
releasing it gets again).

Shared by multiprocess/test_supervisor_kill.py (one seed, a few seconds) and
stress/test_sigkill_storm_stress.py (many seeds, a time budget).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import struct
import time
from collections import Counter

from supervisor_util import Child, Env

import shmring
from shmring import _core
from shmring import _layout as L

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


def storm(env: Env, name: str, tmp: str, pattern: str, seed: int, seconds: float) -> None:
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
                raise AssertionError("dead workers not recovered:\n" + dump(ch) + "\n"
                                     + repr({k: st[k] for k in ("pid", "in_grace", "stats")})
                                     + "\n" + repr(st["processes"]) + "\n" + "".join(tail))
            time.sleep(0.01)
        ch.close_send()
        for c in consumers.values():
            assert c.wait(60) == 0, "a consumer failed"
        buf = ch.region.buf
        assert buf is not None  # drained: nothing committed is stuck in the ring
        assert _core.load(buf, L.OFF_HEAD) == _core.load(buf, L.OFF_TAIL), dump(ch)
    finally:
        for c in [*producers.values(), *consumers.values()]:
            c.kill()
        ch.close()
    assert not os.path.exists(env.shm(name))
    check_delivery(tmp, killed_logs, ordered=pattern == "mpsc")


def dump(ch: shmring.Channel) -> str:
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


def check_delivery(tmp: str, killed_logs: list[str], *, ordered: bool) -> None:
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
