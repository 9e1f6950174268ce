"""The bridge process: links, peers, and the streams between them.

A bridge listens on some URLs and connects to others (:class:`Link`); over
each it meets peers. A connecting bridge says HELLO every second (its node
id, its name, what it exports and imports) and the listener answers WELCOME;
both then know which channels flow which way. For every channel one side
imports and the other exports, the importer asks for it (WANT), learns its
shape (META), makes or opens its local ring and says where it stands (SUB);
the exporter then streams it (``outbound.py``, ``inbound.py``).

Liveness: every bridge PINGs its peers every :data:`PING_INTERVAL`. A peer
not heard from for ``link_timeout`` seconds is down: the rings it feeds here
are marked broken (their consumers get :class:`Broken` once they have read
what is there) until it is back. A peer that comes back with a new node id
(a restarted bridge) replaces the old one: its streams start again from the
keys the rings hold, so nothing is lost or duplicated.

Everything that touches a link runs in that link's I/O thread; the tables
here are shared with the control socket's thread and guarded by one lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import _layout as L
from .._channel.channel import Channel
from .._errors import InvalidArgument, RegionExists, RegionNotFound, ShmringError
from .._region.names import default_namespace
from . import wire
from .deps import zmq_module
from .inbound import Inbound
from .outbound import HOLD, Outbound
from .queues import QueueCounts, create_counts, open_counts, queue_meta
from .transport import Link, Secure

log = logging.getLogger("shmring.bridge")

#: Seconds between PINGs (and between HELLOs of a connecting bridge).
PING_INTERVAL = 0.25
HELLO_INTERVAL = 1.0
#: Default seconds of silence after which a peer is down (``--link-timeout``).
LINK_TIMEOUT = 5.0


class _Refused(Exception):
    """A local channel that cannot be exported (the peer was told why)."""


@dataclass
class Config:
    """What one bridge does (``shmring bridge`` options)."""

    listen: list[str] = field(default_factory=list)
    connect: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    namespace: str = field(default_factory=default_namespace)
    name: str = ""
    link_timeout: float = LINK_TIMEOUT
    window: int = 8192
    window_bytes: int = 64 << 20
    #: Seconds a killed bridge's subscription to an exported lossless
    #: broadcast channel is held for the bridge started again (outbound.py).
    hold: float = HOLD
    #: CURVE for the sockets (security.py), or None: plain TCP.
    security: Any = None


@dataclass
class Peer:
    """Another bridge, as one link knows it."""

    link: Link
    ident: bytes
    node: str = ""
    name: str = ""
    exports: set[str] = field(default_factory=set)
    imports: set[str] = field(default_factory=set)
    heard: float = field(default_factory=time.monotonic)
    down: bool = False
    welcomed: bool = False


class Bridge:
    """A running bridge (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.node = os.urandom(8).hex()
        self.name = config.name or f"{socket.gethostname()}/{config.namespace}"
        self.exports = set(config.exports)
        self.imports = set(config.imports)
        self._zmq = zmq_module()
        self._ctx = self._zmq.Context()
        self._lock = threading.RLock()
        self.links: list[Link] = []
        self.peers: dict[tuple[int, bytes], Peer] = {}
        self.outbound: dict[tuple[int, bytes, str], Outbound] = {}
        self.inbound: dict[str, Inbound] = {}
        self._want_at: dict[str, float] = {}
        #: name -> (when, peer, error, message): the last refusal of an import.
        self.refusals: dict[str, tuple[float, str, str, str]] = {}
        #: import requests being answered (control.py): a bridge is not idle meanwhile
        self.asked = 0
        self._hello_at: dict[int, float] = {}
        self.started = time.time()
        self._closed = False
        try:
            for url in config.listen:
                self._add_link(url, listen=True)
            for url in config.connect:
                self._add_link(url, listen=False)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ links --
    def _secure(self, url: str, listen: bool) -> Secure | None:
        sec = self.config.security
        if sec is None:
            return None

        def apply(sock: Any) -> None:
            sec.apply(sock, listen, url)

        return apply

    def _add_link(self, url: str, *, listen: bool) -> Link:
        link = Link(self._ctx, url, listen=listen, identity=self.node.encode(),
                    on_message=self._on_message, on_tick=self._on_tick, tick=PING_INTERVAL,
                    secure=self._secure(url, listen))
        with self._lock:
            self.links.append(link)
        if not listen:
            link.send(b"", [wire.HELLO, self._hello()])
            self._hello_at[id(link)] = time.monotonic()
        link.start()
        return link

    def connect(self, url: str) -> None:
        """Connect to ``url`` too, unless a link to it exists."""
        with self._lock:
            if any(not lk.listen and lk.url == url for lk in self.links):
                return
        self._add_link(url, listen=False)

    def add_import(self, name: str) -> None:
        """Import channel ``name`` from whichever peer exports it."""
        with self._lock:
            self.imports.add(name)
            self._want_at.pop(name, None)

    def _hello(self) -> bytes:
        return wire.dump({"v": wire.VERSION, "node": self.node, "name": self.name,
                          "exports": sorted(self.exports), "imports": sorted(self.imports)})

    # --------------------------------------------------------- messages --
    def _on_message(self, link: Link, ident: bytes, frames: list[Any]) -> None:
        kind = frames[0].bytes
        with self._lock:
            peer = self.peers.get((id(link), ident))
            if kind in (wire.HELLO, wire.WELCOME):
                self._greet(link, ident, peer, kind, wire.load(frames[1].bytes))
                return
            if peer is None:
                if link.listen:  # a peer we do not know (we restarted): ask it to say HELLO
                    link.send(ident, [wire.BYE, b""])
                return
            peer.heard = time.monotonic()
            if peer.down:
                self._up(peer)
            if kind == wire.PING:
                return
            if kind == wire.BYE:
                if not link.listen:
                    peer.welcomed = False
                    self._hello_at[id(link)] = 0.0
                return
            name = frames[1].bytes.decode()
            if kind == wire.DATA:
                inb = self.inbound.get(name)
                if inb is not None and inb.peer == ident and inb.link is link:
                    inb.inbox.put((wire.DATA, wire.Batch(frames[2].bytes,
                                                         memoryview(frames[3].buffer))))
            elif kind == wire.ACK:
                out = self.outbound.get((id(link), ident, name))
                if out is not None:
                    out.inbox.put((wire.ACK, wire.unkey(frames[2].bytes)))
            elif kind == wire.EOS:
                inb = self.inbound.get(name)
                if inb is not None and inb.peer == ident and inb.link is link:
                    inb.inbox.put((wire.EOS, wire.unkey(frames[2].bytes)))
            elif kind == wire.WANT:
                self._want(peer, name)
            elif kind == wire.META:
                self._meta(peer, name, wire.load(frames[2].bytes))
            elif kind == wire.SUB:
                self._sub(peer, name, wire.unkey(frames[2].bytes))
            elif kind == wire.ERROR:
                err = wire.load(frames[2].bytes)
                log.warning("peer %s: channel %r: %s: %s", peer.name, name,
                            err.get("error"), err.get("message"))
                self.refusals[name] = (time.monotonic(), peer.name, str(err.get("error")),
                                       str(err.get("message")))

    def _greet(self, link: Link, ident: bytes, peer: Peer | None, kind: bytes,
               hello: dict[str, Any]) -> None:
        if hello.get("v") != wire.VERSION:
            link.send(ident, [wire.ERROR, b"", wire.dump({
                "error": "Version", "message": f"bridge protocol {wire.VERSION}, "
                                               f"peer speaks {hello.get('v')!r}"})])
            return
        node, name = str(hello.get("node", "")), str(hello.get("name", ""))
        replaced: Peer | None = None
        if peer is not None and peer.node and peer.node != node:
            replaced, peer = peer, None  # the same link, a restarted bridge
            self.peers.pop((id(link), ident), None)
        if peer is None:
            for old in [p for p in self.peers.values() if p.name == name and p.node != node]:
                # That bridge restarted and came back on a new identity.
                self.peers.pop((id(old.link), old.ident), None)
                replaced = replaced or old
            peer = Peer(link, ident, node=node, name=name)
            self.peers[(id(link), ident)] = peer
            log.info("peer %s (%s) on %s", name, node, link.url)
        peer.exports = set(hello.get("exports", []))
        peer.imports = set(hello.get("imports", []))
        if replaced is not None:
            self._replace(replaced, peer)
        peer.heard = time.monotonic()
        if peer.down:
            self._up(peer)
        if kind == wire.HELLO:
            link.send(ident, [wire.WELCOME, self._hello()])
        peer.welcomed = True
        self._match(peer)

    def _match(self, peer: Peer) -> None:
        """Ask ``peer`` for every channel we import that it exports and that
        no stream feeds yet."""
        now = time.monotonic()
        for name in sorted(self.imports & peer.exports):
            inb = self.inbound.get(name)
            if inb is not None and (inb.link is not peer.link or inb.peer != peer.ident):
                continue  # fed by another peer
            if inb is not None:
                continue
            if now >= self._want_at.get(name, 0.0):
                self._want_at[name] = now + HELLO_INTERVAL
                peer.link.send(peer.ident, [wire.WANT, name.encode()])

    def _want(self, peer: Peer, name: str) -> None:
        if name not in self.exports:
            self._error(peer, name, "NotExported", f"{self.name} does not export {name!r}")
            return
        ch = self._open(peer, name)
        if ch is None:
            return
        try:
            meta: dict[str, Any] = {"name": name, "pattern": ch.pattern,
                                    "capacity": ch.capacity, "max_message": ch.max_message,
                                    "lossy": ch.region.lossy}
            counts = self._queue_counts(peer, ch)
            if counts is not None:
                meta["queue"] = queue_meta(counts)
                counts.close()
        except _Refused:
            return
        finally:
            ch.close()
        peer.link.send(peer.ident, [wire.META, name.encode(), wire.dump(meta)])

    def _queue_counts(self, peer: Peer, ch: Channel) -> QueueCounts | None:
        """The counts of the queue whose ring ``ch`` is, or None for a plain
        channel; :class:`_Refused` if it cannot cross (the peer is told why)."""
        if ch.pattern != "mpmc":
            return None
        try:
            return open_counts(ch.name, self.config.namespace)
        except ShmringError as e:
            log.error("cannot export %r: %s", ch.name, e)
            self._error(peer, ch.name, type(e).__name__, str(e))
            raise _Refused from e

    def _meta(self, peer: Peer, name: str, meta: dict[str, Any]) -> None:
        if name not in self.imports:
            return
        inb = self.inbound.get(name)
        if inb is not None:
            if inb.link is peer.link and inb.peer == peer.ident:
                inb.inbox.put((wire.SUB, None))
            return
        try:
            ch = self._local_ring(name, meta)
            try:
                counts = (create_counts(name, self.config.namespace, meta["queue"])
                          if "queue" in meta else None)
                inb = Inbound(peer.link, peer.ident, ch, counts)
            except BaseException:
                ch.close()
                raise
        except ShmringError as e:
            log.error("cannot import %r from %s: %s", name, peer.name, e)
            self.refusals[name] = (time.monotonic(), self.name, type(e).__name__, str(e))
            self._error(peer, name, type(e).__name__, str(e))
            return
        self.inbound[name] = inb
        inb.start()

    def _local_ring(self, name: str, meta: dict[str, Any]) -> Channel:
        ns = self.config.namespace
        pattern, capacity = str(meta["pattern"]), int(meta["capacity"])
        max_message, lossy = int(meta["max_message"]), bool(meta.get("lossy"))
        try:
            # A queue's ring: as many attach slots as the queue makes, each
            # getter and putter takes one.
            slots = L.MAX_SLOTS if "queue" in meta else 64
            ch = Channel.create(name, capacity, pattern, max_message=max_message, lossy=lossy,
                                persistent=True, slots=slots, namespace=ns)
        except RegionExists:
            ch = Channel.open(name, namespace=ns)
            if (ch.pattern, ch.capacity, ch.max_message) != (pattern, capacity, max_message):
                ch.close()
                raise InvalidArgument(
                    f"channel {name!r} exists here as {ch.pattern}, {ch.capacity} bytes, "
                    f"max_message {ch.max_message}; the peer's is {pattern}, {capacity} bytes, "
                    f"max_message {max_message}: remove it or import another name") from None
        return ch

    def _sub(self, peer: Peer, name: str, resume: tuple[int, int]) -> None:
        key = (id(peer.link), peer.ident, name)
        out = self.outbound.get(key)
        if out is not None and out.error is None:
            out.inbox.put((wire.SUB, resume))
            return
        if out is not None:
            out.stop()
            del self.outbound[key]
        if name not in self.exports:
            return
        ch = self._open(peer, name)
        if ch is None:
            return
        try:
            counts = self._queue_counts(peer, ch)
        except _Refused:
            ch.close()
            return
        try:
            out = Outbound(peer.link, peer.ident, ch, window=self.config.window,
                           window_bytes=self.config.window_bytes, peer_name=peer.name,
                           hold=self.config.hold, counts=counts)
        except ShmringError as e:
            if counts is not None:
                counts.close()
            ch.close()
            self._error(peer, name, type(e).__name__, str(e))
            return
        self.outbound[key] = out
        out.start(resume)

    def _open(self, peer: Peer, name: str) -> Channel | None:
        """Local channel ``name`` for ``peer``, or None (the peer is told why)."""
        try:
            return Channel.open(name, namespace=self.config.namespace)
        except ShmringError as e:
            self._error(peer, name, type(e).__name__, str(e))
            return None

    def _error(self, peer: Peer, name: str, error: str, message: str) -> None:
        peer.link.send(peer.ident, [wire.ERROR, name.encode(),
                                    wire.dump({"error": error, "message": message})])

    # --------------------------------------------------------- liveness --
    def _on_tick(self, link: Link) -> None:
        now = time.monotonic()
        with self._lock:
            peers = [p for p in self.peers.values() if p.link is link]
            if not link.listen and now - self._hello_at.get(id(link), 0.0) >= HELLO_INTERVAL:
                self._hello_at[id(link)] = now
                link.send(b"", [wire.HELLO, self._hello()])
            for p in peers:
                link.send(p.ident, [wire.PING])
                if not p.down and now - p.heard > self.config.link_timeout:
                    self._down(p)
                if not p.down and p.welcomed:
                    self._match(p)
            if link.listen:
                for p in peers:  # a peer silent for long is gone for good
                    if now - p.heard > max(60.0, 10 * self.config.link_timeout):
                        self._forget(p)

    def _down(self, peer: Peer) -> None:
        peer.down = True
        log.warning("peer %s silent for %.1f s: its channels here are broken until it is back",
                    peer.name, self.config.link_timeout)
        for inb in self.inbound.values():
            if inb.link is peer.link and inb.peer == peer.ident:
                inb.set_broken(True)

    def _up(self, peer: Peer) -> None:
        peer.down = False
        log.info("peer %s is back", peer.name)
        for inb in self.inbound.values():
            if inb.link is peer.link and inb.peer == peer.ident:
                inb.set_broken(False)
                inb.inbox.put((wire.SUB, None))

    def _replace(self, old: Peer, new: Peer) -> None:
        """Bridge ``old`` came back as ``new`` (restarted): its streams go on
        with the new one. An exporting stream keeps its place (a broadcast
        subscription keeps gating the producer meanwhile, so nothing is sent
        past it) and resumes from the key the new importer says it has; an
        importing stream tells the new exporter where its ring stands."""
        for key in [k for k in self.outbound if k[0] == id(old.link) and k[1] == old.ident]:
            out = self.outbound.pop(key)
            if key[2] not in new.imports:
                out.stop(keep=False)  # it no longer imports that channel
                continue
            out.retarget(new.link, new.ident)
            self.outbound[(id(new.link), new.ident, key[2])] = out
        for inb in self.inbound.values():
            if inb.link is old.link and inb.peer == old.ident:
                inb.retarget(new.link, new.ident)

    def _forget(self, peer: Peer) -> None:
        """``peer`` is gone (replaced by a restarted bridge, or silent for
        long): stop its streams; their records stay in the rings."""
        self.peers.pop((id(peer.link), peer.ident), None)
        for key in [k for k in self.outbound if k[0] == id(peer.link) and k[1] == peer.ident]:
            self.outbound.pop(key).stop()
        for name in [n for n, i in self.inbound.items()
                     if i.link is peer.link and i.peer == peer.ident]:
            self.inbound.pop(name).stop()
            self._want_at.pop(name, None)

    # ----------------------------------------------------------- status --
    def status(self) -> dict[str, Any]:
        """A snapshot: links, peers and streams (``shmring bridge --status``)."""
        now = time.monotonic()
        with self._lock:
            return {
                "name": self.name, "node": self.node, "pid": os.getpid(),
                "namespace": self.config.namespace,
                "links": [{"url": lk.url, "listen": lk.listen, "dropped": lk.dropped}
                          for lk in self.links],
                "peers": [{"name": p.name, "node": p.node, "down": p.down,
                           "silent": round(now - p.heard, 3), "url": p.link.url}
                          for p in self.peers.values()],
                "exports": sorted(self.exports), "imports": sorted(self.imports),
                "outbound": [o.status() for o in self.outbound.values()],
                "inbound": [i.status() for i in self.inbound.values()],
            }

    def idle(self) -> bool:
        """True while this bridge serves nobody: it exports nothing, answers
        no import request, and no other live local process has a ring it
        feeds open."""
        with self._lock:
            if self.exports or self.asked:
                return False
            inbound = list(self.inbound.values())
        return all(inb.idle() for inb in inbound)

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """While an import request is answered (control.py): not idle."""
        with self._lock:
            self.asked += 1
        try:
            yield
        finally:
            with self._lock:
                self.asked -= 1

    def importing(self, name: str) -> bool:
        """Whether a stream feeds the local ring of ``name`` now."""
        with self._lock:
            return name in self.inbound

    def close(self) -> None:
        """Say BYE, stop every stream and link. Rings stay as they are:
        unacknowledged records are still in the exported rings, imported
        rings keep what they hold."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for out in list(self.outbound.values()):
                out.stop()
            for inb in list(self.inbound.values()):
                inb.stop()
            self.outbound.clear()
            self.inbound.clear()
            links = list(self.links)
        for link in links:
            link.close()
        if self.config.security is not None:
            self.config.security.close()
        self._ctx.term()


def wait_for(predicate: Any, timeout: float) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


__all__ = ["Bridge", "Config", "RegionNotFound", "wait_for"]
