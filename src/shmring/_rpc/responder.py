"""The server side of request/response: take requests, answer each on the
channel its client named.

Replies go through a small cache of producers, one per reply channel, so a
busy client costs one open, not one per reply. A reply to a client that is
gone must never stall the server: before each send the reply channel's
consumer is looked up in its attach table (a dead client's channel may
still exist, held by this very cache, with nobody reading it), and a send
into a full ring waits at most ``reply_timeout``. Either way the reply is
dropped and counted, and the server goes on. Channels whose client is gone
are closed by a sweep, at most once a second, so the supervisor can remove
them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .._channel.channel import Channel
from .._channel.endpoints import Producer
from .._errors import (
    Closed,
    DecodeError,
    EndOfStream,
    InvalidArgument,
    MessageTooLarge,
    RegionNotFound,
    RemoteError,
    Timeout,
)
from .request import Request
from .wire import REQUEST_CAPACITY, check_service, live_consumers, open_or_create, parse_request

SWEEP_EVERY = 1.0  # seconds between looks for reply channels whose client is gone


class Responder:
    """The server of ``service``: receives requests from its request channel
    (mpmc, shared with every other server of the service: each request
    reaches one) and answers on each client's reply channel.

    ``create=True`` creates the request channel if no client or server has
    yet (``create=False`` raises :class:`~shmring.RegionNotFound` instead).
    ``recv(timeout=None)`` gives the next :class:`Request`; iterating gives
    requests until the request channel is closed for sending. Answer each
    with ``req.reply(value)`` or ``req.fail(exc)``, from any thread. Replies
    to clients that are gone are dropped without blocking, and counted in
    :attr:`stats`. Example::

        import threading
        import shmring

        def serve(server: shmring.Responder) -> None:
            for req in server:
                if req.payload == "stop":
                    req.reply("bye")
                    return
                req.reply(sum(req.payload))

        with shmring.Responder("adder") as server, shmring.Requester("adder") as client:
            t = threading.Thread(target=serve, args=(server,))
            t.start()
            assert client.call([1, 2, 3], timeout=5) == 6
            assert client.call("stop", timeout=5) == "bye"
            t.join()
            assert server.stats["replied"] == 2
    """

    def __init__(self, service: str, *, namespace: str | None = None, create: bool = True,
                 capacity: int = REQUEST_CAPACITY, reply_timeout: float = 1.0,
                 cache_size: int = 128) -> None:
        self.service = check_service(service)
        if reply_timeout < 0 or cache_size < 1:
            raise InvalidArgument(f"reply_timeout must be >= 0 and cache_size >= 1, not "
                                  f"{reply_timeout!r} and {cache_size!r}")
        #: Longest wait, in seconds, for room in a live client's full reply channel.
        self.reply_timeout = reply_timeout
        self._namespace = namespace
        self._cache_size = cache_size
        self._channel = open_or_create(service, namespace=namespace, capacity=capacity,
                                       pattern="mpmc", create=create)
        try:
            if self._channel.pattern != "mpmc":
                raise InvalidArgument(f"channel {service!r} is {self._channel.pattern}, not the "
                                      "mpmc request channel of a service")
            self._rx = self._channel.consumer()
        except BaseException:
            self._channel.close()
            raise
        self._recv_lock = threading.Lock()
        self._reply_lock = threading.Lock()
        self._replies: OrderedDict[str, tuple[Channel, Producer]] = OrderedDict()
        self._counts = {"received": 0, "replied": 0, "failed": 0, "dropped": 0, "malformed": 0}
        self._next_sweep = time.monotonic() + SWEEP_EVERY
        self._closed = False

    # ---------------------------------------------------------- receiving --
    def recv(self, timeout: float | None = None) -> Request:
        """The next request, waiting up to ``timeout`` seconds (None: for
        ever) for one: :class:`~shmring.Timeout` then, and
        :class:`~shmring.EndOfStream` once the request channel is closed for
        sending and drained. A record that is not a request is skipped and
        counted in ``stats["malformed"]``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._recv_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise self._timeout(timeout)
        try:
            while True:
                self._check_open()
                self._sweep_from_recv()
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                try:
                    record = self._rx.recv_obj(timeout=left)
                except DecodeError:
                    self._counts["malformed"] += 1
                    continue
                parsed = parse_request(record)
                if parsed is None:
                    self._counts["malformed"] += 1
                    continue
                self._counts["received"] += 1
                return Request(self, *parsed)
        finally:
            self._recv_lock.release()

    def __iter__(self) -> Iterator[Request]:
        try:
            while True:
                yield self.recv()
        except EndOfStream:
            return

    def request(self, reply_to: str, rid: int, payload: Any = None) -> Request:
        """A :class:`Request` to answer request ``rid`` of the client whose
        reply channel is ``reply_to``, received elsewhere (by another server
        process, or by this service before it restarted)."""
        if not isinstance(reply_to, str) or not isinstance(rid, int):
            raise InvalidArgument(f"a request is named by its reply channel (str) and id (int), "
                                  f"not {reply_to!r} and {rid!r}")
        return Request(self, rid, reply_to, payload)

    # ---------------------------------------------------------- answering --
    def _answer(self, req: Request, ok: bool, value: Any) -> bool:
        with self._reply_lock:
            self._check_open()
            self._sweep_if_due()
            found = self._producer_for(req.reply_to)
            if found is None:
                self._counts["dropped"] += 1
                return False
            ch, tx = found
            if live_consumers(ch) == 0:
                self._evict(req.reply_to)
                self._counts["dropped"] += 1
                return False
            try:
                tx.send_obj((req.id, ok, value), timeout=self.reply_timeout)
            except Timeout:
                self._counts["dropped"] += 1
                return False
            except MessageTooLarge as e:
                err = RemoteError(f"service {self.service!r}: the reply to request {req.id} does "
                                  f"not fit the client's reply channel ({e})", stage=self.service)
                tx.send_obj((req.id, False, err), timeout=self.reply_timeout)
                self._counts["failed"] += 1
                raise
            self._counts["replied" if ok else "failed"] += 1
            return True

    def _producer_for(self, name: str) -> tuple[Channel, Producer] | None:
        hit = self._replies.get(name)
        if hit is not None:
            self._replies.move_to_end(name)
            return hit
        try:
            # wait=0: a reply channel is made before its first request is
            # sent, so one that is not there is a client that is gone.
            ch = Channel.open(name, wait=0, namespace=self._namespace)
        except (RegionNotFound, InvalidArgument):
            return None  # the client is gone (or never named a channel)
        try:
            if ch.pattern != "mpsc":
                ch.close()
                return None
            entry = (ch, ch.producer())
        except BaseException:
            ch.close()
            raise
        self._replies[name] = entry
        while len(self._replies) > self._cache_size:
            self._evict(next(iter(self._replies)))
        return entry

    def _evict(self, name: str) -> None:
        entry = self._replies.pop(name, None)
        if entry is not None:
            entry[0].close()

    def _sweep_if_due(self) -> None:
        """Close cached reply channels whose client is gone (reply lock held)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        for name, (ch, _tx) in list(self._replies.items()):
            if live_consumers(ch) == 0:
                self._evict(name)

    def _sweep_from_recv(self) -> None:
        # Only when no answer is being sent right now: recv never waits for one.
        if time.monotonic() >= self._next_sweep and self._reply_lock.acquire(blocking=False):
            try:
                if not self._closed:
                    self._sweep_if_due()
            finally:
                self._reply_lock.release()

    # ------------------------------------------------------------- state --
    @property
    def stats(self) -> dict[str, int]:
        """Counts since this Responder was made: ``received`` requests,
        ``replied`` and ``failed`` answers delivered, ``dropped`` answers to
        clients that were gone (or full past ``reply_timeout``),
        ``malformed`` records skipped, ``cached`` reply producers open."""
        return {**self._counts, "cached": len(self._replies)}

    @property
    def channel(self) -> Channel:
        """The request channel."""
        return self._channel

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"the responder of {self.service!r} is closed")

    def _timeout(self, timeout: float | None) -> Timeout:
        err = Timeout(f"no request for {self.service!r} within {timeout} s")
        err.timeout, err.channel = timeout, self.service
        return err

    def close(self) -> None:
        """Close the reply producers and leave the request channel (the
        supervisor removes it once no client or server uses it)."""
        with self._reply_lock:
            if self._closed:
                return
            self._closed = True
            for name in list(self._replies):
                self._evict(name)
        self._channel.close()

    def __enter__(self) -> Responder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._counts['received']} received"
        return f"<shmring.Responder {self.service!r} {state}>"
