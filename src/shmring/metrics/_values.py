"""The values of a metrics region: per-process slabs, the retired totals
of dead processes, folding one into the other, and reading the sums.

Why it is built this way
------------------------
A process takes a slab of its own (a compare-exchange of the slab's owner
word from 0 to its own owner word) and from then on updates its values
there with single atomic instructions: no lock, no system call, and no
other process ever writes them while it lives.

When it dies, its counters and histograms must count on, and its slab must
be reused. *Folding* adds a dead slab into the retired totals and frees it.
It must survive a SIGKILL of the folder at any instruction without losing
or counting twice, so the retired totals are kept twice and a fold never
writes the live copy:

1. copy the live retired copy (``FOLD_SEQ & 1``) over the other one, add
   the dead slab's counter and histogram words to it, and record in it
   which slab and owner it folded (``COPY_SLAB``, ``COPY_OWNER``);
2. commit: a release store of ``FOLD_SEQ + 1`` makes that copy the live one;
3. zero the slab's values, then give it back (owner word to 0).

Killed before 2, nothing happened: the next fold overwrites the half-made
copy. Killed after 2, the live copy names the slab and its owner, and the
slab still has that owner: the next folder finishes 3 without adding it
again. The owner word holds the process's start time, so a slab taken since
by a new process (even one with the same pid) never looks unfinished.
Folds are serialised by the fold lock (an owner word too, taken over from a
dead holder); readers of the totals hold it as well, so a total is never
read half-folded. Gauges of dead processes are dropped, not folded.

Readers: ``counter = live retired copy + every owned slab`` (a dead slab
not yet folded still counts, so a total never dips), ``gauge = every live
slab``.
"""

from __future__ import annotations

import struct
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _core
from .._errors import Timeout
from . import _layout as M
from ._errors import MetricsFull
from ._owners import Judge, owner_alive
from ._table import Entry, Table

#: Called at each step of a fold with its name (tests kill the folder there).
Hook = Callable[[str], None]
#: Seconds to wait for the fold lock that a live process holds.
LOCK_WAIT = 10.0
_D = struct.Struct("<d")
_Q = struct.Struct("<Q")


def float_bits(v: float) -> int:
    """The 64 bits of double ``v``, as an unsigned int."""
    return int(_Q.unpack(_D.pack(v))[0])


def bits_float(b: int) -> float:
    """The double whose bits are ``b``."""
    return float(_D.unpack(_Q.pack(b))[0])


def _doubles(view: memoryview) -> list[float]:
    # typeshed types every tolist() as list[int]; a "d" view gives floats.
    return typing.cast("list[float]", view.cast("d").tolist())




@dataclass
class Series:
    """One series as read: its label values and value (an int for a
    counter, a float for a gauge, for a histogram the counts of each bucket,
    ``+Inf`` last, not cumulative, and the sum)."""

    values: tuple[str, ...]
    value: int | float = 0
    buckets: list[int] = field(default_factory=list)
    sum: float = 0.0


