"""How steady is the 64 B stream a user's program gets? ``--spread``.

The stream table (``small``) forks its children and reports a median of a few
repeats. A user's program runs differently: two processes started with
``spawn`` (what ``multiprocessing`` uses on macOS and Windows, and what the
documentation's examples use), nothing pinned, the scheduler free to put them
on one vCPU or two. On small VMs that stream is bimodal (issue 16), so this
mode runs it ``runs`` times (at least 10) and prints the smallest, median and
largest rate beside the *per-call ceiling* measured in the same run: one over
the larger of the single-process cost of ``send`` and of ``recv`` (64 B, spsc,
the minimum over many repeats of a tight loop, loop overhead included as it is
in the stream's own loops). A stream can only approach that ceiling: each of
its two processes makes one such call per message.

    python -m benchmarks --spread 10 [--quick]
    python -m benchmarks.spread [--runs N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import multiprocessing.connection as mpc
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .params import SMALL
from .peers.base import unique_name

SPAWN = mp.get_context("spawn")
CAPACITY = 1 << 24  # as the small-message table: 4096 messages deep, at least 16 MiB
CHUNK = 256  # sends between two looks at the clock
MIN_RUNS = 10


@dataclass(frozen=True)
class PerCall:
    """Single-process cost of one call, ns (minimum over the repeats)."""

    send_ns: float
    recv_ns: float

    @property
    def ceiling(self) -> float:
        """Messages per second one producer and one consumer could at most sustain."""
        return 1e9 / max(self.send_ns, self.recv_ns)


def per_call(calls: int = 20_000, repeats: int = 40) -> PerCall:
    """Time ``calls`` sends, then as many receives, ``repeats`` times, in one process."""
    import shmring

    name = unique_name("shmbench")
    ch = shmring.Channel.create(name, capacity=CAPACITY, supervised=False)
    try:
        tx, rx = ch.producer(), ch.consumer()
        send, recv, msg = tx.send, rx.recv, b"\xa5" * SMALL
        clock = time.perf_counter_ns
        best_send = best_recv = float("inf")
        for _ in range(repeats):
            t0 = clock()
            for _ in range(calls):
                send(msg)
            t1 = clock()
            for _ in range(calls):
                recv()
            t2 = clock()
            best_send = min(best_send, (t1 - t0) / calls)
            best_recv = min(best_recv, (t2 - t1) / calls)
        return PerCall(best_send, best_recv)
    finally:
        ch.close()
        ch.unlink()


# --- the two processes of one stream (spawned: module-level, picklable) -----


def _producer(name: str, seconds: float, go: Any, out: mpc.Connection) -> None:
    import shmring

    ch = shmring.Channel.open(name)
    try:
        send, msg = ch.producer().send, b"\xa5" * SMALL
        out.send("ready")
        if not go.wait(30.0):
            raise TimeoutError("never started")
        sent, t0 = 0, time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(CHUNK):
                send(msg)
            sent += CHUNK
            if time.perf_counter() >= end:
                break
        ch.close_send()
        out.send({"t0": t0, "sent": sent})
    except BaseException as exc:  # reported to the parent
        out.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        ch.close()
        out.close()


def _consumer(name: str, go: Any, out: mpc.Connection) -> None:
    import shmring

    ch = shmring.Channel.open(name)
    try:
        recv, got = ch.consumer().recv, 0
        out.send("ready")
        if not go.wait(30.0):
            raise TimeoutError("never started")
        try:
            while True:
                recv()
                got += 1
        except shmring.EndOfStream:
            pass
        out.send({"t1": time.perf_counter(), "got": got})
    except BaseException as exc:  # reported to the parent
        out.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        ch.close()
        out.close()


def _report(conn: mpc.Connection, until: float, who: str) -> Any:
    if not conn.poll(max(0.0, until - time.monotonic())):
        raise TimeoutError(f"the {who} did not report in time")
    msg = conn.recv()
    if isinstance(msg, dict) and "error" in msg:
        raise RuntimeError(f"the {who} failed: {msg['error']}")
    return msg


def stream_once(seconds: float, deadline: float = 60.0) -> float:
    """One spawned, unpinned 1->1 stream of 64 B messages: messages received per second."""
    import shmring

    name = unique_name("shmbench")
    ch = shmring.Channel.create(name, capacity=CAPACITY, pattern="spsc")
    go = SPAWN.Event()
    procs: list[Any] = []
    conns: list[mpc.Connection] = []
    try:
        for target, args in ((_consumer, (name, go)), (_producer, (name, seconds, go))):
            reader, writer = SPAWN.Pipe(duplex=False)
            proc = SPAWN.Process(target=target, args=(*args, writer), daemon=True)
            proc.start()
            writer.close()
            procs.append(proc)
            conns.append(reader)
        until = time.monotonic() + deadline
        for conn, who in zip(conns, ("consumer", "producer"), strict=True):
            if _report(conn, until, who) != "ready":
                raise RuntimeError(f"the {who} did not start")
        go.set()
        until = time.monotonic() + deadline + seconds
        cons = _report(conns[0], until, "consumer")
        prod = _report(conns[1], until, "producer")
        if cons["got"] != prod["sent"]:
            raise RuntimeError(f"sent {prod['sent']} messages, received {cons['got']}")
        return float(cons["got"] / (cons["t1"] - prod["t0"]))
    finally:
        for conn in conns:
            conn.close()
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        ch.close()
        ch.unlink()


@dataclass(frozen=True)
class Spread:
    """The runs' rates (msgs/s) beside the per-call ceiling of the same run."""

    rates: list[float]
    floor: PerCall

    def summary(self) -> dict[str, float]:
        """min, median, max and their ratios to the ceiling."""
        lo, mid, hi = min(self.rates), statistics.median(self.rates), max(self.rates)
        c = self.floor.ceiling
        return {
            "min": lo,
            "median": mid,
            "max": hi,
            "ceiling": c,
            "send_ns": self.floor.send_ns,
            "recv_ns": self.floor.recv_ns,
            "median_of_ceiling": mid / c,
            "min_of_ceiling": lo / c,
        }


