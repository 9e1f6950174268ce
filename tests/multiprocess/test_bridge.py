"""Channels across a bridge: two namespaces on this machine, each with its
own supervisor and its own ``shmring bridge`` process, joined over TCP on
loopback. Every pattern delivers exactly what it promises locally, end of
stream crosses, a slow remote consumer holds the local producer back, a
silent peer makes the imported ring Broken, and a SIGKILLed bridge on
either side, started again, loses and duplicates nothing.
(tests/multiprocess/test_bridge_hosts.py runs the same across two network
namespaces, each with a /dev/shm of its own.)"""

from __future__ import annotations

import json
import random
import time

import pytest
from bridge_util import KillablePair, Side, free_port, output, two_sides
from namespace_util import wait_for

import shmring

PRODUCER = """
import shmring, struct, sys
name, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = int(sys.argv[4]) if len(sys.argv) > 4 else 16
tx = shmring.Channel.open(name, wait=30).producer()
pad = bytes(max(0, size - 8))
for i in range(n):
    tx.send(struct.pack("<II", k, i) + pad, timeout=120)
print("sent", n)
"""

CONSUMER = """
import json, shmring, struct, sys
name = sys.argv[1]
rx = shmring.Channel.open(name, wait=30).consumer()
print("joined", flush=True)
got = []
while True:
    try:
        m = rx.recv(timeout=120)
    except shmring.EndOfStream:
        break
    got.append(struct.unpack_from("<II", m))
print(json.dumps(got))
"""

PRODUCERS = {"spsc": 1, "mpsc": 3, "mpmc": 3, "broadcast": 1}
CONSUMERS = {"spsc": 1, "mpsc": 1, "mpmc": 2, "broadcast": 2}


def _pair(a: Side, b: Side, name: str, *extra_a: str,
          port: int | None = None) -> tuple[str, list[str]]:
    """Bridge b exports ``name`` on a loopback port, bridge a imports it."""
    url = f"tcp://127.0.0.1:{port or free_port()}"
    b_args = ["--listen", url, "--export", name]
    b.bridge(*b_args)
    a.bridge("--connect", url, "--import", name, *extra_a)
    return url, b_args


def _joined(p: object) -> None:
    line = p.stdout.readline()  # type: ignore[attr-defined]
    assert line.strip() == "joined", line


@pytest.mark.parametrize("pattern", ["spsc", "mpsc", "mpmc", "broadcast"])
def test_every_pattern_crosses(pattern: str) -> None:
    n = 5000
    with two_sides() as (a, b):
        src = shmring.Channel.create("jobs", 1 << 16, pattern, namespace=b.ns)
        try:
            _pair(a, b, "jobs")
            a.wait_streaming("jobs", "inbound")
            consumers = [a.python(CONSUMER, "jobs") for _ in range(CONSUMERS[pattern])]
            for c in consumers:
                _joined(c)
            b.wait_streaming("jobs")  # the bridge's consumer on b (a subscriber: broadcast)
            producers = [b.python(PRODUCER, "jobs", str(k), str(n))
                         for k in range(PRODUCERS[pattern])]
            for p in producers:
                assert output(p).startswith("sent")
            src.close_send()
            results = [[tuple(x) for x in json.loads(output(c))] for c in consumers]
        finally:
            src.close()
        everything = sorted((k, i) for k in range(PRODUCERS[pattern]) for i in range(n))
        if pattern == "broadcast":
            for got in results:  # every consumer, every message, in order
                assert got == everything
        elif pattern == "mpmc":  # each message to exactly one consumer
            assert sorted(x for got in results for x in got) == everything
            assert all(results), "both remote consumers took work"
        else:
            (got,) = results
            assert sorted(got) == everything
            for k in range(PRODUCERS[pattern]):  # each producer's order kept
                mine = [i for kk, i in got if kk == k]
                assert mine == list(range(n))


