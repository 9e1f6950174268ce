"""The workloads: what each table measures and how one measurement is run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import loops
from .params import ARRAY_BYTES, BATCH, FAN, LARGE, SMALL, Params
from .peers.base import Peer, Topology
from .procs import MP, run_parties


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


def run_stream(
    peer: Peer, params: Params, topo: Topology, mode: str, msg_bytes: int
) -> dict[str, float]:
    """Producers send for ``params.duration``; rate = received / (last end - first start)."""
    ctx = peer.setup(topo)
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
        peer.teardown(ctx)
    cons, prods = results[: topo.consumers], results[topo.consumers :]
    sent = sum(p["sent"] for p in prods)
    got = sum(c["n"] for c in cons)
    expected = sent * topo.consumers if topo.kind == "fanout" else sent
    if got != expected:
        raise RuntimeError(f"expected {expected} messages, received {got}")
    rate = got / (max(c["t1"] for c in cons) - min(p["t0"] for p in prods))
    return {"msgs_s": rate, "gb_s": rate * msg_bytes / 1e9}


def run_pingpong(peer: Peer, params: Params) -> dict[str, float]:
    """One pinger, one ponger, 64 B each way."""
    topo = Topology("p2p", msg_size=SMALL, depth=64)
    ctx = peer.pair_setup(topo)
    try:
        barrier = MP.Barrier(2)
        results = run_parties(
            [
                (loops.ponger, (peer, ctx, topo, barrier)),
                (loops.pinger, (peer, ctx, topo, barrier, params.duration)),
            ],
            params.deadline + params.duration,
        )
    finally:
        peer.pair_teardown(ctx)
    return results[1]


def run_idle(peer: Peer, params: Params) -> dict[str, float]:
    """A consumer blocked on an empty channel whose producer is attached but silent."""
    topo = Topology("p2p", msg_size=SMALL, depth=64)
    ctx = peer.setup(topo)
    try:
        barrier, stop = MP.Barrier(2), MP.Event()
        args = (peer, ctx, topo, barrier, stop, params.idle_seconds)
        results = run_parties(
            [(loops.idle_consumer, args), (loops.idle_producer, args)],
            params.deadline + params.idle_seconds,
        )
    finally:
        peer.teardown(ctx)
    return results[0]


def _stream(
    topo: Topology, mode: str, msg_bytes: int
) -> Callable[[Peer, Params], dict[str, float]]:
    return lambda peer, params: run_stream(peer, params, topo, mode, msg_bytes)


MSGS = Metric("msgs_s", "msgs/s", "msgs/s")
AGG = Metric("msgs_s", "aggregate msgs/s", "msgs/s")
GBS = Metric("gb_s", "GB/s", "GB/s")
p2p_small = Topology("p2p", msg_size=SMALL, depth=4096, batch=BATCH)
p2p_large = Topology("p2p", msg_size=LARGE, depth=16)

BENCHES: tuple[Bench, ...] = (
    Bench("small", "1", "64 B messages, one per call", (MSGS,), _stream(p2p_small, "bytes", SMALL)),
    Bench(
        "small_batch",
        "1",
        f"64 B messages, batched ({BATCH} per call)",
        (MSGS,),
        _stream(p2p_small, "batch", SMALL),
    ),
    Bench("large", "2", "1 MiB messages, copied out", (GBS,), _stream(p2p_large, "bytes", LARGE)),
    Bench(
        "large_view",
        "2",
        "1 MiB messages, read in place (consumer touches the last byte)",
        (GBS,),
        _stream(p2p_large, "view", LARGE),
    ),
    Bench(
        "pingpong",
        "3",
        "ping-pong round trip, 64 B each way (µs, lower is better)",
        (
            Metric("p50_us", "p50 µs", "µs", higher_is_better=False),
            Metric("p99_us", "p99 µs", "µs", higher_is_better=False),
            Metric("p999_us", "p99.9 µs", "µs", higher_is_better=False),
        ),
        run_pingpong,
    ),
    Bench(
        "fanout",
        "4",
        f"fan-out 1→{FAN}, 64 B, every consumer gets every message",
        (AGG,),
        _stream(Topology("fanout", 1, FAN, SMALL, 4096), "bytes", SMALL),
    ),
    Bench(
        "fanin",
        "4",
        f"fan-in {FAN}→1, 64 B",
        (AGG,),
        _stream(Topology("fanin", FAN, 1, SMALL, 4096), "bytes", SMALL),
    ),
    Bench(
        "workqueue",
        "4",
        f"work queue 1→{FAN}, 64 B, each message to one consumer",
        (AGG,),
        _stream(Topology("workqueue", 1, FAN, SMALL, 4096), "bytes", SMALL),
    ),
    Bench(
        "obj_dict",
        "5",
        'Python objects: {"id": i, "name": "x", "vals": [1, 2, 3]}',
        (MSGS,),
        _stream(Topology("p2p", msg_size=256, depth=4096), "obj_dict", 0),
    ),
    Bench(
        "obj_numpy",
        "5",
        "Python objects: 8 MiB numpy float64 array",
        (Metric("msgs_s", "arrays/s", "arrays/s"), Metric("gb_s", "GB/s", "GB/s", ratio=False)),
        _stream(Topology("p2p", msg_size=ARRAY_BYTES + 4096, depth=4), "obj_array", ARRAY_BYTES),
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
        return peer.measure(bench.id, params.quick, params.duration)
    return bench.run(peer, params)
