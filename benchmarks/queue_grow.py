"""A growing ``shmring.Queue`` (the default) against one bounded in bytes
(``maxsize_bytes=8 MiB``, what ``Queue()`` was before it grew): creation
time, ``/dev/shm`` per queue at rest, and small-item throughput in one
process and from a child process to its parent.

    python -m benchmarks.queue_grow [--runs 5] [--items 200000] [--json]
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import statistics
import time
import uuid
from typing import Any

import shmring

ITEM = {"id": 1, "name": "x", "vals": [1, 2, 3]}
KINDS: dict[str, dict[str, Any]] = {"growing": {}, "bounded-8MiB": {"maxsize_bytes": 1 << 23}}


def _shm(q: Any) -> int:
    base = f"/dev/shm/shmring.{q._namespace}.{q.name}"
    # Bytes allocated: the attach tables' untouched slot pages are holes.
    return sum(os.stat(p).st_blocks * 512 for p in [base, *glob.glob(glob.escape(base) + ".*")])


def create_ms(kw: dict[str, Any], n: int = 30) -> tuple[float, int]:
    """Median creation time (ms) and /dev/shm bytes of a new queue."""
    times, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        q = shmring.Queue(name=f"qb-{uuid.uuid4().hex[:10]}", **kw)
        times.append(time.perf_counter() - t)
        size = _shm(q)
        q.close()
    return statistics.median(times) * 1e3, size


def one_process(kw: dict[str, Any], items: int) -> float:
    """Items per second, put then get in batches of 1,000, one process."""
    q = shmring.Queue(**kw)
    t = time.perf_counter()
    for _ in range(items // 1000):
        for _ in range(1000):
            q.put(ITEM)
        for _ in range(1000):
            q.get()
    dt = time.perf_counter() - t
    q.close()
    return items / dt


def _produce(q: Any, items: int) -> None:
    for _ in range(items):
        q.put(ITEM)


def two_processes(kw: dict[str, Any], items: int) -> float:
    """Items per second from a forked child's put to the parent's get."""
    q = shmring.Queue(**kw)
    ctx: Any = mp.get_context("fork")
    p = ctx.Process(target=_produce, args=(q, items))
    t = time.perf_counter()
    p.start()
    for _ in range(items):
        q.get(timeout=60)
    dt = time.perf_counter() - t
    p.join()
    q.close()
    return items / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    shmring.Queue().close()  # the supervisor is up before anything is timed
    out: dict[str, Any] = {}
    for kind, kw in KINDS.items():
        ms, size = create_ms(kw)
        one = [one_process(kw, args.items) for _ in range(args.runs)]
        two = [two_processes(kw, args.items) for _ in range(args.runs)]
        out[kind] = {"create_ms": ms, "shm_bytes": size, "one_process": one, "two_processes": two}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    for kind, r in out.items():
        print(f"{kind}: create {r['create_ms']:.2f} ms, {r['shm_bytes'] / 1024:.0f} KiB at rest")
        for key in ("one_process", "two_processes"):
            v = [x / 1e3 for x in r[key]]
            print(f"  {key}: median {statistics.median(v):.0f} k/s (min {min(v):.0f}, "
                  f"max {max(v):.0f}, {len(v)} runs)")


if __name__ == "__main__":
    main()
