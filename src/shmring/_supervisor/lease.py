"""The lease watch: hand back mpmc records that a consumer has held past
its lease.

A consumer of an mpmc region that holds one taken record for longer than
the region's lease (stopped with SIGSTOP, stuck in a debugger or a deadlock,
or simply slower than its lease) has the record taken from it and handed to
the other consumers (csrc/ring/lease.c); it gets
:class:`~shmring.LeaseRevoked` when it resumes and releases the record, or,
in a pipeline worker, when it sends an output of it.

Like the claim watch (revoke.py) this looks, because a stopped process
sends no event: every ``lease / 4`` (at most 1 s, the shortest lease of the
tracked mpmc regions), only while an mpmc region is tracked, and never on
the data path. A record counts as held since the first look that saw it at
the same position with the same word (state and owner slot) while that slot
had the same pid, start time and message count; time is the server's
injectable clock.

A region's lease is in its header (``HDR_LEASE_MS``, set by
``Channel.create(lease=...)``): 0 means this supervisor's default
``lease_timeout`` (``--lease-timeout``, ``$SHMRING_LEASE_TIMEOUT``, 30 s),
``LEASE_NEVER`` means never.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import _core
from .. import _layout as L
from .._errors import CorruptRegion, ShmringError
from .regions import RegionKey, RegionTable, Tracked

log = logging.getLogger("shmring.supervisor")

#: Seconds a consumer may hold one record of an mpmc channel created without
#: ``lease=`` before the supervisor hands it to the other consumers (as SQS's
#: visibility timeout: 30 s).
DEFAULT_LEASE = 30.0

_Ident = tuple[int, int, int, int]  # word, pid, start time, messages of its slot


def region_lease(t: Tracked, default: float | None) -> float | None:
    """The lease of ``t`` in seconds (None: never), from its header."""
    ms = int(_core.load(t.region._mapping(), L.HDR_LEASE_MS))
    if ms == L.LEASE_NEVER:
        return None
    return default if ms == 0 else ms / 1000.0


class LeaseWatch:
    """Looks at the records consumers hold in the tracked mpmc regions.

    ``lease_timeout`` is the default lease (None: regions without a lease of
    their own are never looked at). ``regions`` is the table of tracked
    regions (its ``find_region(inode)`` maps a pipeline's output region: a
    linked input's outputs are settled there); ``clock`` and
    ``schedule(when, fn)`` are the server's timers; ``stopping()`` is true once the server stops.
    ``stats["leases"]`` counts the records handed back.
    """

    def __init__(
        self,
        lease_timeout: float | None,
        stats: dict[str, int],
        regions: RegionTable,
        *,
        clock: Callable[[], float],
        schedule: Callable[[float, Callable[[], object]], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.lease_timeout = lease_timeout
        self._stats = stats
        stats.setdefault("leases", 0)
        self._regions = regions
        self._clock = clock
        self._schedule = schedule
        self._stopping = stopping
        # (region, position) -> (what held it, first seen at)
        self._held: dict[tuple[RegionKey, int], tuple[_Ident, float]] = {}
        self._timer = False
        self._shortest: float | None = lease_timeout

    def interval(self) -> float:
        """Seconds between looks: a quarter of the shortest lease, at most 1 s."""
        return min(1.0, self._shortest / 4) if self._shortest else 1.0

    def region_tracked(self, t: Tracked) -> None:
        """A region is tracked now: start looking if it is an mpmc one."""
        if t.region.pattern != "mpmc":
            return
        try:
            lease = region_lease(t, self.lease_timeout)
        except (ShmringError, ValueError):
            return
        if lease is not None and (self._shortest is None or lease < self._shortest):
            self._shortest = lease
        if not self._timer:
            self._timer = True
            self._schedule(self._clock() + self.interval(), self.check)

    def check(self) -> None:
        """Hand back records held past their region's lease. Runs while an
        mpmc region is tracked."""
        self._timer = False
        now = self._clock()
        seen: set[tuple[RegionKey, int]] = set()
        tracked = False
        shortest = self.lease_timeout
        for t in list(self._regions):
            try:
                if t.truncated or t.corrupt or t.region.pattern != "mpmc":
                    continue
                if t.region.truncated() is not None:
                    continue  # shrunk: not read (regions.py says so once)
                tracked = True
                lease = region_lease(t, self.lease_timeout)
                if lease is not None and (shortest is None or lease < shortest):
                    shortest = lease
                self._check_region(t, lease, now, seen)
            except CorruptRegion as e:
                if not t.corrupt:  # said once, then not looked at again
                    t.corrupt = True
                    log.warning("cannot check the leases of %s: %s", t.seg, e)
            except (ShmringError, ValueError) as e:  # ValueError: unmapped meanwhile
                log.warning("cannot check the leases of %s: %s", t.seg, e)
        for k in [k for k in self._held if k not in seen]:
            del self._held[k]
        self._shortest = shortest
        if tracked and not self._stopping():
            self._timer = True
            self._schedule(self._clock() + self.interval(), self.check)

    def _check_region(self, t: Tracked, lease: float | None, now: float,
                      seen: set[tuple[RegionKey, int]]) -> None:
        buf = t.region._mapping()
        for pos, word in _core.lease_scan(buf):
            slot = ((word >> L.REC_OWNER_SHIFT) & L.REC_OWNER_MASK) - 1
            pid, start, messages, link_in, link_region = t.region.table.holder(slot)
            leased = (word >> L.REC_STATE_SHIFT) & L.REC_STATE_MASK == L.ST_LEASED
            k = (t.key, pos)
            seen.add(k)
            if not leased:  # a hand-back under way is finished at once, whatever the lease
                if lease is None:
                    continue
                ident = (word, pid, start, messages)
                prev = self._held.get(k)
                if prev is None or prev[0] != ident:
                    self._held[k] = (ident, now)
                    continue
                if now - prev[1] < lease:
                    continue
            out = None
            if link_in == pos + 1:
                out = self._regions.find_region(link_region)
            rc = _core.revoke_lease(buf, pos, word, out)
            if rc in (1, 2):
                self._stats["leases"] += 1
                self._held.pop(k, None)
                log.warning("%s: pid %d held a record past its lease of %s s (stopped or "
                            "stuck): handed it to the other consumers", t.seg, pid,
                            f"{lease:g}" if lease is not None else "?")
            elif rc == -2:
                log.info("%s: pid %d's record is past its lease, but its output claim "
                         "cannot be settled yet: looking again", t.seg, pid)
