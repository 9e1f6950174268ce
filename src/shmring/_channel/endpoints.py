"""Endpoints: Producer and Consumer, and their zero-copy Claim and RecordView.

An endpoint's hot methods (``send``, ``recv``, ``send_obj``, ``recv_obj`` and
friends) are C methods of its core (``_core.ProducerCore``,
``_core.ConsumerCore``): sending or receiving one message is one call, with
no Python frame in between. The object and asyncio methods come from mixins
below the channel, each a subclass of the core: ``_objects.send.ObjectSender``
and ``_objects.recv.ObjectReceiver``, and ``aio.AsyncSender`` and
``aio.AsyncReceiver``. This module adds what is not hot: claims and held
records as context managers, iteration, close.

Endpoints are not thread-safe: use one per thread. Each takes its own slot in
the attach table, so recovery knows exactly what a dead one held; the
:class:`~shmring.Channel` that made it gives that slot back when it closes
(it is the endpoint's ``_channel``, seen here only as a :class:`_RoleOwner`,
so this module does not import ``channel.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Protocol

from .._errors import ClaimRevoked, EndOfStream
from .._objects.recv import ObjectReceiver
from .._objects.send import ObjectSender
from . import aio as _aio
from .aio import AsyncReceiver, AsyncSender


class _RoleOwner(Protocol):
    """What an endpoint needs of the channel that made it."""

    def _release_role(self, slot: int, *, producer: bool) -> None: ...


class Claim:
    """A zero-copy write: ``with tx.claim(n) as buf`` gives ``n`` writable
    bytes inside the ring. Leaving the block commits them; an exception
    aborts (the record becomes padding and no consumer sees it). Call
    :meth:`commit` with a smaller size to publish only a prefix.

    The view is valid only inside the block.
    """

    __slots__ = ("_done", "_producer", "view")

    def __init__(self, producer: Producer, view: memoryview) -> None:
        self._producer = producer
        self.view = view
        self._done = False

    def __enter__(self) -> memoryview:
        return self.view

    def commit(self, nbytes: int | None = None) -> None:
        """Publish the claim (its first ``nbytes`` bytes, default all)."""
        if not self._done:
            # Done only once published: a bad nbytes leaves the claim open.
            try:
                self._producer._commit(nbytes)
            except ClaimRevoked:
                self._done = True  # the supervisor took it back: nothing is open
                raise
            self._done = True

    def abort(self) -> None:
        """Withdraw the claim; nothing is delivered."""
        if not self._done:
            self._done = True
            self._producer._abort()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.commit()
        else:
            self.abort()


class RecordView:
    """A zero-copy read: ``with rx.recv_view() as view`` holds the next record
    in the ring until the block ends. The view must not be used after it."""

    __slots__ = ("_consumer", "_done", "view")

    def __init__(self, consumer: Consumer, view: memoryview) -> None:
        self._consumer = consumer
        self.view = view
        self._done = False

    def __enter__(self) -> memoryview:
        return self.view

    def release(self) -> None:
        """Free the record (the producer may then reuse its bytes)."""
        if not self._done:
            self._done = True
            self._consumer._release()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class Producer(AsyncSender, ObjectSender):
    """Sends messages into a channel. Get one with :meth:`Channel.producer`.

    ``send(data, timeout=None)`` copies one bytes-like message in, waiting for
    space (``Timeout`` if the timeout passes); ``send_nowait(data)`` raises
    ``WouldBlock`` instead of waiting; ``send_many(items)`` sends a batch and
    publishes it once. Example (fragment)::

        tx = ch.producer()
        tx.send(b"hello")
        with tx.claim(5) as buf:
            buf[:] = b"world"
    """

    _channel: _RoleOwner
    _slot: int

    def claim(self, n: int, timeout: float | None = None) -> Claim:
        """Reserve ``n`` bytes in the ring for a zero-copy write (see :class:`Claim`).

        ``claim(0)`` is allowed and commits an empty message, exactly as
        ``send(b"")`` does: a claim is the zero-copy form of ``send``, so
        code that claims a computed size needs no special case for zero.
        A negative ``n`` raises ``ValueError``; more than ``max_message``
        raises :class:`~shmring.MessageTooLarge`."""
        return Claim(self, self._claim(n, timeout))

    def close(self) -> None:
        """Withdraw any open claim and give the endpoint's slot back."""
        if self._closed:
            return
        _aio.stop_waiter(self)
        if self._claimed:
            self._abort()
        self._close()
        self._channel._release_role(self._slot, producer=True)

    @property
    def closed(self) -> bool:
        """True once closed."""
        return bool(self._closed)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(AsyncReceiver, ObjectReceiver):
    """Receives messages from a channel. Get one with :meth:`Channel.consumer`.

    ``recv(timeout=None)`` returns the next message as bytes, waiting for one
    (``EndOfStream`` once the channel is closed for sending and drained);
    ``recv_nowait()`` raises ``WouldBlock`` instead of waiting;
    ``recv_many(n)`` takes up to ``n`` at once; ``recv_view()`` reads in place.
    Iterating yields messages until end-of-stream (fragment)::

        for msg in ch.consumer():
            handle(msg)

    On broadcast, ``missed`` counts the messages this consumer never saw
    (lossy, or untethered after the channel's ``slow_consumer_timeout``) and
    ``untethered`` how often the producer stopped waiting for it.
    """

    _channel: _RoleOwner
    _slot: int

    def recv_view(self, timeout: float | None = None) -> RecordView:
        """Hold the next record and view it in place (see :class:`RecordView`)."""
        return RecordView(self, self._peek(timeout))

    def __iter__(self) -> Iterator[bytes]:
        recv = self.recv
        try:
            while True:
                yield recv()
        except EndOfStream:
            return

    def close(self) -> None:
        """Give back any held record and the endpoint's slot."""
        if self._closed:
            return
        _aio.stop_waiter(self)
        self._close()
        self._channel._release_role(self._slot, producer=False)

    @property
    def closed(self) -> bool:
        """True once closed."""
        return bool(self._closed)

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
