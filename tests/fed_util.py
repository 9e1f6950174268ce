"""Fed rings under SIGKILL: a child process feeds keyed records with
``ProducerCore._send_fed`` in batches, resuming from ``_core.fed_state`` as
an importing bridge would, and is SIGKILLed at a random instant; the parent
consumes meanwhile, and after each kill checks that ``fed_state`` names
exactly the last record that reached the ring (it drains the ring to see),
before and after the dead producer's recovery, and that the stream of keys
received over every round has no gap, no duplicate and no reordering.

Shared by multiprocess/test_fed_kill.py (a few rounds per pattern) and
stress/test_fed_kill_stress.py (rounds until a time budget is spent).
"""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from supervisor_util import Child

import shmring
from shmring import _core
from shmring import _layout as L

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

KEY = struct.Struct("<QQ")  # a record's payload begins with its key (epoch, seq)
PATTERNS = ["spsc", "broadcast", "mpsc", "mpmc"]


def start_seq(epoch: int) -> int:
    """The first seq of an epoch: a function of it, so the checker knows."""
    return (epoch * 7919) % 1000


def record(epoch: int, seq: int, size: int) -> bytes:
    return KEY.pack(epoch, seq) + bytes([seq & 0xFF]) * (size - KEY.size)


def feeder(c: Child, name: str, seed: int, change: float) -> None:
    """The child: resume after the last key committed, then feed batches for
    ever (a new epoch with probability ``change`` per batch)."""
    rng = random.Random(seed)
    ch = shmring.Channel.open(name, supervised=False)
    tx = ch.producer()
    epoch, seq = _core.fed_state(ch.region._mapping())
    fresh = epoch == 0  # a ring never fed starts with epoch 1
    if fresh:
        epoch, seq = 1, start_seq(1) - 1
    c.signal()
    while True:
        if not fresh and rng.random() < change:
            epoch, seq = epoch + 1, start_seq(epoch + 1) - 1
        n = rng.choice((1, 2, 5, 30, 100, 256))
        items = [record(epoch, seq + 1 + i,
                        min(ch.max_message, rng.choice((16, 24, 64, 64, 200, 500, 2000))))
                 for i in range(n)]
        seqs = seq + 1 if rng.random() < 0.5 else [seq + 1 + i for i in range(n)]
        sent = tx._send_fed(items, epoch, seqs, timeout=30)
        seq += sent
        fresh = False


@dataclass
class Stream:
    """The keys received so far, checked one by one as they come."""

    last: tuple[int, int] = (0, 0)
    count: int = 0
    epochs: set[int] = field(default_factory=set)

    def take(self, m: bytes) -> None:
        e, s = KEY.unpack_from(m)
        assert m == record(e, s, len(m)), f"record {(e, s)} is torn"
        le, ls = self.last
        if e == le:
            assert s == ls + 1, f"after {self.last} came {(e, s)}: a gap or a duplicate"
        else:
            assert (e, s) == (le + 1, start_seq(le + 1)), (
                f"after {self.last} came {(e, s)}: not the start of the next epoch")
        self.last = (e, s)
        self.count += 1
        self.epochs.add(e)


def drain(rx: shmring.Consumer, stream: Stream) -> None:
    while True:
        try:
            stream.take(rx.recv_nowait())
        except shmring.WouldBlock:
            return


def answer_kind(buf: WriteableBuffer) -> str:
    """Which branch of the rule (layout.h, FEED) fed_state takes now."""
    x = _core.load(buf, L.HDR_FEED_MARK)
    e, p = _core.load(buf, L.HDR_FEED_EPOCH), _core.load(buf, L.HDR_FEED_PENDING)
    got = _core.fed_state(buf)
    if not x & L.FEED_PEND or got == (e, p):
        return "settled or done"
    return "note" if x & L.FEED_NEW else "pending"


