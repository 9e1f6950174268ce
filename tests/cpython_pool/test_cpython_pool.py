"""CPython's own Pool tests, run against ``shmring.Pool``.

``test._test_multiprocessing`` (the standard library's test package, not
vendored here) is imported when the tests run. Its classes ``_TestPool``,
``_TestPoolWorkerErrors`` and ``_TestPoolWorkerLifetime`` are mixed with its
``ProcessesMixin`` as CPython's own ``test_multiprocessing_fork`` and
``_spawn`` do, with ``shmring.Pool`` in place of ``multiprocessing.Pool``:
as the class attribute ``Pool`` (what ``_TestPool`` calls) and, during each
test, as ``multiprocessing.Pool`` (what the two others call). Each class
runs under ``fork`` and under ``spawn``.

Needs: an interpreter whose standard library includes the ``test``
package (python.org builds and pyenv have it; Debian and Ubuntu ship it as
``libpython3.X-testsuite``). Without it this module fails at import with a
message saying so (the suite does not skip).

Left out, each for the reason in :data:`EXCLUDED`.
"""

from __future__ import annotations

import functools
import multiprocessing
import unittest
from typing import Any

from cpython_util import check_coverage, cpython_tests

from shmring._queue.pool import Pool

cpy: Any = cpython_tests("cpython_pool")


#: Tests left out: they read or call ``multiprocessing.Pool`` internals, or
#: test ``multiprocessing`` itself rather than the pool they are given.
EXCLUDED = {
    "test_pool_worker_lifetime":
        "calls Pool._repopulate_pool(), a private method of multiprocessing.Pool "
        "(tests/multiprocess/test_pool.py checks that workers are replaced after "
        "maxtasksperchild tasks)",
    "test_worker_finalization_via_atexit_handler_of_multiprocessing":
        "runs `from multiprocessing import Pool` in a child interpreter: it tests "
        "multiprocessing's own Pool, never the one swapped in",
}

CLASSES = ("_TestPool", "_TestPoolWorkerErrors", "_TestPoolWorkerLifetime")


class _SwapPool(unittest.TestCase):
    """During each test ``multiprocessing.Pool`` is shmring's (some of
    CPython's tests call it by that name); the class's start method is
    the pool's."""

    START: str = "fork"
    _saved: Any

    def setUp(self) -> None:
        self._saved = multiprocessing.Pool
        multiprocessing.Pool = functools.partial(Pool, context=self.START)  # type: ignore[assignment]
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        multiprocessing.Pool = self._saved


def _make(base_name: str, start: str) -> type[unittest.TestCase]:
    base = getattr(cpy, base_name)
    attrs: dict[str, Any] = {
        "START": start,
        "Pool": staticmethod(functools.partial(Pool, context=start)),
        "__module__": __name__,
    }
    for name in EXCLUDED:
        if hasattr(base, name):
            attrs[name] = None  # not collected: not a callable test
    name = f"Test{start.capitalize()}{base_name[5:]}"
    cls = type(name, (_SwapPool, base, cpy.ProcessesMixin, unittest.TestCase), attrs)
    cls.__qualname__ = name
    return cls


for _start in ("fork", "spawn"):
    for _base in CLASSES:
        _cls = _make(_base, _start)
        globals()[_cls.__name__] = _cls
del _start, _base, _cls


def test_adapter_covers_the_pool_classes() -> None:
    """The classes this module runs are CPython's Pool tests, every test
    of theirs is run or listed in EXCLUDED, and nothing listed is missing
    (so the list cannot go stale silently)."""
    check_coverage(cpy, CLASSES, EXCLUDED, at_least=25)
