"""Does ``shmring top`` slow the traffic it watches? A/B throughput runs.

Each run moves small messages from a producer process to a consumer process
through an spsc channel for a fixed time and counts them (messages per
second, end to end: the ring is bounded, so the producer goes at the
consumer's pace). Run A has nothing else watching; run B has ``shmring top``
running beside it in a real terminal, drawing the namespace every 0.5 s (its
default): a tmux window (160x50) when tmux is installed, else a
pseudo-terminal this script reads. The runs alternate in pairs (A B, then
B A, ...) so that drift in the machine's load falls on both, and the table
gives each pair's ratio B/A, their median and spread, and the CPU time that
top, the terminal drawing it and the supervisor answering it used per second
of traffic.

Two designs (``--mode``): ``restart`` makes each run a separate
producer/consumer pair of processes and starts a new ``shmring top`` for
each B run, quit with ``q`` after (what a user does); ``pause`` runs one
producer and consumer throughout, measures adjacent windows of it (the
consumer's count from the ring's counters), and keeps one top that is
stopped (SIGSTOP) during the A windows: adjacent windows share the
machine's load, which on a busy machine matters more than anything top
does.

Two kinds of traffic (``--traffic``): ``stream`` moves 64-byte messages as
fast as the ring goes, whose rate on a 2-CPU machine is bimodal by itself
(the two processes bounce the ring's lines between the CPUs at one rate or
at twice it, minute to minute: issue 16), so a pair's ratio says more about
that than about top; ``work`` is traffic whose rate is the consumer's own
work: 1 KiB messages, each checksummed 16 times (``zlib.crc32``) by its consumer, so
its rate is steady and any CPU top takes from it shows. ``--streams N``
runs N such producer/consumer pairs at once (pause mode): with 2 on 2 CPUs
both CPUs are busy with the traffic and top's CPU can only come from it.

    python benchmarks/top_overhead.py [--pairs 7] [--seconds 2] [--mode restart|pause]
                                      [--traffic stream|work] [--streams N]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import shmring
from shmring._cli.top.supervisor import lock_holder
from shmring._region import inventory

PAYLOAD = b"x" * 64
WORK_PAYLOAD = bytes(range(256)) * 4  # 1 KiB, checksummed by the consumer
WORK_ROUNDS = 16  # checksums per message: the consumer's work, not the ring, sets the rate
BATCH = 1024  # sends between two looks at the clock
TICK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------- the traffic --
def _payload(traffic: str) -> bytes:
    return WORK_PAYLOAD if traffic == "work" else PAYLOAD


def _produce(name: str, seconds: float, out: Connection) -> None:
    ch = shmring.Channel.open(name)
    tx = ch.producer()
    send = tx.send
    sent = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(BATCH):
            send(PAYLOAD)
        sent += BATCH
        if time.perf_counter() >= end:
            break
    took = time.perf_counter() - t0
    ch.close_send()
    ch.close()
    out.send((sent, took))


def _consume(name: str, traffic: str = "stream") -> None:
    ch = shmring.Channel.open(name)
    rx = ch.consumer()
    crc = zlib.crc32
    try:
        if traffic == "work":
            while True:
                for m in rx.recv_many(64, timeout=30):
                    for _ in range(WORK_ROUNDS):
                        crc(m)
        while True:
            rx.recv_many(256, timeout=30)
    except shmring.EndOfStream:
        pass
    ch.close()


def throughput(name: str, seconds: float) -> float:
    """Messages per second from one producer to one consumer process."""
    ch = shmring.Channel.create(name, capacity=1 << 20, pattern="spsc")
    ctx = mp.get_context("fork")
    r, w = ctx.Pipe(duplex=False)
    consumer = ctx.Process(target=_consume, args=(name,))
    producer = ctx.Process(target=_produce, args=(name, seconds, w))
    try:
        consumer.start()
        producer.start()
        sent, took = r.recv()
        producer.join()
        consumer.join()
    finally:
        for p in (producer, consumer):
            if p.is_alive():
                p.kill()
                p.join()
        ch.close()
        with contextlib.suppress(shmring.RegionNotFound):
            ch.unlink()
    return float(sent / took)


# ------------------------------------------------------- top beside it ----
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


_servers = itertools.count()


class TopInTmux:
    """``shmring top`` in a tmux window of a private tmux server."""

    def __init__(self, env: dict[str, str], interval: float) -> None:
        self.sock = f"shmring-bench-{os.getpid()}-{next(_servers)}"  # one server per top
        self.env = env
        keep = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("SHMRING_"))
        cmd = (f"env {keep} {sys.executable} -m shmring top --interval {interval}; "
               "sleep 600")
        self._tmux("new-session", "-d", "-x", "160", "-y", "50", "-s", "top", cmd)
        deadline = time.monotonic() + 30
        while "shmring top" not in self._tmux("capture-pane", "-p", "-t", "top"):
            if time.monotonic() > deadline:
                raise RuntimeError("shmring top did not draw in tmux")
            time.sleep(0.05)
        shell = int(self._tmux("display-message", "-p", "-t", "top", "#{pane_pid}"))
        with open(f"/proc/{shell}/task/{shell}/children") as f:
            self.pid = int(f.read().split()[0])
        self.pids = [self.pid, int(self._tmux("display-message", "-p", "#{pid}"))]

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._tmux("send-keys", "-t", "top", "q")
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{self.pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], env=self.env,
                       capture_output=True, timeout=10)


class TopOnPty:
    """``shmring top`` on a pseudo-terminal whose output a thread reads (and drops)."""

    def __init__(self, env: dict[str, str], interval: float) -> None:
        master, slave = os.openpty()
        os.set_blocking(master, False)
        env = dict(env, COLUMNS="160", LINES="50", TERM="xterm-256color")
        self.proc = subprocess.Popen([sys.executable, "-m", "shmring", "top", "--interval",
                                      str(interval)], stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.pid = self.proc.pid
        self.pids = [self.pid]
        self.seen = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self.seen.wait(30):
            raise RuntimeError("shmring top did not draw on the pty")

    def _drain(self) -> None:
        while True:
            try:
                ready = select.select([self.master], [], [], 0.5)[0]
                if ready and b"shmring top" in os.read(self.master, 1 << 16):
                    self.seen.set()
            except OSError:
                return
            if self.proc.poll() is not None:
                return

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, b"q")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(2)
        os.close(self.master)


@contextlib.contextmanager
def private_namespace() -> Iterator[dict[str, str]]:
    """A namespace and supervisor socket directory of our own, in os.environ."""
    d = tempfile.mkdtemp(prefix="shmr-bench-")
    saved = {k: os.environ.get(k) for k in ("SHMRING_NAMESPACE", "SHMRING_SOCKET_DIR")}
    os.environ["SHMRING_NAMESPACE"] = f"topbench{os.getpid()}"
    os.environ["SHMRING_SOCKET_DIR"] = d
    try:
        yield {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(d, ignore_errors=True)


Top = TopInTmux | TopOnPty


def start_top(env: dict[str, str], interval: float, terminal: str) -> Top:
    """``shmring top`` drawing in a terminal, its first frame drawn. Its
    ``pids`` are what it costs: top, the terminal drawing it, and the
    supervisor answering its status requests (idle otherwise)."""
    top = TopInTmux(env, interval) if terminal == "tmux" else TopOnPty(env, interval)
    sup = lock_holder(os.path.join(env["SHMRING_SOCKET_DIR"], f"{env['SHMRING_NAMESPACE']}.lock"))
    if sup is not None:
        top.pids.append(sup)
    return top


def beside(top: Top, name: str, seconds: float) -> tuple[float, float]:
    """Throughput with ``top`` running, and top's CPU per second meanwhile."""
    cpu0 = sum(cpu_seconds(p) for p in top.pids)
    t0 = time.perf_counter()
    rate = throughput(name, seconds)
    took = time.perf_counter() - t0
    return rate, max(0.0, sum(cpu_seconds(p) for p in top.pids) - cpu0) / took


