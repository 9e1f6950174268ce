"""``python -m benchmarks.pool [--items N] [--repeats R] [--processes P] [--json]``:
``shmring.Pool`` beside ``multiprocessing.Pool`` and
``concurrent.futures.ProcessPoolExecutor``, in one run.

``map`` and ``imap_unordered`` of a trivial function (``x + 1``) over
``range(N)``, at chunk sizes 1, 16, 256 and 4096, each repeated; the table
shows chunk size 1 and each one's best chunk size (the lowest median), with
the median time and its spread (min-max) over the repeats. Every run checks
its sum. ProcessPoolExecutor has no ``imap_unordered``: there it is one
``submit`` per chunk read with ``as_completed``. Pools are started before
the clock starts (and warmed up by one small map), the same for all three.
Progress goes to stderr; ``--json`` prints every repeat's numbers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from shmring._queue.pool import Pool as ShmPool

CHUNKS = (1, 16, 256, 4096)
LIBS = ("shmring.Pool", "multiprocessing.Pool", "ProcessPoolExecutor")
OPS = ("map", "imap_unordered")


def inc(x: int) -> int:
    """The trivial function: x + 1."""
    return x + 1


def inc_chunk(xs: list[int]) -> list[int]:
    """inc over a chunk (ProcessPoolExecutor's imap_unordered)."""
    return [x + 1 for x in xs]


def _chunks(items: range, size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def run_once(lib: str, pool: Any, op: str, items: range, chunk: int) -> float:
    """Seconds for one ``op`` over ``items``; checks the sum."""
    t0 = time.perf_counter()
    if lib == "ProcessPoolExecutor":
        if op == "map":
            total = sum(pool.map(inc, items, chunksize=chunk))
        else:
            futures = [pool.submit(inc_chunk, c) for c in _chunks(items, chunk)]
            total = sum(sum(f.result()) for f in concurrent.futures.as_completed(futures))
    elif op == "map":
        total = sum(pool.map(inc, items, chunksize=chunk))
    else:
        total = sum(pool.imap_unordered(inc, items, chunksize=chunk))
    dt = time.perf_counter() - t0
    n = len(items)
    expect = n * (n + 1) // 2 + (items.start * n if items.start else 0)
    if total != expect:
        raise SystemExit(f"{lib} {op} chunksize {chunk}: sum {total}, expected {expect}")
    return dt


def make(lib: str, processes: int) -> tuple[Any, Callable[[], None]]:
    """A started pool of ``lib`` and how to stop it."""
    if lib == "shmring.Pool":
        sp = ShmPool(processes)
        sp.map(inc, range(100))

        def stop_shm() -> None:
            sp.close()
            sp.join()
        return sp, stop_shm
    if lib == "multiprocessing.Pool":
        mp = multiprocessing.get_context("fork").Pool(processes)
        mp.map(inc, range(100))

        def stop_mp() -> None:
            mp.close()
            mp.join()
        return mp, stop_mp
    ex = concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("fork"))
    list(ex.map(inc, range(100)))
    return ex, lambda: ex.shutdown()


def measure(items: int, repeats: int, processes: int) -> dict[str, dict[str, list[float]]]:
    """``{lib: {"op/chunk": [seconds per repeat]}}``; repeats interleave the
    libraries, so a noisy moment of the machine falls on all three."""
    data: dict[str, dict[str, list[float]]] = {lib: {} for lib in LIBS}
    rng = range(items)
    for r in range(repeats):
        for lib in LIBS:
            pool, stop = make(lib, processes)
            try:
                for op in OPS:
                    for chunk in CHUNKS:
                        dt = run_once(lib, pool, op, rng, chunk)
                        data[lib].setdefault(f"{op}/{chunk}", []).append(dt)
                        print(f"repeat {r + 1}/{repeats} {lib:21} {op:15} chunksize "
                              f"{chunk:5}: {dt:.3f} s", file=sys.stderr)
            finally:
                stop()
    return data


def table(data: dict[str, dict[str, list[float]]], items: int) -> str:
    """The result table: chunk size 1 and the best chunk size per op."""
    lines = [f"{'operation':16} {'library':21} {'chunksize':>9} {'median s':>9} "
             f"{'min-max s':>15} {'items/s':>10}"]
    for op in OPS:
        for which in ("1", "best"):
            for lib in LIBS:
                runs = data[lib]
                if which == "1":
                    chunk = 1
                else:
                    chunk = min(CHUNKS, key=lambda c: statistics.median(runs[f"{op}/{c}"]))
                xs = runs[f"{op}/{chunk}"]
                med = statistics.median(xs)
                lines.append(f"{op:16} {lib:21} {chunk:>9} {med:9.3f} "
                             f"{min(xs):7.3f}-{max(xs):<7.3f} {items / med:10,.0f}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=50_000, help="items per run (50000)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats, at least 3 (3)")
    ap.add_argument("--processes", type=int, default=2, help="workers per pool (2)")
    ap.add_argument("--json", action="store_true", help="print every repeat's seconds as JSON")
    args = ap.parse_args(argv)
    if args.repeats < 3:
        ap.error("--repeats must be at least 3 (the spread needs them)")
    if args.items < 1 or args.processes < 1:
        ap.error("--items and --processes must be at least 1")
    data = measure(args.items, args.repeats, args.processes)
    print(f"{args.items} items of x + 1, {args.processes} processes, {args.repeats} repeats, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(table(data, args.items))
    if args.json:
        print(json.dumps({"items": args.items, "processes": args.processes,
                          "repeats": args.repeats, "seconds": data}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
