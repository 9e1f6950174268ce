"""The Prometheus side: a collector that reads a metrics region and gives
its totals to ``prometheus_client`` (an optional dependency: the
``metrics`` extra), which renders the text format.

Example (fragment)::

    from prometheus_client import CollectorRegistry, generate_latest
    from shmring.metrics import Registry
    from shmring.metrics.prometheus import Collector

    scrape = CollectorRegistry()
    scrape.register(Collector(Registry()))
    print(generate_latest(scrape).decode())
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as _Collector

from ._values import Hook, Totals
from .registry import Registry


def families(totals: Totals, *, own: bool = True) -> Iterator[Metric]:
    """prometheus_client metric families of ``totals``; with ``own``, also the
    region's: processes counting, dead processes folded, table use."""
    for fam in totals.families:
        labels = list(fam.labels)
        m: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
        if fam.kind == "counter":
            m = CounterMetricFamily(fam.name, fam.help, labels=labels)
            for s in fam.series:
                m.add_metric(list(s.values), s.value)
        elif fam.kind == "gauge":
            m = GaugeMetricFamily(fam.name, fam.help, labels=labels)
            for s in fam.series:
                m.add_metric(list(s.values), s.value)
        else:
            m = HistogramMetricFamily(fam.name, fam.help, labels=labels)
            for s in fam.series:
                acc, cumulative = 0, []
                for bound, n in zip([*fam.buckets, math.inf], s.buckets, strict=True):
                    acc += n
                    cumulative.append((_le(bound), acc))
                m.add_metric(list(s.values), cumulative, s.sum)
        yield m
    if own:
        yield GaugeMetricFamily("shmring_metrics_processes",
                                "Processes holding a slab of the metrics region", totals.live)
        yield CounterMetricFamily("shmring_metrics_folded",
                                  "Dead processes whose counts were folded into the totals",
                                  totals.folded)
        yield GaugeMetricFamily("shmring_metrics_values_used",
                                "Value words of the metrics region handed out",
                                totals.values_used)


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


class Collector(_Collector):
    """A prometheus_client collector over ``registry``: every collect (every
    scrape) folds dead processes, then reads every total. ``hook`` is
    :meth:`Registry.fold`'s (for tests)."""

    def __init__(self, registry: Registry, hook: Hook | None = None) -> None:
        self.registry = registry
        self.hook = hook

    def collect(self) -> Iterator[Metric]:
        """The families of the region, as read now."""
        yield from families(self.registry.read(hook=self.hook))
