"""``shmring.Queue`` across a bridge: two namespaces on this machine, each
with its own supervisor and ``shmring bridge``, joined over TCP on loopback.

Items put on host b reach host a's getters, each exactly once, with the
counts right on both sides: ``qsize()`` drops on b as the peer acknowledges,
``maxsize`` holds b's putters back, a ``JoinableQueue.join()`` on b returns
once everything crossed, and a ``task_done`` per item on a returns a's. A
SIGKILLed importing bridge, started again, loses and duplicates nothing. A
growing queue is refused with the way to make one that crosses."""

from __future__ import annotations

import json
import subprocess
import sys

from bridge_util import free_port, output, two_sides
from namespace_util import wait_for

import shmring

GETTER = """
import json, shmring, sys
name, n, cls = sys.argv[1], int(sys.argv[2]), sys.argv[3]
q = getattr(shmring, cls).open(name, timeout=60)
print("joined", flush=True)
got = []
for _ in range(n):
    got.append(q.get(timeout=120))
    if cls == "JoinableQueue":
        q.task_done()
if cls == "JoinableQueue":
    q.join(timeout=60)  # every task here is done
print(json.dumps(got), flush=True)
q.close()
"""

PUTTER = """
import shmring, sys
name, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
q = shmring.JoinableQueue.open(name)
for i in range(n):
    q.put({"k": k, "i": i, "pad": "x" * (i % 50)}, timeout=120)
print("put", n, flush=True)
q.close()
"""


def _pair(a: object, b: object, name: str) -> str:
    url = f"tcp://127.0.0.1:{free_port()}"
    b.bridge("--listen", url, "--export", name)  # type: ignore[attr-defined]
    a.bridge("--connect", url, "--import", name)  # type: ignore[attr-defined]
    return url


