"""What runs inside the child processes: the timed send, receive, ping and idle loops.

Producers send for a fixed duration (checking the clock every ``chunk``
messages), then mark the end of their stream; consumers count until they see
it. Timestamps are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux), so the
parent can compare the producer's start with the consumers' ends.
"""

from __future__ import annotations

import os
import resource
import time
from array import array
from collections.abc import Callable
from typing import Any

from .params import ARRAY_BYTES
from .peers.base import Peer, Receiver, Sender, Topology

SYNC_TIMEOUT = 20.0  # barrier waits and end-of-stream handshakes
WARMUP_ROUND_TRIPS = 200
perf_counter = time.perf_counter


def payload(size: int) -> bytes:
    """A message of ``size`` bytes."""
    return b"\xa5" * size


# --- producers -------------------------------------------------------------


def _send_bytes(tx: Sender, topo: Topology, end: float) -> int:
    send, msg = tx.send, payload(topo.msg_size)
    chunk = 256 if topo.msg_size <= 4096 else 1
    sent = 0
    while True:
        for _ in range(chunk):
            send(msg)
        sent += chunk
        if perf_counter() >= end:
            return sent


def _send_batch(tx: Sender, topo: Topology, end: float) -> int:
    assert tx.send_many is not None
    send_many, batch = tx.send_many, [payload(topo.msg_size)] * topo.batch
    sent = 0
    while True:
        for _ in range(4):
            send_many(batch)
        sent += 4 * topo.batch
        if perf_counter() >= end:
            return sent


def _send_dicts(tx: Sender, topo: Topology, end: float) -> int:
    send_obj, i = tx.send_obj, 0
    while True:
        for _ in range(64):
            send_obj({"id": i, "name": "x", "vals": [1, 2, 3]})
            i += 1
        if perf_counter() >= end:
            return i


