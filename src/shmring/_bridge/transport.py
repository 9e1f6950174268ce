"""The transport: a ZeroMQ socket and the one thread that owns it.

ZeroMQ sockets must not be used by two threads at once, and a bridge has
one thread per stream beside the one reading the network. So each
:class:`Link` has an I/O thread that alone touches the network socket: it
polls it together with an ``inproc`` PULL socket, forwards what the stream
threads hand it (each through a PUSH socket of its own, :meth:`Link.sender`)
and gives every message it receives to the bridge's handler, in that
thread. A listening link is a ROUTER (each peer is known by the identity it
connects with; ``ROUTER_HANDOVER`` lets a peer that reconnects take its
identity back); a connecting link is a DEALER, whose one peer is ``b""``.

This module is the whole of what the bridge asks of a transport: another
one (Zenoh, say) needs only the same four calls: start, sender, send from
the I/O thread, close.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .._errors import InvalidArgument
from .deps import zmq_module

log = logging.getLogger("shmring.bridge")

#: Messages ZeroMQ may queue per peer before a send would block; the credit
#: window keeps a bridge far below it (a send that finds it full is dropped
#: and resent, never waited for: the I/O thread must not block).
HWM = 20000

Handler = Callable[["Link", bytes, list[bytes]], None]
Secure = Callable[[Any], None]

_ids = itertools.count(1)


class Link:
    """One network socket: ``listen`` (bind a ROUTER) or connect (a DEALER)
    to ``url``. ``on_message(link, peer, frames)`` runs in the I/O thread for
    every message; ``on_tick(link)`` every ``tick`` seconds there too.
    ``secure(socket)`` sets the socket's security options before it binds or
    connects (CURVE: ``keys.py``)."""

    def __init__(self, ctx: Any, url: str, *, listen: bool, identity: bytes,
                 on_message: Handler, on_tick: Callable[[Link], None], tick: float,
                 secure: Secure | None = None) -> None:
        zmq = zmq_module()
        self.url, self.listen, self.identity = url, listen, identity
        self._ctx, self._zmq = ctx, zmq
        self._on_message, self._on_tick, self._tick = on_message, on_tick, tick
        self._inproc = f"inproc://shmring-bridge-{id(self)}-{next(_ids)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._senders: list[Any] = []
        self._senders_lock = threading.Lock()
        self.dropped = 0  # sends refused by a full queue (resent later)
        sock = ctx.socket(zmq.ROUTER if listen else zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        if listen:
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            sock.setsockopt(zmq.IDENTITY, identity)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer not connected
        if secure is not None:
            secure(sock)
        try:
            if listen:
                sock.bind(url)
            else:
                sock.connect(url)
        except zmq.ZMQError as e:
            sock.close(0)
            raise InvalidArgument(f"cannot {'listen on' if listen else 'connect to'} "
                                  f"{url!r}: {e}") from None
        self._sock = sock
        self._pull = ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(self._inproc)
        if listen:
            self.url = sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # tcp://...:0 -> real port

    def start(self) -> None:
        """Start the I/O thread."""
        self._thread = threading.Thread(target=self._run, name=f"shmring-bridge-io {self.url}",
                                        daemon=True)
        self._thread.start()

    def sender(self) -> Sender:
        """A handle for one other thread to send through this link (each
        thread its own: ZeroMQ sockets are not shared between threads)."""
        push = self._ctx.socket(self._zmq.PUSH)
        push.setsockopt(self._zmq.LINGER, 0)
        push.setsockopt(self._zmq.SNDHWM, HWM)
        push.connect(self._inproc)
        with self._senders_lock:
            self._senders.append(push)
        return Sender(push, self._zmq)

    def send(self, peer: bytes, frames: list[Any]) -> bool:
        """Send ``frames`` to ``peer`` now; from the I/O thread only (or
        before :meth:`start`). False if ZeroMQ's queue was full (dropped)."""
        zmq = self._zmq
        out = [peer, *frames] if self.listen else frames
        try:
            self._sock.send_multipart(out, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += 1
            return False
        except zmq.ZMQError as e:  # EHOSTUNREACH and the like: a peer gone
            log.debug("send to %r on %s failed: %s", peer, self.url, e)
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        timeout_ms = max(1, int(self._tick * 1000))
        next_tick = time.monotonic() + self._tick
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(timeout_ms))
            except zmq.ZMQError:
                if self._stop.is_set():
                    break
                raise
            if self._pull in ready:
                for _ in range(256):
                    try:
                        msg = self._pull.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.send(msg[0].bytes, msg[1:])
            if self._sock in ready:
                for _ in range(256):
                    try:
                        msg = self._sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    if self.listen:
                        peer, frames = msg[0].bytes, msg[1:]
                    else:
                        peer, frames = b"", msg
                    if not frames:
                        continue
                    try:
                        self._on_message(self, peer, frames)
                    except Exception:
                        log.exception("bridge message from %r on %s", peer, self.url)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self._tick
                try:
                    self._on_tick(self)
                except Exception:
                    log.exception("bridge tick on %s", self.url)

    def close(self) -> None:
        """Stop the I/O thread and close the sockets (queued sends are
        dropped: what was not acknowledged is still in its ring)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        with self._senders_lock:
            for s in self._senders:
                s.close(0)
            self._senders.clear()
        self._pull.close(0)
        self._sock.close(0)


class Sender:
    """One thread's way to send through a :class:`Link`."""

    def __init__(self, push: Any, zmq: Any) -> None:
        self._push, self._zmq = push, zmq

    def send(self, peer: bytes, frames: list[Any], *, track: bool = False) -> Any:
        """Queue ``frames`` for ``peer`` (the I/O thread sends them). With
        ``track``, a ``zmq.MessageTracker`` whose ``done`` says ZeroMQ let go
        of the frames' memory (sent, or dropped with its connection), None
        if the link is closing."""
        with contextlib.suppress(self._zmq.ZMQError):  # the link is closing
            return self._push.send_multipart([peer, *frames], copy=False, track=track)
        return None
