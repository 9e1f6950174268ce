"""One request as a server holds it: its id, its payload, where to answer.

A :class:`Request` is small and holds no endpoint of its own: replying goes
through the :class:`~shmring.Responder` that received it (its cache of reply
producers, under its lock), so a request may be handed to another thread,
kept in a table, and answered later, once.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Protocol

from .._errors import InvalidArgument, RemoteError


class _Answerer(Protocol):
    """What a Request needs of the Responder that made it (named by a
    protocol, not imported: the responder imports this module)."""

    service: str

    def _answer(self, req: Request, ok: bool, value: Any) -> bool: ...


class Request:
    """A request taken by a :class:`~shmring.Responder`: answer it once, with
    :meth:`reply` or :meth:`fail`, from any thread.

    ``id`` is the client's correlation id, ``payload`` what it sent,
    ``reply_to`` the name of its reply channel. ``Responder.request(reply_to,
    id)`` rebuilds one, to answer a request received by another process (for
    example a server that was restarted). Example::

        import shmring

        with shmring.Responder("echo") as server, shmring.Requester("echo") as client:
            rid = client.submit({"x": 2})
            req = server.recv(timeout=5)
            assert (req.id, req.payload) == (rid, {"x": 2})
            req.reply(req.payload["x"] * 10)
            assert client.result(rid, timeout=5) == 20
    """

    __slots__ = ("_answered", "_responder", "id", "payload", "reply_to")

    def __init__(self, responder: _Answerer, rid: int, reply_to: str, payload: Any) -> None:
        self.id = rid
        self.payload = payload
        self.reply_to = reply_to
        self._responder = responder
        self._answered = threading.Lock()

    @property
    def answered(self) -> bool:
        """True once :meth:`reply` or :meth:`fail` was called."""
        return self._answered.locked()

    def _take(self) -> None:
        if not self._answered.acquire(blocking=False):
            raise InvalidArgument(f"request {self.id} from {self.reply_to!r} was already answered")

    def reply(self, value: Any) -> bool:
        """Send ``value`` back to the client. True if it went into the
        client's reply channel; False if it was dropped because the client
        is gone (or did not take a reply for ``reply_timeout`` seconds), as
        counted in ``Responder.stats["dropped"]``. A second answer raises
        :class:`~shmring.InvalidArgument`."""
        self._take()
        return self._responder._answer(self, True, value)

    def fail(self, exc: BaseException | str) -> bool:
        """Answer with a failure: the client's ``call``/``result`` raises a
        :class:`~shmring.RemoteError` whose message names the service and
        the error (an exception's traceback, if it has one, comes along as
        ``remote_traceback``). A RemoteError is passed on as it is. Returns
        as :meth:`reply` does."""
        self._take()
        return self._responder._answer(self, False, self._remote(exc))

    def _remote(self, exc: BaseException | str) -> RemoteError:
        if isinstance(exc, RemoteError):
            return exc
        service = self._responder.service
        if isinstance(exc, str):
            return RemoteError(f"service {service!r} failed request {self.id}: {exc}",
                               stage=service)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return RemoteError(
            f"service {service!r} failed request {self.id}: {type(exc).__name__}: {exc}",
            stage=service, remote_traceback=tb if exc.__traceback__ is not None else "")

    def __repr__(self) -> str:
        state = "answered" if self.answered else "open"
        return f"<shmring.Request {self.id} from {self.reply_to!r} {state}>"
