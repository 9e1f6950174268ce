"""``shmring.Queue()`` creation: wall and CPU time of the creating process
(medians over many creations), the supervisor's CPU per queue (creation and
close), and the ``/dev/shm`` a new queue holds.

    python -m benchmarks.queue_create [--n 1000] [--json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time
from typing import Any

import shmring
from shmring._supervisor import client as _client


def _supervisor_cpu(namespace: str) -> float | None:
    pid = _client.connection(namespace).supervisor_pid
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _allocated(q: Any) -> int:
    base = f"/dev/shm/shmring.{q._namespace}.{q.name}"
    return sum(os.stat(p).st_blocks * 512 for p in [base, *glob.glob(glob.escape(base) + ".*")])


def measure(n: int) -> dict[str, float]:
    """Create (and close, 50 at a time) ``n`` queues after a warm-up."""
    for _ in range(30):  # the supervisor started, imports and caches warm
        shmring.Queue().close()
    probe = shmring.Queue()
    namespace, shm = probe._namespace, _allocated(probe)
    probe.close()
    sup0 = _supervisor_cpu(namespace)
    wall, cpu, held = [], [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        q = shmring.Queue()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
        held.append(q)
        if len(held) >= 50:
            for h in held:
                h.close()
            held.clear()
    for h in held:
        h.close()
    sup1 = _supervisor_cpu(namespace)
    wall.sort()
    return {
        "wall_ms": statistics.median(wall) * 1e3,
        "wall_p10_ms": wall[n // 10] * 1e3,
        "cpu_ms": statistics.median(cpu) * 1e3,
        "supervisor_cpu_ms": ((sup1 - sup0) / n * 1e3) if sup0 is not None and sup1 is not None
        else float("nan"),
        "shm_bytes": float(shm),
    }


def main() -> None:
    """Print (or dump as JSON) the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = measure(args.n)
    if args.json:
        print(json.dumps(r))
        return
    print(f"Queue(): wall median {r['wall_ms']:.3f} ms (p10 {r['wall_p10_ms']:.3f}), "
          f"creator CPU median {r['cpu_ms']:.3f} ms, supervisor CPU "
          f"{r['supervisor_cpu_ms']:.3f} ms per queue (create and close), "
          f"{r['shm_bytes'] / 1024:.0f} KiB of /dev/shm, n={args.n}")


if __name__ == "__main__":
    main()
