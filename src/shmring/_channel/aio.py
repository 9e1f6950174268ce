"""asyncio for endpoints: ``await rx.recv_async()``, ``await tx.send_async(data)``,
``async for msg in rx`` and the object forms ``send_obj_async``/``recv_obj_async``.

Why it is built this way
------------------------
A ring has no file descriptor for the event loop to watch: readiness is a
futex word in shared memory. So each endpoint that is awaited gets ONE
helper thread (started on first use, not per message) that blocks in the
endpoint's ``_wait`` - GIL released, taking nothing - and, once progress is
possible, wakes the waiting tasks with ``loop.call_soon_threadsafe``. The
task then takes the message itself with ``recv_nowait`` on the loop thread.
A message is therefore only ever taken by a task that is running, never by
the helper: cancelling a task that awaits a receive loses nothing, because
until it runs again nothing has been taken for it. Nothing polls: an idle
await is a thread asleep on a futex.

``_wait`` cannot be interrupted from outside, so the helper waits in slices
of :data:`SLICE` seconds and looks for work (or a stop) between them; closing
an endpoint stops and joins its helper first (at most one slice), so a ring
is never unmapped under a thread still waiting on it. Each slice costs the
helper ~0.1 ms of CPU (the short spin before the futex sleep).

Rejected: ``loop.run_in_executor(None, rx.recv)`` (a thread per pending
message, and a cancelled await leaves a ``recv`` running that takes a
message nobody will see); polling with ``asyncio.sleep`` (latency or CPU).

The methods are mixins, :class:`AsyncSender` and :class:`AsyncReceiver`,
which ``shmring.Producer`` and ``shmring.Consumer`` inherit. They build on
the object mixins (``_objects``) and see an endpoint only as its C core (a
producer's end-of-stream is the core's ``_eos``), so this module never
imports the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar, overload

from .. import _core
from .._errors import Closed, EndOfStream, Timeout, WouldBlock
from .._objects.frame import encode, framed_size
from .._objects.recv import ObjectReceiver
from .._objects.send import ObjectSender, write
from .._objects.serializers import Serializer
from .._objects.view import ObjectView
from .presence import space_hint

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# What a helper thread waits on: an endpoint's C core (this module never
# needs the Channel's Producer or Consumer, which inherit the classes below).
_Endpoint: TypeAlias = _core.ProducerCore | _core.ConsumerCore

T = TypeVar("T")

#: Longest uninterrupted wait of a helper thread, seconds (see module doc).
SLICE = 0.1


class _Request:
    __slots__ = ("fut", "loop", "nbytes")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[bool],
                 nbytes: int) -> None:
        self.loop = loop
        self.fut = fut
        self.nbytes = nbytes


def _resolve(fut: asyncio.Future[bool], ready: bool) -> None:
    if not fut.done():
        fut.set_result(ready)


class _Waiter:
    """The helper thread of one endpoint."""

    def __init__(self, ep: _Endpoint, consumer: bool) -> None:
        self._ref: weakref.ref[_Endpoint] = weakref.ref(ep)
        self._consumer = consumer
        self._cond = threading.Condition(threading.Lock())
        self._requests: list[_Request] = []
        self._stopped = False
        self._thread: threading.Thread | None = None
        # An endpoint dropped without close() must not leave its helper
        # asleep on the condition forever.
        weakref.finalize(ep, self._abandon)

    def request(self, loop: asyncio.AbstractEventLoop, nbytes: int) -> asyncio.Future[bool]:
        """A future that resolves once the endpoint can make progress."""
        fut: asyncio.Future[bool] = loop.create_future()
        with self._cond:
            if self._stopped:
                raise Closed("this endpoint is closed")
            self._requests.append(_Request(loop, fut, nbytes))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="shmring-aio-waiter")
                self._thread.start()
            self._cond.notify()
        return fut

    def discard(self, fut: asyncio.Future[bool]) -> None:
        """Forget the request of ``fut`` (done, cancelled or timed out)."""
        with self._cond:
            self._requests = [r for r in self._requests if r.fut is not fut]

    def stop(self) -> None:
        """Stop the helper and wait for it to leave ``_wait`` (<= one slice)."""
        self._abandon()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def _abandon(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _wake(self, ready: bool) -> None:
        with self._cond:
            reqs, self._requests = self._requests, []
        for r in reqs:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                r.loop.call_soon_threadsafe(_resolve, r.fut, ready)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._requests and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    break
                nbytes = min(r.nbytes for r in self._requests)
            ep = self._ref()
            if ep is None:
                break
            try:
                ready = ep._wait(SLICE, nbytes)
                if not ready and isinstance(ep, _core.ProducerCore):
                    # A producer's wait ends on space, not on close_send:
                    # look at end-of-stream between slices.
                    ready = ep._eos
            except BaseException:
                ready = True  # the task's own attempt raises the error
            del ep
            if ready:
                self._wake(True)
        self._wake(True)  # let waiting tasks retry and see Closed


def _waiter(ep: _Endpoint, consumer: bool) -> _Waiter:
    w: _Waiter | None = ep.__dict__.get("_aio_waiter")
    if w is None:
        w = ep.__dict__["_aio_waiter"] = _Waiter(ep, consumer)
    return w


def stop_waiter(ep: _Endpoint) -> None:
    """Stop the endpoint's helper thread, if it has one (called by ``close``)."""
    w: _Waiter | None = ep.__dict__.pop("_aio_waiter", None)
    if w is not None:
        w.stop()