def test_slow_remote_consumer_holds_the_producer_back() -> None:
    with two_sides() as (a, b):
        src = shmring.Channel.create("slow", 4096, "spsc", namespace=b.ns)
        try:
            _pair(a, b, "slow", "--window", "32")
            a.wait_streaming("slow", "inbound")
            b.wait_streaming("slow")
            tx = src.producer()
            sent = 0
            with pytest.raises(shmring.Timeout):
                while True:
                    tx.send(sent.to_bytes(8, "little") + bytes(56), timeout=2.0)
                    sent += 1
            # Bounded by the two rings and the window (72-byte records:
            # 4096 / 80 = 51 per ring), not growing without end.
            assert 32 <= sent <= 51 + 32 + 51 + 2, sent
            imported = shmring.Channel.open("slow", namespace=a.ns)
            rx = imported.consumer()
            got = [int.from_bytes(rx.recv(timeout=30)[:8], "little") for _ in range(sent)]
            assert got == list(range(sent))
            tx.send(b"more", timeout=10)  # room again
            assert rx.recv(timeout=30) == b"more"
            imported.close()
            tx.close()
        finally:
            src.close()


def test_silent_peer_makes_the_imported_ring_broken_until_it_is_back() -> None:
    with two_sides() as (a, b):
        src = shmring.Channel.create("feed", 1 << 14, "spsc", namespace=b.ns)
        port = free_port()
        try:
            url = f"tcp://127.0.0.1:{port}"
            bb = b.bridge("--listen", url, "--export", "feed")
            a.bridge("--connect", url, "--import", "feed", "--link-timeout", "1")
            a.wait_streaming("feed", "inbound")
            tx = src.producer()
            tx.send(b"before")
            imported = shmring.Channel.open("feed", namespace=a.ns)
            rx = imported.consumer()
            assert rx.recv(timeout=30) == b"before"
            bb.kill()
            t0 = time.monotonic()
            with pytest.raises(shmring.Broken):
                rx.recv(timeout=30)
            assert time.monotonic() - t0 < 10
            with pytest.raises(shmring.Broken):  # and it stays so while the peer is away
                rx.recv(timeout=1)
            tx.send(b"after")
            b.bridge("--listen", url, "--export", "feed")
            wait_for("the peer back", lambda: _fed_again(a, "feed"))
            assert rx.recv(timeout=30) == b"after"
            imported.close()
            tx.close()
        finally:
            src.close()


def _fed_again(side: Side, name: str) -> bool:
    st = side.status()
    return (any(p["down"] is False for p in st["peers"]) and all(not p["down"] for p in st["peers"])
            and any(i["channel"] == name for i in st["inbound"]))


KEEP_SENDING = """
import shmring, sys
name, n = sys.argv[1], int(sys.argv[2])
tx = shmring.Channel.open(name, wait=30).producer()
for i in range(n):
    tx.send(i.to_bytes(8, "little"), timeout=120)
print("sent", n)
"""


@pytest.mark.parametrize("victim", ["exporter", "importer"])
@pytest.mark.parametrize("pattern", ["spsc", "mpsc", "broadcast"])
def test_a_killed_bridge_started_again_loses_and_duplicates_nothing(
        victim: str, pattern: str) -> None:
    n = 30000
    rnd = random.Random()
    with two_sides() as (a, b):
        src = shmring.Channel.create("kill", 1 << 14, pattern, namespace=b.ns)
        try:
            pair = KillablePair(a, b, "kill")
            imported = pair.imported
            rx = imported.consumer()
            prod = b.python(KEEP_SENDING, "kill", str(n))
            got: list[int] = []
            for _round in range(3):
                want = len(got) + rnd.randint(500, 4000)
                while len(got) < min(want, n - 1):
                    got.extend(int.from_bytes(m, "little") for m in rx.recv_many(256, timeout=60))
                pair.restart(victim)
            while len(got) < n:
                got.extend(int.from_bytes(m, "little") for m in rx.recv_many(256, timeout=60))
            assert output(prod).startswith("sent")
            src.close_send()
            with pytest.raises(shmring.EndOfStream):  # nothing more: no duplicate at the end
                rx.recv(timeout=60)
            imported.close()
        finally:
            src.close()
        assert got == list(range(n))