def sample(ch: shmring.Channel, rx: shmring.Consumer, stream: Stream, child: Child,
           kinds: Counter[str]) -> None:
    """Stops the child where it is (as if it died there), checks, resumes it."""
    os.kill(child.pid, signal.SIGSTOP)
    _, status = os.waitpid(child.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    buf = ch.region._mapping()
    kinds[answer_kind(buf)] += 1
    drain(rx, stream)
    got = _core.fed_state(buf)
    assert got == stream.last, (
        f"with the feeder stopped, fed_state says {got}; the last record in the ring is "
        f"{stream.last}")
    os.kill(child.pid, signal.SIGCONT)


def one_round(ch: shmring.Channel, rx: shmring.Consumer, stream: Stream,
              rng: random.Random, kinds: Counter[str]) -> None:
    """A child feeds until it is killed at a random instant; meanwhile it is
    stopped at random instants too (a stopped feeder is frozen where a
    SIGKILL would have left it). The ring's answer must each time be exactly
    the last record in it."""
    seed = rng.randrange(1 << 30)
    change = rng.choice((0.0, 0.05, 0.3, 1.0))
    child = Child(lambda c: feeder(c, ch.name, seed, change))
    child.ready()
    kill_at = time.monotonic() + rng.uniform(0.002, 0.1)
    slow = rng.random() < 0.5  # a consumer that lets the ring fill up
    stops = rng.random() < 0.7
    while time.monotonic() < kill_at:
        if slow:
            time.sleep(0.001)  # the storm's pace, not a wait for a result
        if stops:
            sample(ch, rx, stream, child, kinds)
        else:
            drain(rx, stream)
    child.kill()
    buf = ch.region._mapping()
    kinds["killed: " + answer_kind(buf)] += 1
    before = _core.fed_state(buf)
    ch.recover_dead()
    drain(rx, stream)
    after = _core.fed_state(buf)
    assert before == after == stream.last, (
        f"fed_state said {before} after the kill and {after} after recovery; the last "
        f"record in the ring is {stream.last}")


def run_rounds(ch: shmring.Channel, rng: random.Random, rounds: int | None = None,
               until: float | None = None) -> tuple[Stream, Counter[str]]:
    """Rounds on one channel: ``rounds`` of them, or until ``until``; the
    stream received and how often each branch of the rule answered."""
    rx = ch.consumer()
    stream = Stream()
    kinds: Counter[str] = Counter()
    assert _core.fed_state(ch.region._mapping()) == (0, 0)
    k = 0
    while (rounds is None or k < rounds) and (until is None or time.monotonic() < until):
        one_round(ch, rx, stream, rng, kinds)
        k += 1
    rx.close()
    return stream, kinds


# ---------------------------------------------- a kill at every step --

CAPACITY = 4096
MAX_MESSAGE = CAPACITY // 2 - 16  # the largest a ring allows: a note's claim is larger still

#: Batches the step test kills inside: (epoch change, records, largest size).
SCENARIOS = {
    "same-epoch": (False, 3, 200),
    "new-epoch": (True, 3, MAX_MESSAGE),
    "fills-ring": (False, 40, 120),
    "new-epoch-fills-ring": (True, 40, 120),
}


def stepper(c: Child, name: str, scenario: str, k: int, seed: int) -> None:
    """The child: one batch of the scenario after the last key committed,
    stopping itself at its k-th step (``_core._feed_trap``)."""
    new, n, largest = SCENARIOS[scenario]
    rng = random.Random(seed)
    ch = shmring.Channel.open(name, supervised=False)
    tx = ch.producer()
    epoch, seq = _core.fed_state(ch.region._mapping())
    if epoch == 0 or new:
        epoch, seq = epoch + 1, start_seq(epoch + 1) - 1
    items = [record(epoch, seq + 1 + i, rng.randint(16, largest)) for i in range(n)]
    _core._feed_trap(k)
    tx._send_fed(items, epoch, seq + 1, timeout=30)
    c.signal(b"d")
    while True:
        time.sleep(100)


def kill_at_step(ch: shmring.Channel, rx: shmring.Consumer, stream: Stream, scenario: str,
                 k: int, seed: int, kinds: Counter[str] | None = None) -> bool:
    """Runs the scenario's batch in a child stopped at step k, SIGKILLs it
    there and checks the answer; False if the batch had fewer steps (it
    completed). ``kinds`` counts the branches of the rule that answered."""
    child = Child(lambda c: stepper(c, ch.name, scenario, k, seed))
    stopped = finished = False
    deadline = time.monotonic() + 30
    while not (stopped or finished):
        assert time.monotonic() < deadline, "the feeder neither stopped nor finished"
        drain(rx, stream)
        pid, status = os.waitpid(child.pid, os.WNOHANG | os.WUNTRACED)
        if pid:
            assert os.WIFSTOPPED(status), f"the feeder exited ({status:#x})"
            stopped = True
        if not stopped and select.select([child._r], [], [], 0)[0]:
            assert os.read(child._r, 1) == b"d", "the feeder failed (its traceback is above)"
            finished = True
    child.kill()
    buf = ch.region._mapping()
    if kinds is not None:
        kinds[answer_kind(buf)] += 1
    before = _core.fed_state(buf)
    ch.recover_dead()
    if kinds is not None and _core.load(buf, L.HDR_FEED_MARK) & L.FEED_VOID:
        kinds["voided by recovery"] += 1
    drain(rx, stream)
    after = _core.fed_state(buf)
    assert before == after == stream.last, (
        f"{scenario}, killed at step {k}: fed_state said {before} after the kill and {after} "
        f"after recovery; the last record in the ring is {stream.last}")
    return stopped
