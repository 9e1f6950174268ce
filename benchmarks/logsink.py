"""shmring.logging.Handler beside logging.handlers.QueueHandler with a
multiprocessing.Queue and a QueueListener in another process.

    python -m benchmarks.logsink [--records 50000] [--repeats 5]

Each repeat runs, for both: a listener process that writes every record to
a file (a ``logging.FileHandler``) and exits once it has written them all,
and the application (this process) logging ``--records`` records as fast as
it can. Reported: the application's cost per ``log.info`` call (median over
repeats, min-max), and the records per second until the listener wrote the
last one. Then what each does when the listener dies:

- the listener is SIGKILLed and the application logs ``--records`` more:
  cost per call, memory the application grew by, and whether it can exit;
- the application is SIGKILLed right after its last call returned: how many
  of its records the listener wrote.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import multiprocessing as mp
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import shmring.logging as shlog

CTX = mp.get_context("fork")
NS = f"bench-logsink-{os.getpid()}"


class _Counting(logging.FileHandler):
    """A FileHandler that sets ``done`` after ``n`` records."""

    def __init__(self, path: str, n: int, done: Any) -> None:
        super().__init__(path)
        self.n, self.done, self.count = n, done, 0

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.count += 1
        if self.count == self.n:
            self.done.set()


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"bench.{id(handler)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


# ------------------------------------------------------------ listeners --
def _sink_main(channel: str, path: str, n: int, ready: Any, done: Any) -> None:
    out = _Counting(path, n, done)
    with shlog.Sink(channel, handlers=[out], namespace=NS) as sink:
        ready.set()
        while not done.is_set():
            sink.drain(timeout=0.1)
    out.close()


def _queue_main(q: Any, path: str, n: int, ready: Any, done: Any) -> None:
    out = _Counting(path, n, done)
    listener = logging.handlers.QueueListener(q, out)
    listener.start()
    ready.set()
    done.wait()
    listener.stop()
    out.close()


def _start(kind: str, path: str, n: int) -> tuple[mp.process.BaseProcess, logging.Handler,
                                                  Any, Callable[[], None]]:
    ready, done = CTX.Event(), CTX.Event()
    if kind == "shmring":
        channel = f"bench-{time.monotonic_ns()}"
        p = CTX.Process(target=_sink_main, args=(channel, path, n, ready, done))
        p.start()
        ready.wait(30)
        h: logging.Handler = shlog.Handler(channel, namespace=NS)

        def cleanup() -> None:
            h.close()
            import shmring
            try:
                ch = shmring.Channel.open(channel, namespace=NS)
            except shmring.RegionNotFound:
                return
            ch.close()
            ch.unlink()
    else:
        q = CTX.Queue()
        p = CTX.Process(target=_queue_main, args=(q, path, n, ready, done))
        p.start()
        ready.wait(30)
        h = logging.handlers.QueueHandler(q)

        def cleanup() -> None:
            q.cancel_join_thread()
            q.close()
    return p, h, done, cleanup


# ----------------------------------------------------------- workloads --
def throughput(kind: str, n: int) -> tuple[float, float, float]:
    """(µs per log.info call, CPU µs of the application per call, records/s
    until the listener wrote the last). The CPU time counts every thread of
    the application (a multiprocessing.Queue pickles in a feeder thread) up
    to the last record written, and is less disturbed by other load than the
    wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        p, h, done, cleanup = _start(kind, os.path.join(tmp, "log"), n)
        log = _logger(h)
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(n):
                log.info("request %d served in %.3f ms", i, 1.25)
            t1 = time.perf_counter()
            assert done.wait(120), f"{kind}: the listener did not write every record"
            t2, c2 = time.perf_counter(), time.process_time()
            p.join(30)
        finally:
            cleanup()
    return (t1 - t0) / n * 1e6, (c2 - c0) / n * 1e6, n / (t2 - t0)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def listener_killed(kind: str, n: int) -> dict[str, Any]:
    """The listener is SIGKILLed, then the app logs ``n`` records (in a child,
    so that its exit can be timed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the application
        os.close(r)
        code = 0
        try:
            with tempfile.TemporaryDirectory() as tmp:
                p, h, _done, cleanup = _start(kind, os.path.join(tmp, "log"), n + 1)
                log = _logger(h)
                log.info("first")
                time.sleep(0.5)
                assert p.pid is not None
                os.kill(p.pid, signal.SIGKILL)
                p.join()
                time.sleep(0.2)  # the supervisor frees the dead sink's role
                rss0 = _rss_kib()
                c0, t0 = time.process_time(), time.perf_counter()
                for i in range(n):
                    log.info("request %d served in %.3f ms", i, 1.25)
                t1, c1 = time.perf_counter(), time.process_time()
                dropped = getattr(h, "dropped", 0)
                msg = (f"{(t1 - t0) / n * 1e6:.2f} {_rss_kib() - rss0} {dropped} "
                       f"{(c1 - c0) / n * 1e6:.2f}\n")
                os.write(w, msg.encode())
                if kind == "shmring":
                    cleanup()
        except BaseException as e:  # report, then exit as a forked child must
            os.write(w, f"error {e!r}\n".encode())
            code = 1
        finally:
            os.close(w)
        if code:
            os._exit(code)
        sys.exit(0)  # a normal exit: multiprocessing flushes its queues here
    os.close(w)
    with os.fdopen(r) as f:
        line = f.readline().split()
    deadline = time.monotonic() + 5.0
    exited = False
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            exited = True
            break
        time.sleep(0.01)
    waited = time.monotonic() - (deadline - 5.0)
    if not exited:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if line[0] == "error":
        raise RuntimeError(" ".join(line))
    return {"us": float(line[0]), "rss_kib": int(line[1]), "dropped": int(line[2]),
            "cpu_us": float(line[3]),
            "exit": f"{waited:.2f} s" if exited else "hung (killed after 5 s)"}


def app_killed(kind: str, n: int) -> tuple[int, int]:
    """The app logs ``n`` records and is SIGKILLed right after the last call
    returned: (records its handler accepted, records the listener wrote).
    shmring's handler accepts what it put in the ring (it drops and counts
    the rest when the ring stays full); QueueHandler accepts every record."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log")
        ready_r, ready_w = os.pipe()
        p, h, _done, cleanup = _start(kind, path, n)
        pid = os.fork()
        if pid == 0:
            log = _logger(h)
            for i in range(n):
                log.info("request %d", i)
            os.write(ready_w, f"{n - getattr(h, 'dropped', 0)}\n".encode())
            time.sleep(60)
            os._exit(0)
        accepted = int(os.read(ready_r, 64).decode())
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        written, last, deadline = -1, time.monotonic(), time.monotonic() + 30
        while time.monotonic() < deadline and time.monotonic() - last < 3.0:
            try:
                with open(path) as f:
                    count = sum(1 for _ in f)
            except FileNotFoundError:
                count = 0
            if count != written:
                written, last = count, time.monotonic()
            if written >= accepted:
                break
            time.sleep(0.05)
        if p.pid is not None and p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join()
        cleanup()
        os.close(ready_r)
        os.close(ready_w)
        return accepted, written


