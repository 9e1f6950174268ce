"""The errors of shmring.metrics: a table or the slabs are full, or a
metric is declared again differently. Both are shmring errors (caught by
``except shmring.ShmringError``); bad names and values are
:class:`shmring.InvalidArgument`."""

from __future__ import annotations

from .._errors import InvalidArgument, ShmringError


class MetricsFull(ShmringError):
    """The metrics region has no room left: its name table (metrics and
    label sets), its value words, or its per-process slabs (live processes
    using metrics) are all taken. ``what`` says which: ``"entries"``,
    ``"values"`` or ``"slabs"``. Make the region bigger (``Registry(...,
    entries=, values=, slabs=)`` when it is created) or use fewer label
    values."""

    what: str = ""

    def __init__(self, message: str, what: str = "") -> None:
        super().__init__(message)
        self.what = what

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.what))


class MetricConflict(InvalidArgument):
    """A metric of that name exists with another kind, label names or
    buckets (in this process or in any other one using the region)."""


for _cls in (MetricsFull, MetricConflict):
    _cls.__module__ = "shmring.metrics"
del _cls
