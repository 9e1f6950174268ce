"""The read-ahead SIGKILL storm on an mpmc channel: consumers that read
windows ahead and settle at random keys are killed at random points while a
live consumer takes records too; after recovery (``recover_dead``) every
record must have been delivered exactly once, counting the ones the dead
settled. Shared by multiprocess/test_read_ahead_kill.py (one seed) and
stress/test_read_ahead_stress.py (seeds until a time budget).
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import shmring

CTX = get_context("fork")
WAIT = 10.0


def settle_at_random(name: str, seed: int, log: str) -> None:
    """mpmc consumer: reads windows ahead and settles at random keys, until
    killed. Before each settle it logs the ids the settle releases
    ("S id..."), after it "D": a settle in flight when it dies is the only
    one whose outcome the log cannot tell."""
    rnd = random.Random(seed)
    ch = shmring.Channel.open(name, supervised=False)
    rx = ch.consumer()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    held: list[tuple[int, bytes]] = []
    while True:
        try:
            held += rx._ahead(rnd.randint(1, 64), rnd.choice([64, 1 << 20]), timeout=WAIT)
        except shmring.EndOfStream:
            if not held:
                os.write(fd, b"E\n")
                time.sleep(60)
        if held and (len(held) > 150 or rnd.random() < 0.5):
            key = rnd.choice(held)[0]
            going = [m for k, m in held if k <= key]
            os.write(fd, b"S " + b" ".join(going) + b"\n")
            n = rx._settle(key)
            os.write(fd, b"D\n" if n == len(going) else b"X %d %d\n" % (n, len(going)))
            held = [(k, m) for k, m in held if k > key]


def take(rx: shmring.Consumer, n: int) -> list[bytes]:
    """Up to n records, without waiting ([] at end of stream)."""
    try:
        return rx.recv_many(n, timeout=0)
    except (shmring.Timeout, shmring.EndOfStream):
        return []


@dataclass
class Outcome:
    settled: int  # records the killed consumers settled (and logged so)
    received: int  # records the live consumer received
    unknown: int  # in a settle in flight at a kill: either, never both


def storm(ch: shmring.Channel, name: str, tmp: Path, *, seed: int, total: int,
          rounds: int) -> Outcome:
    """One seeded storm on ch (mpmc, unsupervised, named name, empty, with no
    consumer yet); raises AssertionError on a lost or repeated record."""
    rnd = random.Random(seed)
    tx, live = ch.producer(), ch.consumer()
    ids = [b"%06d" % i for i in range(total)]
    received: list[bytes] = []
    settled: list[bytes] = []
    unknown: set[bytes] = set()
    sent = 0
    for round_ in range(rounds):
        deadline = time.monotonic() + WAIT
        while sent < (round_ + 1) * total // rounds:
            try:
                tx.send_nowait(ids[sent])
                sent += 1
            except shmring.WouldBlock:  # full of what nobody took yet: the live one takes
                assert time.monotonic() < deadline, "the ring stays full"
                received += take(live, 64)
        if round_ == rounds - 1:
            ch.close_send()
        log = tmp / f"log-{seed}-{round_}"
        log.write_bytes(b"")
        child = CTX.Process(target=settle_at_random, args=(name, rnd.randrange(1 << 30),
                                                            str(log)), daemon=True)
        child.start()
        try:
            # Killed after a random number of settles, or once it has waited
            # a while with nothing left to take; the live consumer takes at
            # most a third of what this round sent meanwhile.
            lines_at_kill = rnd.randint(1, 12)
            in_settle = rnd.random() < 0.5  # at once after an "S": likely inside _settle
            share = len(received) + total // rounds // 3
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                text = log.read_bytes()
                if b"E\n" in text or (text.count(b"\n") >= lines_at_kill and (
                        not in_settle or text.rsplit(b"\n", 2)[-2].startswith(b"S"))):
                    break
                if len(received) < share and rnd.random() < 0.3:
                    received += take(live, rnd.randint(1, 8))
        finally:
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(WAIT)
        assert child.exitcode == -signal.SIGKILL
        assert ch.recover_dead() >= 1
        lines = log.read_bytes().split(b"\n")[:-1]
        log.unlink()
        assert not [ln for ln in lines if ln.startswith(b"X")], lines
        intent: list[bytes] = []
        for ln in lines:
            if ln.startswith(b"S "):
                intent = ln[2:].split(b" ")
            elif ln == b"D":
                settled += intent
                intent = []
        unknown |= set(intent)  # a settle in flight when it was killed
    while True:
        try:
            received += live.recv_many(256, timeout=WAIT)
        except shmring.EndOfStream:
            break
    live.close()
    tx.close()
    assert len(received) == len(set(received)), "a record was received twice"
    assert len(settled) == len(set(settled)), "a record was settled twice"
    assert not set(received) & set(settled), "a settled record was delivered again"
    missing = set(ids) - set(received) - set(settled)
    assert missing <= unknown, f"lost: {sorted(missing - unknown)[:10]}"
    return Outcome(len(settled), len(received), len(unknown))
