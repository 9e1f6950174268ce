"""A pipeline's stages as the user declares them: :class:`StageSpec` (what
one stage runs, and how many workers) and :class:`Stream` (the chain built
by ``source(...).map(...).filter(...)``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._errors import InvalidArgument

#: How a stream adds a stage: (position, kind, fn, options) -> the new stream.
AddStage = Callable[[int, str, Callable[..., Any], dict[str, Any]], "Stream"]

KINDS = ("map", "filter", "flat_map", "sink")

#: Default bound of an edge in bytes (its ring's capacity): an item may be
#: up to half of it.
DEFAULT_MAX_BYTES = 4 << 20


@dataclass
class StageSpec:
    """One stage: ``fn`` run by ``workers`` processes on every item."""

    kind: str
    fn: Callable[..., Any]
    name: str
    workers: int = 1
    init: Callable[[], Any] | None = None
    timeout: float | None = None
    max_redeliveries: int = 2
    ordered: bool = False
    max_inflight: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    zero_copy: bool = False
    #: A worker leaves after this many items (and is replaced while the
    #: stage has input): ``maxtasksperchild`` of a Pool.
    max_tasks: int | None = None
    #: Seconds a worker may hold one item before the supervisor hands it to
    #: another worker (the lease of the edge into the stage); None: never.
    lease: float | None = None

    def check(self) -> None:
        """Raise :class:`InvalidArgument` for a bad setting."""
        if self.kind not in KINDS:
            raise InvalidArgument(f"unknown stage kind {self.kind!r}")
        if not callable(self.fn):
            raise InvalidArgument(f"stage {self.name!r}: fn must be callable")
        if self.init is not None and not callable(self.init):
            raise InvalidArgument(f"stage {self.name!r}: init must be callable")
        if not isinstance(self.workers, int) or not 1 <= self.workers <= 200:
            raise InvalidArgument(f"stage {self.name!r}: workers must be 1..200")
        if self.timeout is not None and not self.timeout > 0:
            raise InvalidArgument(f"stage {self.name!r}: timeout must be > 0 seconds")
        if not isinstance(self.max_redeliveries, int) or self.max_redeliveries < 0:
            raise InvalidArgument(f"stage {self.name!r}: max_redeliveries must be >= 0")
        if self.max_inflight is not None and (
                not isinstance(self.max_inflight, int) or self.max_inflight < 1):
            raise InvalidArgument(f"stage {self.name!r}: max_inflight must be >= 1")
        if not isinstance(self.max_bytes, int) or not 4096 <= self.max_bytes <= 1 << 40:
            raise InvalidArgument(f"stage {self.name!r}: max_bytes must be 4 KiB..1 TiB")
        if self.lease is not None and (isinstance(self.lease, bool) or not isinstance(
                self.lease, (int, float)) or not self.lease > 0):
            raise InvalidArgument(f"stage {self.name!r}: lease must be > 0 seconds or None")
        if self.max_tasks is not None and (
                not isinstance(self.max_tasks, int) or self.max_tasks < 1):
            raise InvalidArgument(f"stage {self.name!r}: max_tasks must be >= 1")


def stage_name(fn: Callable[..., Any], name: str | None) -> str:
    """``name``, or the function's name made fit for a channel name."""
    if name is not None:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", name):
            raise InvalidArgument(f"bad stage name {name!r}: use 1-64 letters, digits, "
                                  "'_' or '-'")
        return name
    raw = getattr(fn, "__name__", None) or type(fn).__name__
    clean = re.sub(r"[^A-Za-z0-9_-]", "", raw)[:64]
    return clean or "stage"


