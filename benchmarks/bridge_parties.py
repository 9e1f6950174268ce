"""The processes of the bridge benchmark: bridged producers and consumers,
and raw pyzmq ones over TCP on loopback.

Each function is the body of one forked process (``procs.run_parties``).
A stream's producer builds its messages first, sends one warm-up message,
and meets its consumer at a barrier once that warm-up message has arrived
(the path is connected and hot); the producer's clock starts at its first
send after the barrier, the consumer's stops at its last receive. Message
``i`` of a run starts with ``base + i`` (8 bytes, little-endian) and every
consumer checks every message's number, in order, then that nothing more
arrives within :data:`QUIET` seconds: a message lost, duplicated or
reordered fails the run.
"""

from __future__ import annotations

import statistics
import time
from threading import Barrier
from typing import Any

import shmring

#: Records per call of the batched modes.
BATCH = 256
#: Seconds any single wait may take before the run fails.
WAIT = 60.0
#: Seconds a consumer waits, after the last message, for one too many.
QUIET = 0.2
#: The warm-up message's number.
WARM = (1 << 64) - 1


def messages(base: int, n: int, size: int) -> list[bytes]:
    """``n`` messages of ``size`` bytes numbered from ``base``."""
    pad = bytes(size - 8)
    return [(base + i).to_bytes(8, "little") + pad for i in range(n)]


def _warm(size: int) -> bytes:
    return WARM.to_bytes(8, "little") + bytes(size - 8)


def _wrong(got: bytes | memoryview, want: int) -> RuntimeError:
    return RuntimeError(f"expected message {want}, got {int.from_bytes(got[:8], 'little')}"
                        " (lost, duplicated or out of order)")


def _percentiles(ns: list[int]) -> dict[str, Any]:
    ns.sort()
    return {"p50_us": statistics.median(ns) / 1e3,
            "p99_us": ns[min(len(ns) - 1, int(len(ns) * 0.99))] / 1e3, "got": len(ns)}


# ------------------------------------------------------------ bridged --
def bridged_producer(ns: str, name: str, n: int, base: int, mode: str, size: int,
                     barrier: Barrier) -> dict[str, Any]:
    """Send ``n`` messages on ``name`` in namespace ``ns``: ``one`` per
    ``send``, ``many`` (``send_many``, :data:`BATCH` per call) or ``claim``
    (each written in place, for large messages)."""
    ch = shmring.Channel.open(name, namespace=ns)
    tx = ch.producer()
    msgs = messages(base, n, size) if mode != "claim" else []
    body = memoryview(bytes(size))[8:]
    tx.send(_warm(size), timeout=WAIT)
    barrier.wait(WAIT)
    t0 = time.perf_counter()
    if mode == "one":
        send = tx.send
        for m in msgs:
            send(m, WAIT)
    elif mode == "many":
        send_many = tx.send_many
        for i in range(0, n, BATCH):
            send_many(msgs[i:i + BATCH], WAIT)
    else:
        for i in range(n):
            with tx.claim(size, WAIT) as buf:
                buf[8:] = body
                buf[:8] = (base + i).to_bytes(8, "little")
    tx.close()
    ch.close()
    return {"t0": t0}


def bridged_consumer(ns: str, name: str, n: int, base: int, mode: str, size: int,
                     barrier: Barrier) -> dict[str, Any]:
    """Receive and check ``n`` messages: ``one`` per ``recv``, ``many``
    (``recv_many``, up to :data:`BATCH` per call) or ``view`` (each read in
    place with ``recv_view``: length, number and last byte)."""
    ch = shmring.Channel.open(name, namespace=ns)
    rx = ch.consumer()
    if rx.recv(timeout=WAIT) != _warm(size):
        raise RuntimeError("the first message was not the warm-up message")
    barrier.wait(WAIT)
    want, end = base, base + n
    if mode == "one":
        recv = rx.recv
        while want < end:
            m = recv(WAIT)
            if int.from_bytes(m[:8], "little") != want:
                raise _wrong(m, want)
            want += 1
    elif mode == "many":
        recv_many = rx.recv_many
        while want < end:
            for m in recv_many(BATCH, WAIT):
                if int.from_bytes(m[:8], "little") != want:
                    raise _wrong(m, want)
                want += 1
    else:
        while want < end:
            with rx.recv_view(WAIT) as v:
                if len(v) != size or int.from_bytes(v[:8], "little") != want or v[-1] != 0:
                    raise _wrong(bytes(v[:8]), want)
            want += 1
    t1 = time.perf_counter()
    try:
        extra = rx.recv(timeout=QUIET)
    except shmring.Timeout:
        pass
    else:
        raise RuntimeError(f"one message too many: {int.from_bytes(extra[:8], 'little')}")
    rx.close()
    ch.close()
    return {"t1": t1, "got": want - base}


def bridged_echo(ns: str, total: int, size: int, barrier: Barrier) -> dict[str, Any]:
    """Side a of the round trip: each message read from ``ping`` is sent
    back on ``pong``."""
    ping = shmring.Channel.open("ping", namespace=ns)
    pong = shmring.Channel.open("pong", namespace=ns)
    rx, tx = ping.consumer(), pong.producer()
    barrier.wait(WAIT)
    recv, send = rx.recv, tx.send
    for _ in range(total):
        send(recv(WAIT), WAIT)
    rx.close()
    tx.close()
    ping.close()
    pong.close()
    return {}


