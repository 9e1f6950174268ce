"""Channels: the public face of a region and its ring.

A :class:`Channel` is a region opened by name; its :meth:`Channel.producer`
and :meth:`Channel.consumer` hand out endpoints (``endpoints.py``), each
holding an attach slot and, on the single-producer or single-consumer
patterns, the role's owner word; this module takes and gives back both.
The channel's own slot (it marks this process as a user of the region) is
lent to its first endpoint, so a process with one endpoint holds one slot
(thousands of processes can share a queue); the endpoint gives it back to
the channel when it closes.
Lifecycle (close, close_send, unlink, the supervisor) and pickling are here.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal

from .. import _core
from .. import _layout as L
from .._errors import (
    Closed,
    InvalidArgument,
    RegionNotFound,
    RoleTaken,
)
from .._proc import pid_namespace
from .._region.inventory import unlink_if_created, unlink_if_same
from .._region.options import lease_millis
from .._region.region import Region, segment_name, split_segment_name
from .._supervisor import client as _client
from . import presence as _presence  # noqa: F401  (registers the send timeouts' hint)
from .endpoints import Consumer, Producer

#: ``Channel.open(remote=...)``'s way to the bridge, a layer above this one:
#: ``(name, remote, namespace, timeout)``, returning once a local ring of
#: that name is fed. Handed in by ``_bridge.control`` (set_remote_import),
#: which the package imports.
_remote_import: Callable[[str, str, str | None, float], None] | None = None


def set_remote_import(fn: Callable[[str, str, str | None, float], None]) -> None:
    """Hand ``Channel.open`` the bridge's import call (see ``_remote_import``)."""
    global _remote_import
    _remote_import = fn


