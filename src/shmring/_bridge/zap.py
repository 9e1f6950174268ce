"""The ZAP handler (ZeroMQ RFC 27) that lets only authorized CURVE keys into
a listening bridge's sockets.

libzmq asks one handler per context, bound at ``inproc://zeromq.zap.01``,
about every CURVE handshake of that context's sockets. pyzmq's
``ThreadAuthenticator`` is one such handler per context with one policy;
this one serves any number of listening sockets of a context, each under a
ZAP domain of its own (:data:`DOMAIN_PREFIX` and a number) with its own set
of keys, and counts what it let through and what it turned down. It runs
while at least one domain is registered (:func:`register`,
:meth:`ServerAuth.close`). A socket restricted this way also sets
``ZAP_ENFORCE_DOMAIN`` (keys.py), so a handshake after the handler has
stopped fails rather than passing unchecked (libzmq's default, kept for old
code, is to let everyone in when no handler is bound).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from typing import Any

from .._errors import InvalidArgument
from . import z85

log = logging.getLogger("shmring.bridge")

#: The ZAP domain of every restricted listening socket starts with this.
DOMAIN_PREFIX = b"shmring-bridge-"

_ENDPOINT = "inproc://zeromq.zap.01"
_POLL_MS = 50  # how soon a stopped handler notices


class _Domain:
    """One restricted socket's policy and counts."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys  # raw 32-byte public keys
        self.accepted = 0
        self.refused = 0
        self.logged: set[bytes] = set()  # refused keys already logged


