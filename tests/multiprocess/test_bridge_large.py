"""Large records across a bridge: the exporting bridge sends a record of
``outbound.INPLACE`` bytes or more from its ring in place (ZeroMQ reads it
from the mapping) and releases it only once the importer acknowledged it
and ZeroMQ let go of every send of it. Every byte of every record must
arrive as written, once, in order, across a SIGKILLed bridge on either side
started again; on mpsc and mpmc a released record's room is zeroed by the
consumer, so a record released while ZeroMQ still read it would arrive
with zeros in it."""

from __future__ import annotations

import hashlib
import random

import pytest
from bridge_util import KillablePair, output, two_sides

import shmring
from shmring._bridge.outbound import INPLACE

SIZE = INPLACE + 40_000

BIG_SENDER = f"""
import hashlib, shmring, sys
name, n = sys.argv[1], int(sys.argv[2])
tx = shmring.Channel.open(name, wait=30).producer()
for i in range(n):
    seed = hashlib.blake2b(i.to_bytes(8, "little")).digest()
    tx.send(i.to_bytes(8, "little") + (seed * ({SIZE} // 64 + 1))[:{SIZE} - 8], timeout=120)
print("sent", n)
"""


def _check(m: bytes | memoryview) -> int:
    """The number of record ``m``, whose every byte must be as sent."""
    i = int.from_bytes(m[:8], "little")
    seed = hashlib.blake2b(i.to_bytes(8, "little")).digest()
    assert len(m) == SIZE and m[8:] == (seed * (SIZE // 64 + 1))[:SIZE - 8], f"record {i}"
    return i


@pytest.mark.parametrize("victim", ["exporter", "importer"])
@pytest.mark.parametrize("pattern", ["spsc", "mpsc", "mpmc"])
def test_large_records_cross_whole_once_across_a_killed_bridge(victim: str,
                                                               pattern: str) -> None:
    n = 240
    rnd = random.Random()
    with two_sides() as (a, b):
        src = shmring.Channel.create("big", 4 << 20, pattern, namespace=b.ns,
                                     max_message=SIZE, lease=None)
        try:
            pair = KillablePair(a, b, "big")
            imported = pair.imported
            rx = imported.consumer()
            prod = b.python(BIG_SENDER, "big", str(n))
            got: list[int] = []
            for _round in range(2):
                want = len(got) + rnd.randint(20, 80)
                while len(got) < min(want, n - 1):
                    with rx.recv_view(timeout=60) as v:
                        got.append(_check(v))
                pair.restart(victim)
            twice_ok = pattern == "mpmc" and victim == "exporter"
            while len(set(got) if twice_ok else got) < n:
                with rx.recv_view(timeout=60) as v:
                    got.append(_check(v))
            assert output(prod).startswith("sent")
            src.close_send()
            if twice_ok:
                # What was in flight when an mpmc channel's exporting bridge
                # died may come twice (docs/bridge.md, limits): whole all the same.
                with pytest.raises(shmring.EndOfStream):
                    while True:
                        with rx.recv_view(timeout=60) as v:
                            got.append(_check(v))
            with pytest.raises(shmring.EndOfStream):  # nothing more: no duplicate at the end
                rx.recv(timeout=60)
            imported.close()
        finally:
            src.close()
        if twice_ok:
            assert set(got) == set(range(n))
        else:
            # mpmc: a record handed back by a recovery may come after newer
            # ones; every one exactly once all the same.
            assert (sorted(got) if pattern == "mpmc" else got) == list(range(n))