class Channel:
    """A named channel between processes: a region with a ring in it.

    Create it in one process and open it by name in others (fragment)::

        ch = shmring.Channel.create("jobs", capacity=1 << 20, pattern="mpmc")
        tx = ch.producer()
        tx.send(b"work")
        ...
        ch.close(); ch.unlink()

    Patterns: ``spsc`` (one producer, one consumer), ``mpsc`` (many producers,
    one consumer), ``mpmc`` (work queue: each message to exactly one consumer),
    ``broadcast`` (one producer; every consumer sees every message sent after
    it joined; ``lossy=True`` never blocks the producer and counts what a slow
    consumer missed in ``Consumer.missed``; a lossless one with
    ``slow_consumer_timeout=`` stops waiting for a consumer that holds it back
    without moving for that long).
    """

    def __init__(self, region: Region, *, supervised: bool | None = None,
                 register: bool = True) -> None:
        self._region = region
        self._created_ns = region.created_ns
        self._slot = region.alloc_slot(L.ROLE_ATTACH)
        self._lent = False  # the slot is an endpoint's now (lent to it)
        self._endpoints: weakref.WeakSet[Producer | Consumer] = weakref.WeakSet()
        # The supervisor unlinks the region once its last user is gone
        # (docs/design.md, "Supervisor"); supervised=False opts out.
        # register=False: the caller registers it (create_together).
        self._supervisor: _client.Connection | None = None
        if register and _client.enabled(supervised):
            try:
                conn = _client.connection(_namespace(region.segment))
                conn.attach(region.segment, self._created_ns)
            except BaseException:
                region.free_slot(self._slot)
                raise
            self._supervisor = conn

    @classmethod
    def create(
        cls,
        name: str,
        capacity: int = 1 << 20,
        pattern: str = "spsc",
        *,
        max_message: int | None = None,
        lossy: bool = False,
        persistent: bool = False,
        mode: int = 0o600,
        slots: int = 64,
        namespace: str | None = None,
        supervised: bool | None = None,
        lease: float | Literal["supervisor"] | None = "supervisor",
        slow_consumer_timeout: float | None = None,
        populate: bool = True,
    ) -> Channel:
        """Create channel ``name``: a ring of ``capacity`` bytes (a power of
        two) in a new region. ``max_message`` defaults to a quarter of it.

        The region is removed once every process that used it has closed it
        or exited, unless ``persistent=True`` (then :meth:`unlink` it).
        ``supervised=False`` (or ``$SHMRING_SUPERVISOR=0``) leaves its
        lifetime to you: no supervisor is contacted.

        ``mode`` is the region's permission bits (0o000-0o777), applied
        exactly, whatever the umask: the default 0o600 lets only this user
        open the channel, 0o660 also the group, 0o666 everyone (opening needs
        read and write access; another user is refused with a
        :class:`PermissionDenied` that says the mode and the owner). Other
        bits raise :class:`InvalidArgument`.

        ``lease`` (mpmc): seconds a consumer may hold one record (a ``recv``
        under way, a ``recv_view`` block, a pipeline worker's item) before
        the supervisor hands it to the other consumers; the holder then gets
        :class:`LeaseRevoked`. ``"supervisor"`` (the default) takes the
        supervisor's ``--lease-timeout`` (30 s unless set); 0 or None: never.

        ``slow_consumer_timeout`` (lossless broadcast only; default None,
        never): a consumer whose cursor holds the producer back and has not
        moved for that many seconds (stopped, stuck) is *untethered*: the
        producer and the other consumers go on without it. When it reads
        again it gates the producer once more and goes on from where it was
        if nothing it had still to read was overwritten, else from the newest
        message; ``Consumer.missed`` counts exactly the messages it lost and
        ``Consumer.untethered`` how often this happened. Readers of such a
        channel validate every copy (as lossy readers do), so views and
        objects are of a copy and objects too large for a record are not
        streamed.

        ``populate`` (default True): map a ring of up to 64 MiB with its
        pages faulted in, so that its first lap takes no page fault; False
        leaves them to first touch (about 1.5 µs a 4 KiB page), cheaper to
        create and open when only part of the ring will be used."""
        lease_ms = lease_millis(lease, pattern)
        seg = segment_name(name, namespace)
        conn = _client.connection(_namespace(seg)) if _client.enabled(supervised) else None
        if conn is not None:
            conn.creating(seg)  # if we die before attaching, it is cleaned up
        try:
            region = Region.create(name, capacity, mode=mode, pattern=pattern,
                                   max_message=max_message, slots=slots, lossy=lossy,
                                   persistent=persistent, namespace=namespace,
                                   lease_ms=lease_ms,
                                   slow_consumer_timeout=slow_consumer_timeout,
                                   populate=populate)
        except BaseException:
            if conn is not None:
                conn.abandon(seg)
            raise
        created = region.created_ns
        try:
            return cls(region, supervised=conn is not None)
        except BaseException:
            region.close()
            unlink_if_created(seg, created)
            if conn is not None:
                conn.abandon(seg)
            raise

    @classmethod
    def create_together(cls, specs: list[tuple[str, int, str, int | None]],
                        namespace: str | None = None) -> list[Channel]:
        """Create channels ``(name, capacity, pattern, max_message)`` with
        ``MAX_SLOTS`` slots and the other options' defaults, as many
        :meth:`create` calls would, but with two messages to the supervisor
        instead of four and one wait instead of two: all are announced
        (``creating``), made, then registered (``attach_all``, whose reply
        is waited for). Every region is tracked by the supervisor when this
        returns. All are made or none: on any error those made are removed."""
        conn = _client.connection(_namespace(segment_name(specs[0][0], namespace))) \
            if _client.enabled(None) else None
        if conn is None:
            made: list[Channel] = []
            try:
                for name, capacity, pattern, max_message in specs:
                    made.append(cls.create(name, capacity, pattern, max_message=max_message,
                                           slots=L.MAX_SLOTS, namespace=namespace,
                                           supervised=False))
            except BaseException:
                for c in made:
                    c.close()
                    c.unlink()
                raise
            return made
        chans: list[Channel] = []
        errors: list[Any] = []
        segs = [segment_name(spec[0], namespace) for spec in specs]
        conn.creating(*segs)  # if we die before attaching, they are cleaned up
        try:
            for seg, (name, capacity, pattern, max_message) in zip(segs, specs, strict=True):
                region = Region.create(name, capacity, pattern=pattern,
                                       max_message=max_message, slots=L.MAX_SLOTS,
                                       namespace=namespace,
                                       lease_ms=lease_millis("supervisor", pattern))
                try:
                    chans.append(cls(region, register=False))
                except BaseException:
                    region.close()
                    unlink_if_created(seg, region.created_ns)
                    raise
            errors = conn.attach_all([(c._region.segment, c._created_ns) for c in chans])
            for c, err in zip(chans, errors, strict=True):
                if err is None:
                    c._supervisor = conn
        except BaseException:
            _undo(chans, conn, segs)
            raise
        if any(errors):
            _undo(chans, conn, segs)
            raise next(e for e in errors if e is not None)
        return chans

    @classmethod
    def open(cls, name: str, *, wait: float | None = 0.0, namespace: str | None = None,
             timeout: float = 2.0, supervised: bool | None = None,
             remote: str | None = None, populate: bool = True) -> Channel:
        """Open the existing channel ``name``.

        ``wait`` is how many seconds to wait for a channel that does not exist
        yet, so that processes can start in any order (0, the default, raises
        :class:`RegionNotFound` at once; ``None`` waits for ever). ``timeout``
        bounds the wait for one that exists but is still being created.

        ``remote="tcp://hostb:7470"``: channel ``name`` of another host,
        whose bridge listens there and exports it. This namespace's bridge
        (started if none runs; ``shmring bridge``) imports it into a local
        ring of the same name and shape, fed by the bridge; this opens that
        ring once it is fed (waiting up to ``wait`` seconds, at least 10, for
        the peer). See docs/bridge.md. ``populate``: as in :meth:`create`."""
        if wait is not None and (wait != wait or wait < 0):
            raise InvalidArgument(f"wait must be a number of seconds >= 0 or None, not {wait!r}")
        if remote is not None:
            if _remote_import is None:
                raise InvalidArgument("remote= needs shmring's bridge (import shmring)")
            _remote_import(name, remote, namespace, max(wait or 0.0, 10.0))
            if wait is not None:
                wait = max(wait, timeout)
        deadline = None if wait is None else time.monotonic() + wait
        pause = 0.001
        while True:
            try:
                return cls._open(name, namespace, timeout, supervised, populate)
            except RegionNotFound as e:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if wait:
                        e.args = (f"{e.args[0]} (waited {wait:g} s for it)", *e.args[1:])
                    raise
                time.sleep(pause if left is None else min(pause, left))
                pause = min(pause * 2, 0.05)

    @classmethod
    def _open(cls, name: str, namespace: str | None, timeout: float,
              supervised: bool | None, populate: bool) -> Channel:
        for _attempt in range(5):
            region = Region.attach(name, namespace=namespace, timeout=timeout,
                                   populate=populate)
            try:
                return cls(region, supervised=supervised)
            except _client.Stale:
                region.close()  # its last user closed it meanwhile: look again
            except BaseException:
                region.close()
                raise
        raise RegionNotFound(f"region {name!r} kept being removed while opening it")

    # ------------------------------------------------------------ roles --
    def _endpoint_slot(self, role: int) -> int:
        """A slot for a new endpoint of ``role``: the channel's own if it is
        not lent already (and this process's: not a forked child's), else a
        new one."""
        if not self._lent and self._slot >= 0 and self._owns(self._slot):
            self._region.table.lend(self._slot, role)
            self._lent = True
            return self._slot
        return self._region.alloc_slot(role)

    def _drop_slot(self, slot: int) -> None:
        """An endpoint's slot is done with: given back to the channel if it
        was lent, else freed."""
        if self._lent and slot == self._slot:
            self._region.table.give_back(slot)
            self._lent = False
        else:
            self._region.free_slot(slot)

    def _take_role(self, *, producer: bool) -> int:
        region = self._region
        what = "producer" if producer else "consumer"
        slot = self._endpoint_slot(L.ROLE_PRODUCER if producer else L.ROLE_CONSUMER)
        for attempt in range(2):
            if region.table.take_owner(slot, producer=producer):
                return slot
            if attempt == 0:
                region.reap_dead()  # the holder may have died
        self._drop_slot(slot)
        pid, ns = region.table.owner(producer=producer)
        here = ns in (0, pid_namespace())
        holder = ("another endpoint of this process" if pid == os.getpid() and here else
                  f"pid {pid}" if pid is not None and here else
                  f"pid {pid} of another PID namespace" if pid is not None else
                  "another endpoint")
        err = RoleTaken(
            f"channel {region.name!r} ({region.pattern}) allows one {what}; {holder} holds "
            f"it (close that {what} first)"
        )
        err.channel, err.pid = region.name, pid
        raise err

    def producer(self) -> Producer:
        """A new producer endpoint (one at a time on spsc and broadcast)."""
        region = self._region
        if _core.load32(region._mapping(), L.OFF_EOS):
            raise Closed(f"channel {region.name!r} was closed for sending")
        pattern = L.PATTERNS[region.pattern]
        if pattern in L.MULTI_PRODUCER:
            slot = self._endpoint_slot(L.ROLE_PRODUCER)
        else:
            slot = self._take_role(producer=True)
        try:
            p = Producer(region._mapping(), slot, region.name)
        except BaseException:
            self._release_role(slot, producer=True)
            raise
        p._channel = self
        p._slot = slot
        self._endpoints.add(p)
        return p

    def consumer(self) -> Consumer:
        """A new consumer endpoint (one at a time on spsc and mpsc)."""
        region = self._region
        pattern = L.PATTERNS[region.pattern]
        if pattern in L.SINGLE_CONSUMER:
            slot = self._take_role(producer=False)
        else:
            slot = self._endpoint_slot(L.ROLE_CONSUMER)
        try:
            c = Consumer(region._mapping(), slot, region.name)
            c._join()
        except BaseException:
            self._release_role(slot, producer=False)
            raise
        if not L.TRAITS[region.pattern].fan_out:
            region.table.set_state(slot, L.SLOT_ACTIVE)
        c._channel = self
        c._slot = slot
        self._endpoints.add(c)
        return c

    def _durable_consumer(self, tag: int, hold: float) -> Consumer:
        """A consumer that is the durable subscription ``tag`` (lossless
        broadcast; private): if its process dies, its slot stays, gating the
        producer, for ``hold`` seconds, and a process asking for the same
        tag meanwhile reads on from where it stopped. See durable.py."""
        from .durable import durable_consumer

        return durable_consumer(self, tag, hold)

    def _leave(self, consumer: Consumer) -> bool:
        """Close durable subscriber ``consumer`` but keep its subscription
        held for its hold, as if this process had died (durable.py)."""
        from .durable import leave

        return leave(consumer)

    def _orphans(self) -> int:
        """Durable subscriptions of dead processes held now (the producer
        waits for them)."""
        return len(self._region.table.orphans())

    def _owns(self, slot: int) -> bool:
        # A forked child shares its parent's endpoints and slots: not its own.
        region = self._region
        return not region.closed and region.table.pid(slot) == os.getpid()

    def _release_role(self, slot: int, *, producer: bool) -> None:
        region = self._region
        buf = region.buf
        if buf is None or not self._owns(slot):
            return
        region.table.release_owner(slot, producer=producer)
        if not producer:
            # A broadcast consumer stops gating the producer.
            region.table.set_state(slot, L.SLOT_CLOSING)
            _core.wake(buf, L.OFF_SPACE_FUTEX)
        self._drop_slot(slot)

    # -------------------------------------------------------- lifecycle --
    def close_send(self) -> None:
        """End of stream: producers can send no more; consumers receive what
        is left, then get :class:`EndOfStream`."""
        buf = self._region._mapping()
        _core.store32(buf, L.OFF_EOS, 1)
        _core.wake(buf, L.OFF_DATA_FUTEX)
        _core.wake(buf, L.OFF_SPACE_FUTEX)

    def close(self) -> None:
        """Close every endpoint this object handed out and unmap the region."""
        if self._region.closed:
            return
        for ep in list(self._endpoints):
            if self._owns(ep._slot):
                ep.close()
            else:
                ep._close()  # the parent's endpoint: only drop our hold on the mapping
        if self._slot >= 0 and self._owns(self._slot):
            self._region.free_slot(self._slot)
        self._slot = -1
        self._region.close()
        conn, self._supervisor = self._supervisor, None
        if conn is not None:
            # Synchronous: if we were the last user, the name is gone on return.
            conn.detach(self._region.segment, self._created_ns)

    def unlink(self) -> None:
        """Remove the channel's name now; processes that have it open keep
        working. Idempotent: a name already removed (by the supervisor when
        the last user closed, or by anyone) or reused by a newer channel is
        left alone. Needed for persistent and unsupervised channels only."""
        region = self._region
        if not region.closed and region.inode:
            # Still mapped here, so its inode cannot be a newer region's: exact,
            # and works when the header is unreadable (a truncated segment).
            unlink_if_same(region.segment, region.inode)
        else:
            unlink_if_created(region.segment, self._created_ns)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self._region.name, self._region.segment))

    # ------------------------------------------------------- properties --
    @property
    def name(self) -> str:
        """The channel's name."""
        return self._region.name

    @property
    def region(self) -> Region:
        """The underlying region (header, attach table)."""
        return self._region

    @property
    def pattern(self) -> str:
        """spsc, mpsc, mpmc or broadcast."""
        return self._region.pattern

    @property
    def capacity(self) -> int:
        """Ring bytes."""
        return self._region.capacity

    @property
    def max_message(self) -> int:
        """Largest message accepted."""
        return self._region.max_message

    @property
    def lease(self) -> float | Literal["supervisor"] | None:
        """mpmc: seconds a consumer may hold one record (see :meth:`create`);
        ``"supervisor"`` for the supervisor's default, None for never (and on
        other patterns)."""
        ms = int(_core.load(self._region._mapping(), L.HDR_LEASE_MS))
        if self.pattern != "mpmc" or ms == L.LEASE_NEVER:
            return None
        return "supervisor" if ms == 0 else ms / 1000.0

    @property
    def slow_consumer_timeout(self) -> float | None:
        """Seconds after which a lossless broadcast producer stops waiting
        for a consumer that does not move; None for never."""
        return self._region.slow_consumer_timeout

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._region.closed

    @property
    def consumers(self) -> int:
        """How many consumers live processes have on this channel now (from
        the attach table; a dead process's never count)."""
        return self._region.live_endpoints(L.ROLE_CONSUMER)

    @property
    def producers(self) -> int:
        """How many producers live processes have on this channel now."""
        return self._region.live_endpoints(L.ROLE_PRODUCER)

    def recover_dead(self) -> int:
        """Repair what dead processes left in this channel (their claims,
        taken records and cursors) and free their slots. The supervisor does
        this on its own; call it when running without one."""
        return self._region.reap_dead()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.pattern
        return f"<shmring.Channel {self.name!r} {state}>"


def _undo(chans: list[Channel], conn: _client.Connection, segs: list[str]) -> None:
    """create_together failed: remove what it made (a registered channel's
    close detaches it) and withdraw the announcements not attached."""
    registered = set()
    for c in chans:
        seg, cns = c._region.segment, c._created_ns
        if c._supervisor is not None:
            registered.add(seg)
        c.close()
        unlink_if_created(seg, cns)
    for seg in segs:
        if seg not in registered:
            conn.abandon(seg)


def _reopen(name: str, segment: str) -> Channel:
    return Channel.open(name, namespace=_namespace(segment))


def _namespace(segment: str) -> str:
    parsed = split_segment_name(segment)
    assert parsed is not None
    return parsed[0]

