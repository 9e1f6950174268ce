"""What one counter increment costs: shmring.metrics against
prometheus_client (plain, and its multiprocess mode) and a
multiprocessing.Value behind its lock.

    python -m benchmarks.metrics                    # 5 repeats of 200k increments
    python -m benchmarks.metrics --repeats 9 --ops 1000000 --procs 1,2

Every measurement runs in a fresh interpreter (prometheus_client picks its
multiprocess mode at import, from ``$PROMETHEUS_MULTIPROC_DIR``), which
forks ``procs`` processes that wait at a barrier, then each times ``ops``
calls of ``inc()`` in a loop, in 20 chunks. Reported: nanoseconds per
increment of the fastest chunk (the median over processes, then median and
min-max over repeats) and the increments per second of all processes
together over the whole loop (preemptions included). ``empty loop`` is the
loop alone, for scale. Plain prometheus_client counts per process (a
forked child's counts are its own copy), so it runs with one process only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

#: Each process times its increments in this many chunks and keeps the
#: fastest: on a shared machine, a chunk that was preempted says nothing
#: about the counter.
CHUNKS = 20

SYSTEMS = {
    "empty": "empty loop",
    "shmring": "shmring.metrics Counter.inc",
    "prom": "prometheus_client Counter.inc",
    "prom_mp": "prometheus_client Counter.inc, multiprocess mode",
    "mp_value": "multiprocessing.Value + get_lock()",
}


Made = tuple[Callable[[], None], Callable[[], None], Callable[[], int]]


def _make(system: str, tmp: str) -> Made:
    """(inc, cleanup, total) of one system, made in the measuring parent."""
    if system == "empty":
        return (lambda: None), (lambda: None), (lambda: 0)
    if system == "shmring":
        import shmring.metrics as m

        reg = m.Registry(f"bench-{os.getpid()}")
        c = m.Counter("bench", "increments", registry=reg)

        def total() -> int:
            (fam,) = [f for f in reg.read().families if f.name == "bench"]
            return int(fam.series[0].value)

        def cleanup() -> None:
            reg.unlink()
            reg.close()

        return c.inc, cleanup, total
    if system in ("prom", "prom_mp"):
        if system == "prom_mp":
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp
        import prometheus_client
        from prometheus_client import multiprocess

        preg = prometheus_client.CollectorRegistry()
        pc = prometheus_client.Counter("bench", "increments", registry=preg)

        def prom_total() -> int:
            if system == "prom":
                return int(pc._value.get())
            agg = prometheus_client.CollectorRegistry()
            multiprocess.MultiProcessCollector(agg, path=tmp)  # type: ignore[no-untyped-call]
            return int(agg.get_sample_value("bench_total") or 0)

        return pc.inc, (lambda: None), prom_total
    if system == "mp_value":
        import multiprocessing as mp

        v = mp.get_context("fork").Value("q", 0, lock=True)
        lock = v.get_lock()

        def inc() -> None:
            with lock:
                v.value += 1

        return inc, (lambda: None), (lambda: int(v.value))
    raise SystemExit(f"unknown system {system!r}")


def child(system: str, ops: int, procs: int) -> None:
    """One measurement, in this fresh interpreter: prints a JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        inc, cleanup, total = _make(system, tmp)
        try:
            inc()  # bind, open files, take the slab: not what is measured
            base = total()
            r_go, w_go = os.pipe()
            pipes, pids = [], []
            for _ in range(procs):
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    os.read(r_go, 1)
                    f = inc
                    chunk = max(1, ops // CHUNKS)
                    best = -1
                    start = time.perf_counter_ns()
                    for _ in range(CHUNKS):
                        t0 = time.perf_counter_ns()
                        for _ in range(chunk):
                            f()
                        dt = time.perf_counter_ns() - t0
                        best = dt if best < 0 or dt < best else best
                    wall = time.perf_counter_ns() - start
                    os.write(w, json.dumps([best / chunk, wall]).encode())
                    os._exit(0)
                os.close(w)
                pipes.append(r)
                pids.append(pid)
            time.sleep(0.2)  # every child at the barrier
            os.write(w_go, b"x" * procs)
            times = [json.loads(os.read(r, 256)) for r in pipes]
            for pid in pids:
                os.waitpid(pid, 0)
            counted = total() - base
            ops = max(1, ops // CHUNKS) * CHUNKS
        finally:
            cleanup()
    shared = system not in ("empty", "prom")
    print(json.dumps({"ns": [t[0] for t in times], "wall_ns": max(t[1] for t in times),
                      "ok": (counted == ops * procs) if shared else None}))


def measure(system: str, ops: int, procs: int) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.metrics", "--child", system,
                           "--ops", str(ops), "--procs", str(procs)],
                          capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode != 0:
        raise SystemExit(f"{system}: {done.stderr}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """Run every system, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ops", type=int, default=200_000, help="increments per process")
    ap.add_argument("--procs", default="1,2", help="process counts (default 1,2)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.ops, int(args.procs))
        return 0
    procs_list = [int(p) for p in args.procs.split(",")]
    rows = []
    for procs in procs_list:
        for system in args.systems.split(","):
            if system == "prom" and procs > 1:
                continue
            per, rate, ok = [], [], True
            for _ in range(args.repeats):
                r = measure(system, args.ops, procs)
                ns = r["ns"]
                assert isinstance(ns, list)
                per.append(statistics.median(ns))
                ops_done = procs * (args.ops // CHUNKS) * CHUNKS
                rate.append(ops_done / (float(r["wall_ns"]) / 1e9))  # type: ignore[arg-type]
                ok = ok and r["ok"] is not False
                print(f"  {system} x{procs}: {per[-1]:.0f} ns/inc", file=sys.stderr)
            rows.append((SYSTEMS[system], procs, statistics.median(per), min(per), max(per),
                         statistics.median(rate), ok))
    print(f"\n{args.ops} increments per process, {args.repeats} runs each, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    print("| counter | processes | ns per inc (median) | min - max | increments/s, all | exact |")
    print("|---|---:|---:|---:|---:|---|")
    for name, procs, med, lo, hi, rate_med, ok in rows:
        exact = "-" if name in (SYSTEMS["empty"], SYSTEMS["prom"]) else ("yes" if ok else "NO")
        print(f"| {name} | {procs} | {med:.0f} | {lo:.0f} - {hi:.0f} | {rate_med / 1e6:.2f} M "
              f"| {exact} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
