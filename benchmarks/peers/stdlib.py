"""multiprocessing.Queue and multiprocessing.Pipe."""

from __future__ import annotations

import contextlib
import queue
from typing import Any, ClassVar

from ..procs import MP
from .base import Peer, Receiver, Sender, Topology

_NO_BROADCAST = "no broadcast: each item goes to exactly one consumer"


class _QueueSender(Sender):
    def __init__(self, q: Any) -> None:
        self.send = self.send_obj = q.put  # put() pickles whatever it gets
        self._q = q

    def close(self) -> None:
        self._q.close()  # the feeder thread still flushes before the process exits


class _QueueReceiver(Receiver):
    def __init__(self, q: Any) -> None:
        self.recv = self.recv_obj = q.get
        self._q = q

    def wait_idle(self, seconds: float) -> None:
        with contextlib.suppress(queue.Empty):
            self._q.get(timeout=seconds)


class MpQueue(Peer):
    """``multiprocessing.Queue(maxsize=depth)``: pickle + pipe + feeder thread."""

    name = "mp_queue"
    label = "multiprocessing.Queue"
    unsupported: ClassVar[dict[str, str]] = {
        "small_batch": "no batch API",
        "large_view": "get() returns an unpickled copy",
        "fanout": _NO_BROADCAST,
    }

    def setup(self, topo: Topology) -> Any:
        return MP.Queue(maxsize=topo.depth)

    def teardown(self, ctx: Any) -> None:
        ctx.close()
        ctx.cancel_join_thread()

    def sender(self, ctx: Any, topo: Topology, index: int) -> Sender:
        return _QueueSender(ctx)

    def receiver(self, ctx: Any, topo: Topology, index: int) -> Receiver:
        return _QueueReceiver(ctx)


class _PipeSender(Sender):
    def __init__(self, conn: Any) -> None:
        self.send = conn.send_bytes
        self.send_obj = conn.send


class _PipeReceiver(Receiver):
    def __init__(self, conn: Any) -> None:
        self.recv = conn.recv_bytes
        self.recv_obj = conn.recv
        self._conn = conn

    def wait_idle(self, seconds: float) -> None:
        self._conn.poll(seconds)


class MpPipe(Peer):
    """``multiprocessing.Pipe``: send_bytes/recv_bytes, send/recv for objects."""

    name = "mp_pipe"
    label = "multiprocessing.Pipe"
    _P2P = "point-to-point only (would need one Pipe per pair)"
    unsupported: ClassVar[dict[str, str]] = {
        "small_batch": "no batch API",
        "large_view": "recv_bytes() returns a copy",
        "fanout": _P2P,
        "fanin": _P2P,
        "workqueue": _P2P,
    }
    notes: ClassVar[dict[str, str]] = {"pingpong": "one duplex Pipe"}

    def setup(self, topo: Topology) -> Any:
        return MP.Pipe(duplex=False)  # (reader, writer)

    def teardown(self, ctx: Any) -> None:
        for conn in ctx:
            conn.close()

    def sender(self, ctx: Any, topo: Topology, index: int) -> Sender:
        return _PipeSender(ctx[1])

    def receiver(self, ctx: Any, topo: Topology, index: int) -> Receiver:
        return _PipeReceiver(ctx[0])

    def pair_setup(self, topo: Topology) -> Any:
        return MP.Pipe(duplex=True)

    def pair_teardown(self, ctx: Any) -> None:
        self.teardown(ctx)

    def pair_end(self, ctx: Any, topo: Topology, side: int) -> tuple[Sender, Receiver]:
        return _PipeSender(ctx[side]), _PipeReceiver(ctx[side])
