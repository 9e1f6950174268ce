"""How fast the supervisor reacts and how much it takes.

    python -m benchmarks.supervisor                 # all three, ~1 min
    python -m benchmarks.supervisor --kills 100 --procs 1000 --seconds 10

1. SIGKILL -> unlink: a process creates a channel (and holds a claim in it),
   is killed; the time from ``kill()`` to the name leaving /dev/shm, seen by
   inotify (no polling). Median, p90 and max over ``--kills`` kills.
2. Churn: ``--procs`` processes, all connected at once, each opening and
   closing channels in a loop (every open is an attach, every close a detach
   answered synchronously); the rate the supervisor handles, from its own
   counters, over ``--seconds``.
3. Mass death: the same processes, each holding a channel, SIGKILLed at once:
   the time until the supervisor has handled every death.

Uses an auto-started supervisor (a daemon, as in real use) in a namespace of
its own; prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import mmap
import os
import select
import signal
import statistics
import struct
import sys
import time

import shmring
from shmring._supervisor import client as _client

IN_DELETE = 0x200
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _wait_deleted(ifd: int, name: bytes, timeout: float) -> float:
    """Block until /dev/shm/<name> is deleted; the time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        r, _, _ = select.select([ifd], [], [], max(0.0, deadline - time.monotonic()))
        now = time.perf_counter()
        if not r:
            raise TimeoutError(f"{name!r} not unlinked in {timeout} s")
        data = os.read(ifd, 65536)
        i = 0
        while i < len(data):
            _wd, mask, _cookie, ln = struct.unpack_from("iIII", data, i)
            got = data[i + 16: i + 16 + ln].rstrip(b"\0")
            i += 16 + ln
            if mask & IN_DELETE and got == name:
                return now


def kill_to_unlink(ns: str, kills: int) -> list[float]:
    ifd = _libc.inotify_init1(os.O_CLOEXEC)
    if ifd < 0 or _libc.inotify_add_watch(ifd, b"/dev/shm", IN_DELETE) < 0:
        raise OSError(ctypes.get_errno(), "inotify")
    out = []
    try:
        for i in range(kills):
            name = f"k{i}"
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                ch = shmring.Channel.create(name, capacity=4096, pattern="mpmc", namespace=ns)
                ch.producer().claim(64)
                os.write(w, b"r")
                time.sleep(60)
                os._exit(0)
            os.close(w)
            os.read(r, 1)
            os.close(r)
            time.sleep(0.005)  # let the supervisor go back to waiting
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            t1 = _wait_deleted(ifd, f"shmring.{ns}.{name}".encode(), 10)
            os.waitpid(pid, 0)
            out.append((t1 - t0) * 1e3)
    finally:
        os.close(ifd)
    return out


def churn(ns: str, procs: int, seconds: float, names: int = 8) -> tuple[float, int, float]:
    """(attach+detach per second at the supervisor, operations, death-handling ms)."""
    chans = [shmring.Channel.create(f"c{i}", capacity=4096, slots=255, persistent=True,
                                    namespace=ns) for i in range(names)]
    for ch in chans:
        ch.close()
    flag = mmap.mmap(-1, 8)  # shared with the children: 2 = stop churning
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()  # closed by the parent: every child wakes at once
    pids = []
    for k in range(procs):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.close(go_w)
            name = f"c{k % names}"
            try:
                shmring.Channel.open(name, namespace=ns).close()  # connected, registered
                os.write(ready_w, b"r")
                os.read(go_r, 1)  # blocks until the parent closes go_w
                while flag[0] != 2:
                    shmring.Channel.open(name, namespace=ns).close()
                _held = shmring.Channel.open(name, namespace=ns)  # then die holding it
                os.write(ready_w, b"h")
                time.sleep(120)
            finally:
                os._exit(0)
        pids.append(pid)
    os.close(ready_w)
    os.close(go_r)
    try:
        return _measure(ns, procs, seconds, names, pids, flag, ready_r, go_w)
    finally:
        for pid in pids:  # never leave churning children behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for i in range(names):
            with contextlib.suppress(shmring.RegionNotFound):
                shmring.Channel.open(f"c{i}", namespace=ns, supervised=False).unlink()


def _measure(ns: str, procs: int, seconds: float, names: int, pids: list[int],
             flag: mmap.mmap, ready_r: int, go_w: int) -> tuple[float, int, float]:
    for _ in range(procs):
        assert os.read(ready_r, 1) == b"r"
    conn = _client.connection(ns)
    before = conn.status()["stats"]
    os.close(go_w)
    t0 = time.monotonic()
    time.sleep(seconds)
    after = conn.status()["stats"]
    t1 = time.monotonic()
    flag[0] = 2
    ops = (after["attach"] + after["detach"]) - (before["attach"] + before["detach"])
    for _ in range(procs):
        assert os.read(ready_r, 1) == b"h"
    deaths0 = conn.status()["stats"]["deaths"]
    k0 = time.perf_counter()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    while conn.status()["stats"]["deaths"] - deaths0 < procs:
        time.sleep(0.001)
    dead_ms = (time.perf_counter() - k0) * 1e3
    return ops / (t1 - t0), ops, dead_ms


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--procs", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    ns = f"bench{os.getpid()}"
    os.environ.pop("SHMRING_SUPERVISOR", None)
    rows = []
    lat = kill_to_unlink(ns, args.kills)
    q = statistics.quantiles(lat, n=10)
    rows.append((f"SIGKILL -> unlink ({args.kills} kills)",
                 f"median {statistics.median(lat):.2f} ms, p90 {q[8]:.2f} ms, "
                 f"max {max(lat):.2f} ms, min {min(lat):.2f} ms"))
    rate, ops, dead_ms = churn(ns, args.procs, args.seconds)
    rows.append((f"churn, {args.procs} processes open/close",
                 f"{rate:,.0f} attach+detach/s at the supervisor ({ops:,} in "
                 f"{args.seconds:.0f} s)"))
    rows.append((f"{args.procs} processes SIGKILLed at once",
                 f"every death handled in {dead_ms:.0f} ms ({args.procs / dead_ms * 1e3:,.0f}/s)"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  result")
    for name, result in rows:
        print(f"{name:<{width}}  {result}")
    print(f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
