"""Counter, Gauge and Histogram: what a process counts with.

Each metric (or each of its label sets, from ``labels()``) is bound to its
value words in this process's slab: an update is one atomic instruction on
shared memory through one ``_core`` call, no lock and no system call. A
metric loses its binding when its registry closes or the process forks;
the first update after that finds out (the call fails on the unbound
``None`` mapping, which costs nothing while bound) and binds again, in the
child to a slab of its own, or raises :class:`shmring.Closed`.

Counters count whole numbers (exactly: 64-bit, summed over processes);
gauges and histogram sums are doubles, updated by compare-exchange so that
threads of one process do not lose updates.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

from .. import _core
from .._errors import Closed, InvalidArgument
from . import _layout as M
from ._errors import MetricConflict
from ._table import Entry
from ._values import bits_float, float_bits
from .registry import Registry, default_registry

_fetch_add = _core.fetch_add
_store = _core.store
_load = _core.load
_cas = _core.cas
_LIMIT = 1 << 64
_W = M.WORD
_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

#: Histogram buckets when none are given (prometheus_client's defaults), seconds.
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
                                      1.0, 2.5, 5.0, 7.5, 10.0)

S = TypeVar("S", bound="_Metric")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(f"bad metric name {name!r}: use letters, digits, '_' and ':', "
                              "not starting with a digit")
    return name


def _check_labels(labels: Iterable[str], kind: int) -> tuple[str, ...]:
    if isinstance(labels, str):
        labels = (labels,)
    out = tuple(labels)
    for lab in out:
        if not isinstance(lab, str) or not _LABEL_RE.match(lab) or lab.startswith("__"):
            raise InvalidArgument(f"bad label name {lab!r}: use letters, digits and '_', "
                                  "not starting with a digit or '__'")
        if kind == M.K_HISTOGRAM and lab == "le":
            raise InvalidArgument("a histogram cannot have a label named 'le' (its buckets)")
    if len(set(out)) != len(out):
        raise InvalidArgument(f"label names repeat: {out}")
    return out


class _Metric:
    """What the three kinds share: declaration, labels and binding."""

    _kind: ClassVar[int] = 0
    __slots__ = ("__weakref__", "_buf", "_children", "_family", "_labelvalues", "_off",
                 "_registry")

    def __init__(self, name: str, help: str = "", labels: Iterable[str] = (), *,
                 registry: Registry | None = None, buckets: tuple[float, ...] = ()) -> None:
        name = _check_name(name)
        if buckets and self._kind != M.K_HISTOGRAM:
            raise InvalidArgument(f"metric {name!r}: only a Histogram has buckets")
        if self._kind == M.K_COUNTER and name.endswith("_total"):
            name = name[:-6]  # the exposition adds it back: "x" and "x_total" are one counter
        if not isinstance(help, str):
            raise InvalidArgument(f"help must be a str, not {type(help).__name__}")
        labelnames = _check_labels(labels, self._kind)
        reg = default_registry() if registry is None else registry
        fam = reg._family(self._kind, name, help, labelnames, buckets)
        if (fam.kind, fam.labels, fam.buckets) != (self._kind, labelnames, buckets):
            raise MetricConflict(
                f"metric {name!r} exists as a {M.KIND_NAMES.get(fam.kind, '?')} with labels "
                f"{list(fam.labels)}" + (f" and buckets {list(fam.buckets)}" if fam.buckets
                                         else "") +
                f"; declared here as a {M.KIND_NAMES[self._kind]} with labels "
                f"{list(labelnames)}" + (f" and buckets {list(buckets)}" if buckets else ""))
        self._registry = reg
        self._family = fam
        self._children: dict[tuple[str, ...], Any] = {}
        self._buf: Any = None
        self._off = 0
        self._labelvalues: tuple[str, ...] | None = None
        if not labelnames:
            self._labelvalues = ()
            self._rebind()

    @property
    def name(self) -> str:
        """The metric's name (a counter's without ``_total``)."""
        return self._family.name

    def labels(self: S, *values: object, **by_name: object) -> S:
        """The series of these label values (by position or by name), made
        at its first use in any process and cached in this one."""
        names = self._family.labels
        if self._labelvalues is not None and self._labelvalues:
            raise InvalidArgument(f"metric {self.name!r}: labels() of a labelled series")
        if by_name:
            if values or set(by_name) != set(names):
                raise InvalidArgument(f"metric {self.name!r} takes the labels "
                                      f"{list(names)}, given {sorted(by_name)}")
            values = tuple(by_name[n] for n in names)
        if not names or len(values) != len(names):
            raise InvalidArgument(f"metric {self.name!r} takes {len(names)} label value(s) "
                                  f"{list(names)}, given {len(values)}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = object.__new__(type(self))
            child._registry, child._family, child._children = self._registry, self._family, {}
            child._buf, child._off, child._labelvalues = None, 0, key
            child._extra(self)
            child._rebind()
            self._children[key] = child
        return child

    def _extra(self, parent: _Metric) -> None:
        """Copy what a kind keeps beyond the shared fields into a child."""

    def _rebind(self) -> None:
        """Bind to this process's slab (first use, after a fork), or raise."""
        if self._labelvalues is None:
            raise InvalidArgument(f"metric {self.name!r} has labels "
                                  f"{list(self._family.labels)}: update .labels(...) of it")
        if self._registry.closed:
            raise Closed(f"metric {self.name!r}: its registry is closed")
        series: Entry = self._registry._series(self._family, self._labelvalues)
        self._buf, self._off = self._registry._bind(self, series)

    def __repr__(self) -> str:
        lv = self._labelvalues
        labels = "" if not lv else "{" + ",".join(
            f"{n}={v!r}" for n, v in zip(self._family.labels, lv, strict=True)) + "}"
        return f"<shmring.metrics.{type(self).__name__} {self.name}{labels}>"


