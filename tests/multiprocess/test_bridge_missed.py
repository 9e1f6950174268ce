"""A lossy broadcast channel across a bridge keeps exact ``missed`` counts.

The exporting bridge's subscription is stopped (SIGSTOP) while the producer
laps the small ring many times over, so it certainly misses messages; a
remote subscriber then counts those as missed, as a local subscriber
counts what it missed itself: every message sent after it joined was
either received or counted, and nothing is counted twice."""

from __future__ import annotations

import json
import signal
import time

from bridge_util import free_port, output, two_sides

import shmring

SUBSCRIBER = """
import json, shmring, sys
rx = shmring.Channel.open(sys.argv[1], wait=30).consumer()
print("joined", flush=True)
got = []
while True:
    try:
        got.extend(int.from_bytes(m[:8], "little") for m in rx.recv_many(512, timeout=120))
    except shmring.EndOfStream:
        break
print(json.dumps({"got": got, "missed": rx.missed}), flush=True)
"""


def _send(tx: shmring.Producer, first: int, n: int, paced: bool = False) -> None:
    """Messages ``first`` .. ``first + n - 1``; ``paced``: a ring's worth at
    a time, so that the bridge can keep up."""
    for i in range(first, first + n):
        tx.send(i.to_bytes(8, "little"))
        if paced and i % 64 == 0:
            time.sleep(0.002)


def test_a_remote_subscriber_counts_what_the_exporting_bridge_missed() -> None:
    n_before, n_stopped, n_after = 2000, 50_000, 2000
    total = n_before + n_stopped + n_after
    with two_sides("bm") as (a, b):
        src = shmring.Channel.create("ticks", 1 << 12, "broadcast", lossy=True, namespace=b.ns)
        try:
            url = f"tcp://127.0.0.1:{free_port()}"
            exporter = b.bridge("--listen", url, "--export", "ticks")
            a.bridge("--connect", url, "--import", "ticks")
            a.wait_streaming("ticks", "inbound")
            subs = [a.python(SUBSCRIBER, "ticks") for _ in range(2)]
            for s in subs:
                assert s.stdout is not None
                assert s.stdout.readline().strip() == "joined"
            b.wait_streaming("ticks")
            tx = src.producer()
            _send(tx, 0, n_before, paced=True)
            wait_for_sent(b, n_before // 2)  # streaming
            exporter.proc.send_signal(signal.SIGSTOP)  # its subscription falls behind
            try:
                _send(tx, n_before, n_stopped)  # laps the 4 KiB ring many times
            finally:
                exporter.proc.send_signal(signal.SIGCONT)
            _send(tx, n_before + n_stopped, n_after, paced=True)
            src.close_send()  # crosses once the bridge has read the rest
            results = [json.loads(output(s)) for s in subs]
            st = b.status()["outbound"][0]
        finally:
            src.close()
        for r in results:
            got = r["got"]
            assert got == sorted(set(got)), "in order, none twice"
            assert got[-1] == total - 1
            # Every message either arrived or is counted: the exporter's
            # misses (upstream) and any of this subscriber's own.
            assert len(got) + r["missed"] == total, (len(got), r["missed"], st)
            # Most of what was sent while the bridge was stopped (it may read
            # a few hundred before the signal stops it).
            assert r["missed"] >= n_stopped // 2, r["missed"]


def wait_for_sent(side: object, n: int) -> None:
    """Until the exporting bridge has sent at least ``n`` records."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = side.status()  # type: ignore[attr-defined]
        if st["outbound"] and st["outbound"][0]["sent"] >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"the exporting bridge did not send {n} records")
