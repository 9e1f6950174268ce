"""Slow subscribers of a lossless broadcast (``slow_consumer_timeout``):
messages that show when they are torn, a subscriber process that checks
and counts what it gets, and stopping processes for real.

Shared by multiprocess/test_untether.py and stress/test_untether_stress.py.
Every message carries its number at both ends and a filler byte made from
it, so a copy that mixes two messages (bytes overwritten while read) is
seen; the subscriber counts the numbers it never got from the gaps, which
must equal ``Consumer.missed`` exactly.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
from dataclasses import dataclass

from supervisor_util import Child, wait_for

import shmring
from shmring import _core
from shmring import _layout as L

HEAD = struct.Struct("<QI")  # number, total size
TAIL = struct.Struct("<Q")  # number again
MIN_SIZE = HEAD.size + TAIL.size
SIZES = (MIN_SIZE, 40, 64, 100, 200, 400)


def message(i: int, size: int) -> bytes:
    """Message number ``i`` of ``size`` bytes (at least MIN_SIZE)."""
    fill = size - MIN_SIZE
    return HEAD.pack(i, size) + bytes([i & 0xFF]) * fill + TAIL.pack(i)


def number(m: bytes | memoryview) -> int:
    """The number of message ``m``, or -1 if it is torn (any byte not the
    message's own)."""
    b = bytes(m)
    if len(b) < MIN_SIZE:
        return -1
    i, size = HEAD.unpack_from(b)
    if size != len(b) or TAIL.unpack_from(b, size - TAIL.size)[0] != i:
        return -1
    fill = b[HEAD.size:size - TAIL.size]
    if fill.count(i & 0xFF) != len(fill):
        return -1
    return int(i)


@dataclass
class Report:
    """What a subscriber saw, written to a file by the child."""

    received: int
    missed: int  # Consumer.missed at the end
    untethered: int  # Consumer.untethered at the end
    gaps: int  # numbers never received, from the sequence
    torn: int
    disorder: int  # numbers not above the one before
    ids: list[int]

    @classmethod
    def load(cls, path: str) -> Report:
        with open(path) as f:
            return cls(**json.load(f))


def subscribe(c: Child, name: str, report: str, *, delay: float = 0.0,
              ways: tuple[str, ...] = ("recv",)) -> None:
    """In a child: join broadcast channel ``name``, signal, then receive
    until end of stream (cycling through ``ways`` of receiving: recv,
    recv_view, recv_many, recv_into), checking every message; write a
    Report to ``report``. ``delay`` seconds between messages make it slow."""
    ch = shmring.Channel.open(name, supervised=False)
    rx = ch.consumer()
    c.signal()
    got = Report(0, 0, 0, 0, 0, 0, [])
    last = -1
    buf = bytearray(ch.max_message)
    k = 0
    done = False
    while not done:
        way = ways[k % len(ways)]
        k += 1
        batch: list[bytes] = []
        try:
            if way == "recv_view":
                with rx.recv_view(timeout=60) as v:
                    batch.append(bytes(v))
            elif way == "recv_many":
                batch.extend(rx.recv_many(8, timeout=60))
            elif way == "recv_into":
                n = rx.recv_into(buf, timeout=60)
                batch.append(bytes(buf[:n]))
            else:
                batch.append(rx.recv(timeout=60))
        except shmring.EndOfStream:
            done = True
        for m in batch:
            i = number(m)
            if i < 0:
                got.torn += 1
                continue
            if i <= last:
                got.disorder += 1
            else:
                got.gaps += i - last - 1
            last = i
            got.received += 1
            got.ids.append(i)
            if delay:
                time.sleep(delay)  # the slow subscriber under test, not a wait
    got.missed, got.untethered = rx.missed, rx.untethered
    rx.close()
    ch.close()
    with open(report + ".tmp", "w") as f:
        json.dump(got.__dict__, f)
    os.rename(report + ".tmp", report)


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it is stopped."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: proc_state(pid) in ("T", "t"), 5, "the subscriber to stop")


def cont(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def consumer_state(ch: shmring.Channel, pid: int) -> int | None:
    """The slot state (SLOT_*) of process ``pid``'s consumer, or None."""
    buf = ch.region._mapping()
    for i in range(ch.region.slot_count):
        so = L.slot_offset(i)
        if (_core.load(buf, so + L.SLOT_PID) == pid
                and _core.load32(buf, so + L.SLOT_ROLE) == L.ROLE_CONSUMER):
            return int(_core.load32(buf, so + L.SLOT_STATE))
    return None


def check_report(r: Report, sent: int, name: str) -> None:
    """The invariants every subscriber keeps, lossless or untethered."""
    assert r.torn == 0, f"{name}: {r.torn} torn messages"
    assert r.disorder == 0, f"{name}: {r.disorder} out of order"
    assert r.missed == r.gaps, f"{name}: missed {r.missed} but {r.gaps} numbers never came"
    assert r.received + r.missed == sent, (
        f"{name}: received {r.received} + missed {r.missed} != sent {sent}")
