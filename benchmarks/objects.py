"""Python objects between two processes: ``python -m benchmarks.objects``.

Two workloads, each a producer process sending to the benchmark process:

- **small**: small dicts and tuples, one per ``put``/``send_obj``, against
  ``multiprocessing.Queue`` and ``faster_fifo.Queue`` (target: shmring at
  least 10x multiprocessing.Queue);
- **array**: 8 MB numpy arrays, against ``multiprocessing.Queue`` and a plain
  ``memcpy`` of 8 MB in one process (``np.copyto`` into a preallocated array;
  target: at least 70 % of its rate). shmring appears three ways: whole
  records through a 32 MB ring (copied, and ``copy=False``), and streamed
  in 1 MiB chunks through a 4 MB ring (an object larger than ``max_message``
  is streamed). A second memcpy row copies with the working set of one trip
  of a whole record (the array, the 32 MB ring and the received copy: more
  than this machine's 32 MB last-level cache).

Throughput is timed in the receiver from the first item to the last, best of
``--repeats`` runs; processes are forked. The "pickle alone" row is the
ceiling for any pickling transport of that object: sender and receiver each
doing nothing but ``pickle.dumps``/``pickle.loads`` on their own core. Prints
a Markdown table. Options:
``--quick`` (fewer items), ``--repeats N``, ``--only small|array``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import shmring

ARRAY_BYTES = 8 << 20
#: A ring too small for an 8 MB record: send_obj streams the array through it.
STREAM_RING = 4 << 20
CTX = mp.get_context("fork")


def small_dict(i: int) -> Any:
    """A small dict, like a log record or a sensor reading."""
    return {"id": i, "sensor": "temp-07", "value": 21.5, "ok": True, "tags": ["a", "b"]}


def small_tuple(i: int) -> Any:
    """A small tuple, like a work item."""
    return (i, 3.25, "job", None)


_ARRAY = np.arange(ARRAY_BYTES // 8, dtype=np.float64)


def array_8mb(i: int) -> Any:
    """The same 8 MB float64 array each time (built once, so the producer only sends)."""
    return _ARRAY


# ----------------------------------------------------------- transports --
class Transport:
    """A way to move objects: made in the parent, used by a forked producer."""

    name = ""

    def open(self) -> None:
        """In the parent, before the fork."""

    def put(self, obj: Any) -> None:
        """In the producer."""
        raise NotImplementedError

    def get(self) -> Any:
        """In the receiver."""
        raise NotImplementedError

    def close(self) -> None:
        """In the parent, at the end."""


class MpQueue(Transport):
    name = "multiprocessing.Queue"

    def open(self) -> None:
        self.q: Any = CTX.Queue()
        self.put = self.q.put  # type: ignore[method-assign]
        self.get = self.q.get  # type: ignore[method-assign]

    def close(self) -> None:
        self.q.close()
        self.q.join_thread()


class FasterFifo(Transport):
    name = "faster_fifo.Queue"

    def open(self) -> None:
        import faster_fifo  # type: ignore[import-not-found]

        self.q: Any = faster_fifo.Queue(max_size_bytes=64 << 20)
        self.put = self.q.put  # type: ignore[method-assign]
        self.get = self.q.get  # type: ignore[method-assign]

    def close(self) -> None:
        self.q.close()


class ShmQueue(Transport):
    name = "shmring.Queue"

    def __init__(self, maxsize_bytes: int) -> None:
        self.maxsize_bytes = maxsize_bytes

    def open(self) -> None:
        self.q: shmring.Queue[Any] = shmring.Queue(maxsize_bytes=self.maxsize_bytes)
        self.put = self.q.put  # type: ignore[method-assign]
        self.get = self.q.get  # type: ignore[method-assign]

    def close(self) -> None:
        self.q.close()


class ShmChannel(Transport):
    """``send_obj``/``recv_obj`` on an spsc channel."""

    def __init__(self, capacity: int, copy: bool = True, label: str = "",
                 whole: bool = True) -> None:
        self.capacity = capacity
        # whole: max_message half the ring, so a record up to that size is
        # sent whole; otherwise the default (a quarter), and larger objects
        # are streamed.
        self.max_message = capacity // 2 - 16 if whole else None
        self.copy = copy
        self.name = ("shmring send_obj/recv_obj" + ("" if copy else " (copy=False)")
                     + (f", {label}" if label else ""))

    def open(self) -> None:
        self.ch = shmring.Channel.create(f"bench-obj-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                                         capacity=self.capacity, pattern="spsc",
                                         max_message=self.max_message)
        self.rx = self.ch.consumer()
        if self.copy:
            self.get = self.rx.recv_obj  # type: ignore[method-assign]

    def put(self, obj: Any) -> None:
        tx = self.__dict__.get("tx")
        if tx is None:
            tx = self.tx = shmring.Channel.open(self.ch.name).producer()
            self.put = tx.send_obj  # type: ignore[method-assign]
        tx.send_obj(obj)

    def get(self) -> Any:
        if self.copy:
            return self.rx.recv_obj()
        with self.rx.recv_obj(copy=False) as obj:
            return obj.shape if isinstance(obj, np.ndarray) else None

    def close(self) -> None:
        self.ch.close()


# ------------------------------------------------------------ measuring --
def _producer(t: Transport, make: Callable[[int], Any], n: int, go: Any) -> None:
    objs = [make(i) for i in range(min(n, 1000))]
    t.put(objs[0])  # warm-up item, taken before the clock starts
    put = t.put  # after the first put: ShmChannel binds its producer then
    go.wait()
    m = len(objs)
    for i in range(n):
        put(objs[i % m])


def run_once(t: Transport, make: Callable[[int], Any], n: int) -> float:
    """Items per second from a forked producer to this process."""
    t.open()
    go = CTX.Event()
    p = CTX.Process(target=_producer, args=(t, make, n, go), daemon=True)
    p.start()
    try:
        get = t.get
        get()
        go.set()
        get()
        start = time.perf_counter()
        for _ in range(n - 1):
            get()
        elapsed = time.perf_counter() - start
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"{t.name} producer exited with {p.exitcode}")
        return (n - 1) / elapsed
    finally:
        if p.is_alive():
            p.kill()
            p.join()
        t.close()


def pickle_ceiling(make: Callable[[int], Any], repeats: int) -> float:
    """Items per second if sending cost only ``pickle.dumps`` on one core and
    receiving only ``pickle.loads`` on the other: no transport can beat it."""
    import pickle

    obj = make(1)
    data = pickle.dumps(obj, 5)
    k = 200_000
    best_dumps = best_loads = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(k):
            pickle.dumps(obj, 5)
        best_dumps = min(best_dumps, (time.perf_counter() - start) / k)
        start = time.perf_counter()
        for _ in range(k):
            pickle.loads(data)
        best_loads = min(best_loads, (time.perf_counter() - start) / k)
    return 1 / max(best_dumps, best_loads)


def memcpy_rate(nbytes: int, repeats: int, working_set: int = 0) -> float:
    """Copies of ``nbytes`` per second into a preallocated array (one process).

    By default one source and one destination (16 MB for 8 MB: it fits this
    machine's last-level cache). With ``working_set`` the destinations
    rotate through that many bytes less the source, as a transfer through a
    ring does: the source array, the ring's bytes and the received copy.
    """
    src = np.ones(nbytes // 8)
    ndst = max(1, working_set // nbytes - 1)
    dsts = [np.empty_like(src) for _ in range(ndst)]
    for d in dsts:
        np.copyto(d, src)  # touch every page before timing
    best = 0.0
    for _ in range(repeats):
        k = 200
        start = time.perf_counter()
        for i in range(k):
            np.copyto(dsts[i % ndst], src)
        best = max(best, k / (time.perf_counter() - start))
    return best


@dataclass
class Row:
    workload: str
    system: str
    rate: float
    nbytes: int
    ref: float | None = None
    ref_name: str = ""


def best_of(t: Transport, make: Callable[[int], Any], n: int, repeats: int) -> float:
    return max(run_once(t, make, n) for _ in range(repeats))


def bench_small(quick: bool, repeats: int) -> list[Row]:
    rows: list[Row] = []
    n_fast = 50_000 if quick else 400_000
    n_slow = 20_000 if quick else 100_000
    for label, make in (("small dict", small_dict), ("small tuple", small_tuple)):
        import pickle

        size = len(pickle.dumps(make(1), 5))
        base = best_of(MpQueue(), make, n_slow, repeats)
        rows.append(Row(label, MpQueue.name, base, size))
        rows.append(Row(label, "(pickle alone: 1 / max(dumps, loads), one process)",
                        pickle_ceiling(make, repeats), size, base, "multiprocessing.Queue"))
        for t, n in ((FasterFifo(), n_slow), (ShmQueue(1 << 22), n_fast),
                     (ShmChannel(1 << 22), n_fast)):
            rows.append(Row(label, t.name, best_of(t, make, n, repeats), size, base,
                            "multiprocessing.Queue"))
    return rows


def bench_array(quick: bool, repeats: int) -> list[Row]:
    n_fast = 100 if quick else 500
    n_slow = 30 if quick else 100
    cap = 1 << 25  # two 8 MB records in flight (max_message half of it)
    copy = memcpy_rate(ARRAY_BYTES, repeats)
    rows = [Row("8 MB array", "memcpy (np.copyto, one process)", copy, ARRAY_BYTES)]
    # What one trip through the channel touches: array + ring + received copy.
    ws = ARRAY_BYTES + cap + ARRAY_BYTES
    rows.append(Row("8 MB array", f"memcpy, {ws >> 20} MB working set (array + ring + copy)",
                    memcpy_rate(ARRAY_BYTES, repeats, ws), ARRAY_BYTES, copy, "memcpy"))
    rows.append(Row("8 MB array", MpQueue.name, best_of(MpQueue(), array_8mb, n_slow, repeats),
                    ARRAY_BYTES, copy, "memcpy"))
    whole = f"{cap >> 20} MB ring, whole records"
    streamed = f"{STREAM_RING >> 20} MB ring, streamed in 1 MiB chunks"
    for t in (ShmQueue(cap), ShmChannel(cap, label=whole),
              ShmChannel(STREAM_RING, label=streamed, whole=False),
              ShmChannel(cap, copy=False, label=whole)):
        rows.append(Row("8 MB array", t.name, best_of(t, array_8mb, n_fast, repeats),
                        ARRAY_BYTES, copy, "memcpy"))
    return rows


def table(rows: list[Row]) -> str:
    out = ["| workload | system | items/s | µs/item | MB/s | relative |",
           "|---|---|---:|---:|---:|---|"]
    for r in rows:
        rel = f"{r.rate / r.ref:.2f}x {r.ref_name}" if r.ref else "baseline"
        if r.ref and r.ref_name == "memcpy":
            rel = f"{100 * r.rate / r.ref:.0f} % of memcpy"
        out.append(f"| {r.workload} | {r.system} | {r.rate:,.0f} | {1e6 / r.rate:.2f} | "
                   f"{r.rate * r.nbytes / 1e6:,.0f} | {rel} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.objects", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer items, one run each")
    ap.add_argument("--repeats", type=int, default=None, help="runs per measurement (3)")
    ap.add_argument("--only", choices=["small", "array"], help="one workload")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    rows: list[Row] = []
    if args.only in (None, "small"):
        rows += bench_small(args.quick, repeats)
    if args.only in (None, "array"):
        rows += bench_array(args.quick, repeats)
    print(f"# shmring objects benchmark\n\n{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, "
          f"best of {repeats}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