def _send_arrays(tx: Sender, topo: Topology, end: float) -> int:
    import numpy as np

    send_obj, arr = tx.send_obj, np.ones(ARRAY_BYTES // 8, dtype=np.float64)
    sent = 0
    while True:
        send_obj(arr)
        sent += 1
        if perf_counter() >= end:
            return sent


SEND: dict[str, Callable[[Sender, Topology, float], int]] = {
    "bytes": _send_bytes,
    "batch": _send_batch,
    "view": _send_bytes,
    "obj_dict": _send_dicts,
    "obj_array": _send_arrays,
}


def _finish(tx: Sender, topo: Topology, done: Any, objects: bool) -> None:
    """End this producer's stream, then wait until every consumer has stopped.

    Waiting keeps the producer's end open until all was received: a zmq PULL
    drops what is still queued from a peer that disconnects. Work queues: every
    consumer must get a marker, and with per-consumer pipes (zmq PUSH) one may
    receive two and another none, so markers are re-sent until all have stopped.
    """
    workqueue = topo.kind == "workqueue"
    tx.finish(topo.consumers if workqueue else 1, objects)
    give_up = perf_counter() + SYNC_TIMEOUT
    resend = perf_counter() + 0.2
    while done.value < topo.consumers:
        now = perf_counter()
        if now > give_up:
            raise TimeoutError("consumers never stopped")
        if workqueue and now > resend:
            tx.finish(topo.consumers - done.value, objects)
            resend = now + 0.2
        time.sleep(0.001)


def producer(
    peer: Peer,
    ctx: Any,
    topo: Topology,
    index: int,
    mode: str,
    barrier: Any,
    done: Any,
    duration: float,
) -> dict[str, Any]:
    """Send for ``duration`` seconds after the barrier; report start time and count."""
    tx = peer.sender(ctx, topo, index)
    try:
        barrier.wait(SYNC_TIMEOUT)
        t0 = perf_counter()
        sent = SEND[mode](tx, topo, t0 + duration)
        _finish(tx, topo, done, objects=mode.startswith("obj"))
    finally:
        tx.close()
    return {"t0": t0, "sent": sent}


# --- consumers -------------------------------------------------------------


def _recv_bytes(rx: Receiver, ends: int) -> int:
    recv, got = rx.recv, 0
    try:
        while True:
            if len(recv()) == 1:
                ends -= 1
                if not ends:
                    break
            else:
                got += 1
    except rx.eos:
        pass
    return got


def _recv_batch(rx: Receiver, ends: int) -> int:
    assert rx.recv_many is not None
    recv_many, got = rx.recv_many, 0
    try:
        while True:
            msgs = recv_many()
            got += len(msgs)
            if msgs and len(msgs[-1]) == 1:  # one producer: its marker comes last
                got -= 1
                break
    except rx.eos:
        pass
    return got


def _recv_view(rx: Receiver, ends: int) -> int:
    assert rx.recv_view is not None
    recv_view, got = rx.recv_view, 0
    try:
        while True:
            with recv_view() as view:
                size = len(view)
                view[size - 1]  # read in place: touch the data, copy nothing
            if size == 1:
                break
            got += 1
    except rx.eos:
        pass
    return got


def _recv_objs(rx: Receiver, ends: int) -> int:
    recv_obj, got = rx.recv_obj, 0
    try:
        while True:
            if recv_obj() is None:
                ends -= 1
                if not ends:
                    break
            else:
                got += 1
    except rx.eos:
        pass
    return got


RECV: dict[str, Callable[[Receiver, int], int]] = {
    "bytes": _recv_bytes,
    "batch": _recv_batch,
    "view": _recv_view,
    "obj_dict": _recv_objs,
    "obj_array": _recv_objs,
}


def consumer(
    peer: Peer, ctx: Any, topo: Topology, index: int, mode: str, barrier: Any, done: Any
) -> dict[str, Any]:
    """Receive until the end of the stream; report the end time and count."""
    rx = peer.receiver(ctx, topo, index)
    try:
        barrier.wait(SYNC_TIMEOUT)
        got = RECV[mode](rx, topo.producers if topo.kind == "fanin" else 1)
        t1 = perf_counter()
        with done.get_lock():
            done.value += 1
    finally:
        rx.close()
    return {"t1": t1, "n": got}


# --- ping-pong ---------------------------------------------------------------


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in µs."""
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] / 1e3


def pinger(
    peer: Peer, ctx: Any, topo: Topology, barrier: Any, duration: float, cpu: int | None
) -> dict[str, Any]:
    """Time round trips for ``duration`` seconds; report p50/p99/p99.9 in µs."""
    _pin(cpu)
    tx, rx = peer.pair_end(ctx, topo, 0)
    try:
        barrier.wait(SYNC_TIMEOUT)
        send, recv, clock, msg = tx.send, rx.recv, time.perf_counter_ns, payload(topo.msg_size)
        for _ in range(WARMUP_ROUND_TRIPS):
            send(msg)
            recv()
        samples = array("q")
        append, end = samples.append, clock() + int(duration * 1e9)
        while True:
            t0 = clock()
            send(msg)
            recv()
            t1 = clock()
            append(t1 - t0)
            if t1 >= end:
                break
        tx.finish(1, objects=False)
    finally:
        _close_pair(tx, rx)
    ordered = sorted(samples)
    return {
        "p50_us": _percentile(ordered, 50),
        "p99_us": _percentile(ordered, 99),
        "p999_us": _percentile(ordered, 99.9),
        "round_trips": len(ordered),
    }


def ponger(peer: Peer, ctx: Any, topo: Topology, barrier: Any, cpu: int | None) -> dict[str, Any]:
    """Echo every message until the end marker."""
    _pin(cpu)
    tx, rx = peer.pair_end(ctx, topo, 1)
    try:
        barrier.wait(SYNC_TIMEOUT)
        send, recv = tx.send, rx.recv
        try:
            while True:
                msg = recv()
                if len(msg) == 1:
                    break
                send(msg)
        except rx.eos:
            pass
    finally:
        _close_pair(tx, rx)
    return {}


def _close_pair(tx: Sender, rx: Receiver) -> None:
    tx.close()
    if rx is not tx:
        rx.close()


# --- idle ------------------------------------------------------------------


def idle_consumer(
    peer: Peer, ctx: Any, topo: Topology, barrier: Any, stop: Any, seconds: float
) -> dict[str, Any]:
    """Block ``seconds`` on the empty channel; report this process's CPU use (all threads)."""
    rx = peer.receiver(ctx, topo, 0)
    try:
        rx.prepare_idle()
        barrier.wait(SYNC_TIMEOUT)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), perf_counter()
        rx.wait_idle(seconds)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), perf_counter()
    finally:
        stop.set()
        rx.close()
    if t1 - t0 < 0.9 * seconds:
        raise RuntimeError(f"wait returned after {t1 - t0:.3f} s instead of {seconds} s")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"cpu_pct": 100.0 * cpu / (t1 - t0)}


def idle_producer(
    peer: Peer, ctx: Any, topo: Topology, barrier: Any, stop: Any, seconds: float
) -> dict[str, Any]:
    """Hold the producer end open, sending nothing, while the consumer idles."""
    tx = peer.sender(ctx, topo, 0)
    try:
        barrier.wait(SYNC_TIMEOUT)
        stop.wait(seconds + SYNC_TIMEOUT)
    finally:
        tx.close()
    return {}