def measure(runs: int, seconds: float, log: Any = None) -> Spread:
    """The per-call floor, then ``runs`` streams, then the floor again (the lower is kept)."""
    if runs < MIN_RUNS:
        raise ValueError(f"--spread needs at least {MIN_RUNS} runs, not {runs}")
    first = per_call()
    rates = []
    for i in range(runs):
        rates.append(stream_once(seconds))
        if log:
            log(f"[spread] run {i + 1}/{runs}: {rates[-1] / 1e6:.2f} M msgs/s")
    again = per_call()
    floor = PerCall(min(first.send_ns, again.send_ns), min(first.recv_ns, again.recv_ns))
    return Spread(rates, floor)


def markdown(spread: Spread, seconds: float) -> str:
    """The table: the per-call floor and ceiling, then the runs' spread."""
    s = spread.summary()
    runs = ", ".join(f"{r / 1e6:.2f}" for r in sorted(spread.rates))
    return "\n".join(
        [
            f"### 64 B stream 1→1, spawned, unpinned: {len(spread.rates)} runs of {seconds:g} s",
            "",
            "| | M msgs/s | of ceiling |",
            "|---|---|---|",
            f"| per-call ceiling (send {s['send_ns']:.1f} ns, recv {s['recv_ns']:.1f} ns) "
            f"| {s['ceiling'] / 1e6:.2f} | 100 % |",
            f"| min | {s['min'] / 1e6:.2f} | {100 * s['min_of_ceiling']:.0f} % |",
            f"| median | {s['median'] / 1e6:.2f} | {100 * s['median_of_ceiling']:.0f} % |",
            f"| max | {s['max'] / 1e6:.2f} | {100 * s['max'] / s['ceiling']:.0f} % |",
            "",
            f"runs, sorted (M msgs/s): {runs}",
            "",
        ]
    )


def main(runs: int, seconds: float, out_dir: Path) -> int:
    """Measure, print the table, write spread.md and spread.json."""

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    spread = measure(runs, seconds, log)
    text = markdown(spread, seconds)
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spread.md").write_text(text)
    data = {"seconds": seconds, "rates": spread.rates, "floor": asdict(spread.floor)}
    data["summary"] = spread.summary()
    (out_dir / "spread.json").write_text(json.dumps(data, indent=2) + "\n")
    log(f"wrote {out_dir / 'spread.md'} and {out_dir / 'spread.json'}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m benchmarks.spread", description=__doc__)
    ap.add_argument("--runs", type=int, default=MIN_RUNS, help=f"streams (at least {MIN_RUNS})")
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds each stream sends")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results", help="output directory"
    )
    a = ap.parse_args()
    if a.runs < MIN_RUNS:
        raise SystemExit(f"--runs must be at least {MIN_RUNS}")
    raise SystemExit(main(a.runs, a.seconds, a.out))