def _produce_until(name: str, stop: Event, traffic: str) -> None:
    ch = shmring.Channel.open(name)
    tx = ch.producer()
    send = tx.send
    payload = _payload(traffic)
    while not stop.is_set():
        for _ in range(BATCH):
            send(payload)
    ch.close_send()
    ch.close()


def delivered(namespace: str, name: str) -> int:
    """Messages the consumer has taken so far (the ring's counters)."""
    return inventory.snapshot(namespace, name).messages_out


Row = tuple[str, float, float, float]  # order, without, with, top's CPU share


def restarted(env: dict[str, str], name: str, args: argparse.Namespace) -> Iterator[Row]:
    """Pairs of separate runs; a new top for each B run, quit with q after."""
    for i in range(args.pairs):
        order = "A B" if i % 2 == 0 else "B A"
        res: dict[str, tuple[float, float]] = {}
        for run in order.split():
            if run == "A":
                res[run] = (throughput(name, args.seconds), 0.0)
            else:
                top = start_top(env, args.interval, args.terminal)
                try:
                    res[run] = beside(top, name, args.seconds)
                finally:
                    top.stop()
        yield order, res["A"][0], res["B"][0], res["B"][1]


def paused(env: dict[str, str], name: str, args: argparse.Namespace) -> Iterator[Row]:
    """Pairs of adjacent windows of one continuous run; one top, stopped
    (SIGSTOP) during the A windows."""
    ns = env["SHMRING_NAMESPACE"]
    names = [f"{name}-{k}" for k in range(args.streams)]
    chans = [shmring.Channel.create(n, capacity=1 << 20, pattern="spsc") for n in names]
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    procs = [ctx.Process(target=f, args=a) for n in names
             for f, a in ((_consume, (n, args.traffic)), (_produce_until, (n, stop, args.traffic)))]
    top = start_top(env, args.interval, args.terminal)
    try:
        for p in procs:
            p.start()
        time.sleep(0.5)  # both running
        os.kill(top.pid, signal.SIGSTOP)
        for i in range(args.pairs):
            order = "A B" if i % 2 == 0 else "B A"
            res: dict[str, tuple[float, float]] = {}
            for run in order.split():
                os.kill(top.pid, signal.SIGCONT if run == "B" else signal.SIGSTOP)
                cpu0 = sum(cpu_seconds(p) for p in top.pids)
                m0, t0 = sum(delivered(ns, n) for n in names), time.perf_counter()
                time.sleep(args.seconds)
                m1, t1 = sum(delivered(ns, n) for n in names), time.perf_counter()
                cpu = max(0.0, sum(cpu_seconds(p) for p in top.pids) - cpu0)
                res[run] = ((m1 - m0) / (t1 - t0), cpu / (t1 - t0))
            yield order, res["A"][0], res["B"][0], res["B"][1]
    finally:
        os.kill(top.pid, signal.SIGCONT)
        top.stop()
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        for ch in chans:
            ch.close()
            with contextlib.suppress(shmring.RegionNotFound):
                ch.unlink()


