"""Durable broadcast subscriptions: a consumer whose place in the stream
outlives its process for a while.

A lossless broadcast consumer gates its producer with its cursor. When its
process dies, recovery normally frees its slot: the producer goes on and a
new consumer joins at the newest record, so whatever the dead one had not
yet finished with is gone for it. A *durable* subscription
(:func:`durable_consumer`, ``Channel._durable_consumer(tag, hold)``; private
API, used by the bridge's exporting side) says at join time that it wants
more: a 64-bit ``tag`` naming it and a ``hold`` in seconds.

- While its process lives it is an ordinary lossless subscriber (reading
  ahead and settling included: its cursor is the oldest unsettled record).
- When the process dies, recovery (the supervisor's, or ``reap_dead``)
  leaves the slot as an *orphan* for ``hold`` seconds: its cursor stays and
  keeps gating the producer, which waits for it as for a slow live consumer
  (a send timeout says so). Then the supervisor (or ``reap_dead``) frees it
  as any dead slot, and the producer goes on.
- A process asking for the same tag meanwhile *adopts* the orphan (compare-
  exchange on its pid word; layout.h, DURABLE): it reads on from the dead
  one's cursor, so it gets every record the dead one had not settled, and
  nothing before. With no orphan of that tag, it joins at the newest record,
  as :meth:`Channel.consumer` does.
- One live holder per tag: while a live process holds the tag, a second
  asker gets :class:`RoleTaken` (the bridge wants exactly that: a second
  bridge must not steal the stream). Two processes that ask at the same
  instant with no orphan may both get RoleTaken (never both the tag);
  asking again settles it.

``hold=0`` is today's behaviour: an ordinary consumer, tag ignored. Only a
lossless broadcast channel has durable subscriptions (a lossy one never
gates its producer: there is nothing to hold); other patterns need none
(their head stays put when a consumer dies).
"""

from __future__ import annotations

import math
import os
import time
import weakref
from typing import Any, Protocol, cast

from .. import _layout as L
from .._errors import InvalidArgument, RoleTaken
from .._proc import holder_alive, my_start_time, pid_namespace
from .._region.region import Region
from .._region.slots import ORPHAN, RECOVERING
from . import aio as _aio
from .endpoints import Consumer


class _Channel(Protocol):
    """What this module uses of a ``Channel`` (channel.py imports this
    module, so it is not imported back)."""

    _region: Region
    _slot: int
    _lent: bool
    _endpoints: weakref.WeakSet[Any]

    @property
    def name(self) -> str: ...
    @property
    def pattern(self) -> str: ...
    @property
    def region(self) -> Region: ...
    def consumer(self) -> Consumer: ...
    def _endpoint_slot(self, role: int) -> int: ...
    def _release_role(self, slot: int, *, producer: bool) -> None: ...

#: Seconds an asker waits for a slot of its tag that someone is recovering
#: or adopting right now (a few microseconds of work, unless that process
#: was stopped or killed in the middle).
BUSY_WAIT = 1.0


def _check(channel: _Channel, tag: int, hold: float) -> int:
    """``hold`` in nanoseconds, after checking the arguments."""
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag < 1 << 64:
        raise InvalidArgument(f"a durable subscription's tag is an int in [0, 2**64), "
                              f"not {tag!r}")
    if (isinstance(hold, bool) or not isinstance(hold, (int, float)) or math.isnan(hold)
            or hold < 0 or math.isinf(hold)):
        raise InvalidArgument(f"hold is a finite number of seconds >= 0, not {hold!r}")
    lossy = channel.region.lossy
    if channel.pattern != "broadcast" or lossy:
        raise InvalidArgument(
            f"channel {channel.name!r} is {'lossy ' if lossy else ''}"
            f"{channel.pattern}: only a lossless broadcast channel has durable "
            "subscriptions")
    return max(1, int(hold * 1e9)) if hold else 0


