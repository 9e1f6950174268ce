"""``python -m benchmarks.bridge [--repeats R] [--quick] [--only ROWS] [--json F] [--profile DIR]``:
a channel carried by ``shmring bridge`` over TCP beside raw pyzmq over the
same kind of link, in one run.

The bridged side (``bridge_link.py``): two supervisor namespaces on this
machine, ``a`` and ``b``, each with its own ``shmring bridge`` process; b's
listens on a free ``tcp://127.0.0.1`` port and a's connects to it, and every
channel below goes over that one TCP connection. Channels made on b and
imported by a: ``small`` (spsc, 4 MiB, for 64 B messages), ``large`` (spsc,
16 MiB, largest message 4 MiB) and ``ping`` (spsc, 64 KiB); made on a and
imported by b: ``pong`` (spsc, 64 KiB). The bridges run with their
defaults (a credit window of 8,192 records and 64 MiB per stream).

Raw pyzmq: a PUSH process connects to a PULL process bound on a free
``tcp://127.0.0.1`` port, high-water marks of 10,000 messages (64 B) or 16
(1 MiB) on both sockets; REQ/REP for the round trip.

Every party is a process of its own, forked from this one
(``bridge_parties.py`` says how each sends, receives and checks); a stream's
producer and consumer meet at a barrier after one warm-up message has
arrived; its rate is messages received divided by the time from the
producer's first send to the consumer's last receive (``perf_counter``,
one clock for the machine). Every consumer checks every message's number
(none lost, duplicated or out of order, none too many); a run that fails is
an ``error`` row, and that measurement is not repeated.

1. 64 B, one message per call: bridged ``send`` on b, ``recv`` on a, vs raw
   pyzmq ``send``/``recv``. Goal: bridged >= 50 % of raw.
2. 64 B batched: bridged ``send_many``/``recv_many`` of 256 per call, vs the
   raw one-per-call figure (goal: >= 2x), and vs raw pyzmq batched the two
   simple ways: 256 frames per ``send_multipart``/``recv_multipart``, and
   256 messages joined into one frame that the consumer cuts back into 256
   ``bytes`` (the join and the cut are inside the clock).
3. 1 MiB (GB/s, 10^9 bytes per second): bridged, the producer writes each
   message in place (``claim``) and the consumer reads it in place
   (``recv_view``: length, number, last byte), vs raw pyzmq sending a number
   frame and the payload with ``copy=False`` and reading them with
   ``copy=False``. Goal: bridged >= 70 % of raw.
4. Round trip, 64 B each way: bridged, a process on b sends on ``ping`` and
   waits for the answer on ``pong``; an echo process on a sends back each
   message it reads; vs pyzmq REQ/REP. p50 and p99 in µs over the timed
   round trips (``perf_counter_ns`` around each), after 200 warm-up ones.

Each measurement runs ``--repeats`` times (default 3, 1 with ``--quick``,
which also sends fewer messages), the bridged and raw ones in turn within a
repeat; the table shows the median and min-max. ``bridged vs raw`` is the
bridged median over the raw one for rates, the raw over the bridged for
round trips: above 1, the bridge is faster. Progress goes to stderr, the
table to stdout, then what went over the link in the bridged streams (records
per DATA message and per ACK, from the bridges' ``--status`` counters),
every repeat's numbers to ``--json F``. ``--profile DIR``
also runs the 64 B one-per-call stream once more under ``py-spy record``
(both bridges) and prints where the bridges spend their time
(``bridge_profile.py``). At the end both bridges are stopped, the imported
rings removed, and the run checks that nothing of either namespace is left
in /dev/shm (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from typing import Any

from .bridge_link import BridgedLink, free_port
from .bridge_parties import (
    bridged_consumer,
    bridged_echo,
    bridged_pinger,
    bridged_producer,
    zmq_consumer,
    zmq_echo,
    zmq_pinger,
    zmq_producer,
)
from .procs import MP, Party, PartyError, RunTimeout, run_parties

SMALL, LARGE = 64, 1 << 20
#: Messages per run: (64 B one per call, 64 B batched, 1 MiB, round trips).
COUNTS = {"one": 300_000, "many": 1_000_000, "large": 2_000, "rtt": 5_000}
QUICK_COUNTS = {"one": 50_000, "many": 200_000, "large": 300, "rtt": 1_000}
RTT_WARMUP = 200
#: Channels made on side b (exported) and on side a: name -> (capacity, max_message).
B_CHANNELS = {"small": (4 << 20, 1 << 20), "large": (16 << 20, 4 << 20),
              "ping": (1 << 16, 1 << 14)}
A_CHANNELS = {"pong": (1 << 16, 1 << 14)}
ZMQ_HWM = {SMALL: 10_000, LARGE: 16}

Measure = Callable[[BridgedLink, dict[str, int], int], dict[str, float]]


def _stream(parties: list[Party], n: int, deadline: float, size: int) -> dict[str, float]:
    """Run a (producer, consumer) pair; messages/s and GB/s."""
    prod, cons = run_parties(parties, deadline)
    if cons["got"] != n:
        raise RuntimeError(f"received {cons['got']} of {n}")
    secs = cons["t1"] - prod["t0"]
    return {"rate": n / secs, "gbs": n * size / secs / 1e9, "seconds": secs}


def _deadline(n: int, per_sec: float) -> float:
    return 60.0 + n / per_sec


def bridged_stream(mode: str, count: str, size: int) -> Measure:
    """A bridged stream: producer on b (``mode``), consumer on a."""
    cmode = {"one": "one", "many": "many", "claim": "view"}[mode]
    name = "small" if size == SMALL else "large"

    def run(link: BridgedLink, counts: dict[str, int], base: int) -> dict[str, float]:
        n = counts[count]
        barrier = MP.Barrier(2)
        before = link.counters(name)
        got = _stream([(bridged_producer, (link.ns["b"], name, n, base, mode, size, barrier)),
                       (bridged_consumer, (link.ns["a"], name, n, base, cmode, size, barrier))],
                      n, _deadline(n, 2e4 if size == SMALL else 50), size)
        after = link.counters(name)
        sent = {k: after[k] - before[k] for k in after}
        if sent["batches"]:  # what went over the link: records per DATA message, ACKs
            got["per_batch"] = sent["records"] / sent["batches"]
            got["per_ack"] = sent["records"] / max(1, sent["acks"])
        return got
    return run


def zmq_stream(mode: str, count: str, size: int) -> Measure:
    """A raw pyzmq PUSH/PULL stream over TCP on loopback."""
    def run(link: BridgedLink, counts: dict[str, int], base: int) -> dict[str, float]:
        n, port, hwm = counts[count], free_port(), ZMQ_HWM[size]
        barrier = MP.Barrier(2)
        return _stream([(zmq_producer, (port, n, base, mode, size, hwm, barrier)),
                        (zmq_consumer, (port, n, base, mode, size, hwm, barrier))],
                       n, _deadline(n, 2e4 if size == SMALL else 50), size)
    return run


def bridged_rtt(link: BridgedLink, counts: dict[str, int], base: int) -> dict[str, float]:
    """Bridged ping/pong: the pinger on b, the echo on a."""
    n = counts["rtt"]
    barrier = MP.Barrier(2)
    pinger, _ = run_parties([
        (bridged_pinger, (link.ns["b"], n, RTT_WARMUP, base, SMALL, barrier)),
        (bridged_echo, (link.ns["a"], n + RTT_WARMUP, SMALL, barrier))], _deadline(n, 500))
    return _rtt(pinger, n)


def zmq_rtt(link: BridgedLink, counts: dict[str, int], base: int) -> dict[str, float]:
    """pyzmq REQ/REP over TCP on loopback."""
    n, port = counts["rtt"], free_port()
    barrier = MP.Barrier(2)
    pinger, _ = run_parties([
        (zmq_pinger, (port, n, RTT_WARMUP, base, SMALL, barrier)),
        (zmq_echo, (port, n + RTT_WARMUP, SMALL, barrier))], _deadline(n, 500))
    return _rtt(pinger, n)


def _rtt(pinger: dict[str, Any], n: int) -> dict[str, float]:
    if pinger["got"] != n:
        raise RuntimeError(f"{pinger['got']} of {n} round trips")
    return {"p50_us": float(pinger["p50_us"]), "p99_us": float(pinger["p99_us"])}


#: id -> (how it is measured, description); run in this order in each repeat.
MEASURES: dict[str, tuple[Measure, str]] = {
    "bridged_one": (bridged_stream("one", "one", SMALL), "bridged 64 B, send/recv"),
    "zmq_one": (zmq_stream("one", "one", SMALL), "pyzmq 64 B, send/recv"),
    "bridged_many": (bridged_stream("many", "many", SMALL),
                     "bridged 64 B, send_many/recv_many 256"),
    "zmq_multipart": (zmq_stream("multipart", "many", SMALL),
                      "pyzmq 64 B, 256-frame send_multipart/recv_multipart"),
    "zmq_packed": (zmq_stream("packed", "many", SMALL),
                   "pyzmq 64 B, 256 joined in one frame, cut on receipt"),
    "bridged_large": (bridged_stream("claim", "large", LARGE),
                      "bridged 1 MiB, claim/recv_view"),
    "zmq_large": (zmq_stream("large", "large", LARGE), "pyzmq 1 MiB, copy=False"),
    "bridged_rtt": (bridged_rtt, "bridged ping/pong 64 B"),
    "zmq_rtt": (zmq_rtt, "pyzmq REQ/REP 64 B"),
}

#: Table rows: (what, unit, bridged id, raw id, metric, goal, lower is better).
ROWS: list[tuple[str, str, str, str, str, float | None, bool]] = [
    ("64 B, one per call", "msgs/s", "bridged_one", "zmq_one", "rate", 0.5, False),
    ("64 B, bridged 256 per call vs raw one per call", "msgs/s", "bridged_many", "zmq_one",
     "rate", 2.0, False),
    ("64 B, 256 per call vs raw multipart of 256", "msgs/s", "bridged_many", "zmq_multipart",
     "rate", None, False),
    ("64 B, 256 per call vs raw 256 packed in one frame", "msgs/s", "bridged_many",
     "zmq_packed", "rate", None, False),
    ("1 MiB", "GB/s", "bridged_large", "zmq_large", "gbs", 0.7, False),
    ("round trip 64 B, p50", "µs", "bridged_rtt", "zmq_rtt", "p50_us", None, True),
    ("round trip 64 B, p99", "µs", "bridged_rtt", "zmq_rtt", "p99_us", None, True),
]


def run(repeats: int, quick: bool, profile: str | None = None,
        only: list[str] | None = None) -> dict[str, Any]:
    """Every measurement (or those of the table rows named in ``only``),
    ``repeats`` times; raw results by measurement id."""
    counts = QUICK_COUNTS if quick else COUNTS
    wanted = set(MEASURES) if not only else {k for row in ROWS if _row_id(row[0]) in only
                                             for k in (row[2], row[3])}
    results: dict[str, list[dict[str, float]] | str] = {k: [] for k in MEASURES}
    print(f"starting two bridges ({', '.join(B_CHANNELS)} b->a; {', '.join(A_CHANNELS)} a->b)",
          file=sys.stderr, flush=True)
    link = BridgedLink(B_CHANNELS, A_CHANNELS)
    profiled: dict[str, Any] | None = None
    try:
        print(f"bridges up on {link.url}", file=sys.stderr, flush=True)
        for r in range(repeats):
            for k, (fn, what) in MEASURES.items():
                got = results[k]
                if isinstance(got, str) or k not in wanted:
                    continue  # failed before: not repeated
                print(f"  [{r + 1}/{repeats}] {what}", file=sys.stderr, flush=True)
                base = (len(got) + 1 + 100 * list(MEASURES).index(k)) << 32
                try:
                    got.append(fn(link, counts, base))
                except (PartyError, RunTimeout, RuntimeError) as e:
                    results[k] = f"error: {e}"
                    print(f"    {results[k]}", file=sys.stderr, flush=True)
        if profile:
            from .bridge_profile import profile_bridges

            print("  profiling the bridges on the 64 B one-per-call stream", file=sys.stderr,
                  flush=True)
            try:
                profiled = profile_bridges(link, profile,
                                           lambda: MEASURES["bridged_one"][0](
                                               link, {"one": 4 * counts["one"]}, 999 << 32))
            except (PartyError, RunTimeout, RuntimeError, OSError) as e:
                print(f"    profile: {e}", file=sys.stderr, flush=True)
    finally:
        left = link.close()
    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}, {platform.platform()}",
            "versions": _versions(), "repeats": repeats, "counts": counts,
            "results": results, "left_in_dev_shm": left, "profile": profiled}


def _row_id(what: str) -> str:
    """A table row's name for ``--only``: ``one``, ``many``, ``1mib``, ``rtt``."""
    if what.startswith("1 MiB"):
        return "1mib"
    if what.startswith("round trip"):
        return "rtt"
    return "many" if "256" in what else "one"