# ------------------------------------------------------------------ main --
def main(argv: list[str] | None = None) -> int:
    """Run the pairs and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=7, help="A/B pairs, at least 5 (default 7)")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per run (default 2)")
    ap.add_argument("--interval", type=float, default=0.5, help="top's interval (default 0.5)")
    ap.add_argument("--terminal", choices=("tmux", "pty"),
                    default="tmux" if shutil.which("tmux") else "pty",
                    help="where top draws (default tmux if installed)")
    ap.add_argument("--mode", choices=("restart", "pause"), default="restart",
                    help="a new top per B run, or one paused during A runs (default restart)")
    ap.add_argument("--traffic", choices=("stream", "work"), default="stream",
                    help="64 B as fast as it goes, or 1 KiB checksummed by the consumer "
                         "(default stream)")
    ap.add_argument("--streams", type=int, default=1,
                    help="producer/consumer pairs at once, pause mode only (default 1)")
    args = ap.parse_args(argv)
    if args.pairs < 5:
        ap.error("--pairs must be at least 5")
    if args.streams < 1 or (args.streams > 1 and args.mode != "pause"):
        ap.error("--streams N (N >= 1) goes with --mode pause")
    if args.traffic == "work" and args.mode != "pause":
        ap.error("--traffic work goes with --mode pause")
    rows: list[tuple[float, float, float]] = []
    with private_namespace() as env:
        name = f"topbench-{os.getpid()}"
        throughput(name, min(1.0, args.seconds))  # warm up (and start the supervisor)
        print(f"shmring top overhead: {args.pairs} pairs of {args.seconds:g} s runs, "
              f"{args.streams} spsc stream(s), {len(_payload(args.traffic))}-byte messages "
              f"({args.traffic}), top every {args.interval:g} s in {args.terminal} "
              f"({args.mode}), {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        print(f"{'pair':>4}  {'order':>5}  {'without (msg/s)':>16}  {'with top (msg/s)':>16}  "
              f"{'ratio':>6}  {'top CPU':>8}", flush=True)
        pairs = restarted if args.mode == "restart" else paused
        for i, (order, a, b, cpu) in enumerate(pairs(env, name, args)):
            rows.append((a, b, cpu))
            print(f"{i + 1:>4}  {order:>5}  {a:>16,.0f}  {b:>16,.0f}  {b / a:>6.3f}  "
                  f"{100 * cpu:>7.2f}%", flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    ratios = sorted(b / a for a, b, _ in rows)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    cpus = [c for _, _, c in rows]
    print()
    print(f"median ratio (with/without): {statistics.median(ratios):.3f}  "
          f"(slowdown {100 * (1 - statistics.median(ratios)):+.1f}%)")
    print(f"spread: min {ratios[0]:.3f}  quartiles {q[0]:.3f} .. {q[2]:.3f}  "
          f"max {ratios[-1]:.3f}")
    print(f"median throughput: without {statistics.median(a for a, _, _ in rows):,.0f} msg/s, "
          f"with {statistics.median(b for _, b, _ in rows):,.0f} msg/s")
    print(f"top's CPU (top, its terminal, the supervisor) per second of traffic: median "
          f"{100 * statistics.median(cpus):.2f}% of one CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