def _taken(channel: _Channel, tag: int, pid: int | None) -> RoleTaken:
    here = "this process" if pid == os.getpid() else f"pid {pid}"
    err = RoleTaken(f"channel {channel.name!r}: the durable subscription {tag:#x} is held "
                    f"by {here} (close it first)")
    err.channel, err.pid = channel.name, pid
    return err


def durable_consumer(channel: _Channel, tag: int, hold: float) -> Consumer:
    """A consumer of ``channel`` (lossless broadcast) that is the durable
    subscription ``tag``, held ``hold`` seconds after its process dies:
    the orphan of that tag adopted if there is one (reading on from its
    cursor), else a new subscriber at the newest record. RoleTaken if a
    live process holds the tag. See the module docstring."""
    hold_ns = _check(channel, tag, hold)
    if not hold_ns:
        return channel.consumer()
    region = channel._region
    table = region.table
    me = os.getpid(), my_start_time(), pid_namespace()
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        orphan: tuple[int, int] | None = None
        busy = False
        for slot, word in table.tagged(tag):
            if word & RECOVERING:
                if word & ORPHAN:
                    orphan = slot, word
                else:
                    busy = True  # being recovered (or adopted) right now
                continue
            started = table.start_time(slot)
            if started and holder_alive(word, started, table.pidns(slot)) is False:
                region.recover_slot(slot, word)  # dead: it becomes an orphan
                busy = True
                continue
            raise _taken(channel, tag, word)
        if orphan is not None:
            slot, word = orphan
            if table.adopt(slot, word, *me):
                return _resumed(channel, slot)
            continue  # someone else took it: look again
        if busy:
            if time.monotonic() >= deadline:
                raise _taken(channel, tag, None)
            time.sleep(0.002)
            continue
        c = _joined(channel, tag, hold_ns)
        if c is not None:
            return c
        if time.monotonic() >= deadline:
            raise _taken(channel, tag, None)


def leave(consumer: Consumer) -> bool:
    """Close durable subscriber ``consumer`` of this process but keep its
    subscription, as if the process had died: its slot becomes an orphan
    held for its hold (gating the producer at its cursor: what it had not
    settled stays), for a process that asks for its tag to adopt. False
    (and a plain close) if it is not a durable subscription of this
    process."""
    if consumer.closed:
        return False
    channel = cast("_Channel", consumer._channel)
    region = channel._region
    table = region.table
    slot = consumer._slot
    if not table.durable_hold(slot) or table.pid(slot) != os.getpid():
        consumer.close()
        return False
    _aio.stop_waiter(consumer)
    consumer._close()  # its read-ahead list goes; the slot's cursor stays
    channel._endpoints.discard(consumer)
    if channel._lent and slot == channel._slot:
        channel._lent, channel._slot = False, -1  # the channel's own slot: no longer its
    table.orphan(slot, os.getpid())
    return True


def _resumed(channel: _Channel, slot: int) -> Consumer:
    """A consumer on the adopted orphan ``slot``, reading on from its cursor."""
    region = channel._region
    try:
        c = Consumer(region._mapping(), slot, region.name)
        c._resume()
    except BaseException:
        channel._release_role(slot, producer=False)
        raise
    c._channel = channel
    c._slot = slot
    channel._endpoints.add(c)
    return c


def _joined(channel: _Channel, tag: int, hold_ns: int) -> Consumer | None:
    """A new subscriber with ``tag`` at the newest record, or None if another
    slot of the tag turned up meanwhile (it withdrew: look again)."""
    region = channel._region
    table = region.table
    slot = channel._endpoint_slot(L.ROLE_CONSUMER)
    table.make_durable(slot, tag, hold_ns)
    try:
        c = Consumer(region._mapping(), slot, region.name)
        c._join()
    except BaseException:
        channel._release_role(slot, producer=False)
        raise
    c._channel = channel
    c._slot = slot
    channel._endpoints.add(c)
    # Our tag was stored (seq-cst) before this walk; another asker's before
    # its own: at least one of us sees the other, and whoever does withdraws.
    if any(s != slot for s, _w in table.tagged(tag)):
        c.close()
        return None
    return c
