"""The registry: one metrics region of a namespace, as this process holds it.

A :class:`Registry` opens the region by name (``metrics`` unless told
otherwise) in a shmring namespace, or creates it if nobody has yet: the
first of the daemon and the processes that count makes it, persistent, so
that totals outlive every process that counted them until the region is
unlinked. It hands metrics their value words in this process's slab
(taken at first use, again after a fork) and reads the totals for the
daemon. The layout is ``_layout.py``'s, the name table ``_table.py``'s,
slabs and folding ``_values.py``'s.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import Any, Protocol

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel
from .._errors import (
    Closed,
    CorruptRegion,
    InvalidArgument,
    RegionExists,
    RegionNotFound,
    RoleTaken,
)
from .._proc import my_start_time, pid_namespace
from . import _layout as M
from ._owners import owner_alive
from ._table import Entry, Table
from ._values import Hook, Totals, Values


class _Bound(Protocol):
    """A metric bound to its words (``_kinds._Metric``): unbinding sets
    ``_buf`` to None, and its next update binds again."""

    _buf: Any

#: The region's name when none is given.
DEFAULT_NAME = "metrics"
#: Seconds an opener waits for the creator to lay the region out.
INIT_WAIT = 5.0


def me() -> int:
    """This process's owner word (right after a fork too)."""
    return M.owner_word(os.getpid(), my_start_time(), pid_namespace())