def _spread(xs: list[float], fmt: str) -> str:
    return f"{format(statistics.median(xs), fmt)} ({format(min(xs), fmt)}-{format(max(xs), fmt)})"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print Markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    kinds = ("shmring", "queue")
    names = {"shmring": "shmring.logging.Handler -> logsink",
             "queue": "QueueHandler -> mp.Queue -> QueueListener"}
    load = os.getloadavg()[0]
    rows: dict[str, tuple[list[float], list[float], list[float]]] = {
        k: ([], [], []) for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:
            us, cpu, rate = throughput(k, args.records)
            rows[k][0].append(us)
            rows[k][1].append(cpu)
            rows[k][2].append(rate / 1000)
    print(f"{args.records} records, {args.repeats} repeats, median (min-max); "
          f"load {load:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print("| handler | µs per log.info call | app CPU µs per record | k records/s end to end |")
    print("|---|---|---|---|")
    for k in kinds:
        w, c, r = rows[k]
        print(f"| {names[k]} | {_spread(w, '.1f')} | {_spread(c, '.1f')} | {_spread(r, '.0f')} |")
    print("\nListener SIGKILLed, then the app logs "
          f"{args.records} records:\n")
    print("| handler | µs per call | app CPU µs per call | app memory growth "
          "| dropped (counted) | app exit |")
    print("|---|---|---|---|---|---|")
    for k in kinds:
        res = listener_killed(k, args.records)
        print(f"| {names[k]} | {res['us']:.1f} | {res['cpu_us']:.1f} | "
              f"{res['rss_kib'] / 1024:.1f} MiB | "
              f"{res['dropped'] if k == 'shmring' else 'not counted'} | {res['exit']} |")
    print("\nApp SIGKILLed right after its last call returned "
          f"({args.records} records):\n")
    print("| handler | calls that returned | records accepted | written by the listener |")
    print("|---|---|---|---|")
    for k in kinds:
        accepted, written = app_killed(k, args.records)
        print(f"| {names[k]} | {args.records} | {accepted} | {written} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
