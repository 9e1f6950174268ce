"""What travels between a Requester and a Responder, and where.

Channels, by name (all in the caller's namespace):

- ``<service>``: the request channel, mpmc, so any number of clients send
  and any number of servers share the work (each request reaches one).
  Whoever comes first creates it (client or server); the other opens it, so
  the two may start in any order and requests sent before a server starts
  wait in the ring.
- ``<service>.reply.<pid>.<n>``: one client's reply channel, mpsc (any
  server process may answer), created by the client, which is its only
  consumer.

Records are plain values, so the C codec carries them without pickle when
the payload is plain too:

- request: ``(id, reply_channel, payload)``
- reply: ``(id, True, value)`` or ``(id, False, exception)``; the exception
  is a :class:`~shmring.RemoteError` (it pickles).

Why not one shared reply channel per service: a broadcast of every reply to
every client costs each client the others' traffic, and an mpmc one hands a
reply to whichever client takes it. A channel per client costs one region
per client and gives each exactly its own replies.
"""

from __future__ import annotations

import time
from typing import Any

from .._channel.channel import Channel
from .._errors import InvalidArgument, RegionExists, RegionNotFound

#: Ring bytes of a request channel made by either side (max_message is a quarter).
REQUEST_CAPACITY = 1 << 20
#: Ring bytes of a client's reply channel.
REPLY_CAPACITY = 1 << 20


def reply_name(service: str, pid: int, n: int) -> str:
    """The name of the ``n``-th reply channel of process ``pid`` for ``service``."""
    return f"{service}.reply.{pid}.{n}"


def check_service(service: object) -> str:
    """``service`` if it is a usable channel name, else InvalidArgument."""
    if not isinstance(service, str) or not service:
        raise InvalidArgument(f"a service is named by a non-empty str, not {service!r}")
    return service


def request_record(rid: int, reply_to: str, payload: Any) -> tuple[int, str, Any]:
    """The record a client sends."""
    return (rid, reply_to, payload)


def parse_request(record: Any) -> tuple[int, str, Any] | None:
    """(id, reply channel, payload) of a request record, or None if it is not one."""
    if (isinstance(record, tuple) and len(record) == 3 and isinstance(record[0], int)
            and isinstance(record[1], str)):
        return record[0], record[1], record[2]
    return None


def parse_reply(record: Any) -> tuple[int, bool, Any] | None:
    """(id, ok, value) of a reply record, or None if it is not one."""
    if (isinstance(record, tuple) and len(record) == 3 and isinstance(record[0], int)
            and isinstance(record[1], bool)):
        return record[0], record[1], record[2]
    return None


def open_or_create(name: str, *, namespace: str | None, capacity: int, pattern: str,
                   create: bool = True) -> Channel:
    """Open channel ``name``, or create it (``create=True``) if nobody has:
    a creation race with another process ends in opening the winner's."""
    for _attempt in range(20):
        try:
            return Channel.open(name, namespace=namespace)
        except RegionNotFound:
            if not create:
                raise
        try:
            return Channel.create(name, capacity=capacity, pattern=pattern, namespace=namespace)
        except RegionExists:
            time.sleep(0.001)  # another process won: open its channel
    raise RegionNotFound(f"channel {name!r} kept appearing and going while opening it")


def live_consumers(ch: Channel) -> int:
    """How many consumers of ``ch`` belong to live processes."""
    return ch.consumers