def _positive(what: str, v: object, limit: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
        raise InvalidArgument(f"{what} must be an int between 1 and {limit}, not {v!r}")
    return v


class Registry:
    """The metrics region ``name`` of ``namespace`` (default
    ``$SHMRING_NAMESPACE``), opened, or created if it does not exist.

    ``entries`` (metrics plus label sets), ``values`` (value words per
    process: a counter or gauge takes one, a histogram its buckets plus two)
    and ``slabs`` (processes counting at once) size a region being created;
    an existing region keeps its own. ``mode`` is its permission bits, as
    for :meth:`shmring.Channel.create`. With ``create=False`` a missing
    region raises :class:`shmring.RegionNotFound` instead.

    Example::

        import shmring.metrics as m

        reg = m.Registry("metrics-demo")
        hits = m.Counter("hits", "Pages served", registry=reg)
        hits.inc()
        assert reg.read().families[0].series[0].value >= 1
        reg.unlink(); reg.close()
    """

    def __init__(self, name: str = DEFAULT_NAME, *, namespace: str | None = None,
                 entries: int = M.DEFAULT_ENTRIES, values: int = M.DEFAULT_VALUES,
                 slabs: int = M.DEFAULT_SLABS, entry_bytes: int = M.DEFAULT_ENTRY_BYTES,
                 mode: int = 0o600, create: bool = True) -> None:
        sizes = (_positive("entries", entries, 1 << 20),
                 _positive("entry_bytes", entry_bytes, 1 << 16),
                 _positive("slabs", slabs, 1 << 16), _positive("values", values, 1 << 24))
        if entry_bytes % M.WORD or entry_bytes < 128:
            raise InvalidArgument(f"entry_bytes must be a multiple of 8, at least 128, "
                                  f"not {entry_bytes}")
        self._ch = _open_or_create(name, namespace, sizes, mode, create)
        self._pid = os.getpid()
        self.name = name
        self._buf: Any = self._ch.region._mapping()
        self.geo = _geometry(self._ch)
        self.table = Table(self._buf, self.geo)
        self.values = Values(self._buf, self.geo, self.table)
        self._slab = -1
        self._lock = threading.Lock()
        self._families: dict[str, Entry] = {}
        self._bound: weakref.WeakSet[_Bound] = weakref.WeakSet()
        _REGISTRIES.add(self)

    # ----------------------------------------------------------- identity --
    @property
    def segment(self) -> str:
        """The POSIX name of the region (``/shmring.<namespace>.<name>``)."""
        return self._ch.region.segment

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._buf is None

    def _mapping(self) -> Any:
        if self._buf is None:
            raise Closed(f"metrics registry {self.name!r} is closed")
        return self._buf

    # ------------------------------------------------------------ binding --
    def _family(self, kind: int, name: str, help: str, labels: tuple[str, ...],
                buckets: tuple[float, ...]) -> Entry:
        """The family entry of a metric, added if new (see MetricConflict)."""
        self._mapping()
        with self._lock:
            e = self._families.get(name)
            if e is None:
                e = self.table.find_or_add(me(), kind=kind, family=True, name=name, help=help,
                                           labels=labels, buckets=buckets)
                self._families[name] = e
        return e

    def _series(self, fam: Entry, values: tuple[str, ...]) -> Entry:
        """The series entry of ``values`` of family ``fam``, added if new."""
        self._mapping()
        words = len(fam.buckets) + 2 if fam.kind == M.K_HISTOGRAM else 1
        return self.table.find_or_add(me(), kind=fam.kind, family=False, name=fam.name,
                                      values=values, vwords=words)

    def _bind(self, metric: _Bound, series: Entry) -> tuple[Any, int]:
        """(mapping, byte offset) of ``series``'s first value word in this
        process's slab, which is taken at the first call (and after a fork)."""
        buf = self._mapping()
        with self._lock:
            if self._slab < 0:
                self._slab = self.values.claim(me())
            self._bound.add(metric)
            return buf, self.geo.slab_values(self._slab) + series.vbase * M.WORD

    def _unbind_all(self) -> None:
        for m in list(self._bound):
            m._buf = None
        self._bound = weakref.WeakSet()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self.values._local = threading.Lock()
        self._slab = -1  # the parent's: the child takes its own at its next update
        self._unbind_all()

    # ------------------------------------------------------------ reading --
    def read(self, *, hook: Hook | None = None) -> Totals:
        """Fold what dead processes left, then the total of every metric
        over every process, dead or alive (gauges: live ones only)."""
        self._mapping()
        return self.values.read(me(), hook)

    def fold(self, *, hook: Hook | None = None) -> int:
        """Fold the slabs of dead processes into the retired totals now;
        returns how many. (:meth:`read` does it too.) ``hook``, called with
        the name of each step, is for tests that kill a folder there."""
        self._mapping()
        return self.values.fold_dead(me(), hook)

    def status(self) -> dict[str, Any]:
        """What the region holds, for ``metricsd status``: sizes and use,
        processes counting, folds done, the daemon (if one took it)."""
        t = self.read()
        d = _core.load(self._mapping(), self.geo.head(M.H_DAEMON))
        return {
            "name": self.name, "segment": self.segment,
            "metrics": len(t.families), "series": sum(len(f.series) for f in t.families),
            "entries": {"used": t.entries_used, "size": t.entries},
            "values": {"used": t.values_used, "size": t.values},
            "processes": t.live, "slabs": t.slabs, "folded": t.folded,
            "daemon": None if not d else {
                "pid": M.owner_pid(d), "alive": owner_alive(d),
                "port": int(_core.load(self._buf, self.geo.head(M.H_DAEMON_PORT))),
                "since_ns": int(_core.load(self._buf, self.geo.head(M.H_DAEMON_SINCE)))},
        }

    # ------------------------------------------------------------- daemon --
    def take_daemon(self, port: int) -> None:
        """Record this process as the region's daemon, serving on ``port``.
        Raises :class:`shmring.RoleTaken` if another live process is it."""
        buf, at = self._mapping(), self.geo.head(M.H_DAEMON)
        mine = me()
        while not _core.cas(buf, at, 0, mine):
            holder = int(_core.load(buf, at))
            if holder == mine:
                break
            if owner_alive(holder):
                port_then = int(_core.load(buf, self.geo.head(M.H_DAEMON_PORT)))
                err = RoleTaken(f"metrics region {self.name!r} is served by pid "
                                f"{M.owner_pid(holder)} (port {port_then}) already")
                err.pid = M.owner_pid(holder)
                raise err
            _core.cas(buf, at, holder, 0)  # a dead daemon's
        _core.store(buf, self.geo.head(M.H_DAEMON_PORT), port)
        _core.store(buf, self.geo.head(M.H_DAEMON_SINCE), time.time_ns())

    def drop_daemon(self) -> None:
        """Undo :meth:`take_daemon` (at a clean exit)."""
        if self._buf is not None:
            _core.cas(self._buf, self.geo.head(M.H_DAEMON), me(), 0)

    # ---------------------------------------------------------- lifecycle --
    def close(self) -> None:
        """Unmap the region in this process. Its slab stays this process's
        until it exits (its counts are folded then); metrics bound to it
        raise :class:`shmring.Closed` from now on."""
        if self._buf is None:
            return
        self._unbind_all()
        self._buf = None
        _REGISTRIES.discard(self)
        if os.getpid() == self._pid:
            self._ch.close()
        else:  # a forked child: the parent's channel and attach slot are not ours
            self._ch.region.close()

    def unlink(self) -> None:
        """Remove the region's name: its totals go once every process that
        maps it has closed it or exited (a new registry starts from zero)."""
        self._ch.unlink()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._buf is None else self.segment
        return f"<shmring.metrics.Registry {self.name!r} {state}>"


def _capacity(sizes: tuple[int, int, int, int]) -> int:
    entries, entry_bytes, slabs, values = sizes
    need = M.Geometry(0, entries, entry_bytes, slabs, values).size
    return max(L.MIN_CAPACITY, 1 << (need - 1).bit_length())


def _open_or_create(name: str, namespace: str | None, sizes: tuple[int, int, int, int],
                    mode: int, create: bool) -> Channel:
    ch: Channel | None = None
    for _attempt in range(5):
        try:
            ch = Channel.open(name, namespace=namespace)
            break
        except RegionNotFound:
            if not create:
                raise
        try:
            ch = Channel.create(name, _capacity(sizes), "spsc", persistent=True,
                                slots=L.MAX_SLOTS, mode=mode, namespace=namespace)
        except RegionExists:
            continue
        _lay_out(ch, sizes)
        return ch
    if ch is None:
        raise RegionNotFound(f"metrics region {name!r} kept appearing and going while opening it")
    try:
        _wait_laid_out(ch)
    except BaseException:
        ch.close()
        raise
    return ch


def _lay_out(ch: Channel, sizes: tuple[int, int, int, int]) -> None:
    buf = ch.region._mapping()
    base = int(_core.load(buf, L.HDR_DATA_OFFSET))
    entries, entry_bytes, slabs, values = sizes
    for word, v in ((M.H_VERSION, M.VERSION), (M.H_ENTRIES, entries),
                    (M.H_ENTRY_BYTES, entry_bytes), (M.H_SLABS, slabs), (M.H_VALUES, values)):
        _core.store(buf, base + word * M.WORD, v)
    # SYNC: release, pairs with the acquire load in _wait_laid_out().
    _core.store(buf, base + M.H_MAGIC * M.WORD, M.MAGIC)


def _wait_laid_out(ch: Channel) -> None:
    if not ch.region.persistent or ch.pattern != "spsc":
        raise CorruptRegion(f"region {ch.name!r} is a channel, not a metrics region: pick "
                            "another name")
    buf = ch.region._mapping()
    base = int(_core.load(buf, L.HDR_DATA_OFFSET))
    deadline = time.monotonic() + INIT_WAIT
    while _core.load(buf, base + M.H_MAGIC * M.WORD) != M.MAGIC:
        if time.monotonic() > deadline:
            raise CorruptRegion(
                f"region {ch.name!r} is not a metrics region (or its creator died before "
                "laying it out): unlink it (`shmring gc --yes`, or Registry.unlink) and retry")
        time.sleep(0.001)


def _geometry(ch: Channel) -> M.Geometry:
    buf = ch.region._mapping()
    base = int(_core.load(buf, L.HDR_DATA_OFFSET))

    def word(w: int) -> int:
        return int(_core.load(buf, base + w * M.WORD))

    if word(M.H_VERSION) != M.VERSION:
        raise CorruptRegion(f"metrics region {ch.name!r} has layout version "
                            f"{word(M.H_VERSION)}; this shmring reads {M.VERSION}")
    geo = M.Geometry(base, word(M.H_ENTRIES), word(M.H_ENTRY_BYTES), word(M.H_SLABS),
                     word(M.H_VALUES))
    if geo.size > ch.capacity or geo.entry_bytes < 128:
        raise CorruptRegion(f"metrics region {ch.name!r}: its sizes do not fit its "
                            f"{ch.capacity} bytes")
    return geo


_REGISTRIES: weakref.WeakSet[Registry] = weakref.WeakSet()
_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The registry metrics use when given none: region ``metrics`` of
    ``$SHMRING_NAMESPACE``, opened (or created) at first use."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Registry()
        return _default


def _after_fork_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for reg in list(_REGISTRIES):
        with contextlib.suppress(Exception):
            reg._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