class ServerAuth:
    """What :func:`keys.server_socket_options` installed for a socket that
    accepts only authorized keys: its ZAP domain, in its context's handler.

    ``accepted`` and ``refused`` count the CURVE handshakes the handler let
    through and turned down (a refused client retries, so one client may be
    counted many times). :meth:`close` it when the socket closes and before
    the context is terminated (the handler's socket would hold ``term`` up);
    until then it lives on even if this object is dropped, and after it the
    socket's handshakes fail, never pass unchecked. (A context terminated
    first does not hang: the handler's thread ends with it.)"""

    def __init__(self, handler: _Handler, domain: bytes) -> None:
        self._handler, self.domain = handler, domain
        self._final: tuple[int, int] | None = None

    @property
    def accepted(self) -> int:
        """CURVE handshakes accepted for this socket so far."""
        return self._counts()[0]

    @property
    def refused(self) -> int:
        """CURVE handshakes refused for this socket so far (keys not authorized)."""
        return self._counts()[1]

    def _counts(self) -> tuple[int, int]:
        return self._final if self._final is not None else self._handler.counts(self.domain)

    def close(self) -> None:
        """Stop accepting anyone on this socket (idempotent); the context's
        handler stops with its last domain."""
        if self._final is None:
            self._final = self._handler.counts(self.domain)
            _release(self._handler, self.domain)

    def __enter__(self) -> ServerAuth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler:
    """The handler of one context: a thread with a REP socket answering for
    every registered domain.

    A handshake passes when its domain is registered and the client's key
    is in the domain's set; one with the empty domain (a socket of the same
    context set up without an authorized set) passes with any CURVE key, as
    it would with no handler bound; everything else is refused."""

    def __init__(self, zmq: Any, ctx: Any) -> None:
        self._zmq, self.ctx = zmq, ctx
        self._lock = threading.Lock()
        self._domains: dict[bytes, _Domain] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.dead = False  # the thread has ended (stopped, or its context terminated)
        self._thread = threading.Thread(target=self._run, name="shmring-bridge-zap",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise InvalidArgument(
                "this ZeroMQ context already has a ZAP handler (another authenticator, such "
                "as zmq.auth's); give the bridge a context of its own") from self._error

    def add(self, domain: bytes, keys: frozenset[bytes]) -> None:
        with self._lock:
            self._domains[domain] = _Domain(keys)

    def remove(self, domain: bytes) -> bool:
        """Drop ``domain``; True when none is left."""
        with self._lock:
            self._domains.pop(domain, None)
            return not self._domains

    def counts(self, domain: bytes) -> tuple[int, int]:
        with self._lock:
            d = self._domains.get(domain)
            return (d.accepted, d.refused) if d is not None else (0, 0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        zmq = self._zmq
        sock = self.ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(_ENDPOINT)
        except zmq.ZMQError as e:
            self._error = e
            sock.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                if sock.poll(_POLL_MS):
                    request = sock.recv_multipart()
                    try:
                        reply = self._answer(request)
                    except Exception:  # a REP socket must answer, and a bug must not open doors
                        log.exception("bridge: the ZAP handler failed on a request")
                        reply = [b"1.0", request[1] if len(request) > 1 else b"", b"500",
                                 b"internal error", b"", b""]
                    sock.send_multipart(reply)
        except zmq.ContextTerminated:
            pass  # the context is being terminated: let it (sockets fail closed from now)
        finally:
            self.dead = True
            # Unbind first: that takes the endpoint away now, in this thread,
            # where close() leaves it to libzmq's reaper thread, and a
            # handshake meanwhile would send its request to a socket that
            # never answers (no failure until the handshake's own timeout).
            with contextlib.suppress(zmq.ZMQError):  # a context terminating: no matter
                sock.unbind(_ENDPOINT)
            sock.close()

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """The reply to one request: a REP socket must answer every one."""
        if len(request) < 6 or request[0] != b"1.0":
            rid = request[1] if len(request) > 1 else b""
            return [b"1.0", rid, b"500", b"not a ZAP 1.0 request", b"", b""]
        rid, domain, address, mechanism = request[1], request[2], request[3], request[5]
        credentials = request[6:]
        key = credentials[0] if mechanism == b"CURVE" and len(credentials) == 1 else b""
        public = z85.encode(key) if len(key) == 32 else b""
        if domain == b"" and public:
            return [b"1.0", rid, b"200", b"OK", public, b""]
        first_refusal = False
        with self._lock:
            d = self._domains.get(domain)
            ok = d is not None and bool(public) and key in d.keys
            if d is not None and ok:
                d.accepted += 1
            elif d is not None:
                d.refused += 1
                first_refusal = public not in d.logged
                d.logged.add(public)
        if ok:
            # The user id is the client's public key: a ROUTER can read it
            # off each message (``msg.get("User-Id")``).
            return [b"1.0", rid, b"200", b"OK", public, b""]
        if first_refusal:
            log.warning("bridge: refused a client at %s: its CURVE key %s is not in the "
                        "authorized keys (further refusals of it are counted, not logged)",
                        address.decode("ascii", "replace"),
                        public.decode("ascii") or f"(none: {mechanism.decode('ascii', 'replace')})")
        return [b"1.0", rid, b"400", b"key not authorized", b"", b""]


_handlers: dict[int, _Handler] = {}  # id(context) -> its handler (which holds the context)
_handlers_lock = threading.Lock()
_domain_ids = itertools.count(1)


def register(zmq: Any, ctx: Any, keys: frozenset[bytes]) -> ServerAuth:
    """A new domain in ``ctx``'s handler (started if it is not running)
    accepting the raw 32-byte public keys ``keys``."""
    with _handlers_lock:
        handler = _handlers.get(id(ctx))
        if handler is None or handler.dead:
            handler = _Handler(zmq, ctx)
            handler.start()
            _handlers[id(ctx)] = handler
        domain = DOMAIN_PREFIX + str(next(_domain_ids)).encode()
        handler.add(domain, keys)
    return ServerAuth(handler, domain)


def _release(handler: _Handler, domain: bytes) -> None:
    with _handlers_lock:
        if handler.remove(domain) and _handlers.get(id(handler.ctx)) is handler:
            del _handlers[id(handler.ctx)]
            handler.stop()