def _timeout(ep: _Endpoint, timeout: float | None, what: str) -> Timeout:
    """The Timeout a blocking call raises, naming the channel (as the C
    endpoints' own do)."""
    msg = f"timed out after {timeout} s waiting for {what} in {ep._label}"
    hint = space_hint(ep) if what == "space" else None
    err = Timeout(f"{msg}: {hint}" if hint else msg)
    # (what: "space" or "a message", the words the C endpoints use)
    err.channel, err.timeout = ep._name, timeout
    return err


def _closed(ep: _Endpoint) -> Closed:
    name = ep._name
    err = Closed("this endpoint is closed" if name is None else
                 f"this endpoint of channel {name!r} is closed")
    err.channel = name
    return err


async def _until(ep: _Endpoint, consumer: bool, attempt: Callable[[], T], nbytes: int,
                 timeout: float | None, what: str) -> T:
    """Run ``attempt`` (a ``*_nowait`` call) until it stops raising WouldBlock."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    waiter: _Waiter | None = None
    while True:
        try:
            return attempt()
        except WouldBlock:
            pass
        if ep._closed:
            raise _closed(ep)
        if waiter is None:
            waiter = _waiter(ep, consumer)
        timer = None
        if deadline is not None:
            left = deadline - loop.time()
            if left <= 0:
                raise _timeout(ep, timeout, what)
        fut = waiter.request(loop, nbytes)
        try:
            if deadline is not None:
                timer = loop.call_later(left, _resolve, fut, False)
            if not await fut:
                raise _timeout(ep, timeout, what)
        finally:
            if timer is not None:
                timer.cancel()
            waiter.discard(fut)


# ------------------------------------------------------- the mixins --
class AsyncSender(ObjectSender):
    """The asyncio half of ``shmring.Producer``: :meth:`send_async` and
    :meth:`send_obj_async`."""

    async def send_async(self, data: ReadableBuffer, timeout: float | None = None) -> None:
        """Await room in the channel, then send ``data``, up to ``timeout`` seconds.

        Raises :class:`~shmring.Timeout`, :class:`~shmring.Closed` (sending was
        closed) or :class:`~shmring.MessageTooLarge`. Example::

            await tx.send_async(b"tick", timeout=1)
        """
        nbytes = memoryview(data).nbytes
        await _until(self, False, lambda: self.send_nowait(data), nbytes, timeout,
                     "space")

    async def send_obj_async(self, obj: Any, timeout: float | None = None, *,
                             serializer: Serializer | None = None) -> None:
        """Await room, then send one object (see :meth:`Producer.send_obj`).

        The object is serialized once, before waiting. Example::

            await tx.send_obj_async({"id": 3, "frame": frame})
        """
        data, buffers = encode(obj, self.serializer if serializer is None else serializer)
        await _until(self, False, lambda: write(self, data, buffers, None, True),
                     framed_size(data, buffers), timeout, "space")


class AsyncReceiver(ObjectReceiver):
    """The asyncio half of ``shmring.Consumer``: :meth:`recv_async`,
    :meth:`recv_obj_async` and ``async for``."""

    async def recv_async(self, timeout: float | None = None) -> bytes:
        """Await the next message (bytes), up to ``timeout`` seconds.

        Raises :class:`~shmring.Timeout` or :class:`~shmring.EndOfStream`.
        Cancelling the await loses no message. Example::

            async def main():
                rx = shmring.Channel.open("ticks").consumer()
                msg = await rx.recv_async(timeout=5)
        """
        return await _until(self, True, self.recv_nowait, 0, timeout, "a message")

    @overload
    async def recv_obj_async(self, timeout: float | None = ..., *,
                             copy: Literal[True] = ...,
                             serializer: Serializer | None = ...) -> Any: ...
    @overload
    async def recv_obj_async(self, timeout: float | None = ..., *,
                             copy: Literal[False],
                             serializer: Serializer | None = ...) -> ObjectView: ...
    @overload
    async def recv_obj_async(self, timeout: float | None = ..., *, copy: bool,
                             serializer: Serializer | None = ...) -> Any: ...
    async def recv_obj_async(self, timeout: float | None = None, *, copy: bool = True,
                             serializer: Serializer | None = None) -> Any:
        """Await the next object (see :meth:`Consumer.recv_obj`). Cancelling the
        await loses nothing. Example::

            order = await rx.recv_obj_async(timeout=10)
        """
        return await _until(self, True,
                            lambda: self.recv_obj_nowait(copy=copy, serializer=serializer),
                            0, timeout, "a message")

    def __aiter__(self) -> Messages:
        """Iterate asynchronously over the messages until end-of-stream::

            async for msg in rx:
                await handle(msg)
        """
        return Messages(self)


class Messages:
    """``async for msg in rx``: the messages of a consumer, as bytes, until
    end-of-stream."""

    __slots__ = ("_rx",)

    def __init__(self, rx: AsyncReceiver) -> None:
        self._rx = rx

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._rx.recv_async()
        except EndOfStream:
            raise StopAsyncIteration from None
