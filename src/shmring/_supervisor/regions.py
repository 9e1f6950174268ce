"""The region table: every region the supervisor maps and who holds it, and
the unlink rule.

The supervisor keeps its own mapping of each tracked region (it takes no
attach slot: it is not a user). A region is kept alive by (a) registrations
of live clients (``holders``) and (b) live processes in its attach table,
judged by pid and start time (an unsupervised process, or one between taking
its slot and registering) in the PID namespace its slot names: a registered
client's slots by its pidfd, others through our ``/proc`` where it shows
that namespace (``_proc.Census``: ours, or one below ours), and a slot of a
namespace we cannot see is presumed alive (only its registration's pidfd,
or a supervisor that sees it, may judge it). :meth:`RegionTable.evaluate`
applies the rule:

- slots of dead processes are recovered (``AttachTable.recover``: a claim in
  flight becomes padding, taken mpmc records go back, a broadcast cursor
  stops gating, exclusive roles are freed); so is a slot whose live process
  no longer maps the region (an endpoint dropped without close(), an exec);
- a region left with no live process is unlinked, unless persistent, and
  is no longer tracked; a region younger than the creation grace whose
  creator lives may be between its creation and its creator's first slot,
  and is looked at again later;
- during the startup grace (after a restart) no table entry is judged dead:
  clients re-register meanwhile, and a client in another PID namespace writes
  pids that only its registration can interpret.

A name is unlinked only while it still refers to the inode tracked
(``inventory.unlink_if_same``), never a newer region of the same name.
Corrupt headers are warned about and not tracked; a table whose slot count
was overwritten after tracking is not trusted (registrations alone keep it).

Deaths come from the process index (``deaths.py``) through the server, which
calls :meth:`RegionTable.process_died`; the table asks the index about
processes it sees in attach tables. Timers, the clock and the idle rule stay
with the server: it passes them in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import _core
from .. import _layout as L
from .._errors import CorruptRegion, ShmringError
from .._proc import Census, holder_alive, proc_namespace
from .._region import inventory as _gc
from .._region.guard import unmap
from .._region.names import list_segments, split_segment_name, unlink_segment
from .._region.region import Region, find_by_inode
from . import orphans as _orphans
from .deaths import Proc, ProcessIndex

log = logging.getLogger("shmring.supervisor")

RegionKey = tuple[str, int]  # (segment name, created_ns): one region, not one name

#: Seconds a dead pipeline worker's linked output claim waits for the
#: recovery of its input (csrc/ring/link.c) before it is padded regardless.
LINK_WAIT = 5.0


#: After a holder's death, a region that others still hold is judged again
#: (its table walked) at most this often (seconds): see _judge_after_death.
DEATHS_WALK = 0.05


class _Lazy:
    """One ``Census`` per evaluation, walked only if a slot needs it."""

    def __init__(self) -> None:
        self._census: Census | None = None

    def get(self) -> Census:
        """The census, walked at the first call."""
        if self._census is None:
            self._census = Census.take()
        return self._census

    def judge(self, pid: int, start: int, ns: int) -> bool | None:
        """Is the holder of a slot alive (None: cannot tell from here)? A
        slot of the namespace our /proc shows needs no census."""
        if ns and ns == proc_namespace():
            return holder_alive(pid, start, ns)
        return self.get().judge(pid, start, ns)


@dataclass(eq=False)
class Tracked:
    """A region the supervisor maps and watches."""

    seg: str
    created_ns: int
    region: Region
    ino: int
    persistent: bool
    holders: dict[tuple[int, int], int] = field(default_factory=dict)
    registered: bool = False  # ever held by a client (past its creation window)
    uncertain: bool = False  # last kept only for entries not judged yet (grace)
    truncated: bool = False  # its segment shrank under the mapping: never read again
    corrupt: bool = False  # its table's header was overwritten: said once, not walked again
    walked: float = float("-inf")  # clock time of the last judgement after a death
    walk_due: bool = False  # a coalesced judgement is scheduled (deaths_walk)
    orphan_due: float = 0.0  # clock time a judgement is scheduled for an orphan's expiry

    @property
    def key(self) -> RegionKey:
        """(segment, created_ns)."""
        return (self.seg, self.created_ns)


class RegionTable:
    """The regions of one namespace that the supervisor tracks.

    ``procs`` is the process index; ``clock`` and ``schedule(when, fn)`` the
    server's timers; ``mapped_inodes(pid)`` which /dev/shm inodes ``pid`` maps
    (None: cannot tell); ``on_tracked(t)`` and ``on_untracked()`` tell the
    server that the set of regions changed (idle exit, claim watch).
    ``grace_until`` (clock time) ends the startup grace.
    """

    def __init__(
        self,
        namespace: str,
        procs: ProcessIndex,
        stats: dict[str, int],
        *,
        clock: Callable[[], float],
        schedule: Callable[[float, Callable[[], object]], None],
        creation_grace: float,
        mapped_inodes: Callable[[int], dict[int, int] | None],
        on_tracked: Callable[[Tracked], None],
        on_untracked: Callable[[], None],
    ) -> None:
        self.namespace = namespace
        self._procs = procs
        self._stats = stats
        self._clock = clock
        self._schedule = schedule
        self.creation_grace = creation_grace
        self._mapped_inodes = mapped_inodes
        self._on_tracked = on_tracked
        self._on_untracked = on_untracked
        self._regions: dict[RegionKey, Tracked] = {}
        self.grace_until = 0.0
        # (region, slot, pid) of linked producer slots waiting: since when.
        self._link_waits: dict[tuple[RegionKey, int, int], float] = {}

    def __iter__(self) -> Iterator[Tracked]:
        return iter(list(self._regions.values()))

    def __len__(self) -> int:
        return len(self._regions)

    def get(self, key: RegionKey) -> Tracked | None:
        """The tracked region of ``key``, if tracked."""
        return self._regions.get(key)

    def inodes(self) -> list[int]:
        """The inode of every tracked region (each mapped once, by us)."""
        return [t.ino for t in self._regions.values()]

    def find_region(self, inode: int) -> Any:
        """The mapping of the region whose segment has inode ``inode`` (a
        dead pipeline worker's output region, csrc/ring/link.c): ours if we
        track it, else found in /dev/shm, else None."""
        for t in self._regions.values():
            if t.ino == inode and t.region.buf is not None:
                return t.region.buf
        return find_by_inode(inode)

    def _recover(self, t: Tracked, slot: int, pid: int) -> bool:
        """Recover one dead slot of ``t``. A linked producer slot waits (up to
        LINK_WAIT) for its input's recovery: False, and ``t`` is looked at
        again shortly."""
        table = t.region.table
        wait_key = (t.key, slot, pid)
        force = False
        if table.link_pending(slot):
            since = self._link_waits.setdefault(wait_key, self._clock())
            if self._clock() - since < LINK_WAIT:
                self._schedule(self._clock() + 0.05, lambda: self.evaluate(t))
                return False
            log.warning("slot %d of %s: a linked claim waited %.0f s for its input's "
                        "recovery; padding it", slot, t.seg, LINK_WAIT)
            force = True
        self._link_waits.pop(wait_key, None)
        return t.region.recover_slot(slot, pid, find_region=self.find_region, force=force)

    def _intact(self, t: Tracked) -> bool:
        """False once ``t``'s segment was truncated below its mapping (found
        by its size, before touching it): its pages past the end are gone,
        so its table is never read again and only registered holders keep
        it; the unlink rule then removes it as any other."""
        if t.truncated:
            return False
        size = t.region.truncated()
        if size is None:
            return True
        t.truncated = True
        log.warning("region %s was truncated to %d bytes under its %d-byte mapping: not "
                    "reading it again; it is unlinked once no registered client holds it",
                    t.seg, size, t.region.size)
        return False

    def _corrupt(self, t: Tracked, e: CorruptRegion) -> None:
        """``t``'s table cannot be walked (a header overwritten after it was
        tracked): say so once; from then on only registered holders keep it,
        and no event walks it again (each used to log a traceback)."""
        if not t.corrupt:
            t.corrupt = True
            log.warning("region %s: %s; its table is not read again, registered clients "
                        "alone keep it", t.seg, e)

    def in_grace(self) -> bool:
        """True during the startup grace: no table entry is judged dead."""
        return self._clock() < self.grace_until

    def own_segment(self, seg: str) -> bool:
        """True if ``seg`` is a segment name of this namespace."""
        parsed = split_segment_name(seg)
        return parsed is not None and parsed[0] == self.namespace

    def close(self) -> None:
        """Unmap every region and stop tracking (regions stay in /dev/shm)."""
        for t in self._regions.values():
            with contextlib.suppress(BufferError):
                t.region.close()
        self._regions.clear()

    # --------------------------------------------------- registrations --
    def attach(self, p: Proc, seg: str, cns: int) -> str:
        """Register one hold of ``p`` on region (seg, cns): ``ok``, or why
        not (``invalid``, ``gone``, ``stale``, ``unpublished``)."""
        if not self.own_segment(seg):
            return "invalid"
        p.creating.pop(seg, None)
        t = self._regions.get((seg, cns))
        if t is None:
            res = self.track(seg, cns)
            if isinstance(res, str):
                return res
            t = res
        t.registered = True
        p.holds[t.key] = p.holds.get(t.key, 0) + 1
        t.holders[p.key] = t.holders.get(p.key, 0) + 1
        p.seen.add(t.key)
        self._stats["attach"] += 1
        return "ok"

    def detach(self, p: Proc, seg: str, cns: int) -> bool:
        """Drop one hold of ``p`` on (seg, cns), then apply the unlink rule.
        True if the region was unlinked."""
        k = (seg, cns)
        n = p.holds.get(k, 0)
        t = self._regions.get(k)
        if n:
            if n == 1:
                del p.holds[k]
            else:
                p.holds[k] = n - 1
            if t is not None:
                h = t.holders.get(p.key, 0) - 1
                if h > 0:
                    t.holders[p.key] = h
                else:
                    t.holders.pop(p.key, None)
        self._stats["detach"] += 1
        if t is None:
            # Not tracked (we restarted since, or it was never registered):
            # have a look, it may be the last user's detach.
            res = self.track(seg, cns)
            if isinstance(res, str):
                return False
            t = res
        return self.evaluate(t, quick=True)

    def replace_holds(self, p: Proc, items: Iterable[Any]) -> dict[str, str]:
        """Make ``p``'s holds what ``items`` ([seg, created_ns, count], as a
        client sends them after a reconnect) says, attaching and detaching
        the difference. Returns ``seg@created_ns`` -> result of each attach."""
        want: dict[RegionKey, int] = {}
        for seg, cns, count in items:
            want[(str(seg), int(cns))] = want.get((str(seg), int(cns)), 0) + int(count)
        results = {}
        for k, n in want.items():
            have = p.holds.get(k, 0)
            if n > have:
                res = "ok"
                for _ in range(n - have):
                    res = self.attach(p, *k)
                    if res != "ok":
                        break
                results[f"{k[0]}@{k[1]}"] = res
        for k, have in list(p.holds.items()):
            for _ in range(have - want.get(k, 0)):
                self.detach(p, *k)
        return results

    # -------------------------------------------------------- tracking --
    def track(self, seg: str, cns: int | None) -> Tracked | str:
        """Map ``seg`` and track it; ``gone`` if the name is missing, ``stale``
        if it now names a region created at another time than ``cns``."""
        try:
            buf, st = _gc.map_segment(seg)
        except FileNotFoundError:
            return "gone"
        except PermissionError:
            return "invalid"
        if buf is None or st.st_size < L.REGION_HEADER_SIZE or \
                _core.load(buf, L.HDR_MAGIC) != L.SHMRING_MAGIC:
            if buf is not None:
                unmap(buf)
            return "unpublished"
        parsed = split_segment_name(seg)
        assert parsed is not None
        region = Region(parsed[1], seg, buf, st.st_size, st.st_ino)
        try:
            region.validate()
        except ShmringError as e:
            region.close()
            log.warning("region %s is corrupt, not tracked: %s", seg, e)
            return "invalid"
        created = region.created_ns
        if cns is not None and created != cns:
            region.close()
            return "stale"
        t = self._regions.get((seg, created))
        if t is not None:
            region.close()
            return t
        t = Tracked(seg, created, region, st.st_ino, region.persistent)
        self._regions[t.key] = t
        self._on_tracked(t)
        log.debug("tracking %s", seg)
        return t

    def untrack(self, t: Tracked) -> None:
        """Stop tracking ``t`` and unmap it."""
        self._regions.pop(t.key, None)
        for p in self._procs:
            p.seen.discard(t.key)
        with contextlib.suppress(BufferError):
            t.region.close()
        self._on_untracked()

    def adopt_all(self) -> None:
        """At startup: map every region of the namespace. Judgement waits for
        the end of the startup grace (clients re-register meanwhile)."""
        for ns, name in list_segments(self.namespace):
            seg = f"/shmring.{ns}.{name}"
            res = self.track(seg, None)
            if res == "unpublished":
                self._check_unpublished(seg)
        if self._regions:
            log.info("adopted %d region(s)", len(self._regions))

    def _check_unpublished(self, seg: str) -> None:
        """A segment without magic: a creation in progress, or one whose creator
        died half-way (then removed once older than the creation grace)."""
        try:
            age = time.time() - os.stat(_gc.shm_path(seg)).st_ctime
        except FileNotFoundError:
            return
        if age >= self.creation_grace:
            with contextlib.suppress(OSError, ShmringError):
                unlink_segment(seg)
                self._stats["unlinked"] += 1
                log.info("unlinked %s: its creation never completed", seg)
            return
        self._schedule(self._clock() + self.creation_grace - age + 0.05,
                       lambda: self.recheck(seg))

    def recheck(self, seg: str) -> None:
        """Look at ``seg`` again (a creation that was in progress)."""
        res = self.track(seg, None)
        if res == "unpublished":
            self._check_unpublished(seg)
        elif isinstance(res, Tracked):
            self.evaluate(res)

    # ------------------------------------------------------ the rule --
    def evaluate_all(self) -> None:
        """Apply the unlink rule to every tracked region (end of the grace)."""
        for t in self:
            self.evaluate(t)

    def evaluate(self, t: Tracked, *, quick: bool = False) -> bool:
        """Recover the slots of dead processes in ``t``'s table, then unlink
        ``t`` if nothing keeps it alive (unless persistent); stop tracking it
        once nobody uses it. True if unlinked. ``quick``: skip all that while
        a registered holder remains (dead ones come as their own events)."""
        if self._regions.get(t.key) is not t:
            return False
        # Deaths already queued count: the last close must see the name go.
        self._procs.drain()
        if self._regions.get(t.key) is not t:
            return False  # unlinked while handling them
        if quick and t.holders:
            return False
        buf = t.region._mapping()
        in_grace = self.in_grace()
        live = slotted = uncertain = False
        mapped: dict[int, dict[int, int] | None] = {}

        def maps(pid: int) -> bool:
            if pid not in mapped:
                mapped[pid] = self._mapped_inodes(pid)
            inodes = mapped[pid]
            return inodes is None or t.ino in inodes

        entries: Iterable[tuple[int, int, int, int]] = ()
        try:
            if self._intact(t) and not t.corrupt:
                # Read them all before any census (whoever took a slot is in it).
                entries = list(t.region.table.entries())
        except CorruptRegion as e:
            # A header overwritten after creation: its table cannot be
            # trusted, so only registered holders keep the region alive.
            self._corrupt(t, e)
            entries = ()
        census = _Lazy()
        for i, pid, start, ns in entries:
            slotted = True
            p = self._procs.by_table(pid, start, ns)
            if p is None and not in_grace and start:
                p = self._procs.watch_table_process(pid, start, ns, census.get)
                if p is not None:
                    p.seen.add(t.key)
            if p is not None and not p.dead:
                # Alive. A slot is still garbage if its process no longer maps
                # the region (an endpoint dropped without close(), an exec):
                # it cannot touch the ring, so recovering it is safe.
                if t.key in p.holds or p.pid <= 0 or maps(p.pid):
                    p.seen.add(t.key)
                    live = True
                    continue
            elif in_grace:
                uncertain = True
                continue
            elif p is None and census.judge(pid, start, ns) is not False:
                # Another PID namespace we cannot see, or a slot being taken:
                # not ours to judge from /proc. Presumed alive.
                live = True
                continue
            if t.region.table.link_pending(i) and not self._recover(t, i, pid):
                live = True  # the slot waits for its input's recovery
                continue
            try:
                recovered = self._recover(t, i, pid)
            except CorruptRegion as e:
                # The ring cannot be repaired; the slot still goes.
                log.warning("slot %d of %s: %s", i, t.seg, e)
                t.region.free_slot(i)
                recovered = True
            if recovered:
                self._stats["recovered"] += 1
                log.info("recovered slot %d of %s (pid %d: %s)", i, t.seg, pid,
                         "dead" if p is None else "does not map it")
        if self._intact(t) and not t.corrupt and self._orphans(t):
            live = True  # a durable subscription held for a dead process
        t.uncertain = uncertain and not live and not t.holders
        if live or t.holders or uncertain:
            return False
        if not t.registered and not t.persistent and not slotted and not t.truncated:
            # Maybe between its creation and its creator's first slot.
            creator = int.from_bytes(bytes(buf[L.HDR_CREATOR_PID:L.HDR_CREATOR_PID + 8]),
                                     "little")
            age = time.time() - t.created_ns / 1e9
            if age < self.creation_grace and (os.path.exists(f"/proc/{creator}")
                                              or creator in census.get().innermost):
                self._schedule(self._clock() + self.creation_grace - age + 0.05,
                               lambda: self.evaluate(t))
                return False
        unlinked = False
        if not t.persistent:
            unlinked = _gc.unlink_if_same(t.seg, t.ino)
            if unlinked:
                self._stats["unlinked"] += 1
                log.info("unlinked %s: no process uses it", t.seg)
        self.untrack(t)
        return unlinked

    def _orphans(self, t: Tracked) -> bool:
        """Free ``t``'s orphans whose hold has passed (orphans.py); True if
        one is still held: it keeps the region, judged again when it is due."""
        try:
            due = _orphans.expire_due(t.region.table, t.seg, self._stats)
        except CorruptRegion as e:
            self._corrupt(t, e)
            return False
        if due is None:
            return False
        when = self._clock() + due + 0.01
        if not t.orphan_due or when < t.orphan_due:
            t.orphan_due = when

            def fire() -> None:
                if t.orphan_due == when:
                    t.orphan_due = 0.0
                self.evaluate(t)

            self._schedule(when, fire)
        return True

    # ------------------------------------------------------ processes --
    def process_died(self, p: Proc) -> None:
        """``p`` exited: its holds go, its slots in every region it held or
        was seen in are recovered, and those regions are judged again."""
        touched = set(p.seen) | set(p.holds)
        for k in p.holds:
            t = self._regions.get(k)
            if t is not None:
                t.holders.pop(p.key, None)
        p.holds.clear()
        # Input slots first: a pipeline worker's linked output claims wait
        # for the recovery of the input they came from (csrc/ring/link.c).
        for inputs_first in (True, False):
            for k in touched:
                t = self._regions.get(k)
                if t is not None:
                    self._recover_proc(t, p, inputs_only=inputs_first)
        for k in touched:
            t = self._regions.get(k)
            if t is not None:
                self._judge_after_death(t)
        for seg in p.creating:
            self.recheck(seg)
        p.creating.clear()

    def _judge_after_death(self, t: Tracked) -> None:
        """Judge ``t`` again after a holder died: at once if nobody holds it
        now (its name must go), else at most once per :data:`DEATHS_WALK`
        seconds: the judgement walks the whole table (thousands of slots on
        a queue with thousands of processes), and a burst of deaths would
        walk it once per death. The dead process's own slots are recovered
        already (process_died); the walk finds slots of processes not yet
        watched, so those wait for at most DEATHS_WALK."""
        now = self._clock()
        if not t.holders or now - t.walked >= DEATHS_WALK:
            t.walked = now
            self.evaluate(t)
            return
        if t.walk_due:
            return
        t.walk_due = True

        def walk() -> None:
            t.walk_due = False
            t.walked = self._clock()
            self.evaluate(t)

        self._schedule(t.walked + DEATHS_WALK, walk)

    def reconcile(self, p: Proc) -> None:
        """A live process closed its connection: if it ``exec``-ed (or
        unmapped a region without detaching), the regions it no longer maps
        are not its to hold, and its slots in them are garbage."""
        mapped = self._mapped_inodes(p.pid) if p.pid > 0 else None
        if mapped is None:
            return  # cannot tell: keep everything until it exits
        for k in list(p.seen | set(p.holds)):
            t = self._regions.get(k)
            if t is None or t.ino in mapped:
                continue
            p.holds.pop(k, None)
            t.holders.pop(p.key, None)
            p.seen.discard(k)
            self._recover_proc(t, p)
            self.evaluate(t)

    def _recover_proc(self, t: Tracked, p: Proc, *, inputs_only: bool = False) -> None:
        if not self._intact(t) or t.corrupt:
            return
        try:
            slots = list(t.region.table.slots_of(p.lpid, p.start, p.ns))
        except CorruptRegion as e:
            self._corrupt(t, e)
            return
        for i in slots:
            if inputs_only and not t.region.table.links_input(i):
                continue
            try:
                if self._recover(t, i, p.lpid):
                    self._stats["recovered"] += 1
                    log.info("recovered slot %d of %s (pid %d exited)", i, t.seg, p.pid)
            except ShmringError as e:
                log.warning("cannot recover slot %d of %s: %s", i, t.seg, e)
