"""pyzmq over ipc:// (a Unix socket in a private temporary directory).

p2p and fan-in: PUSH -> PULL; fan-out: XPUB (no-drop) -> SUB; work queue:
PUSH (bind) -> PULL x N; ping-pong: one PAIR. The binding side sets an
event before the others connect, and a fan-out or work-queue producer waits
until every consumer is connected, so no message is sent into the void.
Producers keep their socket open until every consumer has finished (see
``loops._finish``): a PULL drops what it still holds from a peer that left.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, ClassVar

from ..procs import MP
from .base import Peer, Receiver, Sender, Topology

CONNECT_TIMEOUT = 10.0
LINGER_MS = 5000  # a producer's close waits this long for queued messages to leave


def _hwm(topo: Topology) -> int:
    return max(2, topo.depth)


class _End:
    """Owns one socket and its context."""

    def __init__(
        self, ctx: dict[str, Any], sock_type: int, topo: Topology, bind: bool, monitor: bool = False
    ) -> None:
        import zmq

        self._zctx = zmq.Context()
        self.sock = self._zctx.socket(sock_type)
        self.sock.setsockopt(zmq.SNDHWM, _hwm(topo))
        self.sock.setsockopt(zmq.RCVHWM, _hwm(topo))
        self.sock.setsockopt(zmq.LINGER, LINGER_MS)
        if sock_type == zmq.XPUB:
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)  # block instead of dropping at HWM
            self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscription
        if monitor:  # before bind, so that no connection is missed
            self._mon = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            self._mon.setsockopt(zmq.RCVTIMEO, int(CONNECT_TIMEOUT * 1000))
        if bind:
            self.sock.bind(ctx["endpoint"])
            ctx["bound"].set()
        else:
            if not ctx["bound"].wait(CONNECT_TIMEOUT):
                raise TimeoutError("zmq: binder never bound")
            self.sock.connect(ctx["endpoint"])
            if sock_type == zmq.SUB:
                self.sock.setsockopt(zmq.SUBSCRIBE, b"")

    def wait_subscribers(self, count: int) -> None:
        """XPUB: wait for ``count`` subscription messages."""
        import zmq

        self.sock.setsockopt(zmq.RCVTIMEO, int(CONNECT_TIMEOUT * 1000))
        for _ in range(count):
            self.sock.recv()

    def wait_handshakes(self, count: int) -> None:
        """Bound PUSH: wait until ``count`` peers have completed the ZMTP handshake."""
        from zmq.utils.monitor import recv_monitor_message

        try:
            for _ in range(count):
                recv_monitor_message(self._mon)
        finally:
            self.sock.disable_monitor()
            self._mon.close(0)

    def close_end(self) -> None:
        self.sock.close()
        self._zctx.term()


class _Sender(Sender, _End):
    def __init__(
        self, ctx: dict[str, Any], sock_type: int, topo: Topology, bind: bool, monitor: bool = False
    ) -> None:
        _End.__init__(self, ctx, sock_type, topo, bind, monitor)
        self.send = self.sock.send
        self.send_obj = self.sock.send_pyobj

    def close(self) -> None:
        self.close_end()


class _Receiver(Receiver, _End):
    def __init__(self, ctx: dict[str, Any], sock_type: int, topo: Topology, bind: bool) -> None:
        _End.__init__(self, ctx, sock_type, topo, bind)
        self.recv = self.sock.recv
        self.recv_obj = self.sock.recv_pyobj

    def wait_idle(self, seconds: float) -> None:
        self.sock.poll(int(seconds * 1000))

    def close(self) -> None:
        self.sock.close(linger=0)  # nothing of ours is queued
        self._zctx.term()


class _PairEnd(_Sender, _Receiver):
    """Both directions of a ping-pong on one PAIR socket."""

    def __init__(self, ctx: dict[str, Any], topo: Topology, bind: bool) -> None:
        import zmq

        _Sender.__init__(self, ctx, zmq.PAIR, topo, bind)
        self.recv = self.sock.recv
        self.recv_obj = self.sock.recv_pyobj

    def close(self) -> None:
        _Sender.close(self)


class Zmq(Peer):
    """ZeroMQ sockets over ipc://."""

    name = "zmq"
    label = "pyzmq ipc://"
    unsupported: ClassVar[dict[str, str]] = {
        "small_batch": "no batch API (a multipart message is one message)",
        "large_view": "data crosses a socket: no shared buffer to read in place",
    }
    notes: ClassVar[dict[str, str]] = {
        "small": "PUSH/PULL",
        "large": "PUSH/PULL",
        "pingpong": "one PAIR",
        "fanout": "XPUB(NODROP)/SUB",
        "fanin": "4 PUSH -> PULL",
        "workqueue": "PUSH -> 4 PULL",
        "obj_dict": "send_pyobj",
        "obj_numpy": "send_pyobj",
    }

    def check(self) -> str | None:
        try:
            import zmq  # noqa: F401
        except ImportError as exc:
            return f"not installed ({exc})"
        return None

    def version(self) -> str:
        import zmq

        return f"{zmq.__version__} (libzmq {zmq.zmq_version()})"

    def setup(self, topo: Topology) -> Any:
        tmp = tempfile.mkdtemp(prefix="shmbench-zmq-")
        return {"dir": tmp, "endpoint": f"ipc://{tmp}/sock", "bound": MP.Event()}

    def teardown(self, ctx: Any) -> None:
        shutil.rmtree(ctx["dir"], ignore_errors=True)

    def sender(self, ctx: Any, topo: Topology, index: int) -> Sender:
        import zmq

        if topo.kind == "fanout":
            end = _Sender(ctx, zmq.XPUB, topo, bind=True)
            end.wait_subscribers(topo.consumers)
        elif topo.kind == "workqueue":
            end = _Sender(ctx, zmq.PUSH, topo, bind=True, monitor=True)
            end.wait_handshakes(topo.consumers)
        else:
            end = _Sender(ctx, zmq.PUSH, topo, bind=False)
        return end

    def receiver(self, ctx: Any, topo: Topology, index: int) -> Receiver:
        import zmq

        if topo.kind == "fanout":
            return _Receiver(ctx, zmq.SUB, topo, bind=False)
        if topo.kind == "workqueue":
            return _Receiver(ctx, zmq.PULL, topo, bind=False)
        return _Receiver(ctx, zmq.PULL, topo, bind=True)

    def pair_setup(self, topo: Topology) -> Any:
        return self.setup(topo)

    def pair_teardown(self, ctx: Any) -> None:
        self.teardown(ctx)

    def pair_end(self, ctx: Any, topo: Topology, side: int) -> tuple[Sender, Receiver]:
        end = _PairEnd(ctx, topo, bind=side == 0)
        return end, end
