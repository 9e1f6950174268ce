"""Relays for the durable-subscription kill tests: a producer of numbered
records, and a bridge's exporting side in miniature (a durable subscriber
that records what it "sends" before it settles it, and skips on start what
the record already has). Shared by multiprocess/test_durable_kill.py and
stress/test_durable_stress.py."""

from __future__ import annotations

import time

import shmring

TAG = 0xD0_0AB1E
WAIT = 20.0


def keep_sending(name: str, n: int) -> None:
    ch = shmring.Channel.open(name)
    tx = ch.producer()
    for i in range(n):
        tx.send(i.to_bytes(8, "little"), timeout=120)
    ch.close_send()
    ch.close()


def relay(name: str, path: str, window: int, stop_at: int) -> None:
    """A bridge's exporting side in miniature: reads ahead, "sends" each
    record by appending (key, value) to ``path``, then settles it; on start
    it skips (settles) what ``path`` already has, as the bridge skips what
    the importer has (keys <= the importer's resume point). Once ``path``
    holds ``stop_at`` lines (0: never) it stops there, with the rest of its
    batch read ahead and nothing of it settled, and waits to be killed."""
    floor, lines = 0, 0
    with open(path, "r+b") as f:
        data = f.read()
        # A relay killed inside a write may have left part of a line: the
        # importer never had it (the next relay is started after that one
        # was reaped, so nobody else writes meanwhile).
        f.truncate(data.rfind(b"\n") + 1)
    for line in data[:data.rfind(b"\n") + 1].splitlines():
        floor = max(floor, int(line.split()[0]))
        lines += 1
    ch = shmring.Channel.open(name)
    rx = ch._durable_consumer(TAG, 60.0)
    with open(path, "ab", buffering=0) as out:
        while True:
            try:
                got = rx._ahead(window, 1 << 20, timeout=WAIT)
            except shmring.EndOfStream:
                return
            # key + 1: the bridge's keys (position 0 is a record too).
            new = [b"%d %d\n" % (key + 1, int.from_bytes(m, "little"))
                   for key, m in got if key + 1 > floor]
            if stop_at and lines + len(new) >= stop_at:
                out.write(b"".join(new[:stop_at - lines]))
                time.sleep(60)  # killed here: the batch read ahead, none of it settled
            out.write(b"".join(new))
            lines += len(new)
            rx._settle(got[-1][0])


def relayed(path: str) -> list[int]:
    """The values a relay run recorded, in order."""
    with open(path, "rb") as f:
        return [int(line.split()[1]) for line in f.read().splitlines()]