def test_a_broadcast_exporter_stopped_and_started_again_loses_nothing() -> None:
    """SIGTERM, not SIGKILL: the exporting bridge's durable subscription is
    left held (not ended) when it stops, so the bridge started again sends
    on from what the importer has; with --hold 0 nothing would be held."""
    n = 20000
    with two_sides() as (a, b):
        src = shmring.Channel.create("stop", 1 << 14, "broadcast", namespace=b.ns)
        url = f"tcp://127.0.0.1:{free_port()}"
        b_args = ("--listen", url, "--export", "stop", "--hold", "30")
        try:
            exporter = b.bridge(*b_args)
            a.bridge("--connect", url, "--import", "stop")
            a.wait_streaming("stop", "inbound")
            imported = shmring.Channel.open("stop", namespace=a.ns)
            rx = imported.consumer()
            b.wait_streaming("stop")
            prod = b.python(KEEP_SENDING, "stop", str(n))
            got: list[int] = []
            for _round in range(2):
                want = len(got) + 3000
                while len(got) < want:
                    got.extend(int.from_bytes(m, "little") for m in rx.recv_many(256, timeout=60))
                assert exporter.stop() == 0
                assert src._orphans() == 1  # held for the bridge started again
                exporter = b.bridge(*b_args)
            while len(got) < n:
                got.extend(int.from_bytes(m, "little") for m in rx.recv_many(256, timeout=60))
            assert output(prod).startswith("sent")
            src.close_send()
            with pytest.raises(shmring.EndOfStream):
                rx.recv(timeout=60)
            imported.close()
        finally:
            src.close()
        assert got == list(range(n))


#: Opens channel argv[1] of the host whose bridge listens at argv[2], reads
#: one message and prints it.
REMOTE_READER = """
import shmring, sys
ch = shmring.Channel.open(sys.argv[1], remote=sys.argv[2])
rx = ch.consumer()
print("joined", flush=True)
print(rx.recv(timeout=60).decode(), flush=True)
rx.close(); ch.close()
"""


def test_channel_open_remote_starts_a_bridge_and_reads_the_remote_channel() -> None:
    with two_sides() as (a, b):
        src = shmring.Channel.create("far", 1 << 14, "spsc", namespace=b.ns)
        try:
            url = f"tcp://127.0.0.1:{free_port()}"
            b.bridge("--listen", url, "--export", "far")
            reader = a.python(REMOTE_READER, "far", url)
            _joined(reader)
            src.producer().send(b"hello from b")
            assert output(reader).split() == ["hello", "from", "b"]
            wait_for("a's bridge", lambda: a.streaming("far", "inbound"))
        finally:
            src.close()
            import subprocess
            import sys
            subprocess.run([sys.executable, "-m", "shmring", "bridge", "--stop"], env=a.env,
                           timeout=30, check=True)


def test_a_bridge_started_by_channel_open_remote_exits_once_idle() -> None:
    with two_sides() as (a, b):
        a.env["SHMRING_BRIDGE_IDLE"] = "1"
        src = shmring.Channel.create("idle", 1 << 14, "spsc", namespace=b.ns)
        try:
            url = f"tcp://127.0.0.1:{free_port()}"
            b.bridge("--listen", url, "--export", "idle")
            reader = a.python(REMOTE_READER, "idle", url)
            _joined(reader)
            time.sleep(2.5)  # past the idle time: a local consumer keeps it
            assert a.streaming("idle", "inbound")
            src.producer().send(b"still here")
        finally:
            src.close()
        assert output(reader).strip() == "still here"
        wait_for("a's bridge to exit once idle", lambda: not _answers(a))


def _answers(side: Side) -> bool:
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "shmring", "bridge", "--status"], env=side.env,
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0