class Counter(_Metric):
    """A count that only goes up, summed over every process that counts it,
    dead ones included.

    Example::

        import shmring.metrics as m
        reg = m.Registry("counter-demo")
        served = m.Counter("requests_total", "Requests served", labels=["method"],
                           registry=reg)
        served.labels("GET").inc()
        served.labels(method="POST").inc(3)
        reg.unlink(); reg.close()
    """

    _kind = M.K_COUNTER
    __slots__ = ()

    def inc(self, amount: int = 1) -> None:
        """Add ``amount`` (a whole number >= 0) to the count."""
        if not 0 <= amount < _LIMIT:
            raise InvalidArgument(f"counter {self.name!r}: inc({amount!r}) must add a whole "
                                  "number >= 0 (below 2**64)")
        try:
            _fetch_add(self._buf, self._off, amount)
        except TypeError:
            if not isinstance(amount, int):
                raise InvalidArgument(f"counter {self.name!r}: inc({amount!r}) must add a "
                                      "whole number (count seconds with a Histogram)") from None
            self._rebind()
            _fetch_add(self._buf, self._off, amount)

    def get(self) -> int:
        """This process's own count of this series (the total is the daemon's)."""
        try:
            return int(_load(self._buf, self._off))
        except TypeError:
            self._rebind()
            return int(_load(self._buf, self._off))


class Gauge(_Metric):
    """A value that goes up and down, summed over the live processes that
    set it; a process's value goes when it exits.

    Example::

        import shmring.metrics as m
        reg = m.Registry("gauge-demo")
        depth = m.Gauge("queue_depth", "Items waiting", registry=reg)
        depth.set(5)
        depth.dec(2)
        assert depth.get() == 3
        reg.unlink(); reg.close()
    """

    _kind = M.K_GAUGE
    __slots__ = ()

    def set(self, value: float) -> None:
        """Set this process's value."""
        bits = float_bits(float(value))
        try:
            _store(self._buf, self._off, bits)
        except TypeError:
            self._rebind()
            _store(self._buf, self._off, bits)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to this process's value."""
        amount = float(amount)
        try:
            buf, off = self._buf, self._off
            while True:
                old = _load(buf, off)
                if _cas(buf, off, old, float_bits(bits_float(old) + amount)):
                    return
        except TypeError:
            self._rebind()
            self.inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` from this process's value."""
        self.inc(-float(amount))

    def get(self) -> float:
        """This process's own value."""
        try:
            return bits_float(_load(self._buf, self._off))
        except TypeError:
            self._rebind()
            return bits_float(_load(self._buf, self._off))


class Histogram(_Metric):
    """Observations counted in buckets (each an upper bound; ``+Inf`` is
    added), with their sum, over every process, dead ones included.

    Example::

        import shmring.metrics as m
        reg = m.Registry("histogram-demo")
        latency = m.Histogram("latency_seconds", "Time to answer",
                              buckets=(0.01, 0.1, 1.0), registry=reg)
        latency.observe(0.05)
        reg.unlink(); reg.close()
    """

    _kind = M.K_HISTOGRAM
    __slots__ = ("_bounds",)

    def __init__(self, name: str, help: str = "", labels: Iterable[str] = (), *,
                 buckets: Iterable[float] = DEFAULT_BUCKETS,
                 registry: Registry | None = None) -> None:
        try:
            bounds = [float(b) for b in buckets]
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"histogram {name!r}: buckets must be numbers") from e
        if bounds and bounds[-1] == math.inf:
            bounds.pop()
        if not bounds or any(math.isnan(b) or math.isinf(b) for b in bounds) or any(
                a >= b for a, b in itertools.pairwise(bounds)):
            raise InvalidArgument(f"histogram {name!r}: buckets must be at least one finite "
                                  f"bound, in increasing order, not {list(buckets)}")
        self._bounds = tuple(bounds)
        super().__init__(name, help, labels, registry=registry, buckets=self._bounds)

    def _extra(self, parent: _Metric) -> None:
        assert isinstance(parent, Histogram)
        self._bounds = parent._bounds

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket and add it to the sum."""
        value = float(value)
        i = bisect.bisect_left(self._bounds, value)
        try:
            buf, off = self._buf, self._off
            _fetch_add(buf, off + _W * i, 1)
        except TypeError:
            self._rebind()
            buf, off = self._buf, self._off
            _fetch_add(buf, off + _W * i, 1)
        at = off + _W * (len(self._bounds) + 1)
        while True:
            old = _load(buf, at)
            if _cas(buf, at, old, float_bits(bits_float(old) + value)):
                return

    def counts(self) -> tuple[list[int], float]:
        """This process's own bucket counts (``+Inf`` last, not cumulative) and sum."""
        try:
            words = [_load(self._buf, self._off + _W * i) for i in range(len(self._bounds) + 2)]
        except TypeError:
            self._rebind()
            return self.counts()
        return [int(w) for w in words[:-1]], bits_float(words[-1])