def bridged_pinger(ns: str, n: int, warmup: int, base: int, size: int,
                   barrier: Barrier) -> dict[str, Any]:
    """Side b of the round trip: ``warmup`` then ``n`` timed round trips
    (``send`` on ``ping``, ``recv`` of the answer on ``pong``)."""
    ping = shmring.Channel.open("ping", namespace=ns)
    pong = shmring.Channel.open("pong", namespace=ns)
    tx, rx = ping.producer(), pong.consumer()
    msgs = messages(base, warmup + n, size)
    barrier.wait(WAIT)
    send, recv, clock = tx.send, rx.recv, time.perf_counter_ns
    rtt: list[int] = []
    for i, m in enumerate(msgs):
        t = clock()
        send(m, WAIT)
        r = recv(WAIT)
        dt = clock() - t
        if r != m:
            raise _wrong(r, base + i)
        if i >= warmup:
            rtt.append(dt)
    try:
        extra = rx.recv(timeout=QUIET)
    except shmring.Timeout:
        pass
    else:
        raise RuntimeError(f"one answer too many: {int.from_bytes(extra[:8], 'little')}")
    tx.close()
    rx.close()
    ping.close()
    pong.close()
    return _percentiles(rtt)


# ---------------------------------------------------------- raw pyzmq --
def _zsock(kind: str, port: int, bind: bool, hwm: int) -> tuple[Any, Any]:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(getattr(zmq, kind))
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.RCVHWM, hwm)
    url = f"tcp://127.0.0.1:{port}"
    if bind:
        s.bind(url)
    else:
        s.connect(url)
    return ctx, s


def zmq_producer(port: int, n: int, base: int, mode: str, size: int, hwm: int,
                 barrier: Barrier) -> dict[str, Any]:
    """PUSH ``n`` messages to ``tcp://127.0.0.1:port``: ``one`` per
    ``send``, ``multipart`` (:data:`BATCH` frames per ``send_multipart``),
    ``packed`` (:data:`BATCH` messages joined into one frame) or ``large``
    (a number frame and the payload, ``copy=False``)."""
    ctx, s = _zsock("PUSH", port, False, hwm)
    msgs = messages(base, n, size) if mode != "large" else []
    body = bytes(size)
    s.send(_warm(size))
    barrier.wait(WAIT)
    t0 = time.perf_counter()
    if mode == "one":
        send = s.send
        for m in msgs:
            send(m)
    elif mode == "multipart":
        for i in range(0, n, BATCH):
            s.send_multipart(msgs[i:i + BATCH])
    elif mode == "packed":
        join, send = b"".join, s.send
        for i in range(0, n, BATCH):
            send(join(msgs[i:i + BATCH]))
    else:
        for i in range(n):
            s.send_multipart([(base + i).to_bytes(8, "little"), body], copy=False)
    s.close(linger=int(WAIT * 1000))  # returns once everything is handed to the socket
    ctx.term()
    return {"t0": t0}


def zmq_consumer(port: int, n: int, base: int, mode: str, size: int, hwm: int,
                 barrier: Barrier) -> dict[str, Any]:
    """PULL and check ``n`` messages (``mode`` as :func:`zmq_producer`; a
    packed frame is cut back into ``bytes`` messages; a large message is read
    in place, ``copy=False``: length, number and last byte)."""
    import zmq

    ctx, s = _zsock("PULL", port, True, hwm)
    s.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    if s.recv() != _warm(size):
        raise RuntimeError("the first message was not the warm-up message")
    barrier.wait(WAIT)
    want, end = base, base + n
    if mode == "one":
        recv = s.recv
        while want < end:
            m = recv()
            if int.from_bytes(m[:8], "little") != want:
                raise _wrong(m, want)
            want += 1
    elif mode in ("multipart", "packed"):
        while want < end:
            if mode == "multipart":
                batch = s.recv_multipart()
            else:
                buf = s.recv()
                batch = [buf[j:j + size] for j in range(0, len(buf), size)]
            for m in batch:
                if int.from_bytes(m[:8], "little") != want:
                    raise _wrong(m, want)
                want += 1
    else:
        while want < end:
            head, frame = s.recv_multipart(copy=False)
            v = frame.buffer
            if len(v) != size or int.from_bytes(head.bytes, "little") != want or v[-1] != 0:
                raise _wrong(head.bytes, want)
            want += 1
    t1 = time.perf_counter()
    if s.poll(int(QUIET * 1000)):
        raise RuntimeError("one message too many")
    s.close()
    ctx.term()
    return {"t1": t1, "got": want - base}


def zmq_echo(port: int, total: int, size: int, barrier: Barrier) -> dict[str, Any]:
    """REP on ``port``: answer each request with itself."""
    import zmq

    ctx, s = _zsock("REP", port, True, 1000)
    s.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    barrier.wait(WAIT)
    recv, send = s.recv, s.send
    for _ in range(total):
        send(recv())
    s.close()
    ctx.term()
    return {}


def zmq_pinger(port: int, n: int, warmup: int, base: int, size: int,
               barrier: Barrier) -> dict[str, Any]:
    """REQ to ``port``: ``warmup`` then ``n`` timed round trips."""
    import zmq

    ctx, s = _zsock("REQ", port, False, 1000)
    s.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    msgs = messages(base, warmup + n, size)
    barrier.wait(WAIT)
    send, recv, clock = s.send, s.recv, time.perf_counter_ns
    rtt: list[int] = []
    for i, m in enumerate(msgs):
        t = clock()
        send(m)
        r = recv()
        dt = clock() - t
        if r != m:
            raise _wrong(r, base + i)
        if i >= warmup:
            rtt.append(dt)
    s.close()
    ctx.term()
    return _percentiles(rtt)
