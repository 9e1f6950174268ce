"""The workloads: what each table measures and how one measurement is run."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import loops
from .params import ARRAY_BYTES, BATCH, FAN, LARGE, SMALL, Params
from .peers.base import Peer, Topology, buffer_bytes
from .procs import MP, in_time, run_parties


@dataclass(frozen=True)
class Metric:
    """One number per measurement."""

    key: str
    label: str
    unit: str
    higher_is_better: bool = True
    ratio: bool = True  # show a "shmring x" column for it


@dataclass(frozen=True)
class Bench:
    """One table: a workload, its metrics, and the function measuring one system once."""

    id: str
    group: str
    title: str
    metrics: tuple[Metric, ...]
    run: Callable[[Peer, Params], dict[str, float]]
    topo: Topology | None = None  # the channel shape, for stream benches


def run_stream(
    peer: Peer, params: Params, topo: Topology, mode: str, msg_bytes: int
) -> dict[str, float]:
    """Producers send for ``params.duration``; rate = received / (last end - first start)."""
    ctx = in_time(params.deadline, peer.setup, topo)
    try:
        barrier = MP.Barrier(topo.producers + topo.consumers)
        done = MP.Value("i", 0)
        parties: list[Any] = [
            (loops.consumer, (peer, ctx, topo, i, mode, barrier, done))
            for i in range(topo.consumers)
        ]
        parties += [
            (loops.producer, (peer, ctx, topo, i, mode, barrier, done, params.duration))
            for i in range(topo.producers)
        ]
        results = run_parties(parties, params.deadline + params.duration)
    finally:
        in_time(params.deadline, peer.teardown, ctx)
    cons, prods = results[: topo.consumers], results[topo.consumers :]
    sent = sum(p["sent"] for p in prods)
    got = sum(c["n"] for c in cons)
    expected = sent * topo.consumers if topo.kind == "fanout" else sent
    if got != expected:
        raise RuntimeError(f"expected {expected} messages, received {got}")
    rate = got / (max(c["t1"] for c in cons) - min(p["t0"] for p in prods))
    return {"msgs_s": rate, "gb_s": rate * msg_bytes / 1e9} if msg_bytes else {"msgs_s": rate}


def run_pingpong(peer: Peer, params: Params) -> dict[str, float]:
    """One pinger, one ponger, 64 B each way, pinned to two different CPUs.

    Pinned because where the scheduler happens to put them (same CPU or not)
    changes blocking systems' round trips tenfold on some machines.
    """
    cpus: list[int | None] = [None, None]
    if len(allowed := sorted(os.sched_getaffinity(0))) >= 2:
        cpus = [allowed[0], allowed[1]]
    topo = Topology("p2p", msg_size=SMALL, depth=64)
    ctx = in_time(params.deadline, peer.pair_setup, topo)
    try:
        barrier = MP.Barrier(2)
        results = run_parties(
            [
                (loops.ponger, (peer, ctx, topo, barrier, cpus[0])),
                (loops.pinger, (peer, ctx, topo, barrier, params.duration, cpus[1])),
            ],
            params.deadline + params.duration,
        )
    finally:
        in_time(params.deadline, peer.pair_teardown, ctx)
    return results[1]


def run_idle(peer: Peer, params: Params) -> dict[str, float]:
    """A consumer blocked on an empty channel whose producer is attached but silent."""
    topo = Topology("p2p", msg_size=SMALL, depth=64)
    ctx = in_time(params.deadline, peer.setup, topo)
    try:
        barrier, stop = MP.Barrier(2), MP.Event()
        args = (peer, ctx, topo, barrier, stop, params.idle_seconds)
        results = run_parties(
            [(loops.idle_consumer, args), (loops.idle_producer, args)],
            params.deadline + params.idle_seconds,
        )
    finally:
        in_time(params.deadline, peer.teardown, ctx)
    return results[0]


def _stream(
    id: str,
    group: str,
    title: str,
    metrics: tuple[Metric, ...],
    topo: Topology,
    mode: str,
    msg_bytes: int,
) -> Bench:
    """A bench measured by :func:`run_stream`."""

    def run(peer: Peer, params: Params) -> dict[str, float]:
        return run_stream(peer, params, topo, mode, msg_bytes)

    return Bench(id, group, title, metrics, run, topo)


MSGS = Metric("msgs_s", "msgs/s", "msgs/s")
AGG = Metric("msgs_s", "aggregate msgs/s", "msgs/s")
GBS = Metric("gb_s", "GB/s", "GB/s")
P2P_SMALL = Topology("p2p", msg_size=SMALL, depth=4096, batch=BATCH)
P2P_LARGE = Topology("p2p", msg_size=LARGE, depth=16)
LATENCY = tuple(
    Metric(key, f"{label} µs", "µs", higher_is_better=False)
    for key, label in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"))
)

BENCHES: tuple[Bench, ...] = (
    _stream("small", "1", "64 B messages, one per call", (MSGS,), P2P_SMALL, "bytes", SMALL),
    _stream(
        "small_batch",
        "1",
        f"64 B messages, batched ({BATCH} per call)",
        (MSGS,),
        P2P_SMALL,
        "batch",
        SMALL,
    ),
    _stream("large", "2", "1 MiB messages, copied out", (GBS,), P2P_LARGE, "bytes", LARGE),
    _stream(
        "large_view",
        "2",
        "1 MiB messages, read in place (consumer touches the last byte)",
        (GBS,),
        P2P_LARGE,
        "view",
        LARGE,
    ),
    Bench(
        "pingpong",
        "3",
        "ping-pong round trip, 64 B each way (µs, lower is better)",
        LATENCY,
        run_pingpong,
    ),
    _stream(
        "fanout",
        "4",
        f"fan-out 1→{FAN}, 64 B, every consumer gets every message",
        (AGG,),
        Topology("fanout", 1, FAN, SMALL, 4096),
        "bytes",
        SMALL,
    ),
    _stream(
        "fanin",
        "4",
        f"fan-in {FAN}→1, 64 B",
        (AGG,),
        Topology("fanin", FAN, 1, SMALL, 4096),
        "bytes",
        SMALL,
    ),
    _stream(
        "workqueue",
        "4",
        f"work queue 1→{FAN}, 64 B, each message to one consumer",
        (AGG,),
        Topology("workqueue", 1, FAN, SMALL, 4096),
        "bytes",
        SMALL,
    ),
    _stream(
        "obj_dict",
        "5",
        'Python objects: {"id": i, "name": "x", "vals": [1, 2, 3]}',
        (MSGS,),
        Topology("p2p", msg_size=256, depth=4096),
        "obj_dict",
        0,
    ),
    _stream(
        "obj_numpy",
        "5",
        "Python objects: 8 MiB numpy float64 array",
        (Metric("msgs_s", "arrays/s", "arrays/s"), Metric("gb_s", "GB/s", "GB/s", ratio=False)),
        Topology("p2p", msg_size=ARRAY_BYTES + 4096, depth=4),
        "obj_array",
        ARRAY_BYTES,
    ),
    Bench(
        "idle",
        "6",
        "idle consumer blocked on an empty channel (% of one core, lower is better)",
        (Metric("cpu_pct", "CPU %", "%", higher_is_better=False),),
        run_idle,
    ),
)


def select(only: str | None) -> list[Bench]:
    """Benches named by ``--only``: ids (``small,pingpong``) or group numbers (``1,3``)."""
    if not only:
        return list(BENCHES)
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    known = {b.id for b in BENCHES} | {b.group for b in BENCHES}
    if unknown := wanted - known:
        raise SystemExit(
            f"unknown workload(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    return [b for b in BENCHES if b.id in wanted or b.group in wanted]


def measure(bench: Bench, peer: Peer, params: Params) -> dict[str, float]:
    """One measurement of ``peer`` on ``bench``."""
    if peer.in_process:
        ring = buffer_bytes(bench.topo) if bench.topo else 0
        return peer.measure(bench.id, params.duration, ring)
    return bench.run(peer, params)
