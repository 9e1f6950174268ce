"""``shmring.Queue`` across the bridge: the counts of a queue whose ring a
bridge exports or feeds.

A queue bounded in bytes (``maxsize_bytes=``) is one mpmc ring ``<name>``
plus a control block ``<name>.ctl`` holding its counts (``_queue/control.py``).
The ring crosses like any mpmc channel; what the bridge adds is the counts,
so that ``qsize()``, ``maxsize``, ``empty()`` and ``JoinableQueue.join`` stay
right on both hosts:

- Exporting, the bridge is one more getter: each record the peer
  acknowledges counts as taken (a putter waiting under ``maxsize`` is woken)
  and as one task done, so a ``join()`` on the exporting host returns once
  every item was handed to the peer or done locally. A record read but not
  acknowledged still counts as in the queue: it goes back to the ring if
  the bridge dies.
- Importing, the bridge creates the same queue (a persistent ring and
  control block, ``maxsize`` copied) and is its putter: each record counts
  as put and as one unfinished task before it is committed, as a local put
  counts before it writes (a getter may take it at once), and a record not
  committed (no room yet) is uncounted again.

A growing queue (made without ``maxsize_bytes``) is a chain of rings that
come and go (``_queue/chain.py``): it is refused by name, with the way to
make one that crosses. As for a local putter or getter killed between
counting and writing, a bridge killed between counting a batch and
committing it (or settling a batch and counting it) leaves ``qsize()`` off
by that batch; no item is lost or duplicated by it.
"""

from __future__ import annotations

import struct
from typing import Any

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel
from .._errors import InvalidArgument, RegionExists, RegionNotFound
from .._queue.chain import CTL_END, CTL_KIND, KIND_CHAIN


def ctl_name(name: str) -> str:
    """The control block's channel name of queue ``name``."""
    return f"{name}.ctl"


class QueueCounts:
    """The control block of queue ``channel.name`` as this bridge counts in
    it: :meth:`taken` (exporting) or :meth:`put` (importing)."""

    def __init__(self, ctl: Channel) -> None:
        self.ctl = ctl
        buf = ctl.region._mapping()
        base = int(struct.unpack_from("<Q", buf, L.HDR_DATA_OFFSET)[0])
        name = ctl.name[:-len(".ctl")]
        if ctl.capacity < CTL_END or _core.load(buf, base + L.CTL_MAGIC) \
                != L.CTL_MAGIC_VALUE:
            raise InvalidArgument(f"{ctl.name!r} is not a queue's control block")
        if _core.load(buf, base + CTL_KIND) == KIND_CHAIN:
            raise InvalidArgument(
                f"queue {name!r} grows (it was made without maxsize_bytes=): only a queue "
                "bounded in bytes crosses the bridge; make it with "
                f"shmring.Queue(name={name!r}, maxsize_bytes=...)")
        self.maxsize = int(_core.load(buf, base + L.CTL_MAXSIZE))
        # A JoinableQueue's state, so unfinished tasks are counted too (a
        # plain Queue's never reads them); its maxsize makes a count of
        # items taken wake putters waiting for room. One call per batch.
        self._state = _core.QueueState(buf, base, self.maxsize, True, _core.Lock(),
                                       _core.Lock())

    def taken(self, n: int) -> None:
        """``n`` items left the queue for the peer: taken, and done."""
        self._state.count_many(0, n, n)

    def put(self, n: int) -> None:
        """``n`` items are about to be committed into the queue's ring."""
        self._state.count_many(n, 0, 0)

    def unput(self, n: int) -> None:
        """``n`` of the items counted by :meth:`put` were not committed."""
        self._state.count_many(0, n, n)

    def close(self) -> None:
        """Let go of the control block."""
        self._state.invalidate()
        self.ctl.close()


def open_counts(name: str, namespace: str) -> QueueCounts | None:
    """The counts of queue ``name`` if local channel ``name`` is a queue's
    ring (its control block exists), else None (a plain channel)."""
    try:
        ctl = Channel.open(ctl_name(name), namespace=namespace)
    except RegionNotFound:
        return None
    try:
        return QueueCounts(ctl)
    except BaseException:
        ctl.close()
        raise


def queue_meta(counts: QueueCounts) -> dict[str, Any]:
    """What the importer needs to make the same queue (META's ``queue``)."""
    return {"maxsize": counts.maxsize}


def create_counts(name: str, namespace: str, meta: dict[str, Any]) -> QueueCounts:
    """The control block of the queue the importer feeds: made (persistent,
    ``maxsize`` from the peer) or, after a restart, opened again."""
    maxsize = int(meta.get("maxsize", 0))
    try:
        ctl = Channel.create(ctl_name(name), L.MIN_CAPACITY, "spsc", persistent=True,
                             namespace=namespace)
    except RegionExists:
        counts = open_counts(name, namespace)
        if counts is None:  # removed meanwhile
            raise InvalidArgument(f"{ctl_name(name)!r} kept being removed") from None
        return counts
    try:
        buf = ctl.region._mapping()
        base = int(struct.unpack_from("<Q", buf, L.HDR_DATA_OFFSET)[0])
        _core.store(buf, base + L.CTL_MAXSIZE, max(0, maxsize))
        _core.store(buf, base + L.CTL_MAGIC, L.CTL_MAGIC_VALUE)
        del buf
        return QueueCounts(ctl)
    except BaseException:
        ctl.close()
        ctl.unlink()
        raise
