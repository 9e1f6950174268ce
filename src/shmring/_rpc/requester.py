"""The client side of request/response: send requests, match replies by id.

Each Requester owns one reply channel and is its only consumer. Replies
may come back in any order (several servers, or one that answers out of
order): one thread at a time receives, files every reply under its id and
wakes the others (a condition variable), so ``result(id)`` of any thread
finds its own reply whoever received it. A reply nobody waits for any more
(its ``call`` timed out, or it came twice) is dropped and counted in
``stray``, never kept for ever.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

from .._channel.channel import Channel
from .._errors import (
    Closed,
    DecodeError,
    InvalidArgument,
    RegionExists,
    RemoteError,
    Timeout,
)
from .wire import (
    REPLY_CAPACITY,
    REQUEST_CAPACITY,
    check_service,
    live_consumers,
    open_or_create,
    parse_reply,
    reply_name,
    request_record,
)

_counter = itertools.count()  # reply channels made by this process


def _make_reply_channel(service: str, namespace: str | None, capacity: int) -> Channel:
    for _attempt in range(100):
        # A dead process of our pid may have left its channel (held open by
        # a server's cache for a moment): take the next number.
        name = reply_name(service, os.getpid(), next(_counter))
        try:
            return Channel.create(name, capacity=capacity, pattern="mpsc", namespace=namespace)
        except RegionExists:
            continue
    raise RegionExists(f"no free reply channel name for {service!r} after 100 tries")


class Requester:
    """A client of ``service``: sends requests into its request channel and
    gets each reply back on a reply channel of its own, by correlation id.

    ``call(obj, timeout=None)`` sends one request and waits for its reply;
    ``submit(obj)`` sends one and returns its id at once, and
    ``result(id, timeout=None)`` waits for that one's reply (replies that
    come back out of order are kept until asked for). A failure on the
    server raises :class:`~shmring.RemoteError`; no reply in time raises
    :class:`~shmring.Timeout`, whose message says whether any server is
    attached. The request channel is created if no server has made it yet,
    so requests may be sent before a server starts. Safe to share between
    threads. Example::

        import threading
        import shmring

        def square_all(server: shmring.Responder, n: int) -> None:
            taken = [server.recv(timeout=5) for _ in range(n)]
            for req in reversed(taken):          # answer out of order
                req.reply(req.payload ** 2)

        with shmring.Responder("squares") as server, shmring.Requester("squares") as client:
            ids = [client.submit(x) for x in range(5)]
            t = threading.Thread(target=square_all, args=(server, 5))
            t.start()
            assert [client.result(i, timeout=5) for i in ids] == [0, 1, 4, 9, 16]
            t.join()
            try:
                client.call("late", timeout=0.2)   # nobody takes it now
            except shmring.Timeout as e:
                print(e)
    """

    def __init__(self, service: str, *, namespace: str | None = None,
                 capacity: int = REPLY_CAPACITY, request_capacity: int = REQUEST_CAPACITY) -> None:
        self.service = check_service(service)
        self._requests = open_or_create(service, namespace=namespace, capacity=request_capacity,
                                        pattern="mpmc")
        try:
            if self._requests.pattern != "mpmc":
                raise InvalidArgument(f"channel {service!r} is {self._requests.pattern}, not the "
                                      "mpmc request channel of a service")
            self._tx = self._requests.producer()
            self._reply_channel = _make_reply_channel(service, namespace, capacity)
        except BaseException:
            self._requests.close()
            raise
        try:
            self._rx = self._reply_channel.consumer()
        except BaseException:
            self._reply_channel.close()
            self._reply_channel.unlink()
            self._requests.close()
            raise
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._receiving = False
        self._pending: set[int] = set()
        self._replies: dict[int, tuple[bool, Any]] = {}
        self._stray = 0
        self._closed = False

    @property
    def reply_to(self) -> str:
        """The name of this client's reply channel (what each request carries)."""
        return self._reply_channel.name

    # ------------------------------------------------------------ sending --
    def submit(self, obj: Any, *, timeout: float | None = None) -> int:
        """Send ``obj`` as a request and return its correlation id. Waits up
        to ``timeout`` seconds for room in the request channel
        (:class:`~shmring.Timeout`); ``obj`` must fit one record."""
        with self._send_lock:
            self._check_open()
            rid = next(self._ids)
            with self._cond:
                self._pending.add(rid)
            try:
                self._tx.send_obj(request_record(rid, self.reply_to, obj), timeout=timeout)
            except BaseException:
                with self._cond:
                    self._pending.discard(rid)
                raise
            return rid

    def call(self, obj: Any, *, timeout: float | None = None) -> Any:
        """Send ``obj`` and return the server's reply, waiting up to
        ``timeout`` seconds in all (None: for ever). On
        :class:`~shmring.Timeout` the request is given up: a reply that
        comes later is dropped (and counted in :attr:`stray`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        rid = self.submit(obj, timeout=timeout)
        try:
            return self._wait(rid, deadline, timeout)
        except Timeout:
            with self._cond:
                self._pending.discard(rid)
            raise

    # ---------------------------------------------------------- receiving --
    def result(self, rid: int, *, timeout: float | None = None) -> Any:
        """The reply to request ``rid`` (from :meth:`submit`), waiting up to
        ``timeout`` seconds: :class:`~shmring.Timeout` then, and the request
        stays pending (ask again). Raises :class:`~shmring.RemoteError` if
        the server failed it, :class:`~shmring.InvalidArgument` for an id
        that is not pending (never submitted, or its result already taken)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._wait(rid, deadline, timeout)

    def _wait(self, rid: int, deadline: float | None, timeout: float | None) -> Any:
        with self._cond:
            if rid not in self._pending:
                raise InvalidArgument(f"request {rid} of {self.service!r} is not pending "
                                      "(never submitted here, or its result was taken)")
            while rid not in self._replies:
                self._check_open()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise self._timeout(rid, timeout)
                if self._receiving:
                    self._cond.wait(left)  # another thread receives; it wakes us
                    continue
                self._receiving = True
                self._cond.release()
                try:
                    record = self._rx.recv_obj(timeout=left)
                except (Timeout, DecodeError):
                    record = None
                finally:
                    self._cond.acquire()
                    self._receiving = False
                    self._cond.notify_all()
                if record is not None:
                    self._file(record)
            ok, value = self._replies.pop(rid)
            self._pending.discard(rid)
        if ok:
            return value
        if isinstance(value, BaseException):
            raise value
        raise RemoteError(f"service {self.service!r} failed request {rid}: {value}",
                          stage=self.service)

    def _file(self, record: Any) -> None:
        parsed = parse_reply(record)
        if parsed is None or parsed[0] not in self._pending or parsed[0] in self._replies:
            self._stray += 1
            return
        rid, ok, value = parsed
        self._replies[rid] = (ok, value)

    def _timeout(self, rid: int, timeout: float | None) -> Timeout:
        n = live_consumers(self._requests)
        who = ("no server is attached to its request channel" if n == 0 else
               f"{n} server{'s' if n > 1 else ''} attached: the one that took it may have died, "
               "or is still at work")
        err = Timeout(f"no reply from service {self.service!r} to request {rid} within "
                      f"{timeout:g} s ({who})" if timeout is not None else f"no reply ({who})")
        err.timeout, err.channel = timeout, self.service
        return err

    # ------------------------------------------------------------- state --
    @property
    def pending(self) -> list[int]:
        """Ids submitted whose result has not been taken yet, in order."""
        with self._cond:
            return sorted(self._pending)

    @property
    def stray(self) -> int:
        """Replies dropped because nobody waited for them any more (a
        ``call`` that timed out, a duplicate, or not a reply record)."""
        return self._stray

    @property
    def servers(self) -> int:
        """How many live servers are attached to the request channel now."""
        return live_consumers(self._requests)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"the requester of {self.service!r} is closed")

    def close(self) -> None:
        """Remove the reply channel and leave the request channel (a server
        answering after this drops its reply). Pending results are lost.
        Close it once no other thread is in a call of this Requester."""
        with self._send_lock, self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._reply_channel.close()
        self._reply_channel.unlink()
        self._requests.close()

    def __enter__(self) -> Requester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._pending)} pending"
        return f"<shmring.Requester {self.service!r} {state}>"
