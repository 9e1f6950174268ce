"""A pipeline's edges: the channels between its stages, how they are made,
when one is drained, and the recovery of what a dead worker held in them.

Both sides judge a stage by the same test: its input edge is drained once
every record in it is done (head == tail). A record a worker has taken and
not finished keeps head behind, whether that worker lives or has died and
awaits recovery; so neither the parent nor a stage's last worker takes an
edge for done while a record of it may yet be handed back.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel


def create(name: str, max_bytes: int, pattern: str, namespace: str | None,
           lease: float | None = None) -> Channel:
    """An edge holding at least ``max_bytes`` (a power of two, 4 KiB or
    more), whose records may take up to half of it.

    Its pages are not populated at mapping (``populate=False``), in the
    parent or in any worker (:func:`attach`): a run often uses a small part
    of an edge (the control edge, a short run), and populating every edge
    in every process cost ~2.3 ms per 4 MiB of each, before the first item
    could move."""
    cap = 1 << max(12, (max_bytes - 1).bit_length())
    return Channel.create(name, cap, pattern, max_message=cap // 2 - L.RECORD_HEADER,
                          namespace=namespace, lease=lease, populate=False)


def attach(name: str, namespace: str | None) -> Channel:
    """Open a running pipeline's edge ``name`` (pages faulted in on first
    touch, as :func:`create` says)."""
    return Channel.open(name, namespace=namespace, populate=False)


def drained(edge: Channel) -> bool:
    """Every record sent into ``edge`` is done: none waits, none is taken."""
    buf = edge.region._mapping()
    return bool(_core.load(buf, L.OFF_HEAD) == _core.load(buf, L.OFF_TAIL))


def recover(edges: Iterable[Channel | None]) -> None:
    """Hand back at once what dead processes held in ``edges``, in the order
    given, rather than wait for the supervisor (slow under load, or not
    running: ``SHMRING_SUPERVISOR=0``). Give a dead worker's input edge
    first: recovering a record it had taken reads which of its linked
    outputs went out, and its claims on the edges it sent to wait for that.
    Exactly one of the callers and the supervisor recovers each slot."""
    for edge in edges:
        if edge is not None:
            edge.recover_dead()