def _joined(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == "joined", line


def test_a_joinable_queue_crosses_exactly_once_with_its_counts() -> None:
    n, putters = 3000, 2
    with two_sides("bq") as (a, b):
        src: shmring.JoinableQueue[object] = shmring.JoinableQueue(
            maxsize=500, maxsize_bytes=1 << 16, name="work", namespace=b.ns)
        try:
            _pair(a, b, "work")
            a.wait_streaming("work", "inbound")
            getters = [a.python(GETTER, "work", str(n * putters // 2), "JoinableQueue")
                       for _ in range(2)]
            for g in getters:
                _joined(g)
            ps = [b.python(PUTTER, "work", str(k), str(n)) for k in range(putters)]
            for p in ps:
                assert output(p).split() == ["put", str(n)]
            src.join(timeout=120)  # every item was acknowledged by a's bridge
            assert src.qsize() == 0 and src.empty()
            results = [json.loads(output(g)) for g in getters]
        finally:
            src.close()
        got = sorted((x["k"], x["i"]) for r in results for x in r)
        assert got == sorted((k, i) for k in range(putters) for i in range(n))
        for r in results:  # each putter's items in its order at each getter
            for k in range(putters):
                mine = [x["i"] for x in r if x["k"] == k]
                assert mine == sorted(mine)
        assert all(results), "both remote getters took items"


def test_maxsize_on_the_exporting_host_holds_its_putter_back() -> None:
    with two_sides("bq") as (a, b):
        src: shmring.Queue[int] = shmring.Queue(maxsize=10, maxsize_bytes=1 << 16,
                                                name="few", namespace=b.ns)
        try:
            _pair(a, b, "few")
            a.wait_streaming("few", "inbound")
            for i in range(10):
                src.put(i, timeout=10)
            # Nobody gets on a: the items wait in a's queue, so b's count
            # drops as a's bridge acknowledges them, and b has room again.
            wait_for("b's count to drop", lambda: src.qsize() == 0)
            for i in range(10, 20):
                src.put(i, timeout=30)
            reader = a.python("""
                import json, shmring
                q = shmring.Queue.open("few")
                wait = [q.get(timeout=60) for _ in range(20)]
                print(json.dumps([wait, q.qsize()]))
                q.close()
            """)
            got, left = json.loads(output(reader))
        finally:
            src.close()
        assert got == list(range(20))
        assert left == 0


def test_a_killed_importing_bridge_started_again_loses_and_duplicates_nothing() -> None:
    n = 4000
    with two_sides("bq") as (a, b):
        src: shmring.Queue[int] = shmring.Queue(maxsize_bytes=1 << 15, name="kq",
                                                namespace=b.ns)
        try:
            url = f"tcp://127.0.0.1:{free_port()}"
            b.bridge("--listen", url, "--export", "kq")
            first = a.bridge("--connect", url, "--import", "kq")
            a.wait_streaming("kq", "inbound")
            putter = b.python("""
                import shmring, sys, time
                q = shmring.Queue.open("kq")
                for i in range(int(sys.argv[1])):
                    q.put(i, timeout=120)
                    if i % 500 == 0:
                        time.sleep(0.05)
                print("put", flush=True)
                q.close()
            """, str(n))
            wait_for("some items on a", lambda: _qsize(a, "kq") > 0)
            first.kill()
            a.bridge("--connect", url, "--import", "kq")
            reader = a.python("""
                import json, shmring, sys
                q = shmring.Queue.open("kq")
                got = [q.get(timeout=120) for _ in range(int(sys.argv[1]))]
                try:
                    extra = q.get(timeout=2)
                except Exception as e:
                    extra = type(e).__name__
                print(json.dumps([got, extra, q.qsize()]))
                q.close()
            """, str(n))
            assert output(putter).strip() == "put"
            got, extra, left = json.loads(output(reader))
        finally:
            src.close()
        assert sorted(got) == list(range(n))
        assert extra == "Empty", f"one more item than was put: {extra!r}"
        assert left == 0


def _qsize(side: object, name: str) -> int:
    r = subprocess.run(
        [sys.executable, "-c", "import shmring, sys; q = shmring.Queue.open(sys.argv[1]); "
         "print(q.qsize()); q.close()", name],
        env=side.env, capture_output=True, text=True, timeout=30)  # type: ignore[attr-defined]
    return int(r.stdout) if r.returncode == 0 else 0


def test_a_growing_queue_is_refused_with_the_way_to_make_one_that_crosses() -> None:
    with two_sides("bq") as (a, b):
        src: shmring.Queue[int] = shmring.Queue(name="grows", namespace=b.ns)
        try:
            url = f"tcp://127.0.0.1:{free_port()}"
            b.bridge("--listen", url, "--export", "grows")
            opener = a.python(f"""
                import shmring
                try:
                    shmring.Queue.open("grows", remote={url!r}, timeout=30)
                except shmring.InvalidArgument as e:
                    print("refused:", e)
            """)
            out = output(opener)
        finally:
            src.close()
            subprocess.run([sys.executable, "-m", "shmring", "bridge", "--stop"], env=a.env,
                           timeout=30)
        assert out.startswith("refused:"), out
        assert "maxsize_bytes" in out, out


def test_queue_open_remote_starts_a_bridge_and_gets_the_remote_items() -> None:
    with two_sides("bq") as (a, b):
        src: shmring.Queue[object] = shmring.Queue(maxsize_bytes=1 << 14, name="far",
                                                   namespace=b.ns)
        try:
            url = f"tcp://127.0.0.1:{free_port()}"
            b.bridge("--listen", url, "--export", "far")
            reader = a.python(f"""
                import shmring
                q = shmring.Queue.open("far", remote={url!r}, timeout=60)
                print("joined", flush=True)
                print(q.get(timeout=60))
                q.close()
            """)
            _joined(reader)
            src.put({"hello": "from b"})
            assert output(reader).strip() == "{'hello': 'from b'}"
        finally:
            src.close()
            subprocess.run([sys.executable, "-m", "shmring", "bridge", "--stop"], env=a.env,
                           timeout=30, check=True)