@dataclass
class Family:
    """One metric as read, with each of its series."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]
    series: list[Series] = field(default_factory=list)


@dataclass
class Totals:
    """What a read of the region saw: every metric, and how many processes
    hold slabs (``live``), folds committed so far (``folded``: dead
    processes whose counts went to the retired totals)."""

    families: list[Family]
    live: int
    folded: int
    slabs: int
    values_used: int
    values: int
    entries_used: int
    entries: int


class Values:
    """Slabs, retired totals and folding over mapping ``buf`` laid out as ``geo``."""

    def __init__(self, buf: Any, geo: M.Geometry, table: Table) -> None:
        self.buf = buf
        self.geo = geo
        self.table = table
        self._local = threading.Lock()  # the fold lock between this process's threads

    def _load(self, off: int) -> int:
        return int(_core.load(self.buf, off))

    def owner(self, slab: int) -> int:
        """The owner word of slab ``slab`` (0: free)."""
        return self._load(self.geo.slab(slab))

    # ------------------------------------------------------------- slabs --
    def claim(self, me: int) -> int:
        """A slab for the process of owner word ``me``: the one it holds
        already, else a free one, else one freed by folding dead ones."""
        for attempt in range(2):
            free = -1
            for i in range(self.geo.slabs):
                w = self.owner(i)
                if w == me:
                    return i
                if w == 0 and free < 0:
                    free = i
            for i in range(max(free, 0), self.geo.slabs):
                if _core.cas(self.buf, self.geo.slab(i), 0, me):
                    return i
            if attempt == 0:
                self.fold_dead(me)
        raise MetricsFull(
            f"all {self.geo.slabs} metrics slabs are held by live processes: a region made "
            "with more slabs takes more processes", "slabs")

    # ------------------------------------------------------------ folding --
    def _lock(self, me: int, wait: float) -> bool:
        at = self.geo.head(M.H_FOLD_LOCK)
        deadline = time.monotonic() + wait
        while True:
            if _core.cas(self.buf, at, 0, me):
                return True
            holder = self._load(at)
            if holder and holder != me and not owner_alive(holder):
                if _core.cas(self.buf, at, holder, me):
                    return True  # its holder died: what it left is redone below
                continue
            if holder == me:  # a forked parent's word cannot be ours: a stale one of ours
                _core.cas(self.buf, at, me, 0)
                continue
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def _unlock(self, me: int) -> None:
        _core.cas(self.buf, self.geo.head(M.H_FOLD_LOCK), me, 0)

    def locked(self, me: int, fn: Callable[[], Any], wait: float = LOCK_WAIT) -> Any:
        """Run ``fn`` holding the fold lock (raises Timeout if a live process
        keeps it ``wait`` seconds)."""
        with self._local:
            if not self._lock(me, wait):
                holder = self._load(self.geo.head(M.H_FOLD_LOCK))
                raise Timeout(f"the metrics fold lock is held by live pid "
                              f"{M.owner_pid(holder)} for more than {wait:g} s")
            try:
                return fn()
            finally:
                self._unlock(me)

    def fold_dead(self, me: int, hook: Hook | None = None) -> int:
        """Fold every slab of a dead process (taking the lock); how many."""
        return int(self.locked(me, lambda: self._fold_dead(hook)))

    def _fold_dead(self, hook: Hook | None) -> int:
        self._finish(hook)
        n = 0
        owners = [(i, self.owner(i)) for i in range(self.geo.slabs)]
        judge = Judge()  # after reading the words: whoever took one is in its census
        for i, w in owners:
            if w and not judge.alive(w):
                self._fold(i, w, hook)
                n += 1
        return n

    def _finish(self, hook: Hook | None) -> None:
        """Step 3 of a fold that was committed and then interrupted."""
        c = self._load(self.geo.head(M.H_FOLD_SEQ)) & 1
        slab = self._load(self.geo.head(M.H_COPY_SLAB[c]))
        owner = self._load(self.geo.head(M.H_COPY_OWNER[c]))
        if owner and slab < self.geo.slabs and self.owner(slab) == owner:
            self._free(slab, owner, hook)

    def _fold(self, slab: int, owner: int, hook: Hook | None) -> None:
        g, buf = self.geo, self.buf
        seq = self._load(g.head(M.H_FOLD_SEQ))
        src, dst = g.copy(seq & 1), g.copy(1 - (seq & 1))
        nbytes = g.values * M.WORD
        buf[dst:dst + nbytes] = buf[src:src + nbytes]
        if hook:
            hook("copied")
        v0 = g.slab_values(slab)
        view = memoryview(buf)
        q_dst, d_dst = view[dst:dst + nbytes].cast("Q"), view[dst:dst + nbytes].cast("d")
        q_src, d_src = view[v0:v0 + nbytes].cast("Q"), view[v0:v0 + nbytes].cast("d")
        try:
            for k, e in enumerate(self._series()):
                if e.kind == M.K_COUNTER:
                    q_dst[e.vbase] = (q_dst[e.vbase] + q_src[e.vbase]) & (2**64 - 1)
                elif e.kind == M.K_HISTOGRAM:
                    for w in range(e.vbase, e.vbase + e.vwords - 1):
                        q_dst[w] = (q_dst[w] + q_src[w]) & (2**64 - 1)
                    w = e.vbase + e.vwords - 1
                    d_dst[w] = d_dst[w] + d_src[w]
                if hook and k == 0:
                    hook("adding")
        finally:
            for v in (q_dst, d_dst, q_src, d_src):
                v.release()
            view.release()
        n = 1 - (seq & 1)
        _core.store(buf, g.head(M.H_COPY_SLAB[n]), slab)
        _core.store(buf, g.head(M.H_COPY_OWNER[n]), owner)
        if hook:
            hook("added")
        # SYNC: release, the commit of the fold; pairs with the acquire loads
        # of FOLD_SEQ in _finish() and read() (of the next lock holder).
        _core.store(buf, g.head(M.H_FOLD_SEQ), seq + 1)
        if hook:
            hook("committed")
        self._free(slab, owner, hook)

    def _free(self, slab: int, owner: int, hook: Hook | None) -> None:
        v0 = self.geo.slab_values(slab)
        nbytes = self.geo.values * M.WORD
        self.buf[v0:v0 + nbytes] = bytes(nbytes)
        if hook:
            hook("zeroed")
        # SYNC: seq-cst compare-exchange, pairs with claim()'s: the zeroed
        # values are visible to the slab's next owner.
        _core.cas(self.buf, self.geo.slab(slab), owner, 0)
        if hook:
            hook("freed")

    def _series(self) -> list[Entry]:
        return [e for e in self.table.ready() if not e.family]

    # ------------------------------------------------------------ reading --
    def read(self, me: int, hook: Hook | None = None) -> Totals:
        """Fold what is dead, then every metric's total (under the fold lock)."""
        return self.locked(me, lambda: self._read(hook))  # type: ignore[no-any-return]

    def _read(self, hook: Hook | None) -> Totals:
        self._fold_dead(hook)
        g = self.geo
        used = self.table.values_used()
        nbytes = used * M.WORD
        c = self._load(g.head(M.H_FOLD_SEQ)) & 1
        view = memoryview(self.buf)
        r = g.copy(c)
        q_ret = view[r:r + nbytes].cast("Q").tolist()
        d_ret = _doubles(view[r:r + nbytes])
        words: list[tuple[list[int], list[float], int]] = []
        for i in range(g.slabs):
            w = self.owner(i)
            if w:
                v0 = g.slab_values(i)
                words.append((view[v0:v0 + nbytes].cast("Q").tolist(),
                              _doubles(view[v0:v0 + nbytes]), w))
        view.release()
        judge = Judge()  # after reading the words
        owned = [(q, d, judge.alive(w)) for q, d, w in words]
        families: dict[str, Family] = {}
        series: list[Entry] = []
        for e in self.table.ready():
            if e.family:
                families[e.name] = Family(e.name, M.KIND_NAMES.get(e.kind, "untyped"), e.help,
                                          e.labels, e.buckets)
            else:
                series.append(e)
        for e in series:
            fam = families.get(e.name)
            if fam is None or e.vbase + e.vwords > used:
                continue
            s = Series(e.values)
            b = e.vbase
            if e.kind == M.K_COUNTER:
                s.value = (q_ret[b] + sum(q[b] for q, _d, _a in owned)) & (2**64 - 1)
            elif e.kind == M.K_GAUGE:
                s.value = float(sum(d[b] for _q, d, a in owned if a))
            elif e.kind == M.K_HISTOGRAM:
                last = b + e.vwords - 1
                s.buckets = [(q_ret[w] + sum(q[w] for q, _d, _a in owned)) & (2**64 - 1)
                             for w in range(b, last)]
                s.sum = d_ret[last] + sum(d[last] for _q, d, _a in owned)
            fam.series.append(s)
        live = sum(1 for _q, _d, a in owned if a)
        return Totals(sorted(families.values(), key=lambda f: f.name), live=live,
                      folded=self._load(g.head(M.H_FOLD_SEQ)), slabs=g.slabs,
                      values_used=used, values=g.values,
                      entries_used=len(families) + len(series), entries=g.entries)