class Stream:
    """The items coming out of the last stage added so far. Each method adds
    a stage after it and returns the stream of that stage's outputs."""

    def __init__(self, add: AddStage, position: int) -> None:
        self._add_stage = add
        self._position = position

    def _add(self, kind: str, fn: Callable[..., Any], kw: dict[str, Any]) -> Stream:
        return self._add_stage(self._position, kind, fn, kw)

    def map(self, fn: Callable[..., Any], *, workers: int = 1, name: str | None = None,
            init: Callable[[], Any] | None = None, timeout: float | None = None,
            max_redeliveries: int = 2, ordered: bool = False, max_inflight: int | None = None,
            max_bytes: int = DEFAULT_MAX_BYTES, zero_copy: bool = False,
            lease: float | None = None) -> Stream:
        """Each item becomes ``fn(item)`` (``fn(item, state)`` with ``init``:
        ``state = init()``, once per worker). ``timeout``: seconds one item
        may take before its worker is killed and the item counts a failed
        attempt; after ``max_redeliveries`` + 1 failed attempts it is dead.
        ``ordered``: the run yields outputs in source order. ``max_inflight``
        and ``max_bytes`` bound the edge into this stage (items, bytes).
        ``zero_copy``: numpy arrays arrive as read-only views of shared
        memory, valid during the call (one of 64 KiB or more lies in the
        run's array pool, and returning it, or a slice of it, passes it on
        without a copy). ``lease``: seconds a worker may hold
        one item; past it (the worker stopped or stuck) the supervisor hands
        the item to another worker and refuses the first one's outputs, so
        each output still goes on once (default None: never; unlike
        ``timeout`` the worker is not killed, and side effects of ``fn`` may
        happen twice)."""
        return self._add("map", fn, dict(
            workers=workers, name=name, init=init, timeout=timeout,
            max_redeliveries=max_redeliveries, ordered=ordered, max_inflight=max_inflight,
            max_bytes=max_bytes, zero_copy=zero_copy, lease=lease))

    def filter(self, fn: Callable[..., Any], *, workers: int = 1, name: str | None = None,
               init: Callable[[], Any] | None = None, timeout: float | None = None,
               max_redeliveries: int = 2, ordered: bool = False,
               max_inflight: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
               zero_copy: bool = False, lease: float | None = None) -> Stream:
        """Keep the items for which ``fn(item)`` is true (see :meth:`map`)."""
        return self._add("filter", fn, dict(
            workers=workers, name=name, init=init, timeout=timeout,
            max_redeliveries=max_redeliveries, ordered=ordered, max_inflight=max_inflight,
            max_bytes=max_bytes, zero_copy=zero_copy, lease=lease))

    def flat_map(self, fn: Callable[..., Iterable[Any]], *, workers: int = 1,
                 name: str | None = None, init: Callable[[], Any] | None = None,
                 timeout: float | None = None, max_redeliveries: int = 2, ordered: bool = False,
                 max_inflight: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 zero_copy: bool = False, lease: float | None = None) -> Stream:
        """Each item becomes every element of the iterable ``fn(item)``
        returns (see :meth:`map`). A worker that dies half-way through an
        item's outputs leaves those it sent: the next attempt skips as many
        (docs/design.md, "Pipelines"), so ``fn`` should yield the same
        outputs in the same order each time."""
        return self._add("flat_map", fn, dict(
            workers=workers, name=name, init=init, timeout=timeout,
            max_redeliveries=max_redeliveries, ordered=ordered, max_inflight=max_inflight,
            max_bytes=max_bytes, zero_copy=zero_copy, lease=lease))

    def sink(self, fn: Callable[..., Any], *, workers: int = 1, name: str | None = None,
             init: Callable[[], Any] | None = None, timeout: float | None = None,
             max_redeliveries: int = 2, max_inflight: int | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES, zero_copy: bool = False,
             lease: float | None = None) -> None:
        """End the pipeline: ``fn(item)`` is called on every item and its
        result dropped. ``run.wait()`` waits for it."""
        self._add("sink", fn, dict(
            workers=workers, name=name, init=init, timeout=timeout,
            max_redeliveries=max_redeliveries, max_inflight=max_inflight,
            max_bytes=max_bytes, zero_copy=zero_copy, lease=lease))
