"""CPython's own queue tests, run against ``shmring.Queue``.

``test._test_multiprocessing`` (the standard library's test package, not
vendored here) is imported when the tests run. Its ``_TestQueue`` is mixed
with its ``ProcessesMixin`` as CPython's own ``test_multiprocessing_fork``
and ``_spawn`` do, with shmring's ``Queue`` and ``JoinableQueue`` as the
class attributes the tests call (``self.Queue``, ``self.JoinableQueue``);
``TestSimpleQueue`` calls ``multiprocessing.SimpleQueue`` by name, which is
shmring's during each of its tests.
It runs under ``fork`` and under ``spawn`` (the start method of the
processes the tests make).

Needs: an interpreter whose standard library includes the ``test`` package
(python.org builds and pyenv have it; Debian and Ubuntu ship it as
``libpython3.X-testsuite``). Without it this module fails at import with a
message saying so (the suite does not skip).

Left out, each for the reason in :data:`EXCLUDED`.
"""

from __future__ import annotations

import multiprocessing
import unittest
from typing import Any

from cpython_util import check_coverage, cpython_tests

import shmring

cpy: Any = cpython_tests("cpython_queue")


#: Tests left out: they read or patch ``multiprocessing.Queue`` internals.
EXCLUDED = {
    "test_closed":
        "reads SimpleQueue._reader and ._writer, the pipe multiprocessing's SimpleQueue is "
        "made of (shmring.SimpleQueue has none)",
    "test_queue_feeder_donot_stop_onexc":
        "subclasses multiprocessing.queues.Queue and overrides its _on_queue_feeder_error "
        "hook (the feeder thread's private hook); shmring.Queue has no feeder thread",
    "test_queue_feeder_on_queue_feeder_error":
        "patches multiprocessing.queues.Queue._on_queue_feeder_error, a private hook of "
        "multiprocessing's feeder thread; shmring.Queue has no feeder thread",
}

CLASSES = ("_TestQueue", "TestSimpleQueue")

#: What TestSimpleQueue calls by its module name, swapped during each test.
_SWAPPED = ("SimpleQueue", "Process", "Event")


class _Swap(unittest.TestCase):
    """During each test ``multiprocessing.SimpleQueue`` is shmring's, and
    ``multiprocessing.Process`` and ``Event`` are the class's start
    method's (``TestSimpleQueue`` calls them by those names)."""

    START: str = "fork"
    _saved: dict[str, Any]

    def setUp(self) -> None:
        ctx: Any = multiprocessing.get_context(self.START)
        self._saved = {k: getattr(multiprocessing, k) for k in _SWAPPED}
        multiprocessing.SimpleQueue = shmring.SimpleQueue  # type: ignore[assignment,misc]
        multiprocessing.Process = ctx.Process  # type: ignore[misc]
        multiprocessing.Event = ctx.Event
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        for k, v in self._saved.items():
            setattr(multiprocessing, k, v)


def _make(base_name: str, start: str) -> type[unittest.TestCase]:
    base = getattr(cpy, base_name)
    ctx: Any = multiprocessing.get_context(start)
    attrs: dict[str, Any] = {
        "START": start,
        "Queue": staticmethod(shmring.Queue),
        "JoinableQueue": staticmethod(shmring.JoinableQueue),
        "Process": ctx.Process,
        "__module__": __name__,
    }
    # The tests' other multiprocessing objects come from the same start
    # method as their processes (CPython sets it process-wide instead).
    for kind in ("Event", "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition",
                 "Barrier", "Value", "Array", "Pipe"):
        attrs[kind] = staticmethod(getattr(ctx, kind))
    for name in EXCLUDED:
        if hasattr(base, name):
            attrs[name] = None  # not collected: not a callable test
    name = f"Test{start.capitalize()}{base_name.lstrip('_')[4:]}"
    cls = type(name, (_Swap, base, cpy.ProcessesMixin, unittest.TestCase), attrs)
    cls.__qualname__ = name
    return cls


for _start in ("fork", "spawn"):
    for _base in CLASSES:
        _cls = _make(_base, _start)
        globals()[_cls.__name__] = _cls
del _start, _base, _cls


def test_adapter_covers_the_queue_classes() -> None:
    """Every test of CPython's queue class is run or listed in EXCLUDED, and
    nothing listed is missing (so the list cannot go stale silently)."""
    check_coverage(cpy, CLASSES, EXCLUDED, at_least=8)
