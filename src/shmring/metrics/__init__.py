"""shmring.metrics: counters, gauges and histograms that any number of
processes update in shared memory, one atomic instruction and no system
call per update, and that a daemon adds up (see examples/metricsd and
docs/metrics.md).

Each process counts in a slab of its own in one region of the namespace;
when it dies, its counters and histograms are folded into the region's
retired totals, so nothing counted is lost, and its slab is reused.

Example::

    import shmring.metrics as m

    reg = m.Registry("metrics-example")       # "metrics" of $SHMRING_NAMESPACE by default
    jobs = m.Counter("jobs_total", "Jobs done", labels=["queue"], registry=reg)
    jobs.labels("fast").inc()
    busy = m.Gauge("workers_busy", "Workers at work", registry=reg)
    busy.set(2)
    took = m.Histogram("job_seconds", "Time per job", buckets=(0.1, 1, 10), registry=reg)
    took.observe(0.3)
    totals = reg.read()                        # over every process, dead ones included
    print([(f.name, f.kind) for f in totals.families])
    reg.unlink(); reg.close()

The Prometheus text format is ``shmring.metrics.prometheus``'s (it needs
``prometheus_client``, the ``metrics`` extra).
"""

from ._errors import MetricConflict, MetricsFull
from ._kinds import DEFAULT_BUCKETS, Counter, Gauge, Histogram
from ._values import Family, Series, Totals
from .registry import DEFAULT_NAME, Registry, default_registry

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_NAME",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "MetricConflict",
    "MetricsFull",
    "Registry",
    "Series",
    "Totals",
    "default_registry",
]
