"""The claim watch: revoke claims held past ``claim_timeout``, lift
quarantines that are done with.

A producer of an mpsc or mpmc region that holds one claim for longer than
``claim_timeout`` (stopped with SIGSTOP, stuck in a debugger or a deadlock)
has the claim revoked, so consumers go on; it gets
:class:`~shmring.ClaimRevoked` when it resumes. The claim's bytes stay
quarantined until it is done with them (csrc/ring/revoke.c); each look
also lifts the quarantines whose producers have moved on.

This is the supervisor's one periodic check (every ``claim_timeout / 4``, at
most 1 s, while a multi-producer region is tracked): a stopped process sends
no event, so only time tells. A claim counts as held since the first look
that saw it in the same slot with the same pid and position; time is the
injectable clock of the server, so tests move it instead of waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from .. import _core
from .. import _layout as L
from .._errors import CorruptRegion, ShmringError
from .regions import RegionKey, Tracked

log = logging.getLogger("shmring.supervisor")

#: Seconds a producer may hold one claim before the supervisor revokes it.
DEFAULT_CLAIM_TIMEOUT = 10.0
#: Patterns whose claims can be revoked: only there do consumers pass over a
#: claimed record (it is quarantined), so only there can one stuck producer
#: be left behind.
MULTI_PRODUCER = frozenset(t.name for t in L.TRAITS.values() if t.multi_producer)


class ClaimWatch:
    """Looks at the producer claims of the tracked multi-producer regions.

    ``claim_timeout`` None: only lift quarantines, never revoke. ``regions()``
    lists the tracked regions; ``clock`` and ``schedule(when, fn)`` are the
    server's timers; ``stopping()`` is true once the server stops.
    ``stats["revoked"]`` and ``stats["lifted"]`` count what it did.
    """

    def __init__(
        self,
        claim_timeout: float | None,
        stats: dict[str, int],
        *,
        regions: Callable[[], Iterable[Tracked]],
        clock: Callable[[], float],
        schedule: Callable[[float, Callable[[], object]], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.claim_timeout = claim_timeout
        self._stats = stats
        self._regions = regions
        self._clock = clock
        self._schedule = schedule
        self._stopping = stopping
        # (region, slot) -> (pid, claim position, first seen at)
        self._claims: dict[tuple[RegionKey, int], tuple[int, int, float]] = {}
        self._timer = False

    def interval(self) -> float:
        """Seconds between looks."""
        return min(1.0, self.claim_timeout / 4) if self.claim_timeout else 1.0

    def region_tracked(self, t: Tracked) -> None:
        """A region is tracked now: start looking if it has many producers."""
        if t.region.pattern in MULTI_PRODUCER and not self._timer:
            self._timer = True
            self._schedule(self._clock() + self.interval(), self.check)

    def check(self) -> None:
        """Revoke claims held past ``claim_timeout``; lift quarantines that
        are done with. Runs while a multi-producer region is tracked."""
        self._timer = False
        now = self._clock()
        seen: set[tuple[RegionKey, int]] = set()
        tracked = False
        for t in list(self._regions()):
            try:
                if t.truncated or t.corrupt or t.region.truncated() is not None:
                    continue  # shrunk or overwritten: not read (regions.py says so once)
                if t.region.pattern not in MULTI_PRODUCER:
                    continue
                tracked = True
                self._check_region(t, now, seen)
            except CorruptRegion as e:
                if not t.corrupt:  # said once, then not looked at again
                    t.corrupt = True
                    log.warning("cannot check the claims of %s: %s", t.seg, e)
            except (ShmringError, ValueError) as e:  # ValueError: unmapped meanwhile
                log.warning("cannot check the claims of %s: %s", t.seg, e)
        for k in [k for k in self._claims if k not in seen]:
            del self._claims[k]
        if tracked and not self._stopping():
            self._timer = True
            self._schedule(self._clock() + self.interval(), self.check)

    def _check_region(self, t: Tracked, now: float, seen: set[tuple[RegionKey, int]]) -> None:
        buf = t.region._mapping()
        if _core.load(buf, L.OFF_QUAR_COUNT):
            lifted = _core.lift_quarantine(buf)
            if lifted:
                self._stats["lifted"] += lifted
                log.info("%s: %d revoked claim(s) done with, bytes back in use", t.seg, lifted)
        if self.claim_timeout is None:
            return
        for i, pid, pos in t.region.table.producer_claims():
            k = (t.key, i)
            seen.add(k)
            prev = self._claims.get(k)
            if prev is None or prev[:2] != (pid, pos):
                self._claims[k] = (pid, pos, now)
                continue
            if now - prev[2] < self.claim_timeout:
                continue
            rc = _core.revoke_claim(buf, i)
            if rc == 1:
                self._stats["revoked"] += 1
                self._claims[k] = (pid, pos, float("inf"))
                log.warning("%s: pid %d held a claim for %.1f s (stopped or stuck): "
                            "revoked it so consumers go on", t.seg, pid, now - prev[2])
            elif rc == -2:
                log.warning("%s: pid %d holds a claim too long, but %d revoked claims "
                            "are still quarantined: not revoking yet", t.seg, pid,
                            L.QUAR_ENTRIES)
