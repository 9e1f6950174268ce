"""The bridge benchmark's own checks (benchmarks/bridge.py): its two bridges
carry a stream and leave nothing in /dev/shm, and a consumer that does not
get exactly the messages sent (one missing, one too many) fails the run
instead of reporting a rate."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import pytest

pytest.importorskip("zmq", reason="the bridge extra (pyzmq) is a test dependency")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _bench(name: str) -> Any:
    return importlib.import_module(f"benchmarks.{name}")


def test_a_bridged_stream_is_counted_and_nothing_is_left() -> None:
    link_mod, bridge = _bench("bridge_link"), _bench("bridge")
    link = link_mod.BridgedLink({"small": (1 << 20, 1 << 16), "ping": (1 << 16, 1 << 14)},
                                {"pong": (1 << 16, 1 << 14)}, tag="bbtest")
    try:
        counts = {"one": 3000, "many": 3000, "rtt": 50}
        one = bridge.MEASURES["bridged_one"][0](link, counts, 1 << 32)
        many = bridge.MEASURES["bridged_many"][0](link, counts, 2 << 32)
        rtt = bridge.bridged_rtt(link, counts, 3 << 32)
    finally:
        left = link.close()
    assert left == []
    for got in (one, many):
        assert got["rate"] > 0 and got["per_batch"] >= 1
    assert 0 < rtt["p50_us"] <= rtt["p99_us"]


@pytest.mark.parametrize("shift, error", [(1, "expected message"), (-1, "one message too many")])
def test_a_consumer_that_does_not_get_exactly_what_was_sent_fails_the_run(
        shift: int, error: str) -> None:
    parties, procs, link_mod = _bench("bridge_parties"), _bench("procs"), _bench("bridge_link")
    port, n, base = link_mod.free_port(), 1000, 5 << 32
    barrier = procs.MP.Barrier(2)
    # shift 1: the consumer waits for numbers from base+1 and sees base (lost
    # or reordered); shift -1: it wants one fewer and then sees one more.
    want = n if shift > 0 else n - 1
    with pytest.raises(procs.PartyError, match=error):
        procs.run_parties([
            (parties.zmq_producer, (port, n, base, "one", 64, 1000, barrier)),
            (parties.zmq_consumer, (port, want, base + max(shift, 0), "one", 64, 1000,
                                    barrier))], 60)