def _versions() -> dict[str, str]:
    import zmq

    import shmring
    return {"shmring": getattr(shmring, "__version__", "?"), "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version()}


def _fmt(v: float, unit: str) -> str:
    if unit == "msgs/s":
        return f"{v / 1e3:,.0f}k"
    if unit == "GB/s":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def _cell(vals: list[float], unit: str) -> str:
    return f"{_fmt(statistics.median(vals), unit)} ({_fmt(min(vals), unit)}-" \
           f"{_fmt(max(vals), unit)})"


def table(res: dict[str, Any]) -> str:
    """The markdown table of a run."""
    out = ["| measurement | unit | bridged, median (min-max) | raw pyzmq, median (min-max) "
           "| bridged vs raw | goal |", "|---|---|---|---|---|---|"]
    for what, unit, b, z, metric, goal, lower in ROWS:
        if not res["results"][b] or not res["results"][z]:
            continue  # not run (--only)
        cells, meds = [], []
        for k in (b, z):
            got = res["results"][k]
            if isinstance(got, str):
                cells.append(got)
                continue
            vals = [g[metric] for g in got]
            cells.append(_cell(vals, unit))
            meds.append(statistics.median(vals))
        ratio = ""
        if len(meds) == 2:
            x = meds[1] / meds[0] if lower else meds[0] / meds[1]
            ratio = f"{x:.2f}x"
        goal_cell = ""
        if goal is not None:
            met = "" if not ratio else (" met" if float(ratio[:-1]) >= goal else " NOT met")
            goal_cell = f">= {goal:g}x{met}"
        out.append(f"| {what} | {unit} | {cells[0]} | {cells[1]} | {ratio} | {goal_cell} |")
    return "\n".join(out)


def link_notes(res: dict[str, Any]) -> str:
    """What went over the link in the bridged streams: records per DATA
    message and per ACK message (medians over the repeats)."""
    parts = []
    for k in ("bridged_one", "bridged_many", "bridged_large"):
        got = res["results"][k]
        if isinstance(got, str) or not got or "per_batch" not in got[0]:
            continue
        per_batch = statistics.median(g["per_batch"] for g in got)
        per_ack = statistics.median(g["per_ack"] for g in got)
        parts.append(f"{MEASURES[k][1]}: {per_batch:,.1f} records per DATA message, "
                     f"{per_ack:,.1f} per ACK")
    return "Over the link (median): " + "; ".join(parts) if parts else ""


def main() -> None:
    """Run the benchmark, print its table, write ``--json``."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bridge",
                                 description="A bridged channel over TCP on loopback beside "
                                             "raw pyzmq: 64 B msgs/s, 1 MiB GB/s, round trip.")
    ap.add_argument("--repeats", type=int, help="runs per measurement (default 3, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="fewer messages, 1 repeat")
    ap.add_argument("--json", metavar="F", help="write every repeat's numbers to F")
    ap.add_argument("--profile", metavar="DIR",
                    help="also profile both bridges with py-spy on the 64 B stream "
                         "(flame graphs and raw stacks go to DIR)")
    ap.add_argument("--only", metavar="ROWS",
                    help="comma-separated rows to run: one, many, 1mib, rtt (default all)")
    args = ap.parse_args()
    only = args.only.split(",") if args.only else None
    if only and not set(only) <= {"one", "many", "1mib", "rtt"}:
        raise SystemExit(f"--only: rows are one, many, 1mib, rtt, not {args.only!r}")
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    res = run(repeats, args.quick, args.profile, only)
    v = res["versions"]
    print(f"{res['machine']}; shmring bridge over tcp://127.0.0.1 vs pyzmq {v['pyzmq']} "
          f"(libzmq {v['libzmq']}); {repeats} run(s) each\n")
    print(table(res))
    if notes := link_notes(res):
        print(f"\n{notes}")
    if res["profile"]:
        from .bridge_profile import summary

        print()
        print(summary(res["profile"]))
    left = res["left_in_dev_shm"]
    print(f"\n/dev/shm: {'clean' if not left else 'LEFT: ' + ', '.join(left)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if left or any(isinstance(v, str) for v in res["results"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
